// safetensors: writer/reader round trips, determinism, strict validation of malformed files,
// sharded checkpoints, atomic writes, and the real fixtures under ../shared.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qforge/atomic_file.h"
#include "qforge/safetensors.h"
#include "test_support.h"

namespace qforge {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;

constexpr DType kAllDTypes[] = {DType::f32,     DType::f16, DType::bf16, DType::f8_e4m3fn, DType::f8_e5m2,
                                DType::f8_e8m0, DType::i8,  DType::u8,   DType::i16,       DType::i32,
                                DType::i64,     DType::boolean, DType::f64};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string u64_le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// A file from a literal header and a data section.
std::string make_file(const std::string& header, const std::string& data) { return u64_le(header.size()) + header + data; }

// Deterministic bytes that differ per tensor, so a misplaced range is caught.
std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 12345u;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24);
  }
  return v;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Writes `bytes` to a temp file, opens it, and expects an error whose message names the file and
// contains every one of `needles`. Also checks parse() on the same buffer gives the same error.
void expect_open_error(const std::string& bytes, const std::vector<std::string>& needles,
                       ErrorCode code = ErrorCode::parse_error) {
  const std::string path = test::temp_dir() + "/bad.safetensors";
  write_bytes(path, bytes);
  auto f = SafetensorsFile::open(path);
  ASSERT_FALSE(f.has_value()) << "malformed file was accepted";
  const std::string msg = f.status().message();
  EXPECT_EQ(f.status().code(), code) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
  for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  auto p = SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "buffer");
  ASSERT_FALSE(p.has_value());
  EXPECT_EQ(p.status().code(), code);
}

struct Written {
  std::string name;
  DType dtype;
  Shape shape;
  std::vector<uint8_t> bytes;
};

std::vector<Written> every_dtype_and_shape() {
  const std::vector<Shape> shapes = {{}, {0}, {2, 0}, {3}, {2, 3}, {1, 2, 5}};
  std::vector<Written> out;
  uint32_t seed = 1;
  for (DType t : kAllDTypes) {
    for (size_t s = 0; s < shapes.size(); ++s) {
      Written w{std::string("t.") + dtype_name(t) + "." + std::to_string(s), t, shapes[s], {}};
      w.bytes = pattern(static_cast<size_t>(shape_numel(w.shape)) * dtype_size(t), seed++);
      out.push_back(std::move(w));
    }
  }
  return out;
}

TEST(Safetensors, RoundTripEveryDTypeAndShape) {
  const auto tensors = every_dtype_and_shape();
  const std::string path = test::temp_dir() + "/all.safetensors";
  SafetensorsWriter w(path);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (i % 2 == 0) {
      ASSERT_TRUE(w.add(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size()).is_ok());
    } else {
      auto bytes = t.bytes;
      ASSERT_TRUE(w.add_lazy(t.name, t.dtype, t.shape, [bytes](uint8_t* out, size_t n) {
                     if (n != bytes.size()) return invalid_argument("size");
                     if (n > 0) std::memcpy(out, bytes.data(), n);
                     return Status::ok();
                   }).is_ok());
    }
  }
  ASSERT_TRUE(w.finish().is_ok());

  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  ASSERT_EQ(f->tensors().size(), tensors.size());
  for (const auto& t : tensors) {
    SCOPED_TRACE(t.name);
    const auto* info = f->find(t.name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, t.dtype);
    EXPECT_EQ(info->shape, t.shape);
    auto view = f->tensor(t.name);
    ASSERT_TRUE(view.has_value()) << view.status().to_string();
    EXPECT_EQ(view->dtype(), t.dtype);
    EXPECT_EQ(view->shape(), t.shape);
    ASSERT_EQ(view->nbytes(), t.bytes.size());
    if (!t.bytes.empty()) {
      EXPECT_EQ(0, std::memcmp(view->data(), t.bytes.data(), t.bytes.size()));
    }
    // The writer's layout keeps every tensor aligned, so views are zero-copy into the mapping.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(view->data()) % dtype_size(t.dtype), 0u);
    EXPECT_EQ(view->data(), f->tensor_bytes(*info));
  }
}

TEST(Safetensors, WriterLayoutFollowsTheSpec) {
  const auto tensors = every_dtype_and_shape();
  const std::string path = test::temp_dir() + "/layout.safetensors";
  SafetensorsWriter w(path);
  w.set_metadata("format", "pt");
  for (const auto& t : tensors) ASSERT_TRUE(w.add(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size()).is_ok());
  ASSERT_TRUE(w.finish().is_ok());
  const std::string bytes = read_bytes(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u) << "header length " << n << " is not padded to a multiple of 8";
  ASSERT_LE(8 + n, bytes.size());
  EXPECT_EQ(bytes[8], '{');
  const std::string header = bytes.substr(8, n);
  const auto last = header.find_last_not_of(' ');
  EXPECT_EQ(header[last], '}');
  EXPECT_LT(header.size() - last - 1, 8u) << "more padding than alignment needs";
  auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["__metadata__"]["format"], "pt");

  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  // Offsets are contiguous from 0 and cover the whole data section (what the reference reader requires).
  uint64_t expect_begin = 0;
  size_t prev_size = 16;
  for (const auto& t : f->tensors()) {
    EXPECT_EQ(t.begin, expect_begin) << t.name;
    EXPECT_LE(dtype_size(t.dtype), prev_size) << "not ordered by element size: " << t.name;
    prev_size = dtype_size(t.dtype);
    expect_begin = t.end;
  }
  EXPECT_EQ(8 + n + expect_begin, bytes.size());
}

