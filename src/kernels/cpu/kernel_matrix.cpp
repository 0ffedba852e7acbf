// The kernel registry, runtime ISA selection and KernelMatrix: packing weights into the kernels'
// layout, preparing activations and cutting a matmul into tiles over threads.
#include <omp.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "kernels/interleave_x8.h"
#include "kernels/kernel_registry.h"
#include "qforge/dtype.h"

namespace qforge::kernels {
namespace gg = formats::gguf;

// ---- registry ------------------------------------------------------------------------------------

namespace {

// The formats with kernels and their activation layout; tiles come from the ISA units.
struct Registry {
  KernelEntry entries[8] = {
      {FormatId::gguf_q8_0, ActKind::q8_32, {}}, {FormatId::gguf_q4_0, ActKind::q8_32, {}},
      {FormatId::gguf_q4_k, ActKind::q8_k, {}},  {FormatId::gguf_q6_k, ActKind::q8_k, {}},
      {FormatId::int_sym, ActKind::q8_row, {}},  {FormatId::int_asym, ActKind::f32_gsum, {}},
      {FormatId::f16, ActKind::f32, {}},         {FormatId::bf16, ActKind::f32, {}},
  };
};

Registry& registry_storage() {
  static Registry r;
  return r;
}

const Registry& registry() {
  static std::once_flag once;
  std::call_once(once, [] {
    // An ISA unit's code (even its register function) may use its instructions: call it only
    // when the CPU has them.
    const int level = static_cast<int>(cpu_isa());
    register_ref_kernels();
    if (level >= static_cast<int>(Isa::avx2)) register_avx2_kernels(), register_avx2_act_quantizers();
    if (level >= static_cast<int>(Isa::avx512)) register_avx512_kernels();
    if (level >= static_cast<int>(Isa::avx512vnni)) register_avx512vnni_kernels();
    if (level >= static_cast<int>(Isa::avx512bf16)) register_avx512bf16_kernels();
  });
  return registry_storage();
}

const KernelEntry* find_entry(FormatId f) {
  for (const KernelEntry& e : registry().entries)
    if (e.format == f) return &e;
  return nullptr;
}

}  // namespace

ActQuantizers* act_quantizer_slot(Isa isa) {
  static ActQuantizers slots[kIsaCount];
  return &slots[static_cast<int>(isa)];
}

ActQuantizers act_quantizers_for(Isa isa) {
  (void)registry();  // the slots are filled with the kernels
  ActQuantizers out{quantize_act_q8_32_x2, quantize_act_q8_k_x2};
  bool have_32 = false, have_k = false;
  for (int i = static_cast<int>(isa); i > 0; --i) {
    const ActQuantizers* a = act_quantizer_slot(static_cast<Isa>(i));
    if (!have_32 && a->q8_32 != nullptr) out.q8_32 = a->q8_32, have_32 = true;
    if (!have_k && a->q8_k != nullptr) out.q8_k = a->q8_k, have_k = true;
  }
  return out;
}

KernelEntry* registry_entry(FormatId format) {
  for (KernelEntry& e : registry_storage().entries)
    if (e.format == format) return &e;
  return nullptr;
}

std::vector<FormatId> kernel_formats() {
  std::vector<FormatId> out;
  for (const KernelEntry& e : registry().entries) out.push_back(e.format);
  return out;
}

// ---- ISA -------------------------------------------------------------------------------------------

const char* isa_name(Isa isa) {
  static constexpr const char* kNames[kIsaCount] = {"scalar", "avx2", "avx512", "avx512vnni", "avx512bf16"};
  const int i = static_cast<int>(isa);
  return i >= 0 && i < kIsaCount ? kNames[i] : "unknown";
}

std::optional<Isa> parse_isa(std::string_view name) {
  for (int i = 0; i < kIsaCount; ++i)
    if (name == isa_name(static_cast<Isa>(i))) return static_cast<Isa>(i);
  return std::nullopt;
}

Isa cpu_isa() {
  static const Isa level = [] {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    // libgcc's checks include the OS's XSAVE support for the AVX / AVX-512 register state.
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return Isa::scalar;
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")))
      return Isa::avx2;
    if (!__builtin_cpu_supports("avx512vnni")) return Isa::avx512;
    if (!__builtin_cpu_supports("avx512bf16")) return Isa::avx512vnni;
    return Isa::avx512bf16;
#else
    return Isa::scalar;
#endif
  }();
  return level;
}

namespace {

Isa clamp_isa(Isa wanted) { return static_cast<int>(wanted) <= static_cast<int>(cpu_isa()) ? wanted : cpu_isa(); }

Isa& active_storage() {
  static Isa level = [] {
    const char* env = std::getenv("QFORGE_ISA");
    if (env == nullptr || *env == '\0') return cpu_isa();
    const std::optional<Isa> wanted = parse_isa(env);
    if (!wanted) {
      std::fprintf(stderr, "qforge: warning: QFORGE_ISA=%s is not one of scalar, avx2, avx512, avx512vnni, "
                           "avx512bf16; using %s\n", env, isa_name(cpu_isa()));
      return cpu_isa();
    }
    if (clamp_isa(*wanted) != *wanted)
      std::fprintf(stderr, "qforge: warning: QFORGE_ISA=%s but this CPU supports up to %s; using %s\n", env,
                   isa_name(cpu_isa()), isa_name(cpu_isa()));
    return clamp_isa(*wanted);
  }();
  return level;
}

}  // namespace

Isa active_isa() { return active_storage(); }

Isa set_active_isa(Isa isa) {
  active_storage() = clamp_isa(isa);
  return active_storage();
}

int64_t env_count(const char* name, int64_t fallback) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(env, &end, 10);
  if (end == env || *end != '\0' || v < 0 || errno == ERANGE) {
    std::fprintf(stderr, "qforge: warning: %s=%s is not a count >= 0; using %lld\n", name, env,
                 static_cast<long long>(fallback));
    return fallback;
  }
  return static_cast<int64_t>(v);
}

