// Shared scale search and row driver of the GGUF block quantizers (see gguf_search.h).
#include "formats/gguf_search.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "qforge/dtype.h"
#include "qforge/parallel.h"

namespace qforge::formats::gguf {

float store_scale(float v, ScaleStore store) {
  if (store == ScaleStore::f16) return f16_to_f32(f32_to_f16(v));
  return v;
}

namespace {

// Values of a block after clip_ratio: clamped to [c * min, c * max] on the side(s) that straddle 0.
void clip_block(float* x, int n, float clip_ratio) {
  if (clip_ratio >= 1.0f) return;
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  const float clo = lo < 0 ? clip_ratio * lo : lo;
  const float chi = hi > 0 ? clip_ratio * hi : hi;
  for (int i = 0; i < n; ++i) x[i] = std::clamp(x[i], clo, chi);
}

}  // namespace

Status quantize_blocks(const char* format, int block, int block_bytes, double bound, EncodeBlockFn encode,
                       const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                       const QuantizeOptions& options, QuantizedTensor* out) {
  if (out == nullptr) return invalid_argument(fmt::format("{}: no output tensor", format));
  if (rows < 0 || cols < 0) return invalid_argument(fmt::format("{}: negative shape [{}, {}]", format, rows, cols));
  if (cols % block != 0)
    return invalid_argument(fmt::format("{}: the row length {} is not a multiple of the {}-element block", format,
                                        cols, block));
  const int64_t blocks_per_row = cols / block;
  if (cols > 0 && rows > std::numeric_limits<int64_t>::max() / cols)
    return invalid_argument(fmt::format("{}: shape [{}, {}] overflows", format, rows, cols));
  const int64_t numel = rows * cols;
  const int64_t row_bytes = blocks_per_row * block_bytes;
  if (row_bytes > 0 && rows > std::numeric_limits<int64_t>::max() / row_bytes)
    return invalid_argument(fmt::format("{}: shape [{}, {}] overflows", format, rows, cols));
  if (numel > 0 && w == nullptr) return invalid_argument(fmt::format("{}: no input weights", format));
  if (!(options.clip_ratio > 0.0f && options.clip_ratio <= 1.0f))
    return invalid_argument(fmt::format("{}: clip_ratio {} is not in (0, 1]", format, options.clip_ratio));

  const float* importance = options.importance;
  bool per_column = false;
  if (importance != nullptr) {
    if (options.importance_size == static_cast<size_t>(numel)) {
      per_column = false;
    } else if (options.importance_size == static_cast<size_t>(cols)) {
      per_column = true;
    } else {
      return invalid_argument(fmt::format("{}: importance has {} values; expected rows * cols = {} or cols = {}",
                                          format, options.importance_size, numel, cols));
    }
    for (size_t i = 0; i < options.importance_size; ++i) {
      if (!std::isfinite(importance[i]) || importance[i] < 0)
        return invalid_argument(
            fmt::format("{}: importance[{}] = {} is not a finite value >= 0", format, i, importance[i]));
    }
  }
  for (int64_t i = 0; i < numel; ++i) {
    if (!std::isfinite(w[i]))
      return invalid_argument(fmt::format("{}: weight element {} is {} (not finite)", format, i, w[i]));
  }

  out->scheme = scheme;
  out->rows = rows;
  out->cols = cols;
  out->codes.assign(static_cast<size_t>(rows * row_bytes), 0);
  out->scales.clear();
  out->zeros.clear();
  out->extra.clear();

  const float clip_ratio = options.clip_ratio;
  // One row per chunk; the error of the lowest failing row is reported, whatever the threads.
  const Status st = parallel_for_status(rows, 1, [&](int64_t, int64_t row_begin, int64_t row_end) -> Status {
    std::vector<float> x(static_cast<size_t>(block)), wt(static_cast<size_t>(block));
    for (int64_t r = row_begin; r < row_end; ++r) {
      for (int64_t b = 0; b < blocks_per_row; ++b) {
        const int64_t base = r * cols + b * block;
        std::memcpy(x.data(), w + base, sizeof(float) * static_cast<size_t>(block));
        clip_block(x.data(), block, clip_ratio);
        double wsum = 0;
        if (importance != nullptr) {
          const float* src = per_column ? importance + b * block : importance + base;
          for (int i = 0; i < block; ++i) {
            wt[static_cast<size_t>(i)] = src[i];
            wsum += src[i];
          }
        }
        if (!(wsum > 0)) std::fill(wt.begin(), wt.end(), 1.0f);  // no (or all-zero) importance: uniform
        float absmax = 0;
        for (float v : x) absmax = std::max(absmax, std::fabs(v));
        const float max_err = static_cast<float>(bound * absmax);
        uint8_t* dst = out->codes.data() + r * row_bytes + b * block_bytes;
        if (!encode(x.data(), wt.data(), max_err, dst)) {
          return invalid_argument(fmt::format(
              "{}: row {}, block {} (absmax {}) is out of the range of the format's f16 scale", format, r, b, absmax));
        }
      }
    }
    return Status::ok();
  });
  if (!st.is_ok()) {
    out->codes.clear();
    return st;
  }
  return Status::ok();
}

void dequantize_blocks(const QuantizedTensor& q, int block, int block_bytes, DecodeBlockFn decode, float* out) {
  QFORGE_CHECK(q.rows >= 0 && q.cols >= 0 && q.cols % block == 0);
  const int64_t nblocks = q.rows * (q.cols / block);
  QFORGE_CHECK(q.codes.size() == static_cast<size_t>(nblocks * block_bytes));
  parallel_for(nblocks, 4096, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) decode(q.codes.data() + i * block_bytes, out + i * block);
  });
}

