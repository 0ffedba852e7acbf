// GGUF container: ggml type table, metadata round trips, tensor layout, writer validation,
// malformed-file rejection, and real vocab-only files from llama.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "qforge/atomic_file.h"
#include "qforge/format.h"
#include "qforge/gguf.h"
#include "test_support.h"

namespace qforge {
namespace {

namespace fs = std::filesystem;

// Hand-built (possibly malformed) GGUF images.
struct Bytes {
  std::vector<uint8_t> b;
  template <class T>
  Bytes& put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  Bytes& u8(uint8_t v) { return put(v); }
  Bytes& u32(uint32_t v) { return put(v); }
  Bytes& u64(uint64_t v) { return put(v); }
  Bytes& str(std::string_view s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    return u32(version).u64(n_tensors).u64(n_kv);
  }
  // A tensor info with ggml-order dims.
  Bytes& tensor(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) u64(d);
    return u32(type).u64(offset);
  }
  Bytes& pad_to(size_t align) {
    while (b.size() % align != 0) b.push_back(0);
    return *this;
  }
  Bytes& zeros(size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
};

Expected<GgufFile> parse_bytes(const std::vector<uint8_t>& bytes) {
  return GgufFile::parse(bytes.data(), bytes.size(), "mem.gguf");
}

// Expects a parse error whose message contains every fragment.
void expect_rejected(const std::vector<uint8_t>& bytes, std::initializer_list<std::string> fragments) {
  auto f = parse_bytes(bytes);
  ASSERT_FALSE(f.has_value()) << "malformed file was accepted; expected: " << *fragments.begin();
  const std::string& msg = f.status().message();
  EXPECT_NE(msg.find("mem.gguf"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(at byte "), std::string::npos) << msg;
  for (const auto& frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << "missing '" << frag << "' in: " << msg;
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(rng());
  return v;
}

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// ---------------------------------------------------------------------------------------------
// ggml types

TEST(GgmlTypes, SizesMatchTheBlockStructs) {
  // Each struct of ggml-common.h written out as its fields (QK_K = 256, ggml_half = 2 bytes), so a
  // typo in the table shows up as a disagreement with the struct it came from.
  const int64_t K = 256;
  const std::map<std::string, std::pair<int64_t, int64_t>> from_structs = {
      {"F32", {1, 4}}, {"F16", {1, 2}}, {"BF16", {1, 2}}, {"F64", {1, 8}},
      {"I8", {1, 1}}, {"I16", {1, 2}}, {"I32", {1, 4}}, {"I64", {1, 8}},
      {"Q4_0", {32, 2 + 32 / 2}},                       // d, qs
      {"Q4_1", {32, 2 + 2 + 32 / 2}},                   // d, m, qs
      {"Q5_0", {32, 2 + 4 + 32 / 2}},                   // d, qh, qs
      {"Q5_1", {32, 2 + 2 + 4 + 32 / 2}},               // d, m, qh, qs
      {"Q8_0", {32, 2 + 32}},                           // d, qs
      {"Q8_1", {32, 2 + 2 + 32}},                       // d, s, qs
      {"Q2_K", {K, K / 16 + K / 4 + 2 + 2}},            // scales, qs, d, dmin
      {"Q3_K", {K, K / 8 + K / 4 + 12 + 2}},            // hmask, qs, scales, d
      {"Q4_K", {K, 2 + 2 + 12 + K / 2}},                // d, dmin, scales, qs
      {"Q5_K", {K, 2 + 2 + 12 + K / 8 + K / 2}},        // d, dmin, scales, qh, qs
      {"Q6_K", {K, K / 2 + K / 4 + K / 16 + 2}},        // ql, qh, scales, d
      {"Q8_K", {K, 4 + K + K / 16 * 2}},                // f32 d, qs, bsums
      {"IQ2_XXS", {K, 2 + K / 8 * 2}},                  // d, u16 qs
      {"IQ2_XS", {K, 2 + K / 8 * 2 + K / 32}},          // d, u16 qs, scales
      {"IQ3_XXS", {K, 2 + 3 * K / 8}},                  // d, qs
      {"IQ1_S", {K, 2 + K / 8 + K / 32 * 2}},           // d, qs, u16 qh
      {"IQ4_NL", {32, 2 + 32 / 2}},                     // d, qs
      {"IQ3_S", {K, 2 + K / 4 + K / 32 + K / 8 + K / 64}},  // d, qs, qh, signs, scales
      {"IQ2_S", {K, 2 + K / 4 + K / 32 + K / 32}},      // d, qs, qh, scales
      {"IQ4_XS", {K, 2 + 2 + K / 64 + K / 2}},          // d, scales_h, scales_l, qs
      {"IQ1_M", {K, K / 8 + K / 16 + K / 32}},          // qs, qh, scales
      {"TQ1_0", {K, (K - 4 * K / 64) / 5 + K / 64 + 2}},  // qs (base-3), qh, d
      {"TQ2_0", {K, K / 4 + 2}},                        // qs, d
      {"MXFP4", {32, 1 + 32 / 2}},                      // e8m0 e, qs
      {"NVFP4", {64, 64 / 16 + 64 / 2}},                // 4 ue4m3 d, qs
      {"Q1_0", {128, 2 + 128 / 8}},                     // d, qs
  };
  ASSERT_EQ(all_ggml_types().size(), from_structs.size());
  for (const auto& t : all_ggml_types()) {
    auto it = from_structs.find(t.name);
    ASSERT_NE(it, from_structs.end()) << t.name;
    EXPECT_EQ(t.block_size, it->second.first) << t.name;
    EXPECT_EQ(t.type_size, it->second.second) << t.name;
    EXPECT_EQ(t.quantized, t.block_size > 1) << t.name;
  }
}

TEST(GgmlTypes, IdsNamesAndRemovedIds) {
  uint32_t prev = 0;
  bool first = true;
  for (const auto& t : all_ggml_types()) {
    const uint32_t id = static_cast<uint32_t>(t.type);
    if (!first) {
      EXPECT_GT(id, prev) << "table not in id order at " << t.name;
    }
    first = false;
    prev = id;
    ASSERT_EQ(find_ggml_type(id), &t);
    EXPECT_EQ(ggml_type_from_name(t.name), t.type);
    std::string lower = t.name;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_EQ(ggml_type_from_name(lower), t.type);
  }
  // Ids ggml retired stay unknown, and say so.
  for (uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u}) {
    EXPECT_EQ(find_ggml_type(removed), nullptr) << removed;
    EXPECT_NE(ggml_type_id_description(removed).find("removed"), std::string::npos);
  }
  EXPECT_EQ(find_ggml_type(1000), nullptr);
  EXPECT_EQ(find_ggml_type(0xFFFFFFFFu), nullptr);
  EXPECT_EQ(ggml_type_id_description(31), "removed type Q4_0_4_4 (31)");
  EXPECT_FALSE(ggml_type_from_name("Q4_0_4_4").has_value());
  // Plain types map to qforge dtypes both ways.
  for (const auto& t : all_ggml_types()) {
    auto d = ggml_type_to_dtype(t.type);
    EXPECT_EQ(d.has_value(), !t.quantized) << t.name;
    if (d) {
      EXPECT_EQ(dtype_size(*d), t.type_size) << t.name;
      EXPECT_EQ(ggml_type_from_dtype(*d), t.type);
    }
  }
}

TEST(GgmlTypes, TensorByteSizes) {
  const std::vector<int64_t> f32_ne = {5, 3};
  EXPECT_EQ(*ggml_tensor_nbytes(GgmlType::F32, f32_ne), 60u);
  const std::vector<int64_t> q4k_ne = {512, 3};
  EXPECT_EQ(*ggml_tensor_nbytes(GgmlType::Q4_K, q4k_ne), 2u * 3u * 144u);
  const std::vector<int64_t> scalar = {};
  EXPECT_EQ(*ggml_tensor_nbytes(GgmlType::F16, scalar), 2u);
  const std::vector<int64_t> empty = {0, 7};
  EXPECT_EQ(*ggml_tensor_nbytes(GgmlType::Q8_0, empty), 0u);

  const std::vector<int64_t> ragged = {255, 2};
  auto r = ggml_tensor_nbytes(GgmlType::Q4_K, ragged);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("block size 256"), std::string::npos) << r.status().message();
  const std::vector<int64_t> negative = {4, -1};
  EXPECT_FALSE(ggml_tensor_nbytes(GgmlType::F32, negative).has_value());
  const int64_t big = int64_t{1} << 31;
  const std::vector<int64_t> huge = {big, big, big};  // 2^93 elements
  EXPECT_FALSE(ggml_tensor_nbytes(GgmlType::F32, huge).has_value());
  // Holds no bytes, but numel/strides multiply the other dimensions first (a fuzz finding).
  const std::vector<int64_t> empty_but_huge = {0, big << 3, big << 3};
  auto e = ggml_tensor_nbytes(GgmlType::F32, empty_but_huge);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.status().message().find("overflows int64"), std::string::npos) << e.status().message();
  const std::vector<int64_t> bytes_overflow = {int64_t{1} << 62};  // element count fits, bytes do not
  EXPECT_FALSE(ggml_tensor_nbytes(GgmlType::F32, bytes_overflow).has_value());
}

// The quantization format table maps some formats to ggml types; those rows must agree with the
// container's view of the type, or qforge would write tensors whose byte size llama.cpp rejects.
TEST(GgmlTypes, AgreeWithTheFormatTable) {
  int mapped = 0;
  for (const FormatTraits& row : all_formats()) {
    if (row.gguf_type < 0) continue;
    ++mapped;
    SCOPED_TRACE(std::string("format row ") + row.name + ", gguf_type " + std::to_string(row.gguf_type));
    const GgmlTypeInfo* ggml = find_ggml_type(static_cast<uint32_t>(row.gguf_type));
    ASSERT_NE(ggml, nullptr) << ggml_type_id_description(static_cast<uint32_t>(row.gguf_type));
    EXPECT_EQ(find_format_by_gguf_type(row.gguf_type), &row) << "two rows claim one ggml type";
    if (row.block > 0) {
      EXPECT_EQ(row.block, ggml->block_size) << ggml->name;
      EXPECT_EQ(static_cast<uint32_t>(row.bytes_per_block), ggml->type_size) << ggml->name;
    } else {
      // A plain cast (f32/f16/bf16): one element per block, max_bits / 8 bytes each.
      EXPECT_EQ(ggml->block_size, 1) << ggml->name << " is a block type but the row has no fixed block";
      EXPECT_EQ(static_cast<uint32_t>(row.max_bits / 8), ggml->type_size) << ggml->name;
    }
  }
  EXPECT_GT(mapped, 0) << "no format row maps to a ggml type";
}

// ---------------------------------------------------------------------------------------------
// Metadata round trip

std::vector<GgufKeyValue> every_value_type() {
  std::vector<GgufKeyValue> kv;
  kv.push_back({"general.architecture", GgufValue("llama")});
  kv.push_back({"test.u8", GgufValue(uint8_t{255})});
  kv.push_back({"test.i8", GgufValue(int8_t{-128})});
  kv.push_back({"test.u16", GgufValue(uint16_t{65535})});
  kv.push_back({"test.i16", GgufValue(int16_t{-32768})});
  kv.push_back({"test.u32", GgufValue(uint32_t{4000000000u})});
  kv.push_back({"test.i32", GgufValue(int32_t{-2000000000})});
  kv.push_back({"test.f32", GgufValue(1e-5f)});
  kv.push_back({"test.bool_true", GgufValue(true)});
  kv.push_back({"test.bool_false", GgufValue(false)});
  kv.push_back({"test.string", GgufValue(std::string("h\xC3\xA9llo \0 w\xE2\x82\xACrld", 17))});  // UTF-8 and a NUL
  kv.push_back({"test.empty_string", GgufValue(std::string())});
  kv.push_back({"test.u64", GgufValue(std::numeric_limits<uint64_t>::max())});
  kv.push_back({"test.i64", GgufValue(std::numeric_limits<int64_t>::min())});
  kv.push_back({"test.f64", GgufValue(-2.5e300)});
  kv.push_back({"test.arr_u8", GgufValue::array(std::vector<uint8_t>{0, 1, 255})});
  kv.push_back({"test.arr_i8", GgufValue::array(std::vector<int8_t>{-1, 0, 127})});
  kv.push_back({"test.arr_u16", GgufValue::array(std::vector<uint16_t>{1, 65535})});
  kv.push_back({"test.arr_i16", GgufValue::array(std::vector<int16_t>{-300, 300})});
  kv.push_back({"test.arr_u32", GgufValue::array(std::vector<uint32_t>{7, 8, 9})});
  kv.push_back({"test.arr_i32", GgufValue::array(std::vector<int32_t>{-7, 1, 6})});
  kv.push_back({"test.arr_f32", GgufValue::array(std::vector<float>{0.5f, -1.25f, 3e38f})});
  kv.push_back({"test.arr_bool", GgufValue::array(std::vector<bool>{true, false, true, true})});
  kv.push_back({"test.arr_string", GgufValue::array(std::vector<std::string>{"<unk>", "", "\xE2\x96\x81the", "a b"})});
  kv.push_back({"test.arr_u64", GgufValue::array(std::vector<uint64_t>{0, std::numeric_limits<uint64_t>::max()})});
  kv.push_back({"test.arr_i64", GgufValue::array(std::vector<int64_t>{std::numeric_limits<int64_t>::min(), 5})});
  kv.push_back({"test.arr_f64", GgufValue::array(std::vector<double>{1e-300, -0.125})});
  kv.push_back({"test.arr_empty_f32", GgufValue::array(std::vector<float>{})});
  kv.push_back({"test.arr_empty_string", GgufValue::array(std::vector<std::string>{})});
  kv.push_back({"test.nested", GgufValue::array_of_arrays({
                                   GgufValue::array(std::vector<int32_t>{1, 2}),
                                   GgufValue::array(std::vector<std::string>{"x"}),
                                   GgufValue::array(std::vector<float>{}),
                                   GgufValue::array_of_arrays({GgufValue::array(std::vector<bool>{false})}),
                               })});
  kv.push_back({"test.nested_empty", GgufValue::array_of_arrays({})});
  return kv;
}

TEST(GgufMetadata, EveryValueTypeRoundTrips) {
  const std::string path = test::temp_dir() + "/meta.gguf";
  GgufWriter w(path);
  const auto kvs = every_value_type();
  for (const auto& kv : kvs) ASSERT_TRUE(w.set(kv.key, kv.value).is_ok()) << kv.key;
  ASSERT_TRUE(w.finish().is_ok());

  auto f = GgufFile::open(path);
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_TRUE(f->tensors().empty());
  ASSERT_EQ(f->metadata().size(), kvs.size());
  for (size_t i = 0; i < kvs.size(); ++i) {
    EXPECT_EQ(f->metadata()[i].key, kvs[i].key) << "keys must keep insertion order";
    EXPECT_TRUE(f->metadata()[i].value == kvs[i].value) << kvs[i].key << ": " << f->metadata()[i].value.describe();
    EXPECT_EQ(f->metadata()[i].value.type(), kvs[i].value.type()) << kvs[i].key;
  }
  // A metadata-only file ends right after its last value: no data section, no padding.
  EXPECT_EQ(f->data_offset(), f->file_size());

  const GgufValue* nested = f->find("test.nested");
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->element_type(), GgufValueType::array);
  ASSERT_EQ(nested->size(), 4u);
  const auto& items = *nested->array_if<GgufValue>();
  EXPECT_EQ(items[0].element_type(), GgufValueType::i32);
  EXPECT_EQ(items[1].element_type(), GgufValueType::string);
  EXPECT_EQ(items[2].size(), 0u);
  EXPECT_EQ(items[3].element_type(), GgufValueType::array);
  EXPECT_EQ(nested->type_description(), "array of array");
}

TEST(GgufMetadata, TypedGettersConvertAndNameTheKey) {
  GgufWriter w("unused.gguf");
  ASSERT_TRUE(w.set_string("general.architecture", "llama").is_ok());
  ASSERT_TRUE(w.set_u32("llama.block_count", 8).is_ok());
  ASSERT_TRUE(w.set("llama.context_length", GgufValue(uint64_t{4096})).is_ok());
  ASSERT_TRUE(w.set("test.negative", GgufValue(int32_t{-3})).is_ok());
  ASSERT_TRUE(w.set("test.big", GgufValue(uint64_t{1} << 40)).is_ok());
  ASSERT_TRUE(w.set_f32("llama.rope.freq_base", 10000.0f).is_ok());
  ASSERT_TRUE(w.set_bool("test.flag", true).is_ok());
  ASSERT_TRUE(w.set("tokenizer.ggml.token_type", GgufValue::array(std::vector<int32_t>{1, 2, 3})).is_ok());
  ASSERT_TRUE(w.set("tokenizer.ggml.scores", GgufValue::array(std::vector<float>{-1.f, -2.f, -3.f})).is_ok());
  ASSERT_TRUE(w.set_string_array("tokenizer.ggml.tokens", {"a", "b", "c"}).is_ok());
  auto bytes = w.to_bytes();
  ASSERT_TRUE(bytes.has_value());
  auto f = parse_bytes(*bytes);
  ASSERT_TRUE(f.has_value()) << f.status().to_string();

  EXPECT_EQ(*f->get_string("general.architecture"), "llama");
  EXPECT_EQ(*f->get_u32("llama.block_count"), 8u);
  EXPECT_EQ(*f->get_u32("llama.context_length"), 4096u);  // u64 in the file, read as u32
  EXPECT_EQ(*f->get_uint("llama.context_length"), 4096u);
  EXPECT_EQ(*f->get_int("test.negative"), -3);
  EXPECT_EQ(*f->get_float("llama.rope.freq_base"), 10000.0);
  EXPECT_TRUE(*f->get_bool("test.flag"));
  EXPECT_EQ(*f->get_int_array("tokenizer.ggml.token_type"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(*f->get_float_array("tokenizer.ggml.scores"), (std::vector<float>{-1.f, -2.f, -3.f}));
  auto tokens = f->get_array<std::string>("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.has_value());
  EXPECT_EQ(tokens->size(), 3u);
  EXPECT_EQ((*tokens)[2], "c");

  auto wrong = f->get_u32("general.architecture");
  ASSERT_FALSE(wrong.has_value());
  EXPECT_NE(wrong.status().message().find("mem.gguf: key 'general.architecture' has type string, expected an unsigned integer"),
            std::string::npos)
      << wrong.status().message();
  auto negative = f->get_uint("test.negative");
  ASSERT_FALSE(negative.has_value());
  EXPECT_NE(negative.status().message().find("negative"), std::string::npos) << negative.status().message();
  auto too_big = f->get_u32("test.big");
  ASSERT_FALSE(too_big.has_value());
  EXPECT_NE(too_big.status().message().find("does not fit in u32"), std::string::npos) << too_big.status().message();
  auto missing = f->get_u32("llama.embedding_length");
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.status().message().find("'llama.embedding_length' not found"), std::string::npos);
  auto wrong_array = f->get_array<int32_t>("tokenizer.ggml.tokens");
  ASSERT_FALSE(wrong_array.has_value());
  EXPECT_NE(wrong_array.status().message().find("has type array of string, expected an array of i32"), std::string::npos)
      << wrong_array.status().message();
  EXPECT_FALSE(f->get_float("llama.block_count").has_value());
  EXPECT_FALSE(f->get_string("tokenizer.ggml.tokens").has_value());
  EXPECT_FALSE(f->get_bool("llama.block_count").has_value());

  EXPECT_EQ(f->find("tokenizer.ggml.tokens")->describe(2), "[string x 3: \"a\", \"b\", ...]");
  EXPECT_EQ(f->find("llama.block_count")->describe(), "8");
}

// ---------------------------------------------------------------------------------------------
// Tensors

struct TensorCase {
  std::string name;
  GgmlType type;
  Shape shape;  // row-major
  std::vector<uint8_t> bytes;
};

std::vector<TensorCase> tensor_cases() {
  std::vector<TensorCase> cases;
  auto add = [&](std::string name, GgmlType type, Shape shape) {
    std::vector<int64_t> ne(shape.rbegin(), shape.rend());
    const uint64_t n = *ggml_tensor_nbytes(type, ne);
    cases.push_back({std::move(name), type, std::move(shape), random_bytes(n, static_cast<uint32_t>(cases.size() + 1))});
  };
  add("token_embd.weight", GgmlType::F32, {3, 5});
  add("output_norm.weight", GgmlType::F16, {7});
  add("blk.0.attn_q.weight", GgmlType::BF16, {2, 3, 2});
  add("i8", GgmlType::I8, {9});
  add("i16", GgmlType::I16, {2, 2});
  add("i32", GgmlType::I32, {1, 3});
  add("i64", GgmlType::I64, {2});
  add("f64_4d", GgmlType::F64, {1, 2, 1, 3});
  add("blk.0.ffn_down.weight", GgmlType::Q8_0, {2, 64});
  add("blk.0.ffn_up.weight", GgmlType::Q4_K, {1, 256});
  add("iq2", GgmlType::IQ2_XXS, {256});  // a type qforge does not quantize to
  add("empty", GgmlType::F32, {0, 4});
  return cases;
}

TEST(GgufTensors, RoundTripWithAlignedOffsetsAndZeroCopyViews) {
  for (uint32_t align : {32u, 64u, 8u, 4096u}) {
    SCOPED_TRACE("alignment " + std::to_string(align));
    const std::string path = test::temp_dir() + "/t.gguf";
    GgufWriter w(path);
    ASSERT_TRUE(w.set_string("general.architecture", "llama").is_ok());
    if (align != 32) {
      ASSERT_TRUE(w.set_u32("general.alignment", align).is_ok());
    }
    const auto cases = tensor_cases();
    for (const auto& c : cases) ASSERT_TRUE(w.add_tensor(c.name, c.type, c.shape, c.bytes.data(), c.bytes.size()).is_ok()) << c.name;
    ASSERT_TRUE(w.finish().is_ok());

    auto f = GgufFile::open(path);
    ASSERT_TRUE(f.has_value()) << f.status().to_string();
    EXPECT_EQ(f->alignment(), align);
    EXPECT_EQ(f->data_offset() % align, 0u);
    ASSERT_EQ(f->tensors().size(), cases.size());
    uint64_t expected_offset = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
      const auto& c = cases[i];
      const GgufTensorInfo& t = f->tensors()[i];
      EXPECT_EQ(t.name, c.name);
      EXPECT_EQ(t.type, c.type);
      EXPECT_EQ(t.shape, c.shape);
      EXPECT_EQ(t.ne, std::vector<int64_t>(c.shape.rbegin(), c.shape.rend()));
      EXPECT_EQ(t.nbytes, c.bytes.size());
      EXPECT_EQ(t.offset % align, 0u) << t.name;
      EXPECT_EQ(t.offset, expected_offset) << "ggml layout: each tensor padded to the alignment";
      expected_offset += (c.bytes.size() + align - 1) / align * align;
      auto bytes = f->tensor_bytes(t);
      ASSERT_EQ(bytes.size(), c.bytes.size());
      EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), c.bytes.begin())) << t.name;
      EXPECT_EQ(f->find_tensor(c.name), &t);

      auto tensor = f->tensor(c.name);
      if (ggml_type_to_dtype(c.type)) {
        ASSERT_TRUE(tensor.has_value()) << tensor.status().to_string();
        EXPECT_EQ(tensor->shape(), c.shape);
        EXPECT_EQ(tensor->dtype(), *ggml_type_to_dtype(c.type));
        ASSERT_EQ(tensor->nbytes(), c.bytes.size());
        if (!c.bytes.empty()) {
          EXPECT_EQ(std::memcmp(tensor->data(), c.bytes.data(), c.bytes.size()), 0);
          EXPECT_EQ(tensor->data(), static_cast<const void*>(bytes.data())) << "aligned tensors are views, not copies";
        }
      } else {
        ASSERT_FALSE(tensor.has_value());
        EXPECT_EQ(tensor.status().code(), ErrorCode::unsupported);
        EXPECT_NE(tensor.status().message().find(ggml_type_name(c.type)), std::string::npos);
      }
    }
    EXPECT_EQ(f->data_offset() + expected_offset, f->file_size());
    EXPECT_FALSE(f->tensor("missing").has_value());
  }
}

