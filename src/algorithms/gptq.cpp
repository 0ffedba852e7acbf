// GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
// Pre-trained Transformers"): columns are quantized one at a time and the error of each is
// compensated on the columns not yet quantized, using the inverse Hessian of the layer's
// reconstruction loss, H = 2/n Σ x xᵀ.
//
// Quantization values come from the format table, never from a second copy of a format's math:
//   * the parameters of a group (scale, zero-point, ...) are those the table's reference quantizer
//     picks for the group's [rows, group] sub-matrix (from the original weights with act-order
//     "static groups", else from the error-updated weights when the sweep reaches the group);
//   * the values a weight can take under those parameters are found by dequantizing, through the
//     table, a copy of the group's planes with every code set to c, for each code c; a column is
//     then quantized to the nearest such value of its row.
// That works for every planar format whose elements decode independently given their group's
// parameters (int-sym, int-asym, nf4, fp4, mxfp4, fp8, binary, ternary); gptq_supports says which.
//
// Precision: the Hessian arrives as a double accumulation (pipeline.cpp); the factorisations, the
// weights being updated and the block updates are double, so the sweep's rounding (about
// cols * 1e-16) is far below any quantization step.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "formats/gguf_codes.h"
#include "qforge/progress.h"
#include "qforge/ptq.h"

extern "C" {
// LAPACK (Fortran ABI; the trailing size_t is the hidden length of the character argument).
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
void dpotri_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
void dposv_(const char* uplo, const int* n, const int* nrhs, double* a, const int* lda, double* b, const int* ldb,
            int* info, size_t uplo_len);
}

namespace qforge {
namespace {

// In-place Cholesky of a symmetric positive definite row-major matrix: afterwards the upper
// triangle holds U with A = Uᵀ U (LAPACK sees the row-major array as its transpose, so 'L' there
// is upper here); the strict lower triangle is zeroed. False when A is not positive definite.
bool cholesky_upper(std::vector<double>& a, int64_t n) {
  const int ni = static_cast<int>(n);
  int info = 0;
  dpotrf_("L", &ni, a.data(), &ni, &info, 1);
  if (info != 0) return false;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) a[static_cast<size_t>(i * n + j)] = 0.0;
  return true;
}

// Inverse of A from its factor (cholesky_upper's output), as a full symmetric matrix.
bool inverse_from_cholesky(std::vector<double>& a, int64_t n) {
  const int ni = static_cast<int>(n);
  int info = 0;
  dpotri_("L", &ni, a.data(), &ni, &info, 1);
  if (info != 0) return false;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) a[static_cast<size_t>(i * n + j)] = a[static_cast<size_t>(j * n + i)];
  return true;
}

int64_t param_group_width(const Scheme& s, int64_t cols) {
  return s.granularity == Granularity::group ? s.group_size : cols;
}

// A group's parameters and the values each code decodes to. Planar formats: one level table per
// row of the group. GGUF block formats (a group is one block): one table per row and sub-block,
// the sub-block's affine code -> value map under the block's fixed scales (gguf_codes.h).
struct GroupGrid {
  QuantizedTensor params;  // the table's quantization of the group's [rows, width] sub-matrix
  int64_t sub = 1;         // columns sharing one level table
  int64_t nsub = 1;        // tables per row
  std::vector<std::vector<float>> val;     // [rows * nsub][k]: sorted finite values
  std::vector<std::vector<uint8_t>> code;  // [rows * nsub][k]: their codes
  const std::vector<float>& values(int64_t r, int64_t col_in_group) const {
    return val[static_cast<size_t>(r * nsub + col_in_group / sub)];
  }
  const std::vector<uint8_t>& codes_of(int64_t r, int64_t col_in_group) const {
    return code[static_cast<size_t>(r * nsub + col_in_group / sub)];
  }
};

// Bytes of each row of a plane, when the plane splits evenly into rows (0: it does not).
size_t plane_row_bytes(const std::vector<uint8_t>& plane, int64_t rows) {
  if (plane.empty() || plane.size() % static_cast<size_t>(rows) != 0) return 0;
  return plane.size() / static_cast<size_t>(rows);
}