TEST(Safetensors, MetadataRoundTrip) {
  const std::string path = test::temp_dir() + "/meta.safetensors";
  const std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"quote\"and\\slash", "new\nline\ttab"}, {"unicode \xC3\xA9\xE2\x82\xAC", "\xF0\x9F\x98\x80"}, {"empty", ""}};
  SafetensorsWriter w(path);
  for (const auto& [k, v] : meta) w.set_metadata(k, v);
  const float x[2] = {1.5f, -2.0f};
  ASSERT_TRUE(w.add("x", DType::f32, {2}, x, sizeof(x)).is_ok());
  ASSERT_TRUE(w.finish().is_ok());
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  EXPECT_EQ(f->metadata(), meta);

  // No metadata at all: no "__metadata__" key.
  const std::string path2 = test::temp_dir() + "/nometa.safetensors";
  SafetensorsWriter w2(path2);
  ASSERT_TRUE(w2.add("x", DType::f32, {2}, x, sizeof(x)).is_ok());
  ASSERT_TRUE(w2.finish().is_ok());
  EXPECT_EQ(read_bytes(path2).find("__metadata__"), std::string::npos);
  auto f2 = SafetensorsFile::open(path2);
  ASSERT_TRUE(f2.has_value());
  EXPECT_TRUE(f2->metadata().empty());
}

TEST(Safetensors, OutputIsDeterministicWhateverTheAddOrder) {
  const auto tensors = every_dtype_and_shape();
  const std::string dir = test::temp_dir();
  for (int run = 0; run < 2; ++run) {
    SafetensorsWriter w(dir + "/run" + std::to_string(run) + ".safetensors");
    w.set_metadata("b", "2");
    w.set_metadata("a", "1");
    for (size_t k = 0; k < tensors.size(); ++k) {
      const auto& t = tensors[run == 0 ? k : tensors.size() - 1 - k];  // second run adds in reverse
      if (run == 0) {
        ASSERT_TRUE(w.add(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size()).is_ok());
      } else {
        ASSERT_TRUE(w.add_lazy(t.name, t.dtype, t.shape, [&t](uint8_t* out, size_t n) {
                       EXPECT_NE(out, nullptr);
                       if (n > 0) std::memcpy(out, t.bytes.data(), n);
                       return Status::ok();
                     }).is_ok());
      }
    }
    ASSERT_TRUE(w.finish().is_ok());
  }
  const std::string a = read_bytes(dir + "/run0.safetensors"), b = read_bytes(dir + "/run1.safetensors");
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == b) << "two writes of the same tensors differ (" << a.size() << " vs " << b.size() << " bytes)";
}

TEST(Safetensors, NonContiguousTensorIsWrittenRowMajor) {
  // A transposed view of a 2x3 f32 tensor: the file must hold the 3x2 row-major values.
  Tensor base = Tensor::from_f32({2, 3}, {0, 1, 2, 3, 4, 5});
  Tensor t = Tensor::view(DType::f32, {3, 2}, {1, 3}, base.data(), base.owner());
  ASSERT_FALSE(t.is_contiguous());
  const std::string path = test::temp_dir() + "/strided.safetensors";
  SafetensorsWriter w(path);
  ASSERT_TRUE(w.add("t", t).is_ok());
  ASSERT_TRUE(w.add("base", base).is_ok());
  ASSERT_TRUE(w.finish().is_ok());
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  auto r = f->tensor("t");
  ASSERT_TRUE(r.has_value());
  const float expect[6] = {0, 3, 1, 4, 2, 5};
  EXPECT_EQ(0, std::memcmp(r->data(), expect, sizeof(expect)));
}

// ---------------------------------------------------------------------------------------------
// Malformed files

const std::string kGoodEntry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
const std::string kEightBytes(8, '\x11');

TEST(SafetensorsMalformed, ValidMinimalFileParses) {
  // The baseline for the cases below: they differ from this in one thing only.
  const std::string bytes = make_file("{" + kGoodEntry + "}", kEightBytes);
  auto f = SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "ok");
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  EXPECT_EQ(f->tensors().size(), 1u);
}

TEST(SafetensorsMalformed, TruncatedFile) {
  expect_open_error("", {"0 bytes", "shorter than the 8-byte header length"});
  expect_open_error(std::string("\x10\x00\x00", 3), {"3 bytes", "shorter than the 8-byte header length"});
}