TEST(GgufTensors, ViewsOutliveTheFileObject) {
  const std::string path = test::temp_dir() + "/v.gguf";
  GgufWriter w(path);
  const std::vector<float> values = {1.f, -2.f, 3.5f, 0.25f};
  ASSERT_TRUE(w.add_tensor("w", GgmlType::F32, {2, 2}, values.data(), values.size() * 4).is_ok());
  ASSERT_TRUE(w.finish().is_ok());
  Tensor t;
  {
    auto f = GgufFile::open(path);
    ASSERT_TRUE(f.has_value());
    t = *f->tensor("w");
  }
  ASSERT_EQ(t.numel(), 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(t.data_as<float>()[i], values[static_cast<size_t>(i)]);
}

TEST(GgufTensors, MisalignedDataIsCopiedNotViewed) {
  // Alignment 1 puts an F32 tensor on an odd address; tensor() must still return correct values.
  GgufWriter w("unused.gguf");
  ASSERT_TRUE(w.set_u32("general.alignment", 1).is_ok());
  ASSERT_TRUE(w.set_string("k", "abc").is_ok());
  const uint8_t one = 7;
  const std::vector<float> values = {1.f, 2.f, 3.f};
  ASSERT_TRUE(w.add_tensor("a", GgmlType::I8, {1}, &one, 1).is_ok());
  ASSERT_TRUE(w.add_tensor("b", GgmlType::F32, {3}, values.data(), 12).is_ok());
  auto bytes = w.to_bytes();
  ASSERT_TRUE(bytes.has_value());
  auto f = parse_bytes(*bytes);
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  EXPECT_EQ(f->find_tensor("b")->offset, 1u);
  auto t = f->tensor("b");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data()) % alignof(float), 0u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(t->data_as<float>()[i], values[static_cast<size_t>(i)]);
}