namespace {
int64_t& dense_gemm_storage() {
  static int64_t tokens = env_count("QFORGE_DENSE_GEMM_TOKENS", 16);
  return tokens;
}
}  // namespace

const char* act_precision_name(ActPrecision p) { return p == ActPrecision::int8 ? "int8" : "int8x2"; }

std::optional<ActPrecision> parse_act_precision(std::string_view name) {
  if (name == "int8") return ActPrecision::int8;
  if (name == "int8x2") return ActPrecision::int8x2;
  return std::nullopt;
}

namespace {
ActPrecision& act_precision_storage() {
  static ActPrecision p = [] {
    const char* env = std::getenv("QFORGE_ACT_PRECISION");
    if (env == nullptr || *env == '\0') return ActPrecision::int8x2;
    if (const auto v = parse_act_precision(env)) return *v;
    std::fprintf(stderr, "qforge: warning: QFORGE_ACT_PRECISION=%s is not int8 or int8x2; using int8x2\n", env);
    return ActPrecision::int8x2;
  }();
  return p;
}
}  // namespace

ActPrecision default_act_precision() { return act_precision_storage(); }
void set_default_act_precision(ActPrecision p) { act_precision_storage() = p; }

int64_t dense_gemm_min_tokens() { return dense_gemm_storage(); }
void set_dense_gemm_min_tokens(int64_t tokens) { dense_gemm_storage() = tokens < 0 ? 0 : tokens; }

// ---- KernelMatrix --------------------------------------------------------------------------------

namespace {

// 64-byte aligned, zero-initialised bytes.
struct AlignedBytes {
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> ptr;
  size_t size = 0;
  void allocate(size_t n) {
    const size_t rounded = (n + 63) / 64 * 64 + 64;
    ptr.reset(static_cast<uint8_t*>(std::aligned_alloc(64, rounded)));
    QFORGE_CHECK_MSG(ptr != nullptr, "out of memory");
    std::memset(ptr.get(), 0, rounded);
    size = n;
  }
};

int64_t pad32(int64_t n) { return (n + 31) / 32 * 32; }

constexpr int64_t kMaxInt8Cols = int64_t{1} << 17;  // 128 * 127 * cols stays below 2^31

// Group length the int4 kernel uses for a scheme on `cols` columns (0 = not expressible).
int64_t int4_group(const Scheme& s, int64_t cols) {
  return s.granularity == Granularity::group ? s.group_size : cols;
}

}  // namespace

