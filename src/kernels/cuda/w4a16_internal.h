// Internal interface between the W4A16 entry point (w4a16.cu) and its decode kernel (w4a16_gemv.cu).
#pragma once

#include <cstdint>

#include "cuda_common.h"

namespace qforge::cuda {

// Largest M the GEMV decode kernel takes (tokens held in registers).
inline constexpr int64_t kW4A16GemvMaxM = 16;

// Y = X * dequant(W)^T streaming the packed weights for 1 <= M <= kW4A16GemvMaxM; forced_splits > 0
// forces the in-block K split (rounded down to a power of two, at most 8), 0 chooses it from the
// shape. tensor_cores: 0 = automatic (CUDA cores at M = 1, mma above), 1 = CUDA cores (M <= 8),
// 2 = mma.
Status w4a16_gemv(Context::Impl& c, const W4A16Weights& w, const void* x, void* y, int64_t m, int forced_splits,
                  int tensor_cores);
// The tensor-core decode kernel (w4a16_gemv_tc.cu), 1 <= M <= kW4A16GemvMaxM; forced_splits > 0
// forces its K split across blocks.
Status w4a16_gemv_tc(Context::Impl& c, const W4A16Weights& w, const void* x, void* y, int64_t m, int forced_splits);

}  // namespace qforge::cuda