// ---------------------------------------------------------------------------------------------
// Writer

TEST(GgufWriterTest, DeterministicAndFileMatchesMemory) {
  auto build = [](const std::string& path) {
    auto w = std::make_unique<GgufWriter>(path);
    for (const auto& kv : every_value_type()) EXPECT_TRUE(w->set(kv.key, kv.value).is_ok());
    return w;
  };
  const auto cases = tensor_cases();
  const std::string dir = test::temp_dir();
  std::vector<std::vector<uint8_t>> outputs;
  for (int run = 0; run < 2; ++run) {
    auto w = build(dir + "/d" + std::to_string(run) + ".gguf");
    for (const auto& c : cases) ASSERT_TRUE(w->add_tensor(c.name, c.type, c.shape, c.bytes.data(), c.bytes.size()).is_ok());
    auto bytes = w->to_bytes();
    ASSERT_TRUE(bytes.has_value());
    ASSERT_TRUE(w->finish().is_ok());
    EXPECT_EQ(read_all(dir + "/d" + std::to_string(run) + ".gguf"), *bytes) << "finish() and to_bytes() differ";
    outputs.push_back(std::move(*bytes));
  }
  EXPECT_EQ(outputs[0], outputs[1]);
  // Only the two outputs exist: no temp files were left behind.
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file() ? 1 : 0;
  EXPECT_EQ(files, 2u);
}

