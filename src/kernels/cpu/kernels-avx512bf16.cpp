// avx512bf16 kernels (placeholder registration filled below).
#include "kernels/cpu/tile_driver.h"

namespace qforge::kernels {

void register_avx512bf16_kernels() {}

}  // namespace qforge::kernels