// The group's parameters: the table's quantizer on the sub-matrix (GGUF blocks: with the Hessian
// diagonal as importance, so the block search weighs the columns as the layer's output does).
// With options.mse_clip, each row's parameters are the best of the clipping ratios
// 1, 1 - 1/n, ..., 1 - max_shrink by the Hessian-diagonal-weighted error Σ_j h_j (w_j - q(w_j))²
// of that row (ties: the larger ratio).
Status choose_params(const Scheme& scheme, const float* sub, int64_t rows, int64_t width, const float* h,
                     const GptqOptions& options, QuantizedTensor& out) {
  const FormatTraits& t = format_traits(scheme.format);
  QuantizeOptions qo;
  if (t.blocks_in_codes) {
    qo.importance = h;
    qo.importance_size = static_cast<size_t>(width);
  }
  QFORGE_ASSIGN_OR_RETURN(out, quantize(scheme, sub, rows, width, qo));
  if (!options.mse_clip || options.clip_grid <= 0) return Status::ok();
  // Per-row selection needs planes that split into rows (not per-tensor scales).
  for (const auto* plane : {&out.codes, &out.scales, &out.zeros})
    if (!plane->empty() && plane_row_bytes(*plane, rows) == 0) return Status::ok();
  if (!out.extra.empty()) return Status::ok();
  const size_t n = static_cast<size_t>(rows * width);
  std::vector<float> y(n);
  auto row_errors = [&](const QuantizedTensor& q, std::vector<double>& err) -> Status {
    QFORGE_RETURN_IF_ERROR(dequantize(q, y.data()));
    err.assign(static_cast<size_t>(rows), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      double e = 0;
      for (int64_t j = 0; j < width; ++j) {
        const double d = static_cast<double>(sub[r * width + j]) - y[static_cast<size_t>(r * width + j)];
        e += static_cast<double>(h[j]) * d * d;
      }
      err[static_cast<size_t>(r)] = e;
    }
    return Status::ok();
  };
  std::vector<double> best, err;
  QFORGE_RETURN_IF_ERROR(row_errors(out, best));
  const int steps = static_cast<int>(options.clip_max_shrink * options.clip_grid + 1e-9);
  for (int i = 1; i <= steps; ++i) {
    qo.clip_ratio = static_cast<float>(1.0 - static_cast<double>(i) / options.clip_grid);
    if (!(qo.clip_ratio > 0)) break;
    QFORGE_ASSIGN_OR_RETURN(QuantizedTensor cand, quantize(scheme, sub, rows, width, qo));
    QFORGE_RETURN_IF_ERROR(row_errors(cand, err));
    for (int64_t r = 0; r < rows; ++r) {
      if (!(err[static_cast<size_t>(r)] < best[static_cast<size_t>(r)])) continue;
      best[static_cast<size_t>(r)] = err[static_cast<size_t>(r)];
      for (auto plane : {&QuantizedTensor::codes, &QuantizedTensor::scales, &QuantizedTensor::zeros}) {
        const size_t rb = plane_row_bytes(out.*plane, rows);
        if (rb == 0) continue;
        std::memcpy((out.*plane).data() + static_cast<size_t>(r) * rb, (cand.*plane).data() + static_cast<size_t>(r) * rb, rb);
      }
    }
  }
  return Status::ok();
}

// Finds every code's value in each level table by writing that code into every element of the
// group (planar: pack_bits into the codes plane; GGUF: the block's code writer, scales untouched)
// and dequantizing through the table.
// (build_tables: for g.params as they are, e.g. after a scale refit.)
Status build_tables(const Scheme& scheme, int64_t rows, int64_t width, GroupGrid& g) {
  const formats::GgufCodeLayout* layout = formats::gguf_code_layout(scheme.format);
  int64_t levels = int64_t{1} << scheme.bits;
  g.sub = width;
  if (layout != nullptr) {
    if (width != layout->block) return Status::error(ErrorCode::internal, "GPTQ: GGUF group is not one block");
    levels = layout->levels;
    g.sub = layout->sub_block;
  }
  g.nsub = width / g.sub;
  QuantizedTensor probe = g.params;
  const size_t row_bytes = probe.codes.size() / static_cast<size_t>(rows);
  if (layout == nullptr && probe.codes.size() != packed_size(width, scheme.bits) * static_cast<size_t>(rows))
    return unsupported("GPTQ: scheme " + scheme.name() + " does not store one " + std::to_string(scheme.bits) +
                       "-bit code per weight");
  std::vector<uint8_t> same(static_cast<size_t>(width));
  std::vector<float> out(static_cast<size_t>(rows * width));
  const size_t tables = static_cast<size_t>(rows * g.nsub);
  std::vector<std::vector<std::pair<float, uint8_t>>> cand(tables);
  for (int64_t c = 0; c < levels; ++c) {
    std::fill(same.begin(), same.end(), static_cast<uint8_t>(c));
    for (int64_t r = 0; r < rows; ++r) {
      uint8_t* row = probe.codes.data() + static_cast<size_t>(r) * row_bytes;
      if (layout != nullptr) layout->set_codes(row, same.data());
      else pack_bits(same.data(), width, scheme.bits, row);
    }
    QFORGE_RETURN_IF_ERROR(dequantize(probe, out.data()));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t s = 0; s < g.nsub; ++s) {
        const float* vs = out.data() + r * width + s * g.sub;
        // Every element of a table must decode alike (the premise of one table per sub-block).
        for (int64_t j = 1; j < g.sub; ++j)
          if (std::memcmp(&vs[j], &vs[0], sizeof(float)) != 0)
            return Status::error(ErrorCode::internal, "GPTQ: elements of one sub-block of " + scheme.name() +
                                                          " decode differently for one code");
        if (std::isfinite(vs[0])) cand[static_cast<size_t>(r * g.nsub + s)].push_back({vs[0], static_cast<uint8_t>(c)});
      }
  }
  g.val.assign(tables, {});
  g.code.assign(tables, {});
  for (size_t t = 0; t < tables; ++t) {
    auto& cr = cand[t];
    // Stable: among equal values the lowest code wins.
    std::stable_sort(cr.begin(), cr.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    if (cr.empty()) return Status::error(ErrorCode::internal, "GPTQ: no finite value in the grid of " + scheme.name());
    for (const auto& [v, code] : cr) {
      g.val[t].push_back(v);
      g.code[t].push_back(code);
    }
  }
  return Status::ok();
}