TEST(GgufWriterTest, LazyTensorsStreamAndFailuresLeaveNothing) {
  const std::string dir = test::temp_dir();
  const std::string path = dir + "/lazy.gguf";
  const auto cases = tensor_cases();
  {
    GgufWriter w(path);
    for (const auto& c : cases) {
      ASSERT_TRUE(w.add_tensor_lazy(c.name, c.type, c.shape, [&c](uint8_t* out, size_t n) {
                     if (n != c.bytes.size()) return Status::error(ErrorCode::internal, "wrong size " + std::to_string(n));
                     std::copy(c.bytes.begin(), c.bytes.end(), out);
                     return Status::ok();
                   }).is_ok());
    }
    ASSERT_TRUE(w.finish().is_ok());
  }
  GgufWriter eager("unused.gguf");
  for (const auto& c : cases) ASSERT_TRUE(eager.add_tensor(c.name, c.type, c.shape, c.bytes.data(), c.bytes.size()).is_ok());
  EXPECT_EQ(read_all(path), *eager.to_bytes()) << "lazy and eager tensors must give the same bytes";

  const std::string failed = dir + "/failed.gguf";
  GgufWriter w(failed);
  ASSERT_TRUE(w.add_tensor_lazy("ok", GgmlType::F32, {4}, [](uint8_t* out, size_t n) {
                 std::memset(out, 0, n);
                 return Status::ok();
               }).is_ok());
  ASSERT_TRUE(w.add_tensor_lazy("bad", GgmlType::F32, {4}, [](uint8_t*, size_t) {
                 return invalid_argument("producer failed on purpose");
               }).is_ok());
  Status st = w.finish();
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("tensor 'bad'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("producer failed on purpose"), std::string::npos);
  EXPECT_FALSE(fs::exists(failed));
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "temp file left: " << e.path();
}

TEST(GgufWriterTest, RejectsInvalidInput) {
  GgufWriter w("out.gguf");
  EXPECT_FALSE(w.set("", GgufValue(uint32_t{1})).is_ok());
  EXPECT_FALSE(w.set("tab\tkey", GgufValue(uint32_t{1})).is_ok());
  EXPECT_FALSE(w.set("caf\xC3\xA9", GgufValue(uint32_t{1})).is_ok());
  EXPECT_FALSE(w.set(std::string(kGgufMaxKeyBytes + 1, 'k'), GgufValue(uint32_t{1})).is_ok());
  EXPECT_TRUE(w.set(std::string(kGgufMaxKeyBytes, 'k'), GgufValue(uint32_t{1})).is_ok());
  EXPECT_FALSE(w.set("general.alignment", GgufValue(uint64_t{32})).is_ok());
  EXPECT_FALSE(w.set_u32("general.alignment", 48).is_ok());
  EXPECT_FALSE(w.set_u32("general.alignment", 0).is_ok());
  EXPECT_EQ(w.alignment(), 32u);
  EXPECT_TRUE(w.set_u32("general.alignment", 16).is_ok());
  EXPECT_EQ(w.alignment(), 16u);
  Status not_array = w.set("x.nested", GgufValue::array_of_arrays({GgufValue(uint8_t{1})}));
  EXPECT_FALSE(not_array.is_ok());
  EXPECT_NE(not_array.message().find("x.nested'[0]"), std::string::npos) << not_array.message();
  GgufValue deep = GgufValue::array(std::vector<uint8_t>{1});
  for (int i = 0; i < kGgufMaxArrayDepth; ++i) deep = GgufValue::array_of_arrays({deep});
  EXPECT_FALSE(w.set("x.deep", deep).is_ok());

  const float data[8] = {};
  EXPECT_TRUE(w.add_tensor("a", GgmlType::F32, {2, 4}, data, sizeof data).is_ok());
  EXPECT_FALSE(w.add_tensor("a", GgmlType::F32, {2, 4}, data, sizeof data).is_ok()) << "duplicate name";
  EXPECT_FALSE(w.add_tensor("", GgmlType::F32, {2, 4}, data, sizeof data).is_ok());
  EXPECT_FALSE(w.add_tensor(std::string(kGgufMaxTensorNameBytes + 1, 'n'), GgmlType::F32, {8}, data, sizeof data).is_ok());
  EXPECT_TRUE(w.add_tensor(std::string(kGgufMaxTensorNameBytes, 'n'), GgmlType::F32, {8}, data, sizeof data).is_ok());
  EXPECT_FALSE(w.add_tensor("b", GgmlType::F32, {1, 1, 1, 2, 4}, data, sizeof data).is_ok()) << "5 dims";
  EXPECT_FALSE(w.add_tensor("c", GgmlType::F32, {2, 4}, data, 16).is_ok()) << "byte count mismatch";
  EXPECT_FALSE(w.add_tensor("d", GgmlType::F32, {-2, -4}, data, sizeof data).is_ok());
  Status ragged = w.add_tensor("e", GgmlType::Q8_0, {1, 16}, data, 17);
  EXPECT_FALSE(ragged.is_ok());
  EXPECT_NE(ragged.message().find("block size 32"), std::string::npos) << ragged.message();
  EXPECT_FALSE(w.add_tensor("f", static_cast<GgmlType>(31), {32}, data, 18).is_ok()) << "removed type";
  EXPECT_FALSE(w.add_tensor_lazy("g", GgmlType::F32, {2}, nullptr).is_ok());
  EXPECT_EQ(w.tensor_count(), 2u);
}

TEST(GgufWriterTest, SetReplacesInPlace) {
  GgufWriter w("unused.gguf");
  ASSERT_TRUE(w.set_string("general.architecture", "llama").is_ok());
  ASSERT_TRUE(w.set_u32("llama.block_count", 1).is_ok());
  ASSERT_TRUE(w.set_string("general.architecture", "qwen2").is_ok());
  ASSERT_EQ(w.metadata().size(), 2u);
  EXPECT_EQ(w.metadata()[0].key, "general.architecture");
  EXPECT_EQ(*w.metadata()[0].value.get_if<std::string>(), "qwen2");
}

// ---------------------------------------------------------------------------------------------
// Malformed input

// Every strict prefix of a valid file is either rejected or (only when the cut falls in the
// optional padding after the last tensor's bytes) accepted with the same content; never a crash.
void check_every_prefix(const std::vector<uint8_t>& full) {
  auto whole = parse_bytes(full);
  ASSERT_TRUE(whole.has_value()) << whole.status().to_string();
  uint64_t needed = whole->data_offset();
  for (const auto& t : whole->tensors()) needed = std::max(needed, whole->data_offset() + t.offset + t.nbytes);
  // A metadata-only file ends with its last value, so every strict prefix must fail.
  if (whole->tensors().empty()) needed = full.size();
  for (size_t n = 0; n < full.size(); ++n) {
    // A fresh heap block of exactly n bytes, so ASan flags any read past the end.
    std::vector<uint8_t> prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    auto f = GgufFile::parse(prefix.data(), prefix.size(), "cut.gguf");
    if (n < needed) {
      ASSERT_FALSE(f.has_value()) << "prefix of " << n << " bytes accepted";
      EXPECT_NE(f.status().message().find("cut.gguf"), std::string::npos);
    } else {
      ASSERT_TRUE(f.has_value()) << "prefix of " << n << " bytes (only trailing padding cut) rejected: "
                                 << f.status().message();
      EXPECT_EQ(f->tensors().size(), whole->tensors().size());
    }
  }
}

TEST(GgufMalformed, EveryTruncationIsRejected) {
  GgufWriter w("unused.gguf");
  ASSERT_TRUE(w.set_string("general.architecture", "llama").is_ok());
  ASSERT_TRUE(w.set("a.scores", GgufValue::array(std::vector<float>{1.f, 2.f})).is_ok());
  ASSERT_TRUE(w.set_string_array("a.tokens", {"x", "", "yz"}).is_ok());
  ASSERT_TRUE(w.set("a.nested", GgufValue::array_of_arrays({GgufValue::array(std::vector<bool>{true})})).is_ok());
  ASSERT_TRUE(w.set_bool("a.flag", false).is_ok());
  const std::vector<float> v = {1.f, 2.f, 3.f};
  const std::vector<uint8_t> q = random_bytes(34, 9);
  ASSERT_TRUE(w.add_tensor("w", GgmlType::F32, {3}, v.data(), 12).is_ok());
  ASSERT_TRUE(w.add_tensor("q", GgmlType::Q8_0, {1, 32}, q.data(), q.size()).is_ok());
  check_every_prefix(*w.to_bytes());

  GgufWriter meta_only("unused.gguf");
  ASSERT_TRUE(meta_only.set_string("general.architecture", "gpt2").is_ok());
  ASSERT_TRUE(meta_only.set_string_array("tokenizer.ggml.tokens", {"a", "bc"}).is_ok());
  check_every_prefix(*meta_only.to_bytes());
}

TEST(GgufMalformed, HeaderErrors) {
  expect_rejected({}, {"too small"});
  expect_rejected({'G', 'G', 'U'}, {"too small"});
  expect_rejected(Bytes{{'G', 'G', 'U', 'X', 3, 0, 0, 0}}.b, {"bad magic 'GGUX'"});
  expect_rejected(Bytes{{'t', 'j', 'g', 'g', 3, 0, 0, 0}}.b, {"pre-GGUF"});
  expect_rejected(Bytes().header(0, 0, 1).b, {"version 1 is not supported"});
  expect_rejected(Bytes().header(0, 0, 4).b, {"version 4"});
  expect_rejected(Bytes().header(0, 0, 0x03000000u).b, {"big-endian"});
  expect_rejected(Bytes().header(0, 0, 0).b, {"version 0"});
  {
    auto f = parse_bytes(Bytes().header(0, 0, 1).b);
    EXPECT_EQ(f.status().code(), ErrorCode::unsupported);
  }
  expect_rejected(Bytes().header(uint64_t{1} << 62, 0).zeros(64).b, {"tensor_count 4611686018427387904"});
  expect_rejected(Bytes().header(0, uint64_t{1} << 62).zeros(64).b, {"metadata_kv_count 4611686018427387904"});
  expect_rejected(Bytes().header(0, ~uint64_t{0}).b, {"metadata_kv_count"});
  // Version 2 has the same layout and is accepted.
  auto v2 = parse_bytes(Bytes().header(0, 1, 2).str("k").u32(4).u32(7).b);
  ASSERT_TRUE(v2.has_value()) << v2.status().to_string();
  EXPECT_EQ(v2->version(), 2u);
}

TEST(GgufMalformed, MetadataErrors) {
  auto kv1 = [](auto&& fill) {
    Bytes b;
    b.header(0, 1);
    fill(b);
    b.zeros(16);  // so the count check passes and the field under test fails
    return b.b;
  };
  expect_rejected(kv1([](Bytes& b) { b.u64(uint64_t{1} << 62); }), {"key #0 length 4611686018427387904", "runs past the end"});
  expect_rejected(kv1([](Bytes& b) { b.u64(1000); }), {"key #0 length 1000 runs past the end"});
  expect_rejected(kv1([](Bytes& b) { b.u64(70000).zeros(70000); }), {"key #0", "limit of 65535"});
  expect_rejected(kv1([](Bytes& b) { b.str("").u32(0).u8(0); }), {"key #0 is empty"});
  expect_rejected(kv1([](Bytes& b) { b.str("k").u32(13).u8(0); }), {"key 'k' value type 13"});
  expect_rejected(kv1([](Bytes& b) { b.str("caf\xC3\xA9").u32(0).u8(0); }), {"key #0 has a byte outside printable ASCII"});
  expect_rejected(kv1([](Bytes& b) { b.str("k").u32(8).u64(uint64_t{1} << 62); }), {"key 'k' value length"});
  expect_rejected(kv1([](Bytes& b) { b.str("k").u32(7).u8(2); }), {"bool with byte value 2"});
  expect_rejected(kv1([](Bytes& b) { b.str("k").u32(9).u32(4).u64(uint64_t{1} << 62).zeros(16); }),
                  {"array of 4611686018427387904 u32 elements"});
  expect_rejected(kv1([](Bytes& b) { b.str("k").u32(9).u32(8).u64(~uint64_t{0}).zeros(64); }), {"string elements"});
  expect_rejected(kv1([](Bytes& b) { b.str("k").u32(9).u32(9).u64(~uint64_t{0} / 2).zeros(64); }), {"array elements"});
  expect_rejected(kv1([](Bytes& b) { b.str("k").u32(9).u32(13).u64(0); }), {"element type 13"});
  expect_rejected(kv1([](Bytes& b) { b.str("k").u32(9).u32(7).u64(2).u8(1).u8(5); }), {"k' value[1]", "byte value 5"});
  expect_rejected(kv1([](Bytes& b) {
                    b.str("k").u32(9);
                    for (int i = 0; i < kGgufMaxArrayDepth; ++i) b.u32(9).u64(1);
                    b.u32(0).u64(0);
                  }),
                  {"nested more than"});
  // Nesting up to the limit is fine.
  auto ok = parse_bytes(kv1([](Bytes& b) {
    b.str("k").u32(9);
    for (int i = 0; i < kGgufMaxArrayDepth - 1; ++i) b.u32(9).u64(1);
    b.u32(0).u64(0);
  }));
  EXPECT_TRUE(ok.has_value()) << ok.status().to_string();

  expect_rejected(Bytes().header(0, 2).str("k").u32(0).u8(1).str("k").u32(0).u8(2).b, {"duplicate key 'k'"});
  expect_rejected(Bytes().header(0, 1).str("general.alignment").u32(10).u64(32).b,
                  {"general.alignment' has type u64, expected u32"});
  expect_rejected(Bytes().header(0, 1).str("general.alignment").u32(4).u32(48).b, {"48 is not a power of two"});
  expect_rejected(Bytes().header(0, 1).str("general.alignment").u32(4).u32(0).b, {"not a power of two"});
}

// One tensor info plus `data` bytes of data section, with the default alignment.
std::vector<uint8_t> one_tensor(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset,
                                size_t data) {
  return Bytes().header(1, 0).tensor(name, std::move(ne), type, offset).pad_to(32).zeros(data).b;
}

TEST(GgufMalformed, TensorInfoErrors) {
  EXPECT_TRUE(parse_bytes(one_tensor("w", {4, 2}, 0, 0, 32)).has_value());
  expect_rejected(one_tensor("w", {1, 1, 1, 1, 1}, 0, 0, 32), {"tensor 'w' has 5 dimensions"});
  expect_rejected(one_tensor("w", {4}, 99, 0, 32), {"tensor 'w' has unknown type 99"});
  expect_rejected(one_tensor("w", {32}, 31, 0, 32), {"removed type Q4_0_4_4 (31)"});
  expect_rejected(one_tensor("w", {33}, 8, 0, 64), {"tensor 'w' (Q8_0", "block size 32"});
  expect_rejected(one_tensor("w", {uint64_t{1} << 31, uint64_t{1} << 31, uint64_t{1} << 31}, 0, 0, 32),
                  {"tensor 'w'", "overflows"});
  expect_rejected(one_tensor("w", {uint64_t{1} << 62}, 0, 0, 32), {"byte size overflows"});
  expect_rejected(one_tensor("w", {uint64_t{1} << 63}, 0, 0, 32), {"does not fit in int64"});
  expect_rejected(one_tensor("w", {4}, 0, 4, 64), {"offset 4 is not a multiple of the alignment 32"});
  expect_rejected(one_tensor("w", {16}, 0, 32, 64), {"runs past the end of the data section"});
  expect_rejected(one_tensor("w", {16}, 0, 0, 63), {"runs past the end"});
  expect_rejected(one_tensor("w", {4}, 0, ~uint64_t{0} - 31, 64), {"runs past the end"});
  expect_rejected(one_tensor("", {4}, 0, 0, 32), {"tensor #0 has an empty name"});
  expect_rejected(one_tensor(std::string(64, 'n'), {4}, 0, 0, 32), {"tensor #0 name is 64 bytes"});
  expect_rejected(Bytes().header(1, 0).str("wwwwwwwwww").u32(1).u64(4).b, {"truncated: tensor 'wwwwwwwwww' type"});
  expect_rejected(Bytes().header(1, 0).tensor("w", {4}, 0, 0).b, {"data section would start at byte 64"});
  {
    auto f = parse_bytes(one_tensor("w", {4}, 99, 0, 32));
    EXPECT_EQ(f.status().code(), ErrorCode::unsupported);
  }

  auto two = [](uint64_t off_a, uint64_t bytes_a, uint64_t off_b, std::string_view name_b) {
    return Bytes()
        .header(2, 0)
        .tensor("a", {bytes_a / 4}, 0, off_a)
        .tensor(name_b, {8}, 0, off_b)
        .pad_to(32)
        .zeros(256)
        .b;
  };
  EXPECT_TRUE(parse_bytes(two(0, 32, 32, "b")).has_value());
  EXPECT_TRUE(parse_bytes(two(64, 32, 0, "b")).has_value()) << "infos need not be in offset order";
  expect_rejected(two(0, 64, 32, "b"), {"overlaps tensor 'a'"});
  expect_rejected(two(0, 32, 0, "b"), {"overlaps"});
  expect_rejected(two(0, 32, 64, "a"), {"duplicate tensor name 'a'"});
  // Zero-byte tensors overlap nothing.
  EXPECT_TRUE(parse_bytes(Bytes().header(2, 0).tensor("a", {0}, 0, 0).tensor("b", {8}, 0, 0).pad_to(32).zeros(32).b)
                  .has_value());
}

TEST(GgufMalformed, CustomAlignmentIsHonoured) {
  // With general.alignment = 64 the data section starts at a multiple of 64 and offsets must be too.
  auto file = [](uint64_t offset) {
    return Bytes().header(1, 1).str("general.alignment").u32(4).u32(64).tensor("w", {8}, 0, offset).pad_to(64).zeros(128).b;
  };
  auto ok = parse_bytes(file(64));
  ASSERT_TRUE(ok.has_value()) << ok.status().to_string();
  EXPECT_EQ(ok->alignment(), 64u);
  EXPECT_EQ(ok->data_offset() % 64, 0u);
  expect_rejected(file(32), {"offset 32 is not a multiple of the alignment 64"});
}

TEST(GgufMalformed, OpenNamesTheFile) {
  const std::string path = test::temp_dir() + "/broken.gguf";
  ASSERT_TRUE(write_file_atomic(path, "GGUF\x01\0\0\0").is_ok());
  auto f = GgufFile::open(path);
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.status().message().find(path), std::string::npos) << f.status().message();
  auto missing = GgufFile::open(path + ".missing");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.status().code(), ErrorCode::io_error);
}