TEST(SafetensorsMalformed, TruncatedHeader) {
  const std::string full = make_file("{" + kGoodEntry + "}", kEightBytes);
  const std::string cut = full.substr(0, 8 + 10);
  expect_open_error(cut, {"header length", "exceeds the 10 bytes after the length field", "truncated"});
}

TEST(SafetensorsMalformed, HeaderLengthZeroOrHuge) {
  expect_open_error(u64_le(0) + "{}", {"header length is 0"});
  expect_open_error(u64_le(uint64_t{1} << 63) + "{}", {"header length 9223372036854775808", "exceeds the limit"});
  expect_open_error(u64_le(~uint64_t{0}) + "{}", {"exceeds the limit"});
  expect_open_error(u64_le(100'000'001) + "{}", {"exceeds the limit of 100000000 bytes"});
}

TEST(SafetensorsMalformed, TruncatedData) {
  const std::string full = make_file("{" + kGoodEntry + "}", kEightBytes);
  expect_open_error(full.substr(0, full.size() - 1), {"tensor 'a'", "outside the data section (7 bytes"},
                    ErrorCode::out_of_range);
}

TEST(SafetensorsMalformed, BadJson) {
  expect_open_error(make_file(R"({"a":{"dtype":"F32","shape":[2],)", kEightBytes), {"header is not valid JSON"});
  expect_open_error(make_file(R"({"a":1} trailing)", ""), {"header is not valid JSON"});
  // NUL bytes end nlohmann's input early; they must not hide trailing garbage.
  expect_open_error(make_file("{" + kGoodEntry + "}\0\0\0"s, kEightBytes), {"header is not valid JSON", "NUL byte"});
  expect_open_error(make_file("{" + kGoodEntry + "}\0{garbage"s, kEightBytes), {"header is not valid JSON", "NUL byte"});
}

TEST(SafetensorsMalformed, HeaderNotAnObject) {
  expect_open_error(make_file("[1,2,3]", ""), {"does not start with '{'"});
  expect_open_error(make_file("\"x\"", ""), {"does not start with '{'"});
  expect_open_error(make_file(" {}", ""), {"does not start with '{'"});
}

TEST(SafetensorsMalformed, InvalidUtf8) {
  expect_open_error(make_file("{\"a\xff\":{}}", ""), {"not valid UTF-8"});
  // Overlong encoding of '/', and a UTF-16 surrogate.
  expect_open_error(make_file("{\"\xC0\xAF\":{}}", ""), {"not valid UTF-8"});
  expect_open_error(make_file("{\"\xED\xA0\x80\":{}}", ""), {"not valid UTF-8"});
}

TEST(SafetensorsMalformed, UnknownAndUnsupportedDType) {
  expect_open_error(make_file(R"({"w":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "unknown dtype 'F17'"});
  expect_open_error(make_file(R"({"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "unknown dtype 'f32'"});
  expect_open_error(make_file(R"({"w":{"dtype":"U16","shape":[4],"data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "dtype 'U16'", "not supported"}, ErrorCode::unsupported);
}

TEST(SafetensorsMalformed, ShapeDoesNotMatchOffsets) {
  expect_open_error(make_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "shape [2, 3]", "needs 24 bytes", "span 8"});
  expect_open_error(make_file(R"({"w":{"dtype":"BF16","shape":[],"data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "needs 2 bytes"});
}

TEST(SafetensorsMalformed, OverlappingTensors) {
  const std::string data(12, '\0');
  expect_open_error(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              data),
                    {"tensor 'b'", "overlaps tensor 'a'"});
  expect_open_error(make_file(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})",
                              data),
                    {"overlaps"});
}

TEST(SafetensorsMalformed, OffsetsOutsideTheFile) {
  expect_open_error(make_file(R"({"w":{"dtype":"U8","shape":[1000],"data_offsets":[0,1000]}})", kEightBytes),
                    {"tensor 'w'", "data_offsets [0, 1000]", "outside the data section (8 bytes"}, ErrorCode::out_of_range);
  expect_open_error(make_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,0]}})", kEightBytes),
                    {"tensor 'w'", "begin > end"});
  expect_open_error(make_file(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[9,9]}})", kEightBytes),
                    {"tensor 'w'", "outside the data section"}, ErrorCode::out_of_range);
  expect_open_error(make_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1e3]}})", kEightBytes),
                    {"tensor 'w'", "data_offsets[1] is not an integer"});
  expect_open_error(make_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551616]}})", kEightBytes),
                    {"tensor 'w'", "data_offsets[1] is not an integer"});
}

TEST(SafetensorsMalformed, MinusZeroIsZero) {
  const std::string bytes = make_file(R"({"w":{"dtype":"F32","shape":[-0,3],"data_offsets":[0,-0]}})", "");
  auto f = SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "m0");
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  EXPECT_EQ(f->find("w")->shape, (Shape{0, 3}));
}

