// AVX-512 BF16 level. No kernel of its own: vdpbf16ps rounds the f32 activations to bf16, which
// the bf16-weight specification (f32 activations, f32 accumulation) does not allow, so bf16
// weights use the AVX-512F widening kernel (kernels-avx512.cpp) and the other formats their
// VNNI/AVX-512/AVX2 variants through the registry's fallback.
#include "kernels/kernel_registry.h"

namespace qforge::kernels {

void register_avx512bf16_kernels() {}

}  // namespace qforge::kernels
