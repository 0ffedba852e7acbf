// Reference quantize / dequantize of the GGUF block formats, for the rows of the format table
// (format_table.cpp). Each quantizer fills QuantizedTensor::codes with the concatenated ggml
// blocks, row by row (scales / zeros / extra stay empty); each dequantizer reproduces ggml's
// dequantize_row_* bit for bit. error_bound: the largest |x - dequant(quant(x))| as a fraction of
// the block's absmax (see docs/formats.md, "GGUF block formats"). Layouts: gguf_blocks.h; search:
// gguf_search.h.
#pragma once

#include "qforge/format.h"

namespace qforge::formats {

// gguf_legacy.cpp: blocks of 32
Status gguf_q4_0_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_q4_0_dequantize_ref(const QuantizedTensor&, float*);
double gguf_q4_0_error_bound(const Scheme&);
Status gguf_q4_1_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_q4_1_dequantize_ref(const QuantizedTensor&, float*);
double gguf_q4_1_error_bound(const Scheme&);
Status gguf_q5_0_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_q5_0_dequantize_ref(const QuantizedTensor&, float*);
double gguf_q5_0_error_bound(const Scheme&);
Status gguf_q5_1_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_q5_1_dequantize_ref(const QuantizedTensor&, float*);
double gguf_q5_1_error_bound(const Scheme&);
Status gguf_q8_0_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_q8_0_dequantize_ref(const QuantizedTensor&, float*);
double gguf_q8_0_error_bound(const Scheme&);
Status gguf_iq4_nl_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_iq4_nl_dequantize_ref(const QuantizedTensor&, float*);
double gguf_iq4_nl_error_bound(const Scheme&);

// gguf_kquants.cpp: super-blocks of 256
Status gguf_q2_k_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_q2_k_dequantize_ref(const QuantizedTensor&, float*);
double gguf_q2_k_error_bound(const Scheme&);
Status gguf_q3_k_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_q3_k_dequantize_ref(const QuantizedTensor&, float*);
double gguf_q3_k_error_bound(const Scheme&);
Status gguf_q4_k_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_q4_k_dequantize_ref(const QuantizedTensor&, float*);
double gguf_q4_k_error_bound(const Scheme&);
Status gguf_q5_k_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_q5_k_dequantize_ref(const QuantizedTensor&, float*);
double gguf_q5_k_error_bound(const Scheme&);
Status gguf_q6_k_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_q6_k_dequantize_ref(const QuantizedTensor&, float*);
double gguf_q6_k_error_bound(const Scheme&);
Status gguf_q8_k_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_q8_k_dequantize_ref(const QuantizedTensor&, float*);
double gguf_q8_k_error_bound(const Scheme&);

// gguf_ternary.cpp: super-blocks of 256
Status gguf_tq1_0_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_tq1_0_dequantize_ref(const QuantizedTensor&, float*);
double gguf_tq1_0_error_bound(const Scheme&);
Status gguf_tq2_0_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void gguf_tq2_0_dequantize_ref(const QuantizedTensor&, float*);
double gguf_tq2_0_error_bound(const Scheme&);

}  // namespace qforge::formats