TEST(SafetensorsMalformed, NegativeAndNonIntegerDims) {
  expect_open_error(make_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "shape dimension 0 is negative (-2)"});
  expect_open_error(make_file(R"({"w":{"dtype":"F32","shape":[2,1.5],"data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "shape dimension 1 is not an integer"});
  expect_open_error(make_file(R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "shape dimension 0 is not a number"});
  expect_open_error(make_file(R"({"w":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "too large"});
}

TEST(SafetensorsMalformed, ShapeOverflow) {
  expect_open_error(make_file(R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})",
                              kEightBytes),
                    {"tensor 'w'", "shape [1099511627776, 1099511627776]", "overflows"});
  // Overflow with a zero dimension still counts: such shapes break stride arithmetic downstream.
  expect_open_error(make_file(R"({"w":{"dtype":"U8","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})", ""),
                    {"tensor 'w'", "overflows"});
  // 2^61 F32 elements = 2^63 bytes: overflows 63 bits.
  expect_open_error(make_file(R"({"w":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "overflows"});
}

TEST(SafetensorsMalformed, MetadataMustBeStrings) {
  expect_open_error(make_file(R"({"__metadata__":{"format":"pt","n":3},)" + kGoodEntry + "}", kEightBytes),
                    {"metadata value of 'n' is not a string"});
  expect_open_error(make_file(R"({"__metadata__":{"nested":{"a":"b"}},)" + kGoodEntry + "}", kEightBytes),
                    {"metadata value of 'nested' is not a string"});
  expect_open_error(make_file(R"({"__metadata__":["pt"],)" + kGoodEntry + "}", kEightBytes),
                    {"\"__metadata__\" is not an object"});
}

TEST(SafetensorsMalformed, EntryFields) {
  expect_open_error(make_file(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "missing field \"dtype\""});
  expect_open_error(make_file(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "missing field \"shape\""});
  expect_open_error(make_file(R"({"w":{"dtype":"F32","shape":[2]}})", kEightBytes),
                    {"tensor 'w'", "missing field \"data_offsets\""});
  expect_open_error(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", kEightBytes),
                    {"tensor 'w'", "unexpected field 'extra'"});
  expect_open_error(make_file(R"({"w":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "\"dtype\" is not a string"});
  expect_open_error(make_file(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", kEightBytes),
                    {"tensor 'w'", "\"shape\" is not an array"});
  expect_open_error(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", kEightBytes),
                    {"tensor 'w'", "\"data_offsets\" is not an array of 2 integers"});
  expect_open_error(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":{"a":0}}})", kEightBytes),
                    {"tensor 'w'", "\"data_offsets\" is not an array of 2 integers"});
  expect_open_error(make_file(R"({"w":[1,2]})", kEightBytes), {"tensor 'w'", "entry is not an object"});
}

TEST(SafetensorsMalformed, DuplicateKeys) {
  expect_open_error(make_file("{" + kGoodEntry + "," + kGoodEntry + "}", kEightBytes), {"duplicate key 'a'"});
  expect_open_error(make_file(R"({"a":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}})", kEightBytes),
                    {"duplicate key 'dtype' inside 'a'"});
  expect_open_error(make_file(R"({"__metadata__":{"k":"1","k":"2"},)" + kGoodEntry + "}", kEightBytes),
                    {"duplicate key 'k' inside '__metadata__'"});
}

TEST(SafetensorsMalformed, LongNamesAreShortenedInMessages) {
  const std::string name(5000, 'n');
  const std::string bytes = make_file("{\"" + name + R"(":{"dtype":"X","shape":[],"data_offsets":[0,0]}})", "");
  auto f = SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "buf");
  ASSERT_FALSE(f.has_value());
  EXPECT_LT(f.status().message().size(), 400u) << f.status().message();
  EXPECT_NE(f.status().message().find("(5000 bytes)"), std::string::npos) << f.status().message();
}

// What the reader accepts beyond what the writer produces (see the header for the policy).
TEST(SafetensorsLenient, GapsTrailingBytesPaddingAndEmptyTensors) {
  const std::string header = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                             R"("e":{"dtype":"F32","shape":[0],"data_offsets":[2,2]},)"
                             R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}}    )";
  const std::string bytes = make_file(header, "abcdXXXXefghTRAILING");
  auto f = SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "lenient");
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  ASSERT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(f->tensors()[0].name, "a");  // data-offset order
  EXPECT_EQ(f->tensors()[1].name, "e");
  EXPECT_EQ(f->tensors()[2].name, "b");
  auto b = f->tensor("b");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(std::string(static_cast<const char*>(b->data()), 4), "efgh");
  auto e = f->tensor("e");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->numel(), 0);
  EXPECT_FALSE(f->tensor("missing").has_value());
}