Status build_grid(const Scheme& scheme, const float* sub, int64_t rows, int64_t width, const float* h,
                  const GptqOptions& options, GroupGrid& g) {
  QFORGE_RETURN_IF_ERROR(choose_params(scheme, sub, rows, width, h, options, g.params));
  return build_tables(scheme, rows, width, g);
}

// Nearest grid value of row r to x (ties: the lower value); returns its index.
size_t nearest(const std::vector<float>& vals, double x) {
  auto it = std::lower_bound(vals.begin(), vals.end(), static_cast<float>(x));
  if (it == vals.begin()) return 0;
  if (it == vals.end()) return vals.size() - 1;
  const size_t hi = static_cast<size_t>(it - vals.begin()), lo = hi - 1;
  return (x - vals[lo] <= vals[hi] - x) ? lo : hi;
}


// Least-squares refit of the group scales of `q` (int-sym / int-asym, codes and zero-points fixed).
// Each weight decodes as s_g * a_i with a_i = (code - zero) (read through the table: the decode with
// every scale set to 1), so per row the objective f(s) = (w - A s)ᵀ H (w - A s) is a quadratic in the
// row's G scales. With e0 = w - A s0 (the sweep's residual), M = Aᵀ H A and r = Aᵀ H e0, the optimum
// is s0 + δ with M δ = r, and a rounded candidate s1 = s0 + δ' changes the objective by exactly
// δ'ᵀ M δ' - 2 δ'ᵀ r (no cancellation against wᵀ H w). A row takes s1 only when that change is
// negative. Groups whose codes are all at the zero-point (M_gg = 0) keep their scale.
// `w0`: the original weights (dead columns zeroed, as the sweep saw them); `H`: the damped Hessian in
// the original column order, C x C. Rows are independent, so the result does not depend on threads.
// `objective` (optional) receives each row's final objective.
Status refit_scales(QuantizedTensor& q, const float* w0, const std::vector<bool>& dead, const std::vector<double>& H,
                    std::vector<double>* objective) {
  const FormatTraits& t = format_traits(q.scheme.format);
  const int64_t rows = q.rows, cols = q.cols, G = q.groups_per_row();
  const int64_t gs = cols / G;
  const size_t C = static_cast<size_t>(cols), n_scales = static_cast<size_t>(rows * G);
  const size_t sb = dtype_size(t.scale_dtype);
  if (q.scales.size() != n_scales * sb || H.size() != C * C)
    return Status::error(ErrorCode::internal, "GPTQ refit: scale plane of " + q.scheme.name() + " is not [rows, groups]");
  std::vector<float> s0(n_scales);
  QFORGE_RETURN_IF_ERROR(convert_to_f32(t.scale_dtype, q.scales.data(), s0.data(), n_scales));
  std::vector<float> a(static_cast<size_t>(rows) * C), y(static_cast<size_t>(rows) * C);
  {
    QuantizedTensor unit = q;
    const std::vector<float> ones(n_scales, 1.0f);
    QFORGE_RETURN_IF_ERROR(convert_from_f32(t.scale_dtype, ones.data(), unit.scales.data(), n_scales));
    QFORGE_RETURN_IF_ERROR(dequantize(unit, a.data()));
  }
  QFORGE_RETURN_IF_ERROR(dequantize(q, y.data()));
  // The premise: the table decodes each weight as (its scale) * (its unit-scale value), exactly
  // (a is a small integer, the scale a short float: their f32 product is exact).
  for (int64_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < C; ++j) {
      const size_t i = static_cast<size_t>(r) * C + j;
      const float expect = a[i] * s0[static_cast<size_t>(r * G) + j / static_cast<size_t>(gs)];
      if (std::memcmp(&expect, &y[i], sizeof(float)) != 0)
        return Status::error(ErrorCode::internal, "GPTQ refit: " + q.scheme.name() + " does not decode as scale * (code - zero)");
    }

  // Rows in chunks: E·H and the per-group products A_g·H[g, :] are GEMMs over the chunk.
  const int64_t chunk = 128;
  const int64_t cr_max = std::min(chunk, rows);
  std::vector<double> Ad(static_cast<size_t>(cr_max) * C), E(static_cast<size_t>(cr_max) * C);
  std::vector<double> EH(static_cast<size_t>(cr_max) * C), Z(static_cast<size_t>(cr_max) * C);
  std::vector<double> M(static_cast<size_t>(cr_max * G * G));
  const int ci = static_cast<int>(cols);
  if (objective != nullptr) objective->assign(static_cast<size_t>(rows), 0.0);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t nr = std::min(chunk, rows - r0);
    for (int64_t r = 0; r < nr; ++r)
      for (size_t j = 0; j < C; ++j) {
        const size_t src = static_cast<size_t>(r0 + r) * C + j, dst = static_cast<size_t>(r) * C + j;
        Ad[dst] = a[src];
        E[dst] = (dead[j] ? 0.0 : static_cast<double>(w0[src])) - static_cast<double>(y[src]);
      }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nr), ci, ci, 1.0, E.data(), ci, H.data(), ci,
                0.0, EH.data(), ci);
    // M_r[g][h] = Σ_{i∈g, j∈h} a_i H_ij a_j for h >= g, from Z = A[:, g] · H[g, g*gs:].
    for (int64_t g = 0; g < G; ++g) {
      const int64_t c0 = g * gs, width = cols - c0;
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nr), static_cast<int>(width),
                  static_cast<int>(gs), 1.0, Ad.data() + c0, ci, H.data() + static_cast<size_t>(c0) * C + static_cast<size_t>(c0), ci,
                  0.0, Z.data(), ci);
