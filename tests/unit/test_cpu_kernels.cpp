// Fast CPU kernels (include/qforge/kernels.h): every ISA variant against its scalar _ref on random
// and extreme inputs, shapes with tails, misaligned pointers; the _ref against the exact product
// within the bound of the activation quantization; thread and batch invariance; KernelLinear.
//
// Each test runs at every ISA level up to the active one (QFORGE_ISA clamps it); levels the CPU
// lacks skip with a message. On a machine with AVX-512:  QFORGE_ISA=avx512bf16 ./build/tests/test_cpu_kernels
//
// Tolerances. Integer-dot formats: both the variant and the reference compute each block's integer
// dot product exactly, so they differ only in how f32 terms are rounded and summed. Any order of
// summing n terms (each formed with <= 3 roundings) is within gamma = (n + 3) u of the exact sum
// times sum|terms| (u = 2^-24), so |fast - ref| <= 2 gamma M, where M bounds sum|terms| by
// the magnitude of every partial product a decomposition forms (format_magnitude below: e.g.
// Q4_0 forms d q a and 8 d a separately, so its per-element weight magnitude is 23 |d|).
// n = terms per output: blocks (x2 for formats with a min/offset term), or cols for f32 formats.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "formats/gguf_blocks.h"
#include "kernels/kernel_registry.h"
#include "qforge/dtype.h"
#include "qforge/kernels.h"
#include "test_support.h"