TEST(SafetensorsLenient, MisalignedTensorIsCopiedAligned) {
  // Header of 61 bytes: the data section starts at file offset 69, so the F32 tensor is misaligned
  // in the mapping (a file neither qforge nor HF would write, but legal).
  std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.append(61 - header.size(), ' ');
  const float values[2] = {3.25f, -7.5f};
  std::string data(reinterpret_cast<const char*>(values), sizeof(values));
  const std::string path = test::temp_dir() + "/misaligned.safetensors";
  write_bytes(path, make_file(header, data));
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  auto t = f->tensor("w");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data()) % alignof(float), 0u);
  EXPECT_EQ(t->data_as<float>()[0], 3.25f);
  EXPECT_EQ(t->data_as<float>()[1], -7.5f);
}

// ---------------------------------------------------------------------------------------------
// Writer errors and atomicity

TEST(SafetensorsWriter, RejectsBadTensors) {
  const std::string path = test::temp_dir() + "/w.safetensors";
  SafetensorsWriter w(path);
  const uint8_t bytes[24] = {};
  ASSERT_TRUE(w.add("a", DType::f32, {2, 3}, bytes, 24).is_ok());
  Status dup = w.add("a", DType::u8, {1}, bytes, 1);
  EXPECT_FALSE(dup.is_ok());
  EXPECT_NE(dup.message().find("'a': added twice"), std::string::npos) << dup.message();
  Status mismatch = w.add("b", DType::f32, {2, 3}, bytes, 20);
  EXPECT_NE(mismatch.message().find("needs 24 bytes, got 20"), std::string::npos) << mismatch.message();
  EXPECT_FALSE(w.add("c", DType::f32, {-1}, bytes, 0).is_ok());
  EXPECT_FALSE(w.add("__metadata__", DType::u8, {1}, bytes, 1).is_ok());
  EXPECT_FALSE(w.add("", DType::u8, {1}, bytes, 1).is_ok());
  EXPECT_FALSE(w.add("bad\xff", DType::u8, {1}, bytes, 1).is_ok());
  EXPECT_FALSE(w.add("null", DType::u8, {1}, nullptr, 1).is_ok());
  EXPECT_FALSE(w.add_lazy("huge", DType::f32, {int64_t{1} << 40, int64_t{1} << 40}, [](uint8_t*, size_t) {
                  return Status::ok();
                }).is_ok());
  EXPECT_EQ(w.size(), 1u);
  w.set_metadata("k", "bad\xc3");
  Status meta = w.finish();
  EXPECT_FALSE(meta.is_ok());
  EXPECT_NE(meta.message().find("not valid UTF-8"), std::string::npos) << meta.message();
  EXPECT_FALSE(fs::exists(path));
}

TEST(SafetensorsWriter, FailingProducerLeavesNoFile) {
  const std::string dir = test::temp_dir();
  const std::string path = dir + "/out.safetensors";
  const uint8_t small[4] = {1, 2, 3, 4};
  {
    SafetensorsWriter w(path);
    ASSERT_TRUE(w.add("a", DType::u8, {4}, small, 4).is_ok());
    ASSERT_TRUE(w.add_lazy("b", DType::u8, {4}, [](uint8_t*, size_t) { return io_error("disk on fire"); }).is_ok());
    Status s = w.finish();
    ASSERT_FALSE(s.is_ok());
    EXPECT_NE(s.message().find("tensor 'b'"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("disk on fire"), std::string::npos) << s.message();
  }
  EXPECT_TRUE(list_dir(dir).empty()) << "left behind: " << list_dir(dir).front();
  {
    SafetensorsWriter w(path);
    ASSERT_TRUE(w.add_lazy("c", DType::u8, {4}, [](uint8_t*, size_t) -> Status { throw std::runtime_error("boom"); }).is_ok());
    Status s = w.finish();
    ASSERT_FALSE(s.is_ok());
    EXPECT_NE(s.message().find("boom"), std::string::npos) << s.message();
  }
  EXPECT_TRUE(list_dir(dir).empty());

  // An existing file at the path survives a failed rewrite untouched.
  write_bytes(path, "previous contents");
  {
    SafetensorsWriter w(path);
    ASSERT_TRUE(w.add_lazy("d", DType::u8, {4}, [](uint8_t*, size_t) { return cancelled("stop"); }).is_ok());
    EXPECT_FALSE(w.finish().is_ok());
  }
  EXPECT_EQ(read_bytes(path), "previous contents");
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"out.safetensors"});
}

std::string lazy_name(int i) { return std::string("lazy.").append(std::to_string(i)); }