// ---------------------------------------------------------------------------------------------
// Real files

std::vector<std::vector<int64_t>> read_expected_ids(const std::string& path) {
  std::vector<std::vector<int64_t>> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::vector<int64_t> ids;
    int64_t id;
    while (ss >> id) ids.push_back(id);
    rows.push_back(std::move(ids));
  }
  return rows;
}

TEST(GgufRealFiles, LlamaCppVocabFiles) {
  QFORGE_REQUIRE_SHARED("tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf");
  const std::string dir = test::shared_dir() + "/tokenizers/llama.cpp-vocab/";
  int opened = 0;
  for (const char* name : {"ggml-vocab-llama-spm", "ggml-vocab-gpt-2", "ggml-vocab-bert-bge", "ggml-vocab-phi-3"}) {
    const std::string path = dir + name + ".gguf";
    if (!fs::exists(path)) continue;
    SCOPED_TRACE(path);
    auto f = GgufFile::open(path);
    ASSERT_TRUE(f.has_value()) << f.status().to_string();
    ++opened;
    EXPECT_EQ(f->version(), 3u);
    EXPECT_TRUE(f->tensors().empty());
    auto arch = f->get_string("general.architecture");
    ASSERT_TRUE(arch.has_value()) << arch.status().to_string();
    EXPECT_FALSE(arch->empty());
    EXPECT_EQ(f->metadata().front().key, "general.architecture");
    std::string keys;
    for (const auto& kv : f->metadata()) keys += "  " + kv.key + " (" + kv.value.type_description() + ") = " + kv.value.describe(3) + "\n";
    std::printf("%s: architecture %s, %zu keys\n%s", name, arch->c_str(), f->metadata().size(), keys.c_str());

    auto tokens = f->get_array<std::string>("tokenizer.ggml.tokens");
    ASSERT_TRUE(tokens.has_value()) << tokens.status().to_string();
    ASSERT_GT(tokens->size(), 1000u);
    const int64_t n_vocab = static_cast<int64_t>(tokens->size());
    // Every per-token array has one entry per token.
    for (const char* per_token : {"tokenizer.ggml.scores", "tokenizer.ggml.token_type"}) {
      if (const GgufValue* v = f->find(per_token)) {
        EXPECT_EQ(v->size(), tokens->size()) << per_token;
      }
    }
    if (f->contains("tokenizer.ggml.scores")) {
      EXPECT_TRUE(f->get_float_array("tokenizer.ggml.scores").has_value());
    }
    if (f->contains("tokenizer.ggml.token_type")) {
      EXPECT_TRUE(f->get_int_array("tokenizer.ggml.token_type").has_value());
    }
    if (const GgufValue* merges = f->find("tokenizer.ggml.merges")) {
      EXPECT_EQ(merges->element_type(), GgufValueType::string);
      EXPECT_GT(merges->size(), 0u);
    }
    // Special-token ids and the test vectors' ids all index into the vocabulary.
    for (const char* special : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"}) {
      if (!f->contains(special)) continue;
      auto id = f->get_uint(special);
      ASSERT_TRUE(id.has_value()) << id.status().to_string();
      EXPECT_LT(static_cast<int64_t>(*id), n_vocab) << special;
    }
    const auto expected = read_expected_ids(path + ".out");
    size_t checked = 0;
    for (const auto& row : expected)
      for (int64_t id : row) {
        EXPECT_GE(id, 0);
        EXPECT_LT(id, n_vocab);
        ++checked;
      }
    EXPECT_GT(checked, 0u);
    if (f->contains(*arch + ".vocab_size")) {
      EXPECT_EQ(*f->get_uint(*arch + ".vocab_size"), tokens->size());
    }

    // Copying every key through the writer reproduces llama.cpp's file byte for byte.
    GgufWriter copy("unused.gguf");
    for (const auto& kv : f->metadata()) ASSERT_TRUE(copy.set(kv.key, kv.value).is_ok()) << kv.key;
    auto bytes = copy.to_bytes();
    ASSERT_TRUE(bytes.has_value());
    const auto original = read_all(path);
    size_t first_diff = 0;
    while (first_diff < std::min(bytes->size(), original.size()) && (*bytes)[first_diff] == original[first_diff]) ++first_diff;
    EXPECT_EQ(first_diff, original.size()) << "rewritten " << bytes->size() << " bytes, original " << original.size();
    EXPECT_EQ(bytes->size(), original.size());
  }
  EXPECT_GT(opened, 0);
}

}  // namespace
}  // namespace qforge