namespace qforge {
namespace {

using kernels::Isa;
using kernels::KernelMatrix;
namespace gg = formats::gguf;

constexpr double kU = 1.0 / (1 << 24);

Scheme scheme_of(const std::string& name) {
  auto s = Scheme::parse(name);
  QFORGE_CHECK_MSG(s.has_value(), name.c_str());
  return *s;
}

// The schemes with kernels, covering each registered format (int4 at two group sizes).
std::vector<std::string> kernel_scheme_names() {
  return {"q8_0", "q4_0", "q4_k", "q6_k", "int8-ch-sym", "int8-tensor-sym", "int4-g32-asym", "int4-g128-asym",
          "int4-ch-asym", "f16", "bf16"};
}

int64_t col_block(const Scheme& s, int64_t cols_hint) {
  const FormatTraits& t = format_traits(s.format);
  if (t.block > 0) return t.block;
  if (s.granularity == Granularity::group) return s.group_size;
  if (s.format == FormatId::int_asym) return 32;  // per-channel int4: cols must be a multiple of 32
  return 1;
}

// Column counts the issue asks for (1, 3, 31, 32, 33, 255, 256, 257, 4097) where the format
// allows, else multiples of its block with odd counts of blocks.
std::vector<int64_t> test_cols(const Scheme& s) {
  const int64_t b = col_block(s, 0);
  if (b == 1) return {1, 3, 31, 32, 33, 255, 256, 257, 4097};
  std::vector<int64_t> out = {b, 3 * b, 8 * b};
  if (b <= 128) out.push_back(33 * b);
  if (b == 32) out.push_back(4096 + 32);
  return out;
}

struct Case {
  int64_t rows, cols, tokens;
};

std::vector<Case> test_cases(const Scheme& s) {
  std::vector<Case> cases;
  const int64_t rows_list[] = {1, 3, 31, 32, 33, 255, 256, 257};
  size_t k = 0;
  for (int64_t cols : test_cols(s)) {
    // Keep the scalar reference cheap under sanitizers: big columns get few rows and tokens.
    const int64_t budget = 3'000'000;
    for (int64_t tokens : {int64_t{1}, int64_t{3}, int64_t{6}, int64_t{67}}) {
      const int64_t rows = std::min(rows_list[k++ % 8], budget / (cols * tokens));
      if (rows < 1) continue;
      cases.push_back({rows, cols, tokens});
    }
  }
  return cases;
}

std::vector<float> random_floats(int64_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

QuantizedTensor quantize_random(const Scheme& s, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::vector<float> w = random_floats(rows * cols, rng, 0.05f);
  auto q = quantize(s, w.data(), rows, cols);
  QFORGE_CHECK_MSG(q.has_value(), q.status().message().c_str());
  return std::move(q).value();
}

// Random bytes in every code, with the f16 scale fields replaced by finite values: reaches codes
// quantization rarely produces (Q8_0 -128, Q6_K scale -128, 6-bit scale/min 63, int8 code 0).
QuantizedTensor random_codes(const Scheme& s, int64_t rows, int64_t cols, std::mt19937& rng) {
  QuantizedTensor q = quantize_random(s, rows, cols, rng);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> mag(-0.02f, 0.02f);
  auto put_f16 = [&](uint8_t* p) {
    const uint16_t h = f32_to_f16(mag(rng));
    std::memcpy(p, &h, 2);
  };
  if (s.format == FormatId::f16 || s.format == FormatId::bf16) {
    for (size_t i = 0; i < q.codes.size(); i += 2) {
      const float v = mag(rng) * std::pow(2.0f, static_cast<float>(byte(rng) % 24 - 12));
      const uint16_t h = s.format == FormatId::f16 ? f32_to_f16(v) : f32_to_bf16(v);
      std::memcpy(q.codes.data() + i, &h, 2);
    }
    return q;
  }
  for (uint8_t& c : q.codes) c = static_cast<uint8_t>(byte(rng));
  // Offsets of the f16 fields in each GGUF block.
  std::vector<size_t> f16_fields;
  size_t block_bytes = 0;
  switch (s.format) {
    case FormatId::gguf_q8_0: block_bytes = sizeof(gg::BlockQ8_0), f16_fields = {offsetof(gg::BlockQ8_0, d)}; break;
    case FormatId::gguf_q4_0: block_bytes = sizeof(gg::BlockQ4_0), f16_fields = {offsetof(gg::BlockQ4_0, d)}; break;
    case FormatId::gguf_q4_k:
      block_bytes = sizeof(gg::BlockQ4_K), f16_fields = {offsetof(gg::BlockQ4_K, d), offsetof(gg::BlockQ4_K, dmin)};
      break;
    case FormatId::gguf_q6_k: block_bytes = sizeof(gg::BlockQ6_K), f16_fields = {offsetof(gg::BlockQ6_K, d)}; break;
    default: break;
  }
  if (block_bytes > 0)
    for (size_t b = 0; b + block_bytes <= q.codes.size(); b += block_bytes)
      for (size_t off : f16_fields) put_f16(q.codes.data() + b + off);
  for (size_t i = 0; i + 1 < q.scales.size(); i += 2) put_f16(q.scales.data() + i);
  for (uint8_t& z : q.zeros) z = static_cast<uint8_t>(byte(rng) % 16);
  return q;
}

// One activation row quantized and dequantized as the kernels do (int activations only).
void quantize_dequantize_act(const Scheme& s, const float* x, int64_t cols, float* o) {
  if (s.format == FormatId::gguf_q8_0 || s.format == FormatId::gguf_q4_0) {
    std::vector<kernels::ActQ8Block> a(static_cast<size_t>(cols / 32));
    kernels::quantize_act_q8_32(x, cols, a.data());
    for (int64_t i = 0; i < cols; ++i) o[i] = a[i / 32].d * static_cast<float>(a[i / 32].qs[i % 32]);
  } else if (s.format == FormatId::gguf_q4_k || s.format == FormatId::gguf_q6_k) {
    std::vector<gg::BlockQ8_K> a(static_cast<size_t>(cols / 256));
    kernels::quantize_act_q8_k(x, cols, a.data());
    for (int64_t i = 0; i < cols; ++i) o[i] = a[i / 256].d * static_cast<float>(a[i / 256].qs[i % 256]);
  } else {
    std::vector<uint8_t> a(kernels::kRowHeader + static_cast<size_t>((cols + 31) / 32 * 32));
    kernels::quantize_act_q8_row(x, cols, a.data());
    float d;
    std::memcpy(&d, a.data(), 4);
    for (int64_t i = 0; i < cols; ++i) o[i] = d * static_cast<float>(static_cast<int8_t>(a[kernels::kRowHeader + i]));
  }
}

bool int_activations(const Scheme& s) {
  return s.format != FormatId::int_asym && s.format != FormatId::f16 && s.format != FormatId::bf16;
}

// Activations as the kernels see them ([tokens, cols]): the first int8 term and, for int8x2, the
// quantized residual (zero otherwise); f32 formats: x itself.
struct SeenActivations {
  std::vector<float> hi, lo;
};

SeenActivations seen_activations(const Scheme& s, kernels::ActPrecision p, const float* x, int64_t tokens, int64_t cols) {
  SeenActivations a;
  a.hi.assign(static_cast<size_t>(tokens * cols), 0.0f);
  a.lo.assign(a.hi.size(), 0.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xr = x + t * cols;
    float* hi = a.hi.data() + t * cols;
    if (!int_activations(s)) {
      std::copy(xr, xr + cols, hi);
      continue;
    }
    quantize_dequantize_act(s, xr, cols, hi);
    if (p == kernels::ActPrecision::int8x2) {
      std::vector<float> r(static_cast<size_t>(cols));
      // The kernels' residual is fma(-d, q, x); x - hi (hi = d q rounded) is within an ulp of it,
      // which the bounds below do not notice.
      for (int64_t i = 0; i < cols; ++i) r[static_cast<size_t>(i)] = xr[i] - hi[i];
      quantize_dequantize_act(s, r.data(), cols, a.lo.data() + t * cols);
    }
  }
  return a;
}

// Per element of the weight: the largest magnitude of a partial product's weight factor the
// kernels' decompositions form (see the file comment), from the dequantized weight and its planes.
std::vector<double> format_magnitude(const QuantizedTensor& q, const std::vector<float>& dense) {
  const int64_t rows = q.rows, cols = q.cols;
  std::vector<double> m(static_cast<size_t>(rows * cols));
  const size_t row_bytes = q.packed_row_bytes();
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = q.codes.data() + static_cast<size_t>(r) * row_bytes;
    for (int64_t c = 0; c < cols; ++c) {
      double v = std::fabs(dense[static_cast<size_t>(r * cols + c)]);
      switch (q.scheme.format) {
        case FormatId::gguf_q8_0: {
          const auto* b = reinterpret_cast<const gg::BlockQ8_0*>(row) + c / 32;
          v = 128.0 * std::fabs(f16_to_f32(b->d));
          break;
        }
        case FormatId::gguf_q4_0: {
          const auto* b = reinterpret_cast<const gg::BlockQ4_0*>(row) + c / 32;
          v = 23.0 * std::fabs(f16_to_f32(b->d));
          break;
        }
        case FormatId::gguf_q4_k: {
          const auto* b = reinterpret_cast<const gg::BlockQ4_K*>(row) + c / 256;
          uint8_t sc, mn;
          gg::unpack_scale_min_k4(static_cast<int>((c % 256) / 32), b->scales, &sc, &mn);
          v = 15.0 * std::fabs(f16_to_f32(b->d) * sc) + std::fabs(f16_to_f32(b->dmin) * mn);
          break;
        }
        case FormatId::gguf_q6_k: {
          const auto* b = reinterpret_cast<const gg::BlockQ6_K*>(row) + c / 256;
          v = 95.0 * std::fabs(f16_to_f32(b->d) * b->scales[(c % 256) / 16]);
          break;
        }
        case FormatId::int_sym: {
          const size_t si = q.scheme.granularity == Granularity::tensor ? 0 : static_cast<size_t>(r);
          uint16_t h;
          std::memcpy(&h, q.scales.data() + 2 * si, 2);
          v = 128.0 * std::fabs(f16_to_f32(h));
          break;
        }
        case FormatId::int_asym: {
          const int64_t g = q.scheme.granularity == Granularity::group ? c / q.scheme.group_size : 0;
          const size_t si = q.scheme.granularity == Granularity::tensor ? 0 : static_cast<size_t>(r * q.groups_per_row() + g);
          uint16_t h;
          std::memcpy(&h, q.scales.data() + 2 * si, 2);
          v = (15.0 + q.zeros[si]) * std::fabs(f16_to_f32(h));
          break;
        }
        default: break;
      }
      m[static_cast<size_t>(r * cols + c)] = v;
    }
  }
  return m;
}

// Float terms per output the kernels sum (see the file comment).
int64_t terms_per_output(const Scheme& s, int64_t cols) {
  const FormatTraits& t = format_traits(s.format);
  if (t.block > 0) return 2 * (cols / t.block) + 8;
  if (s.format == FormatId::int_sym) return 8;
  return 2 * cols + 8;
}

struct Bounds {
  std::vector<double> order;  // |fast - ref| allowed per output [tokens, rows]
  std::vector<double> quant;  // |ref - exact(W x)| allowed per output (activation quantization)
  std::vector<double> exact;  // W_dequant · x in double
};

Bounds make_bounds(const QuantizedTensor& q, kernels::ActPrecision p, const std::vector<float>& x, int64_t tokens) {
  const int64_t rows = q.rows, cols = q.cols;
  std::vector<float> dense(static_cast<size_t>(rows * cols));
  EXPECT_TRUE(dequantize(q, dense.data()).is_ok());
  const std::vector<double> mag = format_magnitude(q, dense);
  const SeenActivations xs = seen_activations(q.scheme, p, x.data(), tokens, cols);
  // +1: the sum of the two activation terms' results.
  const double gamma = static_cast<double>(terms_per_output(q.scheme, cols) + 4) * kU;
  const bool int_act = int_activations(q.scheme);
  const FormatTraits& t = format_traits(q.scheme.format);
  const int64_t act_block = q.scheme.format == FormatId::int_sym ? cols : (t.block > 0 ? t.block : cols);
  // The activation quantizer's bound: one int8 term |x - x̂| <= d / 2 with d = block absmax / 127;
  // with the residual term, the residual (<= d / 2) is quantized the same way: <= absmax / 64516.
  // Slack: x / d is evaluated in f32 (relative 2^-23 of |x|).
  const double act_div = p == kernels::ActPrecision::int8x2 ? 127.0 * 508.0 : 254.0;
  Bounds b;
  for (int64_t tk = 0; tk < tokens; ++tk) {
    const float* xr = x.data() + tk * cols;
    const float* hi = xs.hi.data() + tk * cols;
    const float* lo = xs.lo.data() + tk * cols;
    std::vector<double> act_err(static_cast<size_t>(cols), 0.0);
    if (int_act)
      for (int64_t b0 = 0; b0 < cols; b0 += act_block) {
        double amax = 0;
        for (int64_t i = b0; i < b0 + act_block; ++i) amax = std::max(amax, std::fabs(static_cast<double>(xr[i])));
        for (int64_t i = b0; i < b0 + act_block; ++i)
          act_err[static_cast<size_t>(i)] = amax / act_div * (1 + 1e-3) + amax * 4 * kU;
      }
    for (int64_t r = 0; r < rows; ++r) {
      double M = 0, exact = 0, qerr = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const size_t wi = static_cast<size_t>(r * cols + c);
        M += mag[wi] * (std::fabs(static_cast<double>(hi[c])) + std::fabs(static_cast<double>(lo[c])));
        exact += static_cast<double>(dense[wi]) * xr[c];
        qerr += std::fabs(static_cast<double>(dense[wi])) * act_err[static_cast<size_t>(c)];
      }
      b.order.push_back(2.0 * gamma * M + 1e-30);
      b.quant.push_back(qerr + gamma * M + 1e-30);
      b.exact.push_back(exact);
    }
  }
  return b;
}

// The ISA levels a test runs at: all up to the active one; the rest skip with a message.
class IsaLevels : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    const Isa isa = GetParam();
    if (static_cast<int>(isa) > static_cast<int>(kernels::cpu_isa()))
      GTEST_SKIP() << "this CPU supports up to " << kernels::isa_name(kernels::cpu_isa()) << ", not "
                   << kernels::isa_name(isa) << ": run the suite on a machine that has it, e.g. QFORGE_ISA="
                   << kernels::isa_name(isa) << " ./build/tests/test_cpu_kernels";
    if (static_cast<int>(isa) > static_cast<int>(kernels::active_isa()))
      GTEST_SKIP() << "QFORGE_ISA limits the kernels to " << kernels::isa_name(kernels::active_isa());
  }
};

