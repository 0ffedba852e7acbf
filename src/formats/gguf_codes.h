// Writing the element codes of one GGUF block without touching its scales: what GPTQ needs to
// quantize into GGUF blocks whose scales were fixed before the column sweep (gptq.cpp).
//
// For every format listed here an element's value is an affine function of its code within a
// sub-block: y = a_s * c + b_s for code c in [0, levels), with a_s, b_s set by the block's scales
// (Q4_0: d (c - 8); Q4_1: d c + m; Q8_0: d (c - 128), the stored int8 being c - 128; Q2_K / Q4_K /
// Q5_K: (d sc) c - dmin m; Q3_K: (d (sc - 32)) (c - 4), c = low 2 bits + 4 hmask bit; Q6_K:
// (d sc) (c - 32)). So a caller can find each sub-block's level values by writing one code into
// every element and dequantizing, then choose codes freely.
#pragma once

#include <cstdint>

#include "qforge/format.h"

namespace qforge::formats {

struct GgufCodeLayout {
  FormatId format;
  int block;      // elements per block
  int sub_block;  // elements sharing one affine code -> value map
  int levels;     // codes 0 .. levels - 1
  // Replaces the codes of all `block` elements of the block at `bytes` by codes[0 .. block).
  void (*set_codes)(uint8_t* bytes, const uint8_t* codes);
};

// The layout of `format`, or null when its codes are not settable this way (IQ4_NL's table is
// not affine, TQ1_0 packs in base 3, Q8_K is ggml's activation type).
const GgufCodeLayout* gguf_code_layout(FormatId format);

}  // namespace qforge::formats