TEST(SafetensorsWriter, ProducersRunOneAtATimeWithTheirOwnSize) {
  const std::string path = test::temp_dir() + "/lazy.safetensors";
  SafetensorsWriter w(path);
  int running = 0, calls = 0;
  for (int i = 0; i < 5; ++i) {
    const Shape shape = {i + 1, 7};
    ASSERT_TRUE(w.add_lazy(lazy_name(i), DType::i16, shape, [&, i](uint8_t* out, size_t n) {
                   EXPECT_EQ(running, 0) << "producers overlap";
                   ++running;
                   ++calls;
                   EXPECT_EQ(n, static_cast<size_t>((i + 1) * 7 * 2));
                   for (size_t k = 0; k < n; ++k) out[k] = static_cast<uint8_t>(i * 31 + k);
                   --running;
                   return Status::ok();
                 }).is_ok());
  }
  ASSERT_TRUE(w.finish().is_ok());
  EXPECT_EQ(calls, 5);
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.has_value());
  for (int i = 0; i < 5; ++i) {
    auto t = f->tensor(lazy_name(i));
    ASSERT_TRUE(t.has_value());
    const auto* b = static_cast<const uint8_t*>(t->data());
    for (size_t k = 0; k < t->nbytes(); ++k) ASSERT_EQ(b[k], static_cast<uint8_t>(i * 31 + k));
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

void write_tensor_file(const std::string& path, const std::vector<std::pair<std::string, float>>& tensors) {
  SafetensorsWriter w(path);
  w.set_metadata("format", "pt");
  for (const auto& [name, value] : tensors) {
    Tensor t = Tensor::from_f32({2, 2}, {value, value + 1, value + 2, value + 3});
    ASSERT_TRUE(w.add(name, t).is_ok());
  }
  ASSERT_TRUE(w.finish().is_ok());
}

std::string make_sharded(const std::string& weight_map_json) {
  const std::string dir = test::temp_dir();
  write_tensor_file(dir + "/model-00001-of-00002.safetensors", {{"embed", 1.0f}, {"layer.0", 10.0f}});
  write_tensor_file(dir + "/model-00002-of-00002.safetensors", {{"layer.1", 20.0f}, {"norm", 30.0f}});
  write_bytes(dir + "/model.safetensors.index.json",
              R"({"metadata":{"total_size":64},"weight_map":)" + weight_map_json + "}");
  return dir;
}

const std::string kGoodWeightMap = R"({"embed":"model-00001-of-00002.safetensors",)"
                                   R"("layer.0":"model-00001-of-00002.safetensors",)"
                                   R"("layer.1":"model-00002-of-00002.safetensors",)"
                                   R"("norm":"model-00002-of-00002.safetensors"})";

float first_value(const SafetensorsCheckpoint& c, const std::string& name) {
  auto t = c.tensor(name);
  EXPECT_TRUE(t.has_value()) << name;
  return t.has_value() ? t->data_as<float>()[0] : -1.0f;
}

TEST(SafetensorsCheckpoint, ShardedDirectory) {
  const std::string dir = make_sharded(kGoodWeightMap);
  auto c = SafetensorsCheckpoint::open(dir);
  ASSERT_TRUE(c.has_value()) << c.status().to_string();
  EXPECT_EQ(c->files().size(), 2u);
  EXPECT_EQ(c->tensor_names(), (std::vector<std::string>{"embed", "layer.0", "layer.1", "norm"}));
  EXPECT_EQ(first_value(*c, "embed"), 1.0f);
  EXPECT_EQ(first_value(*c, "layer.0"), 10.0f);
  EXPECT_EQ(first_value(*c, "layer.1"), 20.0f);
  EXPECT_EQ(first_value(*c, "norm"), 30.0f);
  ASSERT_NE(c->find("norm"), nullptr);
  EXPECT_EQ(c->find("norm")->shape, (Shape{2, 2}));
  EXPECT_EQ(c->find("nope"), nullptr);
  EXPECT_FALSE(c->tensor("nope").has_value());
  EXPECT_EQ(c->metadata().at("format"), "pt");
}

TEST(SafetensorsCheckpoint, UnlistedTensorsAreIncluded) {
  // The index omits "norm"; its shard holds it and no other shard does.
  const std::string dir = make_sharded(R"({"embed":"model-00001-of-00002.safetensors",)"
                                       R"("layer.0":"model-00001-of-00002.safetensors",)"
                                       R"("layer.1":"model-00002-of-00002.safetensors"})");
  auto c = SafetensorsCheckpoint::open(dir);
  ASSERT_TRUE(c.has_value()) << c.status().to_string();
  EXPECT_EQ(c->tensor_names().size(), 4u);
  EXPECT_EQ(first_value(*c, "norm"), 30.0f);
}

TEST(SafetensorsCheckpoint, ShardErrors) {
  auto expect_error = [](const std::string& weight_map, const std::vector<std::string>& needles) {
    const std::string dir = make_sharded(weight_map);
    auto c = SafetensorsCheckpoint::open(dir);
    ASSERT_FALSE(c.has_value()) << weight_map;
    for (const auto& n : needles)
      EXPECT_NE(c.status().message().find(n), std::string::npos) << "'" << n << "' not in: " << c.status().message();
  };
  expect_error(R"({"embed":"model-00003-of-00002.safetensors"})", {"shard 'model-00003-of-00002.safetensors'", "missing"});
  expect_error(R"({"embed":"../model-00001-of-00002.safetensors"})", {"escapes the checkpoint directory", "'embed'"});
  expect_error(R"({"embed":"sub/../../x.safetensors"})", {"escapes the checkpoint directory"});
  expect_error(R"({"embed":"/etc/passwd"})", {"absolute path"});
  expect_error(R"({"embed":""})", {"empty shard name", "'embed'"});
  expect_error(R"({"embed":"model-00002-of-00002.safetensors"})",
               {"tensor 'embed'", "shard 'model-00002-of-00002.safetensors'", "does not hold it"});
  expect_error(R"({"embed":7})", {"shard of tensor 'embed' is not a string"});
  expect_error(R"({})", {"lists no tensors"});
  expect_error(R"([])", {"\"weight_map\" is not an object"});
  expect_error(R"({"embed":"model-00001-of-00002.safetensors","embed":"model-00001-of-00002.safetensors"})",
               {"duplicate key 'embed'"});
}

TEST(SafetensorsCheckpoint, AmbiguousUnlistedTensor) {
  const std::string dir = test::temp_dir();
  write_tensor_file(dir + "/a.safetensors", {{"x", 1.0f}, {"shared", 2.0f}});
  write_tensor_file(dir + "/b.safetensors", {{"y", 3.0f}, {"shared", 4.0f}});
  write_bytes(dir + "/model.safetensors.index.json", R"({"weight_map":{"x":"a.safetensors","y":"b.safetensors"}})");
  auto c = SafetensorsCheckpoint::open(dir);
  ASSERT_FALSE(c.has_value());
  EXPECT_NE(c.status().message().find("'shared'"), std::string::npos) << c.status().message();
  EXPECT_NE(c.status().message().find("ambiguous"), std::string::npos) << c.status().message();
  // Listing it settles which shard wins.
  write_bytes(dir + "/model.safetensors.index.json",
              R"({"weight_map":{"x":"a.safetensors","y":"b.safetensors","shared":"b.safetensors"}})");
  auto ok = SafetensorsCheckpoint::open(dir);
  ASSERT_TRUE(ok.has_value()) << ok.status().to_string();
  EXPECT_EQ(first_value(*ok, "shared"), 4.0f);
}

TEST(SafetensorsCheckpoint, SingleFileLayouts) {
  // A file path.
  const std::string dir1 = test::temp_dir();
  write_tensor_file(dir1 + "/weights.safetensors", {{"w", 5.0f}});
  auto a = SafetensorsCheckpoint::open(dir1 + "/weights.safetensors");
  ASSERT_TRUE(a.has_value()) << a.status().to_string();
  EXPECT_EQ(first_value(*a, "w"), 5.0f);
  // A directory with exactly one *.safetensors (not named model.safetensors).
  auto b = SafetensorsCheckpoint::open(dir1);
  ASSERT_TRUE(b.has_value()) << b.status().to_string();
  EXPECT_EQ(first_value(*b, "w"), 5.0f);
  // model.safetensors wins over other files.
  write_tensor_file(dir1 + "/model.safetensors", {{"m", 6.0f}});
  auto c = SafetensorsCheckpoint::open(dir1);
  ASSERT_TRUE(c.has_value()) << c.status().to_string();
  EXPECT_EQ(c->tensor_names(), std::vector<std::string>{"m"});
  // Several files and neither an index nor model.safetensors: ask for the index.
  const std::string dir2 = test::temp_dir();
  write_tensor_file(dir2 + "/a.safetensors", {{"a", 1.0f}});
  write_tensor_file(dir2 + "/b.safetensors", {{"b", 1.0f}});
  auto d = SafetensorsCheckpoint::open(dir2);
  ASSERT_FALSE(d.has_value());
  EXPECT_NE(d.status().message().find("model.safetensors.index.json"), std::string::npos) << d.status().message();
  // Nothing at all.
  auto e = SafetensorsCheckpoint::open(test::temp_dir());
  ASSERT_FALSE(e.has_value());
  auto f = SafetensorsCheckpoint::open(test::temp_dir() + "/does-not-exist");
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.status().message().find("does-not-exist"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Real fixtures

float bf16_bits_to_f32(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

TEST(SafetensorsFixtures, RefLlama25mShardedBf16) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m/model.safetensors.index.json");
  const std::string dir = test::shared_dir() + "/models/ref-llama-25m";
  const auto config = nlohmann::json::parse(read_bytes(dir + "/config.json"));
  const int64_t hidden = config.at("hidden_size"), layers = config.at("num_hidden_layers");
  const int64_t vocab = config.at("vocab_size"), inter = config.at("intermediate_size");
  const int64_t heads = config.at("num_attention_heads"), kv_heads = config.at("num_key_value_heads");
  const int64_t head_dim = config.at("head_dim");
  ASSERT_TRUE(config.at("tie_word_embeddings").get<bool>());
  ASSERT_EQ(hidden, 384);
  ASSERT_EQ(layers, 8);
  ASSERT_EQ(vocab, 32000);

  auto c = SafetensorsCheckpoint::open(dir);
  ASSERT_TRUE(c.has_value()) << c.status().to_string();
  EXPECT_EQ(c->files().size(), 3u);
  EXPECT_EQ(c->metadata().at("format"), "pt");

  std::map<std::string, Shape> expect = {{"model.embed_tokens.weight", {vocab, hidden}}, {"model.norm.weight", {hidden}}};
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    expect[p + "input_layernorm.weight"] = {hidden};
    expect[p + "post_attention_layernorm.weight"] = {hidden};
    expect[p + "self_attn.q_proj.weight"] = {heads * head_dim, hidden};
    expect[p + "self_attn.k_proj.weight"] = {kv_heads * head_dim, hidden};
    expect[p + "self_attn.v_proj.weight"] = {kv_heads * head_dim, hidden};
    expect[p + "self_attn.o_proj.weight"] = {hidden, heads * head_dim};
    expect[p + "mlp.gate_proj.weight"] = {inter, hidden};
    expect[p + "mlp.up_proj.weight"] = {inter, hidden};
    expect[p + "mlp.down_proj.weight"] = {hidden, inter};
  }
  const auto names = c->tensor_names();
  ASSERT_EQ(names.size(), expect.size());  // 2 + 9 per layer (tied: no lm_head)
  uint64_t total_bytes = 0;
  for (const auto& [name, shape] : expect) {
    SCOPED_TRACE(name);
    const auto* info = c->find(name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, DType::bf16);
    EXPECT_EQ(info->shape, shape);
    auto t = c->tensor(name);
    ASSERT_TRUE(t.has_value()) << t.status().to_string();
    total_bytes += t->nbytes();
    // Real trained weights: finite, not all zero; norm weights are near 1 on average.
    const auto* v = t->data_as<uint16_t>();
    double sum = 0, abs_sum = 0;
    for (int64_t i = 0; i < t->numel(); ++i) {
      const float x = bf16_bits_to_f32(v[i]);
      ASSERT_TRUE(std::isfinite(x)) << "element " << i;
      sum += x;
      abs_sum += std::fabs(x);
    }
    EXPECT_GT(abs_sum, 0.0);
    if (name.find("norm") != std::string::npos) {
      const double mean = sum / static_cast<double>(t->numel());
      EXPECT_GT(mean, 0.05) << "a norm weight averaging " << mean;
    }
  }
  const auto index = nlohmann::json::parse(read_bytes(dir + "/model.safetensors.index.json"));
  EXPECT_EQ(total_bytes, index.at("metadata").at("total_size").get<uint64_t>());
}

TEST(SafetensorsFixtures, RewritingAnHfShardIsByteIdentical) {
  // HF (safetensors-rs) lays out data by alignment then name, with a compact JSON header padded with
  // spaces: the same rules as qforge's writer, so rewriting a single-dtype shard reproduces it.
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m/model-00002-of-00003.safetensors");
  const std::string src = test::shared_dir() + "/models/ref-llama-25m/model-00002-of-00003.safetensors";
  auto f = SafetensorsFile::open(src);
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  const std::string out = test::temp_dir() + "/rewrite.safetensors";
  SafetensorsWriter w(out);
  for (const auto& [k, v] : f->metadata()) w.set_metadata(k, v);
  for (const auto& info : f->tensors()) {
    auto t = f->tensor(info.name);
    ASSERT_TRUE(t.has_value());
    ASSERT_TRUE(w.add(info.name, *t).is_ok());
  }
  ASSERT_TRUE(w.finish().is_ok());
  const std::string a = read_bytes(src), b = read_bytes(out);
  EXPECT_EQ(a.size(), b.size());
  EXPECT_TRUE(a == b) << "rewrite differs from the HF-written shard";
}

TEST(SafetensorsFixtures, GoldenLogitsAndHfGoldens) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m/golden_logits.safetensors");
  auto g = SafetensorsFile::open(test::shared_dir() + "/models/ref-llama-25m/golden_logits.safetensors");
  ASSERT_TRUE(g.has_value()) << g.status().to_string();
  ASSERT_NE(g->find("input_ids"), nullptr);
  EXPECT_EQ(g->find("input_ids")->dtype, DType::i32);
  EXPECT_EQ(g->find("input_ids")->shape, (Shape{2, 24}));
  ASSERT_NE(g->find("logits"), nullptr);
  EXPECT_EQ(g->find("logits")->dtype, DType::f32);
  EXPECT_EQ(g->find("logits")->shape, (Shape{2, 24, 32000}));

  QFORGE_REQUIRE_SHARED("models/hf-goldens");
  int opened = 0;
  for (const auto& e : fs::directory_iterator(test::shared_dir() + "/models/hf-goldens")) {
    if (!e.is_directory()) continue;
    SCOPED_TRACE(e.path().string());
    auto c = SafetensorsCheckpoint::open(e.path().string());
    ASSERT_TRUE(c.has_value()) << c.status().to_string();
    EXPECT_FALSE(c->tensor_names().empty());
    for (const auto& name : c->tensor_names()) ASSERT_TRUE(c->tensor(name).has_value()) << name;
    ++opened;
  }
  EXPECT_GE(opened, 1);
}

}  // namespace
}  // namespace qforge