#pragma omp parallel for schedule(static) if (nr * width > 65536)
      for (int64_t r = 0; r < nr; ++r) {
        const double* zr = Z.data() + static_cast<size_t>(r) * C;
        const double* ar = Ad.data() + static_cast<size_t>(r) * C + c0;
        for (int64_t h = g; h < G; ++h) {
          double m = 0;
          for (int64_t j = (h - g) * gs; j < (h - g + 1) * gs; ++j) m += zr[j] * ar[j];
          M[static_cast<size_t>((r * G + g) * G + h)] = m;
          M[static_cast<size_t>((r * G + h) * G + g)] = m;
        }
      }
    }
#pragma omp parallel
    {
      std::vector<double> Ms, Mfactor, rs, delta;
      std::vector<int64_t> act;
      std::vector<float> cand;
      std::vector<uint8_t> bytes;
#pragma omp for schedule(static)
      for (int64_t r = 0; r < nr; ++r) {
        const double* Mr = M.data() + static_cast<size_t>(r * G * G);
        const double* ar = Ad.data() + static_cast<size_t>(r) * C;
        const double* ehr = EH.data() + static_cast<size_t>(r) * C;
        const float* s0r = s0.data() + static_cast<size_t>((r0 + r) * G);
        if (objective != nullptr) {
          const double* er = E.data() + static_cast<size_t>(r) * C;
          double f0 = 0;
          for (size_t j = 0; j < C; ++j) f0 += er[j] * ehr[j];
          (*objective)[static_cast<size_t>(r0 + r)] = f0;
        }
        act.clear();
        for (int64_t g = 0; g < G; ++g)
          if (Mr[g * G + g] > 0) act.push_back(g);
        if (act.empty()) continue;
        const int n = static_cast<int>(act.size());
        Ms.assign(static_cast<size_t>(n * n), 0.0);
        rs.assign(static_cast<size_t>(n), 0.0);
        for (int u = 0; u < n; ++u) {
          const int64_t g = act[static_cast<size_t>(u)];
          for (int v = 0; v < n; ++v) Ms[static_cast<size_t>(u * n + v)] = Mr[g * G + act[static_cast<size_t>(v)]];
          double acc = 0;
          for (int64_t i = g * gs; i < (g + 1) * gs; ++i) acc += ar[i] * ehr[i];
          rs[static_cast<size_t>(u)] = acc;
        }
        Mfactor = Ms;  // dposv overwrites its matrix with the factor
        delta = rs;
        int info = 0;
        const int one = 1;
        dposv_("L", &n, &one, Mfactor.data(), &n, delta.data(), &n, &info, 1);
        if (info != 0) continue;
        cand.assign(static_cast<size_t>(n), 0.0f);
        bool usable = true;
        for (int u = 0; u < n; ++u) {
          const double s = static_cast<double>(s0r[act[static_cast<size_t>(u)]]) + delta[static_cast<size_t>(u)];
          cand[static_cast<size_t>(u)] = static_cast<float>(s);
          if (!std::isfinite(s) || !(s > 0)) usable = false;
        }
        if (!usable) continue;
        // Round to the stored dtype, read back what dequantization will use.
        bytes.assign(static_cast<size_t>(n) * sb, 0);
        if (!convert_from_f32(t.scale_dtype, cand.data(), bytes.data(), static_cast<size_t>(n))) continue;
        if (!convert_to_f32(t.scale_dtype, bytes.data(), cand.data(), static_cast<size_t>(n))) continue;
        double change = 0;
        for (int u = 0; u < n; ++u) {
          const float v = cand[static_cast<size_t>(u)];
          if (!std::isfinite(v) || !(v > 0)) usable = false;
          delta[static_cast<size_t>(u)] = static_cast<double>(v) - static_cast<double>(s0r[act[static_cast<size_t>(u)]]);
        }
        if (!usable) continue;
        for (int u = 0; u < n; ++u) {
          double md = 0;
          for (int v = 0; v < n; ++v) md += Ms[static_cast<size_t>(u * n + v)] * delta[static_cast<size_t>(v)];
          change += delta[static_cast<size_t>(u)] * (md - 2.0 * rs[static_cast<size_t>(u)]);
        }
        if (!(change < 0)) continue;
        if (objective != nullptr) (*objective)[static_cast<size_t>(r0 + r)] += change;
        for (int u = 0; u < n; ++u)
          std::memcpy(q.scales.data() + (static_cast<size_t>((r0 + r) * G + act[static_cast<size_t>(u)])) * sb,
                      bytes.data() + static_cast<size_t>(u) * sb, sb);
      }
    }
  }
  return Status::ok();
}

}  // namespace