struct KernelMatrix::Impl {
  Scheme scheme;
  ActPrecision precision = ActPrecision::int8x2;
  const KernelEntry* entry = nullptr;
  WeightView view;
  AlignedBytes data;

  size_t act_stride() const {
    switch (entry->act) {
      case ActKind::q8_32: return static_cast<size_t>(view.cols / 32) * sizeof(ActQ8Block);
      case ActKind::q8_k: return static_cast<size_t>(view.cols / gg::kQK_K) * sizeof(gg::BlockQ8_K);
      case ActKind::q8_row: return kRowHeader + static_cast<size_t>(pad32(view.cols));
      case ActKind::f32: return static_cast<size_t>(view.cols) * sizeof(float);
      case ActKind::f32_gsum: return static_cast<size_t>(view.cols + view.cols / view.group) * sizeof(float);
    }
    return 0;
  }

  bool int_act() const {
    return entry->act == ActKind::q8_32 || entry->act == ActKind::q8_k || entry->act == ActKind::q8_row;
  }

  // Token x into activation row hi and, for int8x2 (integer kinds only), the residual's row lo.
  void prepare_token(const float* x, uint8_t* hi, uint8_t* lo, const ActQuantizers& aq) const {
    switch (entry->act) {
      case ActKind::q8_32:
        aq.q8_32(x, view.cols, reinterpret_cast<ActQ8Block*>(hi), reinterpret_cast<ActQ8Block*>(lo));
        break;
      case ActKind::q8_k:
        aq.q8_k(x, view.cols, reinterpret_cast<gg::BlockQ8_K*>(hi), reinterpret_cast<gg::BlockQ8_K*>(lo));
        break;
      case ActKind::q8_row: quantize_act_q8_row_x2(x, view.cols, hi, lo); break;
      case ActKind::f32: std::memcpy(hi, x, sizeof(float) * static_cast<size_t>(view.cols)); break;
      case ActKind::f32_gsum: {
        float* o = reinterpret_cast<float*>(hi);
        std::memcpy(o, x, sizeof(float) * static_cast<size_t>(view.cols));
        for (int64_t g = 0; g < view.cols / view.group; ++g) {
          float s = 0.0f;
          for (int64_t i = g * view.group; i < (g + 1) * view.group; ++i) s += x[i];
          o[view.cols + g] = s;
        }
        break;
      }
    }
  }

  void run(const float* x, int64_t n, float* y, TileFn tile, bool threaded, Isa isa) const;
};

namespace {

// Per-thread activation scratch, reused across calls (decode calls matmul thousands of times).
uint8_t* act_scratch(size_t bytes) {
  thread_local AlignedBytes buf;
  if (buf.size < bytes) buf.allocate(bytes);
  return buf.ptr.get();
}

constexpr int64_t kTokenBlock = 64;  // activation rows per tile call (fit L2 with a row chunk); even
static_assert(kTokenBlock % 2 == 0);

}  // namespace