// ---- Symmetric levels -----------------------------------------------------------------------

namespace {

constexpr int kMaxTable = 16;

// Weighted squared error and largest |x - y| over a block, in kLanes independent partial sums
// (short dependency chains; a fixed order, so the result is deterministic). Blocks are
// multiples of kLanes long.
struct ErrorSum {
  static constexpr int kLanes = 4;
  double err[kLanes] = {0, 0, 0, 0};
  double max[kLanes] = {0, 0, 0, 0};
  void add(int lane, float x, float y, float w) {
    const double diff = static_cast<double>(x) - static_cast<double>(y);
    err[lane] += static_cast<double>(w) * diff * diff;
    max[lane] = std::max(max[lane], std::fabs(diff));
  }
  double total() const { return (err[0] + err[1]) + (err[2] + err[3]); }
  double worst() const { return std::max(std::max(max[0], max[1]), std::max(max[2], max[3])); }
};

int nearest_int_level(float v, int lo, int hi) {
  const float c = std::clamp(v, static_cast<float>(lo) - 1.0f, static_cast<float>(hi) + 1.0f);
  return std::clamp(round_small(c), lo, hi) - lo;
}

// Midpoints between consecutive table values; the nearest index is the number of midpoints
// below v (ties go to the lower value). Branchless, so cheap on unpredictable data.
void table_midpoints(const Levels& levels, float* mids) {
  for (int i = 0; i + 1 < levels.table_size; ++i)
    mids[i] = 0.5f * (static_cast<float>(levels.table[i]) + static_cast<float>(levels.table[i + 1]));
}

int nearest_table_level(float v, const float* mids, int n_mids) {
  int k = 0;
  for (int i = 0; i < n_mids; ++i) k += v > mids[i] ? 1 : 0;
  return k;
}

template <bool kTable>
double symmetric_codes_impl(const float* x, const float* w, int n, const Levels& levels, float d, uint8_t* k,
                            double* max_abs_err, double stop_at) {
  float mids[kMaxTable];
  const int n_mids = kTable ? levels.table_size - 1 : 0;
  if constexpr (kTable) table_midpoints(levels, mids);
  const float inv = d != 0.0f ? 1.0f / d : 0.0f;
  ErrorSum sum;
  for (int i0 = 0; i0 < n; i0 += ErrorSum::kLanes) {
    for (int l = 0; l < ErrorSum::kLanes; ++l) {
      const int i = i0 + l;
      const int kk =
          kTable ? nearest_table_level(x[i] * inv, mids, n_mids) : nearest_int_level(x[i] * inv, levels.lo, levels.hi);
      k[i] = static_cast<uint8_t>(kk);
      const float y = d * static_cast<float>(kTable ? levels.table[kk] : levels.lo + kk);
      sum.add(l, x[i], y, w[i]);
    }
    if (sum.total() >= stop_at) break;
  }
  if (max_abs_err) *max_abs_err = sum.worst();
  return sum.total();
}

}  // namespace

int nearest_level(const Levels& levels, float v) {
  if (levels.table == nullptr) return nearest_int_level(v, levels.lo, levels.hi);
  float mids[kMaxTable];
  table_midpoints(levels, mids);
  return nearest_table_level(v, mids, levels.table_size - 1);
}

double symmetric_codes(const float* x, const float* w, int n, const Levels& levels, float d, uint8_t* k,
                       double* max_abs_err, double stop_at) {
  QFORGE_CHECK(levels.table == nullptr || (levels.table_size >= 2 && levels.table_size <= kMaxTable));
  QFORGE_CHECK(n % ErrorSum::kLanes == 0);
  if (levels.table != nullptr) return symmetric_codes_impl<true>(x, w, n, levels, d, k, max_abs_err, stop_at);
  return symmetric_codes_impl<false>(x, w, n, levels, d, k, max_abs_err, stop_at);
}