bool gptq_refit_supports(const Scheme& scheme) {
  const FormatTraits* t = find_format_by_id(scheme.format);
  if (!t || t->blocks_in_codes || !t->has_scales || scheme.double_quant) return false;
  if (scheme.granularity != Granularity::group && scheme.granularity != Granularity::channel) return false;
  return scheme.format == FormatId::int_sym || scheme.format == FormatId::int_asym;
}

bool gptq_supports(const Scheme& scheme) {
  const FormatTraits* t = find_format_by_id(scheme.format);
  if (!t || scheme.double_quant) return false;
  // GGUF blocks: the formats whose element codes can be rewritten under fixed block scales.
  if (t->blocks_in_codes) return formats::gguf_code_layout(scheme.format) != nullptr;
  // A per-tensor extra plane (NVFP4's global scale) would differ between group sub-matrices.
  if (t->extra_bytes != nullptr && t->extra_bytes(scheme, 1, 256) > 0) return false;
  return scheme.bits >= 1 && scheme.bits <= 8;
}

Expected<GptqResult> gptq_quantize(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                                   const double* sum_xxt, int64_t tokens, const GptqOptions& options) {
  QFORGE_RETURN_IF_ERROR(validate_scheme(scheme, rows, cols));
  if (!gptq_supports(scheme))
    return unsupported("GPTQ does not support scheme " + scheme.name() +
                       " (IQ4_NL/TQ*/Q8_K blocks, extra planes or double quantization)");
  if (tokens <= 0) return invalid_argument("GPTQ needs calibration tokens (got " + std::to_string(tokens) + ")");
  if (!(options.damp > 0) || options.block_size <= 0)
    return invalid_argument("GPTQ: damp must be > 0 and block size positive");
  if (options.refit && (options.refit_passes < 1 || options.refit_passes > 64))
    return invalid_argument("GPTQ: refit passes must be in [1, 64], got " + std::to_string(options.refit_passes));
  if (options.refit && !gptq_refit_supports(scheme))
    return invalid_argument("GPTQ scale refit (--gptq-refit) applies to int-sym / int-asym schemes with group or "
                            "per-channel scales, not " + scheme.name());
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(w[i])) return invalid_argument("GPTQ: non-finite weight at index " + std::to_string(i));

  GptqResult result;
  const int64_t gs = param_group_width(scheme, cols);
  const int64_t n_groups = cols / gs;
  const size_t C = static_cast<size_t>(cols);

  // H = 2/n Σ x xᵀ is never materialised apart from the factor U built from it below (one C x C
  // matrix instead of two: the calibration pipeline's memory bound counts these).
  const double norm = 2.0 / static_cast<double>(tokens);
  std::vector<double> diag(C);
  for (size_t j = 0; j < C; ++j) diag[j] = sum_xxt[j * C + j] * norm;
  std::vector<double> W(static_cast<size_t>(rows) * C);
  for (size_t i = 0; i < W.size(); ++i) W[i] = w[i];

  // Dead inputs (never nonzero in the calibration data): their weights cannot matter to the
  // output on that data, so they are zeroed and their Hessian row made the identity's (the
  // off-diagonal entries of such a row are already 0).
  for (int64_t j = 0; j < cols; ++j) {
    if (diag[static_cast<size_t>(j)] == 0.0) {
      diag[static_cast<size_t>(j)] = 1.0;
      for (int64_t r = 0; r < rows; ++r) W[static_cast<size_t>(r) * C + static_cast<size_t>(j)] = 0.0;
    }
  }

  // Importance of each column for the group parameters (GGUF block search, MSE clipping).
  std::vector<float> hdiag(C);
  for (size_t j = 0; j < C; ++j) hdiag[j] = static_cast<float>(diag[j]);

  // Act-order: columns by decreasing H diagonal (stable, so equal diagonals keep their order).
  std::vector<int64_t> perm(C);
  std::iota(perm.begin(), perm.end(), int64_t{0});
  if (options.act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) {
      return diag[static_cast<size_t>(a)] > diag[static_cast<size_t>(b)];
    });

  // Groups' parameters. With act-order they are static: taken from the (dead-zeroed) original
  // weights in the original column order, so each group's scales stay contiguous in the output.
  std::vector<GroupGrid> grids(static_cast<size_t>(n_groups));
  std::vector<bool> grid_ready(static_cast<size_t>(n_groups), false);
  std::vector<float> sub(static_cast<size_t>(rows * gs));
  auto make_grid = [&](int64_t g, const std::vector<double>& source, const std::vector<int64_t>& col_of) -> Status {
    // col_of[c]: where original column c lives in `source`.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < gs; ++c)
        sub[static_cast<size_t>(r * gs + c)] =
            static_cast<float>(source[static_cast<size_t>(r) * C + static_cast<size_t>(col_of[static_cast<size_t>(g * gs + c)])]);
    QFORGE_RETURN_IF_ERROR(build_grid(scheme, sub.data(), rows, gs, hdiag.data() + g * gs, options, grids[static_cast<size_t>(g)]));
    grid_ready[static_cast<size_t>(g)] = true;
    return Status::ok();
  };
  std::vector<int64_t> identity(C);
  std::iota(identity.begin(), identity.end(), int64_t{0});
  if (options.act_order)
    for (int64_t g = 0; g < n_groups; ++g) QFORGE_RETURN_IF_ERROR(make_grid(g, W, identity));

  // Permute W's columns (H is permuted as U is built).
  if (options.act_order) {
    std::vector<double> Wp(W.size());
    for (int64_t r = 0; r < rows; ++r)
      for (size_t j = 0; j < C; ++j) Wp[static_cast<size_t>(r) * C + j] = W[static_cast<size_t>(r) * C + static_cast<size_t>(perm[j])];
    W.swap(Wp);
  }

  // Dampening, raised tenfold on each Cholesky failure.
  double mean_diag = 0;
  for (size_t j = 0; j < C; ++j) mean_diag += diag[j];
  mean_diag /= static_cast<double>(C);
  double damp = options.damp;
  std::vector<double> U(C * C);
  // U := the upper Cholesky factor of the permuted damped H's inverse.
  auto factor = [&](double dmp) {
    for (size_t i = 0; i < C; ++i) {
      const size_t pi = static_cast<size_t>(perm[i]);
      for (size_t j = 0; j < C; ++j) U[i * C + j] = sum_xxt[pi * C + static_cast<size_t>(perm[j])] * norm;
      U[i * C + i] = diag[pi] + dmp * mean_diag;
    }
    return cholesky_upper(U, cols) && inverse_from_cholesky(U, cols) && cholesky_upper(U, cols);
  };
  for (int attempt = 0;; ++attempt) {
    if (factor(damp)) break;
    if (attempt >= options.max_damp_raises)
      return Status::error(ErrorCode::internal, "GPTQ: the Hessian stays indefinite with dampening " + std::to_string(damp));
    result.warnings.push_back("Cholesky failed with dampening " + std::to_string(damp) + " of the mean diagonal; retrying with " +
                              std::to_string(damp * 10));
    damp *= 10;
  }
  result.damp_used = damp;

  // With the refit, further passes sweep again on the scales kept so far (each row's best refit
  // scales; the codes follow the new grid) and refit again; each row keeps the pass with its lowest
  // objective.
  const int passes = options.refit ? options.refit_passes : 1;
  std::vector<double> W_start;
  if (passes > 1) W_start = W;
  std::vector<double> best_obj, obj;
  QuantizedTensor later;
  for (int pass = 0; pass < passes; ++pass) {
    if (pass > 0) {
      W = W_start;
      if (!factor(damp)) return Status::error(ErrorCode::internal, "GPTQ: the Hessian's factorisation failed on a refit pass");
      const size_t sb = dtype_size(format_traits(scheme.format).scale_dtype);
      for (int64_t g = 0; g < n_groups; ++g) {
        GroupGrid& grid = grids[static_cast<size_t>(g)];
        if (grid.params.scales.size() != static_cast<size_t>(rows) * sb)
          return Status::error(ErrorCode::internal, "GPTQ refit: group parameters are not one scale per row");
        for (int64_t r = 0; r < rows; ++r)
          std::memcpy(grid.params.scales.data() + static_cast<size_t>(r) * sb,
                      result.q.scales.data() + static_cast<size_t>(r * n_groups + g) * sb, sb);
        QFORGE_RETURN_IF_ERROR(build_tables(scheme, rows, gs, grid));
      }
    }
    // The column sweep with lazy block updates.
    std::vector<uint8_t> codes(static_cast<size_t>(rows) * C);  // by permuted column
    const int64_t B = options.block_size;
    std::vector<double> err(static_cast<size_t>(rows * B));
    double loss = 0;
    for (int64_t i1 = 0; i1 < cols; i1 += B) {
      const int64_t i2 = std::min(i1 + B, cols), count = i2 - i1;
      std::fill(err.begin(), err.end(), 0.0);
      for (int64_t i = i1; i < i2; ++i) {
        const int64_t orig = perm[static_cast<size_t>(i)];
        const int64_t g = orig / gs;
        if (!grid_ready[static_cast<size_t>(g)]) {
          // Without act-order, columns arrive in order and a group starts here: its parameters come
          // from the weights as updated so far.
          QFORGE_RETURN_IF_ERROR(make_grid(g, W, identity));
        }
        const GroupGrid& grid = grids[static_cast<size_t>(g)];
        const double d = U[static_cast<size_t>(i) * C + static_cast<size_t>(i)];
        for (int64_t r = 0; r < rows; ++r) {
          double& wv = W[static_cast<size_t>(r) * C + static_cast<size_t>(i)];
          const std::vector<float>& vals = grid.values(r, orig % gs);
          const size_t k = nearest(vals, wv);
          const double q = vals[k];
          codes[static_cast<size_t>(r) * C + static_cast<size_t>(i)] = grid.codes_of(r, orig % gs)[k];
          const double e = (wv - q) / d;
          loss += (wv - q) * (wv - q) / (d * d);
          err[static_cast<size_t>(r * B + (i - i1))] = e;
          // Update the rest of this block now; columns past it wait for the block's GEMM.
          const double* urow = U.data() + static_cast<size_t>(i) * C;
          double* wrow = W.data() + static_cast<size_t>(r) * C;
          for (int64_t j = i + 1; j < i2; ++j) wrow[j] -= e * urow[j];
          wv = q;
        }
      }
      if (i2 < cols) {
        // W[:, i2:] -= Err[:, 0:count] · U[i1:i2, i2:]
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(cols - i2),
                    static_cast<int>(count), -1.0, err.data(), static_cast<int>(B), U.data() + i1 * cols + i2,
                    static_cast<int>(cols), 1.0, W.data() + i2, static_cast<int>(cols));
      }
    }
    if (pass == 0) result.proxy_loss = loss / 2;

    // Assemble the QuantizedTensor in the original column order: codes unpermuted, each group's
    // scale/zero planes copied from its parameters.
    QuantizedTensor& q = pass == 0 ? result.q : later;
    q.scheme = scheme;
    q.rows = rows;
    q.cols = cols;
    const PlaneSizes sizes = scheme_plane_sizes(scheme, rows, cols);
    q.codes.assign(sizes.codes, 0);
    q.scales.assign(sizes.scales, 0);
    q.zeros.assign(sizes.zeros, 0);
    std::vector<int64_t> pos(C);  // permuted position of each original column
    for (size_t j = 0; j < C; ++j) pos[static_cast<size_t>(perm[j])] = static_cast<int64_t>(j);
    if (const formats::GgufCodeLayout* layout = formats::gguf_code_layout(scheme.format); layout != nullptr) {
      // GGUF: each block keeps the scales chosen for it and gets the sweep's codes.
      const size_t bb = grids.empty() ? 0 : grids[0].params.codes.size() / static_cast<size_t>(rows);
      if (q.codes.size() != bb * static_cast<size_t>(rows * n_groups))
        return Status::error(ErrorCode::internal, "GPTQ: GGUF block size mismatch");
      std::vector<uint8_t> block_codes(static_cast<size_t>(gs));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < n_groups; ++g) {
          uint8_t* dst = q.codes.data() + static_cast<size_t>(r * n_groups + g) * bb;
          std::memcpy(dst, grids[static_cast<size_t>(g)].params.codes.data() + static_cast<size_t>(r) * bb, bb);
          for (int64_t c = 0; c < gs; ++c)
            block_codes[static_cast<size_t>(c)] = codes[static_cast<size_t>(r) * C + static_cast<size_t>(pos[static_cast<size_t>(g * gs + c)])];
          layout->set_codes(dst, block_codes.data());
        }
      return result;
    }
    const size_t row_bytes = q.packed_row_bytes();
    std::vector<uint8_t> row_codes(C);
    for (int64_t r = 0; r < rows; ++r) {
      for (size_t j = 0; j < C; ++j) row_codes[j] = codes[static_cast<size_t>(r) * C + static_cast<size_t>(pos[j])];
      pack_bits(row_codes.data(), cols, scheme.bits, q.codes.data() + static_cast<size_t>(r) * row_bytes);
    }
    auto copy_plane = [&](std::vector<uint8_t>& dst, auto member) -> Status {
      if (dst.empty()) return Status::ok();
      if (n_groups == 1) {
        const auto& src = grids[0].params.*member;
        if (src.size() != dst.size()) return Status::error(ErrorCode::internal, "GPTQ: plane size mismatch");
        dst = src;
        return Status::ok();
      }
      const size_t per = dst.size() / static_cast<size_t>(rows * n_groups);  // bytes per group entry
      for (int64_t g = 0; g < n_groups; ++g) {
        const auto& src = grids[static_cast<size_t>(g)].params.*member;
        if (src.size() != per * static_cast<size_t>(rows)) return Status::error(ErrorCode::internal, "GPTQ: group plane size mismatch");
        for (int64_t r = 0; r < rows; ++r)
          std::memcpy(dst.data() + (static_cast<size_t>(r * n_groups + g)) * per, src.data() + static_cast<size_t>(r) * per, per);
      }
      return Status::ok();
    };
    QFORGE_RETURN_IF_ERROR(copy_plane(q.scales, &QuantizedTensor::scales));
    QFORGE_RETURN_IF_ERROR(copy_plane(q.zeros, &QuantizedTensor::zeros));
    if (options.refit) {
      // The damped Hessian of the sweep in the original column order, in U's storage (the factor is
      // no longer needed), so the refit adds no C x C matrix to the peak.
      for (size_t i = 0; i < C; ++i) {
        for (size_t j = 0; j < C; ++j) U[i * C + j] = sum_xxt[i * C + j] * norm;
        U[i * C + i] = diag[i] + damp * mean_diag;
      }
      std::vector<bool> dead(C);
      for (size_t j = 0; j < C; ++j) dead[j] = sum_xxt[j * C + j] == 0.0;
      QFORGE_RETURN_IF_ERROR(refit_scales(q, w, dead, U, &obj));
    }
    if (pass == 0) {
      best_obj = obj;
      continue;
    }
    const size_t code_row = q.packed_row_bytes(), scale_row = q.scales.size() / static_cast<size_t>(rows),
                 zero_row = q.zeros.size() / static_cast<size_t>(rows);
    for (int64_t r = 0; r < rows; ++r) {
      if (!(obj[static_cast<size_t>(r)] < best_obj[static_cast<size_t>(r)])) continue;
      best_obj[static_cast<size_t>(r)] = obj[static_cast<size_t>(r)];
      const size_t ur = static_cast<size_t>(r);
      std::memcpy(result.q.codes.data() + ur * code_row, q.codes.data() + ur * code_row, code_row);
      std::memcpy(result.q.scales.data() + ur * scale_row, q.scales.data() + ur * scale_row, scale_row);
      if (zero_row > 0) std::memcpy(result.q.zeros.data() + ur * zero_row, q.zeros.data() + ur * zero_row, zero_row);
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------

StatsRequest GptqProcessor::stats_request() const {
  StatsRequest r;
  r.hessian = true;
  return r;
}

Status GptqProcessor::process_block(BlockContext& ctx) {
  Model& model = ctx.model();
  for (size_t gi = 0; gi < ctx.groups().size(); ++gi) {
    // Sequential mode: each group's inputs are collected with the earlier groups of the block
    // already quantized (the pipeline collected nothing up front, see collects_itself()).
    if (options_.sequential) QFORGE_RETURN_IF_ERROR(ctx.recollect({static_cast<int>(gi)}));
    InputGroup& g = ctx.groups()[gi];
    for (const LinearSite& site : g.sites) {
      QFORGE_RETURN_IF_ERROR(check_interrupted("gptq"));
      const Linear* lin = model.linear(site);
      const int64_t rows = lin->out_features(), cols = lin->in_features();
      const std::optional<Scheme> scheme = scheme_for_(site, rows, cols);
      if (!scheme) continue;
      std::vector<float> w(static_cast<size_t>(rows * cols));
      lin->dense_weight(w.data());
      Expected<GptqResult> r = gptq_quantize(*scheme, w.data(), rows, cols, g.stats.hessian.data(), g.stats.tokens, options_);
      if (!r) return r.status().with_context(linear_site_name(site));
      for (const auto& msg : r->warnings) warnings_.push_back(linear_site_name(site) + ": " + msg);
      QFORGE_RETURN_IF_ERROR(install_quantized(model, site, r->q));
      results_[site] = std::move(r->q);
    }
    g.stats.hessian.clear();
    g.stats.hessian.shrink_to_fit();
  }
  return Status::ok();
}

}  // namespace qforge
