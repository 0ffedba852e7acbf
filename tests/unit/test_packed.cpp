// The packed quantized safetensors layout: round trips, determinism, and rejection of malformed
// manifests and planes (the manifest is untrusted input).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "qforge/format.h"
#include "qforge/packed.h"
#include "qforge/safetensors.h"
#include "test_support.h"

namespace qforge {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Deterministic, roughly Gaussian test weights (sum of uniforms), with a per-matrix seed.
std::vector<float> weights(int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<float> w(static_cast<size_t>(rows * cols));
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(s >> 11) * 0x1.0p-53;
  };
  for (auto& x : w) x = static_cast<float>((next() + next() + next() - 1.5) * 0.05);
  return w;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

QuantizedTensor quantize_or_die(const std::string& scheme_name, const std::vector<float>& w, int64_t rows,
                                int64_t cols) {
  Expected<Scheme> scheme = Scheme::parse(scheme_name);
  EXPECT_TRUE(scheme.has_value()) << scheme.status().to_string();
  Expected<QuantizedTensor> q = quantize(*scheme, w.data(), rows, cols);
  EXPECT_TRUE(q.has_value()) << scheme_name << ": " << q.status().to_string();
  return std::move(q).value();
}

// Schemes that cover every plane combination: zeros (asym), extra (nvfp4, nf4-dq), u8 scales
// (nf4-dq), e8m0 scales (mxfp4), f32 per-channel scales (fp8), a per-tensor scale.
const char* kSchemes[] = {"int4-g32-asym", "int8-ch-sym", "int3-g64-asym", "int8-tensor-sym", "nf4",
                          "nf4-dq",        "mxfp4",       "nvfp4",         "fp8-e4m3-ch"};

TEST(Packed, RoundTripEveryPlaneCombination) {
  const std::string path = test::temp_dir() + "/packed.safetensors";
  std::map<std::string, QuantizedTensor> quantized;
  std::map<std::string, DType> dtype_orig;
  int i = 0;
  for (const char* s : kSchemes) {
    const int64_t rows = 48 + i, cols = 256;
    std::string name = std::string("layer.") + std::to_string(i) + ".weight";
    quantized[name] = quantize_or_die(s, weights(rows, cols, 100 + i), rows, cols);
    dtype_orig[name] = i % 2 ? DType::bf16 : DType::f32;
    ++i;
  }
  std::map<std::string, Tensor> plain;
  plain["norm.weight"] = Tensor::from_f32({7}, {1, 2, 3, 4, 5, 6, 7});
  ASSERT_TRUE(write_packed(path, quantized, plain, dtype_orig, {{"format", "pt"}}, "qforge test").is_ok());

  Expected<PackedCheckpoint> ck = read_packed(path);
  ASSERT_TRUE(ck.has_value()) << ck.status().to_string();
  EXPECT_EQ(ck->metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(ck->quantized.size(), quantized.size());
  for (const auto& [name, q] : quantized) {
    SCOPED_TRACE(name + " " + q.scheme.name());
    const QuantizedTensor& r = ck->quantized.at(name);
    EXPECT_EQ(r.scheme, q.scheme);
    EXPECT_EQ(r.rows, q.rows);
    EXPECT_EQ(r.cols, q.cols);
    EXPECT_EQ(r.codes, q.codes);
    EXPECT_EQ(r.scales, q.scales);
    EXPECT_EQ(r.zeros, q.zeros);
    EXPECT_EQ(r.extra, q.extra);
    EXPECT_EQ(ck->info.at(name).dtype_orig, dtype_orig.at(name));
    EXPECT_EQ(ck->info.at(name).nbytes, q.nbytes());
    EXPECT_FALSE(ck->info.at(name).transposed);
    // Dequantized values from the file equal the in-memory ones bit for bit.
    std::vector<float> a(static_cast<size_t>(q.rows * q.cols)), b(a.size());
    ASSERT_TRUE(dequantize(q, a.data()).is_ok());
    ASSERT_TRUE(dequantize(r, b.data()).is_ok());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  }
  ASSERT_EQ(ck->plain.size(), 1u);
  const Tensor& norm = ck->plain.at("norm.weight");
  EXPECT_EQ(norm.shape(), Shape{7});
  EXPECT_EQ(norm.data_as<float>()[6], 7.0f);

  // The manifest as written: one entry per quantized tensor with scheme, id, shape and dtype.
  Expected<SafetensorsFile> raw = SafetensorsFile::open(path);
  ASSERT_TRUE(raw.has_value());
  json m = json::parse(raw->metadata().at(kPackedMetadataKey));
  EXPECT_EQ(m["format_version"], kPackedFormatVersion);
  EXPECT_EQ(m["command"], "qforge test");
  EXPECT_EQ(m["tensors"]["layer.0.weight"]["scheme"], "int4-g32-asym");
  EXPECT_EQ(m["tensors"]["layer.0.weight"]["format_id"], static_cast<int>(FormatId::int_asym));
  EXPECT_EQ(m["tensors"]["layer.0.weight"]["shape"], json::array({48, 256}));
  EXPECT_EQ(m["tensors"]["layer.1.weight"]["dtype_orig"], "bf16");
  // Plane names and dtypes.
  const SafetensorsTensorInfo* codes = raw->find("layer.0.weight.qcodes");
  ASSERT_NE(codes, nullptr);
  EXPECT_EQ(codes->dtype, DType::u8);
  EXPECT_EQ(codes->shape, (Shape{48, 128}));
  EXPECT_NE(raw->find("layer.0.weight.qzeros"), nullptr);
  EXPECT_EQ(raw->find("layer.1.weight.qzeros"), nullptr);  // symmetric
  EXPECT_EQ(raw->find("layer.0.weight.qextra"), nullptr);
  EXPECT_EQ(raw->find("layer.0.weight.qscales")->dtype, format_traits(FormatId::int_asym).scale_dtype);
  EXPECT_EQ(raw->find("layer.0.weight"), nullptr);
}

TEST(Packed, DeterministicBytes) {
  const std::string dir = test::temp_dir();
  std::map<std::string, QuantizedTensor> q;
  q["a.weight"] = quantize_or_die("int4-g64-asym", weights(32, 128, 1), 32, 128);
  q["b.weight"] = quantize_or_die("nvfp4", weights(16, 64, 2), 16, 64);
  std::map<std::string, Tensor> plain{{"c", Tensor::from_f32({2}, {0.5f, -1.0f})}};
  ASSERT_TRUE(write_packed(dir + "/1.safetensors", q, plain).is_ok());
  ASSERT_TRUE(write_packed(dir + "/2.safetensors", q, plain).is_ok());
  EXPECT_TRUE(read_bytes(dir + "/1.safetensors") == read_bytes(dir + "/2.safetensors")) << "two writes differ";
}

TEST(Packed, TransposedFlagRoundTrips) {
  const std::string path = test::temp_dir() + "/t.safetensors";
  PackedWriter w(path);
  ASSERT_TRUE(w.add_quantized("c_attn.weight", quantize_or_die("int8-ch-sym", weights(8, 32, 3), 8, 32),
                              DType::f16, /*transposed=*/true)
                  .is_ok());
  ASSERT_TRUE(w.finish().is_ok());
  Expected<PackedFile> f = PackedFile::open(path);
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  ASSERT_EQ(f->quantized().size(), 1u);
  EXPECT_TRUE(f->quantized()[0].transposed);
  EXPECT_EQ(f->quantized()[0].dtype_orig, DType::f16);
}

TEST(Packed, PlainFileHasNoManifest) {
  const std::string path = test::temp_dir() + "/plain.safetensors";
  SafetensorsWriter w(path);
  std::vector<float> v = {1, 2, 3, 4};
  ASSERT_TRUE(w.add("x.qcodes", DType::f32, {4}, v.data(), v.size() * 4).is_ok());  // just a name
  ASSERT_TRUE(w.finish().is_ok());
  Expected<PackedFile> f = PackedFile::open(path);
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  EXPECT_FALSE(f->has_manifest());
  EXPECT_TRUE(f->quantized().empty());
  EXPECT_EQ(f->plain_names(), std::vector<std::string>{"x.qcodes"});
  EXPECT_FALSE(f->load_quantized("x").has_value());
}

TEST(Packed, WriterRejectsBadInput) {
  const std::string dir = test::temp_dir();
  QuantizedTensor q = quantize_or_die("int4-g32-asym", weights(4, 64, 4), 4, 64);
  {
    PackedWriter w(dir + "/a.safetensors");
    EXPECT_FALSE(w.set_metadata(kPackedMetadataKey, "{}").is_ok());
    ASSERT_TRUE(w.add_quantized("w", q, DType::f32).is_ok());
    Status dup = w.add_quantized("w", q, DType::f32);
    EXPECT_FALSE(dup.is_ok());
    EXPECT_NE(dup.message().find("duplicate"), std::string::npos) << dup.message();
    EXPECT_FALSE(w.add_plain("w.qcodes", Tensor::from_f32({1}, {0})).is_ok());  // collides with a plane
    QuantizedTensor bad = q;
    bad.scales.pop_back();
    Status s = w.add_quantized("v", bad, DType::f32);
    EXPECT_FALSE(s.is_ok());
    EXPECT_NE(s.message().find("scales"), std::string::npos) << s.message();
    QuantizedTensor no_zeros = q;
    no_zeros.zeros.clear();
    EXPECT_FALSE(w.add_quantized("u", no_zeros, DType::f32).is_ok());
  }
  EXPECT_FALSE(fs::exists(dir + "/a.safetensors"));  // never finished: nothing written

  // A missing directory fails cleanly, leaving nothing behind.
  const std::string missing = dir + "/no/such/dir/out.safetensors";
  Status st = write_packed(missing, {{"w", q}}, {});
  EXPECT_FALSE(st.is_ok());
  EXPECT_FALSE(fs::exists(missing));
  EXPECT_TRUE(fs::is_empty(dir)) << "temporary files left in " << dir;
}

// ---- malformed files --------------------------------------------------------------------------

class PackedMalformed : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir();
    q_ = quantize_or_die("int4-g32-asym", weights(8, 64, 5), 8, 64);
    ASSERT_TRUE(write_packed(dir_ + "/good.safetensors", {{"w", q_}}, {{"n", Tensor::from_f32({2}, {1, 2})}})
                    .is_ok());
    Expected<SafetensorsFile> f = SafetensorsFile::open(dir_ + "/good.safetensors");
    ASSERT_TRUE(f.has_value());
    manifest_ = json::parse(f->metadata().at(kPackedMetadataKey));
    for (const auto& t : f->tensors()) {
      Expected<Tensor> v = f->tensor(t.name);
      ASSERT_TRUE(v.has_value());
      const auto* p = static_cast<const uint8_t*>(v->data());
      tensors_[t.name] = {t.dtype, t.shape, std::vector<uint8_t>(p, p + v->nbytes())};
    }
  }