// Compares matmul at `isa` with the reference; x and y are offset by one float (misaligned).
void check_against_ref(const QuantizedTensor& q, Isa isa, int64_t tokens, std::mt19937& rng, const char* what,
                       std::vector<float> x = {}, kernels::ActPrecision p = kernels::ActPrecision::int8x2) {
  const int64_t rows = q.rows, cols = q.cols;
  auto m = KernelMatrix::create(q, p);
  ASSERT_TRUE(m.has_value()) << m.status().message();
  if (x.empty()) x = random_floats(tokens * cols, rng);
  std::vector<float> xbuf(x.size() + 1), ybuf(static_cast<size_t>(tokens * rows) + 1), ref(static_cast<size_t>(tokens * rows));
  std::copy(x.begin(), x.end(), xbuf.begin() + 1);
  m->matmul(xbuf.data() + 1, tokens, ybuf.data() + 1, isa);
  m->matmul_ref(x.data(), tokens, ref.data());
  const Bounds b = make_bounds(q, p, x, tokens);
  int failures = 0;
  for (size_t i = 0; i < ref.size() && failures < 5; ++i) {
    const double fast = ybuf[i + 1];
    const double diff = std::fabs(fast - ref[i]);
    if (!(diff <= b.order[i])) {
      ++failures;
      ADD_FAILURE() << what << " " << q.scheme.name() << " [" << rows << "x" << cols << "] tokens " << tokens << " at "
                    << kernels::isa_name(m->variant_for(isa)) << ": output (token " << i / rows << ", row " << i % rows
                    << ") = " << fast << ", ref " << ref[i] << ", |diff| " << diff << " > allowed " << b.order[i];
    }
    const double qdiff = std::fabs(static_cast<double>(ref[i]) - b.exact[i]);
    if (!(qdiff <= b.quant[i])) {
      ++failures;
      ADD_FAILURE() << what << " " << q.scheme.name() << " ref vs exact W x at (token " << i / rows << ", row "
                    << i % rows << "): " << ref[i] << " vs " << b.exact[i] << ", |diff| " << qdiff
                    << " > allowed (activation quantization) " << b.quant[i];
    }
  }
}

