// The KV cache codec: MLX-compatible affine quantization of fp16/bf16 rows.
//
// A row (one token of one KV head, `dim` = head_dim values) is cut into
// groups of `group_size` (32, 64 or 128) consecutive values. Each group gets a
// scale s and a bias b in the input's float type and each value an unsigned
// code q of `bits` (4 or 8) bits, so that value ~= s * q + b. Codes are packed
// little-endian into uint32 words: element i of a word sits at bits
// [bits*i, bits*i + bits), 8 elements per word at 4 bits, 4 at 8 bits.
//
// Scale and bias follow MLX's rule (mlx/backend/cpu/quantized.cpp), computed
// in fp32: s = max((max - min) / (2^bits - 1), 1e-7), negated unless |min| >
// |max|; the "edge" (min if |min| > |max|, else max) is pinned to a code:
// q0 = rint(edge / s); if q0 != 0 then s = edge / q0 and b = edge (the edge
// is represented exactly), else b = 0. Codes are clamp(rint((x - b) / s), 0,
// 2^bits - 1) with the fp32 s and b; s and b are then rounded to the input
// type for storage. Dequantization computes s * q + b in fp32 (a multiply,
// then an add, no fused multiply-add) and rounds once to the output type.
//
// The SIMD kernels (AVX2 + F16C, chosen at run time) return exactly the
// scalar reference's bits; tests/unit/kvcache/kv_codec_test.cc and the
// independent numpy reference in tests/python check both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace engram::kvcache {

enum class FloatType { kFloat16, kBFloat16 };

std::string FloatTypeName(FloatType type);  // "float16" / "bfloat16"

struct CodecParams {
  int bits = 4;
  int group_size = 64;

  int ElementsPerWord() const { return 32 / bits; }
  // uint32 words per row of `dim` values.
  size_t WordsPerRow(size_t dim) const { return dim / static_cast<size_t>(ElementsPerWord()); }
  // Groups (scales, biases) per row.
  size_t GroupsPerRow(size_t dim) const { return dim / static_cast<size_t>(group_size); }
  bool operator==(const CodecParams&) const = default;
};

// INVALID_ARGUMENT unless bits is 4 or 8, group_size is 32, 64 or 128 and
// divides `dim`.
absl::Status ValidateCodec(const CodecParams& params, size_t dim);

// Which implementation runs; kAuto picks the fastest this CPU supports.
enum class CodecKernel { kAuto, kScalar, kAvx2 };
bool CodecKernelAvailable(CodecKernel kernel);

// Quantizes `rows` rows of `dim` values (raw fp16 or bf16 bits, row-major)
// into words[rows * WordsPerRow(dim)], scales[rows * GroupsPerRow(dim)] and
// biases (same shape, raw bits of `type`). Inputs must be finite (see
// FirstNonFinite); parameters must have passed ValidateCodec.
void Quantize(const uint16_t* input, FloatType type, size_t rows, size_t dim,
              const CodecParams& params, uint32_t* words, uint16_t* scales, uint16_t* biases,
              CodecKernel kernel = CodecKernel::kAuto);

// The inverse: writes rows * dim values of `out_type` to `output`. Scales and
// biases are in `in_type` (the type they were stored in).
void Dequantize(const uint32_t* words, const uint16_t* scales, const uint16_t* biases,
                FloatType in_type, size_t rows, size_t dim, const CodecParams& params,
                FloatType out_type, uint16_t* output, CodecKernel kernel = CodecKernel::kAuto);

// Index of the first NaN or infinity among `count` values, or `count`.
size_t FirstNonFinite(const uint16_t* values, size_t count, FloatType type);

// Scalar conversions (round to nearest even), exposed for tests and clients.
float ToFloat(uint16_t bits, FloatType type);
uint16_t FromFloat(float value, FloatType type);

}  // namespace engram::kvcache
