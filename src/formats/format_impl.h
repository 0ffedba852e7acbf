// Reference quantize/dequantize functions of each format family, declared for the table in
// format_table.cpp. One .cpp per family implements them.
#pragma once

#include "qforge/format.h"

namespace qforge::formats {

// integer.cpp
Status int_sym_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void int_sym_dequantize_ref(const QuantizedTensor&, float*);
Status int_asym_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void int_asym_dequantize_ref(const QuantizedTensor&, float*);
double int_sym_error_bound(const Scheme&);
double int_asym_error_bound(const Scheme&);

// binary_ternary.cpp
Status binary_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void binary_dequantize_ref(const QuantizedTensor&, float*);
Status ternary_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void ternary_dequantize_ref(const QuantizedTensor&, float*);
double binary_error_bound(const Scheme&);
double ternary_error_bound(const Scheme&);

// passthrough.cpp (f32: codes hold the f32 values unchanged)
Status f32_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void f32_dequantize_ref(const QuantizedTensor&, float*);
double f32_error_bound(const Scheme&);

// nf4.cpp
extern const float kNf4Codebook[16];  // the published NormalFloat4 values, ascending
Status nf4_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void nf4_dequantize_ref(const QuantizedTensor&, float*);
double nf4_error_bound(const Scheme&);
size_t nf4_extra_bytes(const Scheme&, int64_t rows, int64_t cols);  // double-quant offset + second-level scales
const float* nf4_dq_dynamic_map();  // bitsandbytes' signed 8-bit dynamic map (256 values, ascending)

// fp4.cpp (plain FP4 E2M1 with absmax group scale, MXFP4, NVFP4)
extern const float kFp4E2M1Values[16];  // value of each 4-bit code (bit 3 = sign)
Status fp4_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void fp4_dequantize_ref(const QuantizedTensor&, float*);
Status mxfp4_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void mxfp4_dequantize_ref(const QuantizedTensor&, float*);
Status nvfp4_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void nvfp4_dequantize_ref(const QuantizedTensor&, float*);
double fp4_error_bound(const Scheme&);
double mxfp4_error_bound(const Scheme&);
double nvfp4_error_bound(const Scheme&);
size_t nvfp4_extra_bytes(const Scheme&, int64_t rows, int64_t cols);  // the f32 per-tensor scale

// fp8.cpp (scaled FP8) and float_cast.cpp (f16 / bf16)
Status fp8_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void fp8_dequantize_ref(const QuantizedTensor&, float*);
double fp8_error_bound(const Scheme&);
Status float_cast_quantize_ref(const Scheme&, const float*, int64_t, int64_t, const QuantizeOptions&, QuantizedTensor*);
void float_cast_dequantize_ref(const QuantizedTensor&, float*);
double float_cast_error_bound(const Scheme&);

}  // namespace qforge::formats