TEST_P(IsaLevels, EveryFormatMatchesReferenceOnTailShapes) {
  std::mt19937 rng(7);
  for (const std::string& name : kernel_scheme_names()) {
    const Scheme s = scheme_of(name);
    for (const Case& c : test_cases(s)) {
      SCOPED_TRACE(name + " rows " + std::to_string(c.rows) + " cols " + std::to_string(c.cols) + " tokens " +
                   std::to_string(c.tokens));
      check_against_ref(quantize_random(s, c.rows, c.cols, rng), GetParam(), c.tokens, rng, "random weights");
    }
  }
}

TEST_P(IsaLevels, ExtremeCodesAndActivations) {
  std::mt19937 rng(11);
  for (const std::string& name : kernel_scheme_names()) {
    const Scheme s = scheme_of(name);
    const int64_t b = col_block(s, 0);
    const int64_t cols = std::max<int64_t>(b, 256) * 2, rows = 9, tokens = 5;
    SCOPED_TRACE(name);
    const QuantizedTensor q = random_codes(s, rows, cols, rng);
    check_against_ref(q, GetParam(), tokens, rng, "random codes");
    check_against_ref(q, GetParam(), tokens, rng, "random codes, int8 activations", {}, kernels::ActPrecision::int8);
    // Activations: zeros, one huge outlier per token, tiny values, a constant row, mixed scales.
    std::vector<float> x(static_cast<size_t>(tokens * cols), 0.0f);
    for (int64_t c = 0; c < cols; ++c) {
      x[static_cast<size_t>(cols + c)] = c == 5 ? 1e6f : 1e-3f * static_cast<float>(c % 7);
      x[static_cast<size_t>(2 * cols + c)] = 1e-30f * static_cast<float>((c % 5) - 2);
      x[static_cast<size_t>(3 * cols + c)] = -3.5f;
      x[static_cast<size_t>(4 * cols + c)] = std::ldexp(1.0f, static_cast<int>(c % 40) - 20) * ((c & 1) ? -1.0f : 1.0f);
    }
    check_against_ref(q, GetParam(), tokens, rng, "extreme activations", x);
    check_against_ref(q, GetParam(), tokens, rng, "extreme activations, int8", x, kernels::ActPrecision::int8);
  }
}