namespace {

struct Eval {
  double err = std::numeric_limits<double>::infinity();
  bool admissible = false;
  bool valid = false;
};

// (admissible, err) ordering: an admissible candidate beats any inadmissible one.
bool better(const Eval& a, const Eval& b) {
  if (!a.valid) return false;
  if (!b.valid) return true;
  if (a.admissible != b.admissible) return a.admissible;
  return a.err < b.err;
}

// The best so far is only beaten by a lower error: sums stop once they reach it.
double stop_for(const Eval& best) { return best.valid && best.admissible ? best.err : kNoStop; }

Eval eval_symmetric(const float* x, const float* w, int n, const Levels& levels, float d, float max_err,
                    uint8_t* k, double stop_at) {
  Eval e;
  if (!std::isfinite(d) || d == 0.0f) return e;
  double worst = 0;
  e.err = symmetric_codes(x, w, n, levels, d, k, &worst, stop_at);
  e.admissible = worst <= static_cast<double>(max_err);
  e.valid = true;
  return e;
}

}  // namespace

SymmetricResult search_symmetric(const float* x, const float* w, int n, const SymmetricSearch& cfg,
                                 ScaleStore store, float max_err, uint8_t* k) {
  const Levels& lv = cfg.levels;
  float amax = 0, m = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      m = x[i];
    }
  }
  SymmetricResult res;
  if (amax == 0) {
    const uint8_t zero = static_cast<uint8_t>(nearest_level(lv, 0.0f));
    std::fill(k, k + n, zero);
    return res;  // d = 0 reconstructs every value exactly
  }

  std::vector<uint8_t> cand(static_cast<size_t>(n));
  Eval best;
  float best_d = 0;
  auto consider = [&](float d) {
    const Eval e = eval_symmetric(x, w, n, lv, d, max_err, cand.data(), stop_for(best));
    if (better(e, best)) {
      best = e;
      best_d = d;
      std::copy(cand.begin(), cand.end(), k);
    }
  };

  const int edge_lo = lv.value(0), edge_hi = lv.value(lv.count() - 1);
  const int edges[2] = {edge_lo, edge_hi};
  const int n_edges = edge_lo == -edge_hi ? 1 : 2;
  const int steps = cfg.delta_step > 0 ? static_cast<int>(std::floor((cfg.delta_max - cfg.delta_min) / cfg.delta_step + 1e-4f)) : 0;
  for (int e = 0; e < n_edges; ++e) {
    const float edge = static_cast<float>(edges[e]);
    const float sign = edge < 0 ? -1.0f : 1.0f;
    for (int s = -1; s <= steps; ++s) {
      const float delta = s < 0 ? 0.0f : cfg.delta_min + cfg.delta_step * static_cast<float>(s);
      if (s >= 0 && std::fabs(delta) < 1e-6f) continue;  // delta = 0 already tried first
      const float divisor = edge + sign * delta;
      if (std::fabs(divisor) < 0.5f) continue;
      consider(store_scale(m / divisor, store));
    }
  }

  // Weighted least-squares refinement of the best: given its codes the optimal scale is
  // sum w x l / sum w l^2; the codes are then re-chosen for the new (rounded) scale.
  for (int it = 0; it < cfg.refine_iters && best.valid; ++it) {
    double num = 0, den = 0;
    for (int i = 0; i < n; ++i) {
      const double l = lv.value(k[i]);
      num += static_cast<double>(w[i]) * x[i] * l;
      den += static_cast<double>(w[i]) * l * l;
    }
    if (!(den > 0)) break;
    const float d = store_scale(static_cast<float>(num / den), store);
    if (d == best_d) break;
    const Eval before = best;
    consider(d);
    if (!better(best, before)) break;
  }

  if (!best.valid) {  // every candidate overflowed the stored precision
    res.d = std::numeric_limits<float>::infinity();
    res.err = std::numeric_limits<double>::infinity();
    res.admissible = false;
    return res;
  }
  res.d = best_d;
  res.err = best.err;
  res.admissible = best.admissible;
  return res;
}

// ---- Affine levels --------------------------------------------------------------------------

