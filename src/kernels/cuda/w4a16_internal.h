// Internal interface between the W4A16 entry point (w4a16.cu) and its decode kernel (w4a16_gemv.cu).
#pragma once

#include <cstdint>

#include "cuda_common.h"

namespace qforge::cuda {

// Largest M the GEMV decode kernel takes (tokens held in registers).
inline constexpr int64_t kW4A16GemvMaxM = 16;

// Y = X * dequant(W)^T streaming the packed weights for 1 <= M <= kW4A16GemvMaxM; forced_splits > 0
// forces the K split (in-block for the CUDA-core kernel, rounded down to a power of two, at most
// 8; K chunks across blocks for the tensor-core one), 0 chooses it from the shape. tensor_cores:
// 0 = automatic, 1 = CUDA cores (M <= 8), 2 = mma. rows_per_warp (tensor-core kernel, M <= 8):
// 0 = automatic, 1 or 2 row tiles per warp.
Status w4a16_gemv(Context::Impl& c, const W4A16Weights& w, const void* x, void* y, int64_t m, int forced_splits,
                  int tensor_cores, int rows_per_warp);
// The tensor-core decode kernel (w4a16_gemv_tc.cu); w4a16_gemv checked 1 <= M <= kW4A16GemvMaxM.
Status w4a16_gemv_tc(Context::Impl& c, const W4A16Weights& w, const void* x, void* y, int64_t m, int forced_splits,
                     int rows_per_warp);

}  // namespace qforge::cuda