// An output is computed by one micro-kernel chain whatever the thread split or batch, so results
// are bit-identical across thread counts and between a batch and token-by-token calls.
TEST_P(IsaLevels, BitIdenticalAcrossThreadsAndBatching) {
  std::mt19937 rng(3);
  for (const std::string& name : kernel_scheme_names()) {
    const Scheme s = scheme_of(name);
    const int64_t cols = std::max<int64_t>(col_block(s, 0), 256) * 2, rows = 77, tokens = 70;
    auto m = KernelMatrix::create(quantize_random(s, rows, cols, rng), name == "q4_0" ? kernels::ActPrecision::int8
                                                                                        : kernels::ActPrecision::int8x2);
    ASSERT_TRUE(m.has_value());
    const std::vector<float> x = random_floats(tokens * cols, rng);
    std::vector<float> y1(static_cast<size_t>(tokens * rows)), y2(y1.size()), y3(y1.size());
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    m->matmul(x.data(), tokens, y1.data(), GetParam());
    omp_set_num_threads(std::max(2, saved));
    m->matmul(x.data(), tokens, y2.data(), GetParam());
    omp_set_num_threads(saved);
    for (int64_t t = 0; t < tokens; ++t) m->matmul(x.data() + t * cols, 1, y3.data() + t * rows, GetParam());
    EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * 4)) << name << ": 1 vs 2+ threads differ";
    EXPECT_EQ(0, std::memcmp(y1.data(), y3.data(), y1.size() * 4)) << name << ": batch vs token-by-token differ";
  }
}