double affine_codes(const float* x, const float* w, int n, int nmax, float s, float b, uint8_t* q,
                    double* max_abs_err, double stop_at) {
  QFORGE_CHECK(n % ErrorSum::kLanes == 0);
  const float inv = s != 0.0f ? 1.0f / s : 0.0f;
  const float top = static_cast<float>(nmax) + 1.0f;
  ErrorSum sum;
  for (int i0 = 0; i0 < n; i0 += ErrorSum::kLanes) {
    for (int l = 0; l < ErrorSum::kLanes; ++l) {
      const int i = i0 + l;
      const int qq = s != 0.0f ? std::clamp(round_small(std::clamp((x[i] - b) * inv, -1.0f, top)), 0, nmax) : 0;
      q[i] = static_cast<uint8_t>(qq);
      const float y = s * static_cast<float>(qq) + b;
      sum.add(l, x[i], y, w[i]);
    }
    if (sum.total() >= stop_at) break;
  }
  if (max_abs_err) *max_abs_err = sum.worst();
  return sum.total();
}

namespace {

// Weighted least squares of x ~ s * q + b over fixed codes; false when degenerate.
bool fit_affine(const float* x, const float* w, int n, const uint8_t* q, bool offset_nonpositive, float* s,
                float* b) {
  double sw = 0, sq = 0, sqq = 0, sx = 0, sqx = 0;
  for (int i = 0; i < n; ++i) {
    const double wi = w[i], qi = q[i];
    sw += wi;
    sq += wi * qi;
    sqq += wi * qi * qi;
    sx += wi * x[i];
    sqx += wi * qi * x[i];
  }
  const double det = sw * sqq - sq * sq;
  if (!(det > 1e-12 * sw * sqq) || !(sqq > 0)) return false;
  double ss = (sw * sqx - sq * sx) / det;
  double bb = (sqq * sx - sq * sqx) / det;
  if (offset_nonpositive && bb > 0) {
    bb = 0;
    ss = sqx / sqq;
  }
  if (!(ss > 0)) return false;
  *s = static_cast<float>(ss);
  *b = static_cast<float>(bb);
  return true;
}

}  // namespace

AffineResult search_affine(const float* x, const float* w, int n, const AffineSearch& cfg, ScaleStore store,
                           float max_err, uint8_t* q) {
  float rmin = x[0], rmax = x[0];
  for (int i = 1; i < n; ++i) {
    rmin = std::min(rmin, x[i]);
    rmax = std::max(rmax, x[i]);
  }
  const float lo = cfg.offset_nonpositive ? std::min(rmin, 0.0f) : rmin;

  std::vector<uint8_t> cand(static_cast<size_t>(n));
  Eval best;
  float best_s = 0, best_b = 0;
  auto consider = [&](float s, float b) {
    Eval e;
    if (std::isfinite(s) && std::isfinite(b) && s >= 0) {
      double worst = 0;
      e.err = affine_codes(x, w, n, cfg.nmax, s, b, cand.data(), &worst, stop_for(best));
      e.admissible = worst <= static_cast<double>(max_err);
      e.valid = true;
    }
    if (better(e, best)) {
      best = e;
      best_s = s;
      best_b = b;
      std::copy(cand.begin(), cand.end(), q);
    }
  };

  // The plain min-max encoding first: it is the reference the search must never lose to.
  consider(store_scale((rmax - lo) / static_cast<float>(cfg.nmax), store), store_scale(lo, store));

  if (rmax > lo) {
    const float range = rmax - lo;
    const int steps =
        cfg.delta_step > 0 ? static_cast<int>(std::floor((cfg.delta_max - cfg.delta_min) / cfg.delta_step + 1e-4f)) : 0;
    for (int st = 0; st <= steps; ++st) {
      const float delta = cfg.delta_min + cfg.delta_step * static_cast<float>(st);
      const float iscale = (static_cast<float>(cfg.nmax) + delta) / range;
      if (!(iscale > 0)) continue;
      for (int i = 0; i < n; ++i) {
        const int qq = round_small(std::clamp((x[i] - lo) * iscale, 0.0f, static_cast<float>(cfg.nmax)));
        cand[static_cast<size_t>(i)] = static_cast<uint8_t>(qq);
      }
      float s, b;
      if (!fit_affine(x, w, n, cand.data(), cfg.offset_nonpositive, &s, &b)) continue;
      consider(store_scale(s, store), store_scale(b, store));
    }
    for (int it = 0; it < cfg.refine_iters && best.valid; ++it) {
      float s, b;
      if (!fit_affine(x, w, n, q, cfg.offset_nonpositive, &s, &b)) break;
      s = store_scale(s, store);
      b = store_scale(b, store);
      if (s == best_s && b == best_b) break;
      const Eval before = best;
      consider(s, b);
      if (!better(best, before)) break;
    }
  }

  AffineResult res;
  if (!best.valid) {
    res.s = std::numeric_limits<float>::infinity();
    res.err = std::numeric_limits<double>::infinity();
    res.admissible = false;
    return res;
  }
  res.s = best_s;
  res.b = best_b;
  res.err = best.err;
  res.admissible = best.admissible;
  return res;
}

}  // namespace qforge::formats::gguf