void KernelMatrix::Impl::run(const float* x, int64_t n, float* y, TileFn tile, bool threaded, Isa isa) const {
  if (n <= 0 || view.rows <= 0) return;
  const size_t stride = act_stride();
  // Integer activations with the residual term: token t becomes activation rows 2t (x quantized)
  // and 2t + 1 (x minus that, quantized), run as two tokens over one pass of the weights.
  const bool two_terms = int_act() && precision == ActPrecision::int8x2;
  const int64_t act_rows = two_terms ? 2 * n : n;
  const uint8_t* act = nullptr;
  if (entry->act == ActKind::f32) {
    act = reinterpret_cast<const uint8_t*>(x);  // used in place
  } else {
    uint8_t* buf = act_scratch(stride * static_cast<size_t>(act_rows));
    const ActQuantizers aq = act_quantizers_for(isa);
#pragma omp parallel for schedule(static) if (threaded && n >= 4)
    for (int64_t t = 0; t < n; ++t) {
      uint8_t* hi = buf + static_cast<size_t>(two_terms ? 2 * t : t) * stride;
      prepare_token(x + t * view.cols, hi, two_terms ? hi + stride : nullptr, aq);
    }
    act = buf;
  }
  const int64_t rows = view.rows;
  float* out = y;
  if (two_terms) {
    thread_local AlignedBytes scratch;
    const size_t bytes = sizeof(float) * static_cast<size_t>(act_rows * rows);
    if (scratch.size < bytes) scratch.allocate(bytes);
    out = reinterpret_cast<float*>(scratch.ptr.get());
  }
  const int threads = threaded ? std::max(1, omp_get_max_threads()) : 1;
  // Row chunks: decode splits rows evenly (a few chunks per thread for balance); prefill uses
  // chunks of 16 rows so a chunk's weights stay in L1/L2 while the token blocks stream past.
  const int64_t chunk = n == 1 ? std::max<int64_t>(8, (rows / (4 * threads) + 7) / 8 * 8) : 16;
  const int64_t chunks = (rows + chunk - 1) / chunk;
  const double work = static_cast<double>(rows) * static_cast<double>(view.cols) * static_cast<double>(act_rows);
#pragma omp parallel for schedule(dynamic, 1) if (threads > 1 && chunks > 1 && work > 32768.0)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * chunk, r1 = std::min(rows, r0 + chunk);
    for (int64_t t0 = 0; t0 < act_rows; t0 += kTokenBlock) {  // kTokenBlock is even: pairs stay together
      const int64_t nt = std::min(kTokenBlock, act_rows - t0);
      tile(view, r0, r1, act + static_cast<size_t>(t0) * stride, stride, nt, out + t0 * rows, rows);
      if (!two_terms) continue;
      for (int64_t t = t0 / 2; t < (t0 + nt) / 2; ++t)
        for (int64_t r = r0; r < r1; ++r) y[t * rows + r] = out[2 * t * rows + r] + out[(2 * t + 1) * rows + r];
    }
  }
}

KernelMatrix::KernelMatrix() = default;
KernelMatrix::~KernelMatrix() = default;
KernelMatrix::KernelMatrix(KernelMatrix&&) noexcept = default;
KernelMatrix& KernelMatrix::operator=(KernelMatrix&&) noexcept = default;

bool KernelMatrix::supports(const Scheme& s, int64_t rows, int64_t cols, std::string* why) {
  auto fail = [&](const std::string& msg) {
    if (why != nullptr) *why = msg;
    return false;
  };
  if (find_entry(s.format) == nullptr) return fail("no fast kernel for scheme " + s.name());
  if (Status st = validate_scheme(s, rows, cols); !st.is_ok()) return fail(st.message());
  if (s.format == FormatId::int_sym) {
    if (s.bits != 8 || s.granularity == Granularity::group)
      return fail("the int kernel runs int8 per-channel or per-tensor symmetric weights (W8A8), not " + s.name());
    if (cols > kMaxInt8Cols) return fail("W8A8 kernel: " + std::to_string(cols) + " columns exceed " +
                                         std::to_string(kMaxInt8Cols) + " (int32 accumulators)");
  }
  if (s.format == FormatId::int_asym) {
    if (s.bits != 4) return fail("the asymmetric int kernel runs 4-bit weights only, not " + s.name());
    const int64_t g = int4_group(s, cols);
    if (g <= 0 || g % 32 != 0 || cols % g != 0)
      return fail("the int4 kernel needs groups that are multiples of 32 columns (" + s.name() + " on " +
                  std::to_string(cols) + " columns)");
  }
  return true;
}