// The vectorised activation quantizers produce the scalar specification's bytes exactly (the
// kernels' results depend on it), including halfway cases (x / d = k + 0.5), zero blocks,
// outliers and subnormals, with and without the residual term.
TEST_P(IsaLevels, ActivationQuantizersMatchScalarBytes) {
  const kernels::ActQuantizers fast = kernels::act_quantizers_for(GetParam());
  std::mt19937 rng(5);
  const int64_t cols = 4 * 256;
  for (int pattern = 0; pattern < 6; ++pattern) {
    std::vector<float> x = random_floats(cols, rng);
    for (int64_t i = 0; i < cols; ++i) {
      if (pattern == 1) x[i] = static_cast<float>(i % 255 - 127) * 0.5f + 0.25f * static_cast<float>(i % 2);  // halves
      if (pattern == 2 && i < 300) x[i] = 0.0f;                                                                   // zero blocks
      if (pattern == 3 && i % 97 == 0) x[i] = 3e7f;                                                              // outliers
      if (pattern == 4) x[i] = 1e-41f * static_cast<float>(i % 7 - 3);                                          // subnormal
      if (pattern == 5) x[i] = static_cast<float>(i % 2 == 0 ? 127.5 : -0.5) * 1e-3f;
    }
    for (const bool two : {false, true}) {
      SCOPED_TRACE("pattern " + std::to_string(pattern) + (two ? ", two terms" : ", one term"));
      std::vector<kernels::ActQ8Block> a(cols / 32), ar(cols / 32), b(cols / 32), br(cols / 32);
      kernels::quantize_act_q8_32_x2(x.data(), cols, a.data(), two ? ar.data() : nullptr);
      fast.q8_32(x.data(), cols, b.data(), two ? br.data() : nullptr);
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof a[0])) << "q8_32 codes";
      if (two) {
        EXPECT_EQ(0, std::memcmp(ar.data(), br.data(), ar.size() * sizeof ar[0])) << "q8_32 residual codes";
      }
      std::vector<gg::BlockQ8_K> k(cols / 256), kr(cols / 256), l(cols / 256), lr(cols / 256);
      kernels::quantize_act_q8_k_x2(x.data(), cols, k.data(), two ? kr.data() : nullptr);
      fast.q8_k(x.data(), cols, l.data(), two ? lr.data() : nullptr);
      EXPECT_EQ(0, std::memcmp(k.data(), l.data(), k.size() * sizeof k[0])) << "q8_k codes";
      if (two) {
        EXPECT_EQ(0, std::memcmp(kr.data(), lr.data(), kr.size() * sizeof kr[0])) << "q8_k residual codes";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, IsaLevels,
                         ::testing::Values(Isa::scalar, Isa::avx2, Isa::avx512, Isa::avx512vnni, Isa::avx512bf16),
                         [](const ::testing::TestParamInfo<Isa>& info) { return std::string(kernels::isa_name(info.param)); });

TEST(CpuKernels, RejectsUnsupportedSchemesAndShapes) {
  std::string why;
  // Block formats need whole blocks.
  EXPECT_FALSE(KernelMatrix::supports(scheme_of("q4_0"), 4, 33, &why));
  EXPECT_FALSE(why.empty());
  EXPECT_FALSE(KernelMatrix::supports(scheme_of("q4_k"), 4, 255, &why));
  EXPECT_FALSE(KernelMatrix::supports(scheme_of("q6_k"), 4, 257, &why));
  EXPECT_FALSE(KernelMatrix::supports(scheme_of("q8_0"), 4, 31, &why));
  // Formats without kernels, int4 groups that are not multiples of 32, int8 groups.
  EXPECT_FALSE(KernelMatrix::supports(scheme_of("nf4"), 4, 64, &why));
  EXPECT_NE(why.find("nf4"), std::string::npos) << why;
  EXPECT_FALSE(KernelMatrix::supports(scheme_of("int4-g16-asym"), 4, 64, &why));
  EXPECT_FALSE(KernelMatrix::supports(scheme_of("int8-g32-sym"), 4, 64, &why));
  EXPECT_FALSE(KernelMatrix::supports(scheme_of("int4-ch-asym"), 4, 48, &why));
  EXPECT_TRUE(KernelMatrix::supports(scheme_of("int8-ch-sym"), 4, 3, &why)) << why;
  // Inconsistent planes are errors, not crashes.
  std::mt19937 rng(1);
  QuantizedTensor q = quantize_random(scheme_of("q4_0"), 4, 64, rng);
  q.codes.pop_back();
  auto m = KernelMatrix::create(q);
  ASSERT_FALSE(m.has_value());
  EXPECT_NE(m.status().message().find("plane sizes"), std::string::npos) << m.status().message();
  QuantizedTensor e;
  e.scheme = scheme_of("q4_0");
  EXPECT_FALSE(KernelMatrix::create(e).has_value());
}

TEST(CpuKernels, IsaNamesAndClamping) {
  for (int i = 0; i < kernels::kIsaCount; ++i) {
    const Isa isa = static_cast<Isa>(i);
    EXPECT_EQ(kernels::parse_isa(kernels::isa_name(isa)), isa);
  }
  EXPECT_FALSE(kernels::parse_isa("avx3").has_value());
  const Isa before = kernels::active_isa();
  EXPECT_EQ(kernels::set_active_isa(Isa::avx512bf16), kernels::cpu_isa());  // clamped
  EXPECT_EQ(kernels::set_active_isa(Isa::scalar), Isa::scalar);
  kernels::set_active_isa(before);
  std::printf("cpu_isa %s, active %s\n", kernels::isa_name(kernels::cpu_isa()), kernels::isa_name(kernels::active_isa()));
}

// Tuning variables (QFORGE_X8_PREFETCH, QFORGE_DENSE_GEMM_TOKENS) go through env_count: a bad
// value falls back to the default with a warning that names the variable.
TEST(CpuKernels, EnvCountParsesOrWarns) {
  const char* name = "QFORGE_TEST_ENV_COUNT";
  ::unsetenv(name);
  EXPECT_EQ(kernels::env_count(name, 7), 7);
  ::setenv(name, "", 1);
  EXPECT_EQ(kernels::env_count(name, 7), 7);
  ::setenv(name, "4096", 1);
  EXPECT_EQ(kernels::env_count(name, 7), 4096);
  ::setenv(name, "0", 1);
  EXPECT_EQ(kernels::env_count(name, 7), 0);
  for (const char* bad : {"abc", "-3", "12x", "99999999999999999999999"}) {
    ::setenv(name, bad, 1);
    testing::internal::CaptureStderr();
    EXPECT_EQ(kernels::env_count(name, 7), 7) << bad;
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find(std::string(name) + "=" + bad), std::string::npos) << err;
  }
  ::unsetenv(name);
}