  struct Raw {
    DType dtype;
    Shape shape;
    std::vector<uint8_t> bytes;
  };

  // Writes the good file's tensors and `manifest_text` (after the caller's edits), then opens it.
  Status open_with(const std::string& manifest_text) {
    const std::string path = dir_ + "/bad" + std::to_string(counter_++) + ".safetensors";
    SafetensorsWriter w(path);
    w.set_metadata(kPackedMetadataKey, manifest_text);
    for (const auto& [name, t] : tensors_) {
      Status s = w.add(name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
      if (!s.is_ok()) return s;
    }
    Status s = w.finish();
    if (!s.is_ok()) return s;
    Expected<PackedFile> f = PackedFile::open(path);
    if (!f.has_value()) return f.status();
    Expected<PackedCheckpoint> ck = read_packed(path);
    return ck.has_value() ? Status::ok() : ck.status();
  }
  Status open_with(const json& m) { return open_with(m.dump()); }

  // Expects an error whose message contains every one of `parts`.
  void expect_error(const Status& s, std::initializer_list<std::string> parts) {
    ASSERT_FALSE(s.is_ok()) << "accepted a malformed file";
    for (const auto& p : parts) EXPECT_NE(s.message().find(p), std::string::npos) << "message: " << s.message();
  }

  std::string dir_;
  QuantizedTensor q_;
  json manifest_;
  std::map<std::string, Raw> tensors_;
  int counter_ = 0;
};

TEST_F(PackedMalformed, GoodFileOpens) { EXPECT_TRUE(open_with(manifest_).is_ok()); }

TEST_F(PackedMalformed, NotJson) { expect_error(open_with(std::string("{not json")), {"qforge manifest"}); }

TEST_F(PackedMalformed, UnsupportedVersion) {
  manifest_["format_version"] = 2;
  Status s = open_with(manifest_);
  expect_error(s, {"format_version 2"});
  EXPECT_EQ(s.code(), ErrorCode::unsupported);
}

TEST_F(PackedMalformed, MissingTensors) {
  manifest_.erase("tensors");
  expect_error(open_with(manifest_), {"tensors"});
  manifest_["tensors"] = json::array();
  expect_error(open_with(manifest_), {"tensors"});
}

TEST_F(PackedMalformed, UnknownScheme) {
  manifest_["tensors"]["w"]["scheme"] = "int4-g32-zebra";
  expect_error(open_with(manifest_), {"'w'", "int4-g32-zebra"});
}

TEST_F(PackedMalformed, FormatIdMismatch) {
  manifest_["tensors"]["w"]["format_id"] = static_cast<int>(FormatId::int_sym);
  expect_error(open_with(manifest_), {"'w'", "format_id"});
}

TEST_F(PackedMalformed, ShapeDoesNotMatchPlanes) {
  manifest_["tensors"]["w"]["shape"] = json::array({9, 64});
  expect_error(open_with(manifest_), {"'w'", "bytes"});
  manifest_["tensors"]["w"]["shape"] = json::array({8, 128});
  expect_error(open_with(manifest_), {"'w'"});
}

TEST_F(PackedMalformed, SchemeDoesNotMatchPlanes) {
  manifest_["tensors"]["w"]["scheme"] = "int8-g32-asym";  // same format id, wider codes
  expect_error(open_with(manifest_), {"'w'", "codes"});
}

TEST_F(PackedMalformed, AbsurdShapesFailWithoutAllocating) {
  for (json shape : {json::array({-8, 64}), json::array({0, 64}), json::array({int64_t{1} << 40, int64_t{1} << 40}),
                     json::array({8}), json::array({8, 64, 1}), json::array({"8", 64})}) {
    manifest_["tensors"]["w"]["shape"] = shape;
    expect_error(open_with(manifest_), {"'w'"});
  }
}

TEST_F(PackedMalformed, BadDtypeOrig) {
  manifest_["tensors"]["w"]["dtype_orig"] = "f13";
  expect_error(open_with(manifest_), {"'w'", "f13"});
  manifest_["tensors"]["w"].erase("dtype_orig");
  expect_error(open_with(manifest_), {"'w'", "dtype_orig"});
}

TEST_F(PackedMalformed, MissingPlane) {
  tensors_.erase("w.qzeros");
  expect_error(open_with(manifest_), {"w.qzeros", "missing"});
}

TEST_F(PackedMalformed, UnexpectedPlane) {
  tensors_["w.qextra"] = {DType::u8, {4}, {1, 2, 3, 4}};
  expect_error(open_with(manifest_), {"w.qextra", "unexpected"});
}

TEST_F(PackedMalformed, WrongPlaneDtype) {
  Raw& scales = tensors_.at("w.qscales");
  scales.dtype = DType::u8;
  scales.shape = {static_cast<int64_t>(scales.bytes.size())};
  expect_error(open_with(manifest_), {"w.qscales", "dtype"});
}

TEST_F(PackedMalformed, QuantizedNameAlsoPlain) {
  tensors_["w"] = {DType::f32, {1}, {0, 0, 0, 0}};
  expect_error(open_with(manifest_), {"'w'", "plain"});
}

TEST_F(PackedMalformed, EntryFieldsOfWrongType) {
  json original = manifest_;
  manifest_["tensors"]["w"] = 5;
  expect_error(open_with(manifest_), {"'w'"});
  manifest_ = original;
  manifest_["tensors"]["w"]["scheme"] = 4;
  expect_error(open_with(manifest_), {"'w'", "scheme"});
  manifest_ = original;
  manifest_["tensors"]["w"]["transposed"] = "yes";
  expect_error(open_with(manifest_), {"'w'", "transposed"});
}

}  // namespace
}  // namespace qforge
