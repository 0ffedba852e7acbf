// avx512 kernels (placeholder registration filled below).
#include "kernels/cpu/tile_driver.h"

namespace qforge::kernels {

void register_avx512_kernels() {}

}  // namespace qforge::kernels