Expected<KernelMatrix> KernelMatrix::create(const QuantizedTensor& q, ActPrecision precision) {
  const std::string what = "kernel weight " + q.scheme.name() + " [" + std::to_string(q.rows) + ", " +
                           std::to_string(q.cols) + "]";
  std::string why;
  if (q.rows <= 0 || q.cols <= 0) return invalid_argument(what + ": empty weight");
  if (!supports(q.scheme, q.rows, q.cols, &why)) return unsupported(what + ": " + why);
  const PlaneSizes want = scheme_plane_sizes(q.scheme, q.rows, q.cols);
  if (q.codes.size() != want.codes || q.scales.size() != want.scales || q.zeros.size() != want.zeros)
    return invalid_argument(what + ": plane sizes (codes " + std::to_string(q.codes.size()) + ", scales " +
                            std::to_string(q.scales.size()) + ", zeros " + std::to_string(q.zeros.size()) +
                            ") differ from the scheme's (" + std::to_string(want.codes) + ", " +
                            std::to_string(want.scales) + ", " + std::to_string(want.zeros) + ")");
  auto impl = std::make_unique<Impl>();
  impl->scheme = q.scheme;
  impl->precision = precision;
  impl->entry = find_entry(q.scheme.format);
  WeightView& v = impl->view;
  v.rows = q.rows;
  v.cols = q.cols;
  const size_t src_row = q.packed_row_bytes();
  auto scale_at = [&](int64_t r, int64_t g) {
    const int64_t idx = q.scheme.granularity == Granularity::tensor ? 0 : r * q.groups_per_row() + g;
    uint16_t h;
    std::memcpy(&h, q.scales.data() + 2 * idx, 2);
    return f16_to_f32(h);
  };
  if (q.scheme.format == FormatId::int_sym) {
    v.row_stride = kRowHeader + static_cast<size_t>(pad32(q.cols));
    impl->data.allocate(v.row_stride * static_cast<size_t>(q.rows));
    for (int64_t r = 0; r < q.rows; ++r) {
      uint8_t* dst = impl->data.ptr.get() + static_cast<size_t>(r) * v.row_stride;
      const float s = scale_at(r, 0);
      std::memcpy(dst, &s, sizeof s);
      const uint8_t* codes = q.codes.data() + static_cast<size_t>(r) * src_row;
      for (int64_t c = 0; c < q.cols; ++c) dst[kRowHeader + c] = static_cast<uint8_t>(codes[c] - 128);  // offset binary
    }
  } else if (q.scheme.format == FormatId::int_asym) {
    v.group = int4_group(q.scheme, q.cols);
    const int64_t groups = q.cols / v.group;
    v.row_stride = 8 * static_cast<size_t>(groups) + static_cast<size_t>(q.cols / 2);
    impl->data.allocate(v.row_stride * static_cast<size_t>(q.rows));
    for (int64_t r = 0; r < q.rows; ++r) {
      uint8_t* dst = impl->data.ptr.get() + static_cast<size_t>(r) * v.row_stride;
      auto* params = reinterpret_cast<float*>(dst);  // offset 0 of a 64-aligned buffer, 8-byte strides
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t zi = q.scheme.granularity == Granularity::tensor ? 0 : r * q.groups_per_row() + g;
        params[2 * g] = scale_at(r, g);
        params[2 * g + 1] = static_cast<float>(q.zeros[static_cast<size_t>(zi)]);
      }
      const uint8_t* codes = q.codes.data() + static_cast<size_t>(r) * src_row;
      uint8_t* qs = dst + 8 * groups;
      for (int64_t c = 0; c < q.cols; ++c) {
        const int code = (codes[c / 2] >> (4 * (c % 2))) & 0xF;
        uint8_t& byte = qs[(c / 32) * 16 + (c % 32) % 16];
        byte = static_cast<uint8_t>(byte | ((c % 32) < 16 ? code : code << 4));
      }
    }
  } else if (has_x8_layout(q.scheme.format)) {
    const int64_t groups = (q.rows + kX8 - 1) / kX8;
    v.group_stride = x8_group_bytes(q.scheme.format, q.cols);
    v.row_stride = src_row;
    impl->data.allocate(v.group_stride * static_cast<size_t>(groups));
    pack_x8(q.scheme.format, q.codes.data(), src_row, q.rows, q.cols, impl->data.ptr.get());
  } else {
    // GGUF blocks and 16-bit values run as stored.
    v.row_stride = src_row;
    impl->data.allocate(q.codes.size());
    std::memcpy(impl->data.ptr.get(), q.codes.data(), q.codes.size());
  }
  v.data = impl->data.ptr.get();
  KernelMatrix m;
  m.impl_ = std::move(impl);
  return m;
}