TEST(CpuKernels, KernelLinearMatchesQuantizedLinearAndDenseWeight) {
  std::mt19937 rng(5);
  for (const std::string& name : kernel_scheme_names()) {
    const Scheme s = scheme_of(name);
    const int64_t rows = 40, cols = std::max<int64_t>(col_block(s, 0), 256), tokens = 4;
    const QuantizedTensor q = quantize_random(s, rows, cols, rng);
    std::vector<float> bias = random_floats(rows, rng);
    auto k = KernelLinear::create(q, bias);
    ASSERT_TRUE(k.has_value()) << k.status().message();
    auto ql = QuantizedLinear::create(q, bias);
    ASSERT_TRUE(ql.has_value());
    EXPECT_EQ((*k)->describe(), s.name());
    std::vector<float> dk(static_cast<size_t>(rows * cols)), dq(dk.size());
    (*k)->dense_weight(dk.data());
    (*ql)->dense_weight(dq.data());
    EXPECT_EQ(0, std::memcmp(dk.data(), dq.data(), dk.size() * 4)) << name << ": dense_weight differs";
    const std::vector<float> x = random_floats(tokens * cols, rng);
    std::vector<float> yk(static_cast<size_t>(tokens * rows)), yq(yk.size());
    (*k)->forward(x.data(), tokens, yk.data());
    (*ql)->forward(x.data(), tokens, yq.data());
    const Bounds b = make_bounds(q, kernels::ActPrecision::int8x2, x, tokens);
    for (size_t i = 0; i < yk.size(); ++i) {
      // QuantizedLinear runs f32 BLAS on the dequantized weight: within the activation bound plus
      // both summation bounds of the exact product.
      const double allowed = b.quant[i] + b.order[i] + 1e-5 * std::fabs(b.exact[i]) + 1e-6;
      EXPECT_LE(std::fabs(static_cast<double>(yk[i]) - yq[i]), allowed) << name << " output " << i;
    }
  }
  // Batches from dense_gemm_min_tokens() on run dequantize + sgemm: exactly QuantizedLinear's path.
  {
    const int64_t saved = kernels::dense_gemm_min_tokens();
    kernels::set_dense_gemm_min_tokens(3);
    const QuantizedTensor q = quantize_random(scheme_of("q4_k"), 24, 512, rng);
    auto k = KernelLinear::create(q);
    auto ql = QuantizedLinear::create(q);
    ASSERT_TRUE(k.has_value() && ql.has_value());
    const std::vector<float> x = random_floats(5 * 512, rng);
    std::vector<float> yk(5 * 24), yq(yk.size());
    (*k)->forward(x.data(), 5, yk.data());
    (*ql)->forward(x.data(), 5, yq.data());
    EXPECT_EQ(0, std::memcmp(yk.data(), yq.data(), yk.size() * 4));
    kernels::set_dense_gemm_min_tokens(saved);
  }
  auto bad = KernelLinear::create(quantize_random(scheme_of("q8_0"), 4, 32, rng), std::vector<float>(3));
  EXPECT_FALSE(bad.has_value());
}

}  // namespace
}  // namespace qforge