FormatId KernelMatrix::format() const { return impl_->scheme.format; }
ActPrecision KernelMatrix::precision() const { return impl_->precision; }
const Scheme& KernelMatrix::scheme() const { return impl_->scheme; }
int64_t KernelMatrix::rows() const { return impl_->view.rows; }
int64_t KernelMatrix::cols() const { return impl_->view.cols; }
size_t KernelMatrix::weight_bytes() const { return impl_->data.size; }

Isa KernelMatrix::variant_for(Isa isa) const {
  for (int i = static_cast<int>(clamp_isa(isa)); i > 0; --i)
    if (impl_->entry->tile[i] != nullptr) return static_cast<Isa>(i);
  return Isa::scalar;
}

void KernelMatrix::matmul(const float* x, int64_t n_tokens, float* y) const { matmul(x, n_tokens, y, active_isa()); }

void KernelMatrix::matmul(const float* x, int64_t n_tokens, float* y, Isa isa) const {
  impl_->run(x, n_tokens, y, impl_->entry->tile[static_cast<int>(variant_for(isa))], true, clamp_isa(isa));
}

void KernelMatrix::matmul_ref(const float* x, int64_t n_tokens, float* y) const {
  impl_->run(x, n_tokens, y, impl_->entry->tile[static_cast<int>(Isa::scalar)], false, Isa::scalar);
}

void KernelMatrix::dense_weight(float* out) const {
  const WeightView& v = impl_->view;
  if (impl_->scheme.format == FormatId::int_sym) {
    for (int64_t r = 0; r < v.rows; ++r) {
      const uint8_t* row = v.data + static_cast<size_t>(r) * v.row_stride;
      float s;
      std::memcpy(&s, row, sizeof s);
      for (int64_t c = 0; c < v.cols; ++c)
        out[r * v.cols + c] = static_cast<float>(static_cast<int8_t>(row[kRowHeader + c])) * s;
    }
    return;
  }
  if (impl_->scheme.format == FormatId::int_asym) {
    const int64_t groups = v.cols / v.group;
    for (int64_t r = 0; r < v.rows; ++r) {
      const uint8_t* row = v.data + static_cast<size_t>(r) * v.row_stride;
      const auto* params = reinterpret_cast<const float*>(row);
      const uint8_t* qs = row + 8 * groups;
      for (int64_t c = 0; c < v.cols; ++c) {
        const uint8_t byte = qs[(c / 32) * 16 + (c % 32) % 16];
        const int q = (c % 32) < 16 ? byte & 0xF : byte >> 4;
        const int64_t g = c / v.group;
        out[r * v.cols + c] = static_cast<float>(q - static_cast<int>(params[2 * g + 1])) * params[2 * g];
      }
    }
    return;
  }
  QuantizedTensor q;
  q.scheme = impl_->scheme;
  q.rows = v.rows;
  q.cols = v.cols;
  if (has_x8_layout(q.scheme.format)) {
    q.codes.resize(v.row_stride * static_cast<size_t>(v.rows));
    for (int64_t r = 0; r < v.rows; ++r)
      unpack_x8_row(q.scheme.format, v.data + static_cast<size_t>(r / kX8) * v.group_stride, static_cast<int>(r % kX8),
                    v.cols, q.codes.data() + static_cast<size_t>(r) * v.row_stride);
  } else {
    q.codes.assign(v.data, v.data + v.row_stride * static_cast<size_t>(v.rows));
  }
  Status s = dequantize(q, out);
  QFORGE_CHECK_MSG(s.is_ok(), "planes validated at creation");
}

}  // namespace qforge::kernels
