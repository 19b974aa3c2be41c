#include "storage/kvcache/kv_codec.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "storage/half_float.h"

namespace engram::kvcache {
namespace {

constexpr float kMinScale = 1e-7f;  // MLX's eps: a constant group still gets a usable scale

// MLX's scale and bias of a group with extremes `low` and `high`.
inline void GroupScaleBias(float low, float high, float max_code, float* scale, float* bias) {
  bool low_is_edge = std::abs(low) > std::abs(high);
  float s = std::max((high - low) / max_code, kMinScale);
  s = low_is_edge ? s : -s;
  float edge = low_is_edge ? low : high;
  float q0 = std::rint(edge / s);
  float b = 0.0f;
  if (q0 != 0.0f) {
    s = edge / q0;
    b = edge;
  }
  *scale = s;
  *bias = b;
}

void QuantizeScalar(const uint16_t* input, FloatType type, size_t rows, size_t dim,
                    const CodecParams& params, uint32_t* words, uint16_t* scales,
                    uint16_t* biases) {
  const size_t group = static_cast<size_t>(params.group_size);
  const int per_word = params.ElementsPerWord();
  const float max_code = static_cast<float>((1 << params.bits) - 1);
  const size_t groups = rows * (dim / group);
  float values[128];
  for (size_t g = 0; g < groups; ++g) {
    const uint16_t* in = input + g * group;
    float low = std::numeric_limits<float>::infinity();
    float high = -low;
    for (size_t j = 0; j < group; ++j) {
      values[j] = ToFloat(in[j], type);
      high = std::max(high, values[j]);
      low = std::min(low, values[j]);
    }
    float scale, bias;
    GroupScaleBias(low, high, max_code, &scale, &bias);
    uint32_t* out = words + g * (group / per_word);
    for (size_t w = 0; w < group / per_word; ++w) {
      uint32_t word = 0;
      for (int k = 0; k < per_word; ++k) {
        float code = std::rint((values[w * per_word + k] - bias) / scale);
        code = std::min(std::max(code, 0.0f), max_code);
        word |= static_cast<uint32_t>(code) << (k * params.bits);
      }
      out[w] = word;
    }
    scales[g] = FromFloat(scale, type);
    biases[g] = FromFloat(bias, type);
  }
}

void DequantizeScalar(const uint32_t* words, const uint16_t* scales, const uint16_t* biases,
                      FloatType in_type, size_t rows, size_t dim, const CodecParams& params,
                      FloatType out_type, uint16_t* output) {
  const size_t group = static_cast<size_t>(params.group_size);
  const int per_word = params.ElementsPerWord();
  const uint32_t mask = (1u << params.bits) - 1;
  const size_t groups = rows * (dim / group);
  for (size_t g = 0; g < groups; ++g) {
    float scale = ToFloat(scales[g], in_type);
    float bias = ToFloat(biases[g], in_type);
    const uint32_t* in = words + g * (group / per_word);
    uint16_t* out = output + g * group;
    for (size_t w = 0; w < group / per_word; ++w) {
      for (int k = 0; k < per_word; ++k) {
        float value = scale * static_cast<float>((in[w] >> (k * params.bits)) & mask);
        value = value + bias;
        out[w * per_word + k] = FromFloat(value, out_type);
      }
    }
  }
}

// ---- AVX2 + F16C ---------------------------------------------------------

#define ENGRAM_AVX2 __attribute__((target("avx2,f16c")))

ENGRAM_AVX2 inline __m256 Load8(const uint16_t* in, FloatType type) {
  __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in));
  if (type == FloatType::kFloat16) return _mm256_cvtph_ps(raw);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

ENGRAM_AVX2 inline void Store8(__m256 values, FloatType type, uint16_t* out) {
  __m128i packed;
  if (type == FloatType::kFloat16) {
    packed = _mm256_cvtps_ph(values, _MM_FROUND_TO_NEAREST_INT);
  } else {  // bf16, round to nearest even (inputs are finite)
    __m256i bits = _mm256_castps_si256(values);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    bits = _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
    bits = _mm256_srli_epi32(bits, 16);
    __m256i narrowed = _mm256_packus_epi32(bits, bits);  // within 128-bit lanes
    narrowed = _mm256_permute4x64_epi64(narrowed, 0x08);
    packed = _mm256_castsi256_si128(narrowed);
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), packed);
}

ENGRAM_AVX2 inline uint32_t OrLanes(__m128i x) {
  x = _mm_or_si128(x, _mm_shuffle_epi32(x, 0x4E));
  x = _mm_or_si128(x, _mm_shuffle_epi32(x, 0xB1));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(x));
}

ENGRAM_AVX2 void QuantizeAvx2(const uint16_t* input, FloatType type, size_t rows, size_t dim,
                              const CodecParams& params, uint32_t* words, uint16_t* scales,
                              uint16_t* biases) {
  const size_t group = static_cast<size_t>(params.group_size);
  const size_t vectors = group / 8;
  const float max_code = static_cast<float>((1 << params.bits) - 1);
  const size_t groups = rows * (dim / group);
  const __m256i shifts = params.bits == 4 ? _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)
                                          : _mm256_setr_epi32(0, 8, 16, 24, 0, 8, 16, 24);
  __m256 values[16];
  uint32_t* out = words;
  for (size_t g = 0; g < groups; ++g) {
    const uint16_t* in = input + g * group;
    __m256 high = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    __m256 low = _mm256_set1_ps(std::numeric_limits<float>::infinity());
    for (size_t v = 0; v < vectors; ++v) {
      values[v] = Load8(in + 8 * v, type);
      high = _mm256_max_ps(high, values[v]);
      low = _mm256_min_ps(low, values[v]);
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(high), _mm256_extractf128_ps(high, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    __m128 l = _mm_min_ps(_mm256_castps256_ps128(low), _mm256_extractf128_ps(low, 1));
    l = _mm_min_ps(l, _mm_movehl_ps(l, l));
    l = _mm_min_ss(l, _mm_movehdup_ps(l));
    float scale, bias;
    GroupScaleBias(_mm_cvtss_f32(l), _mm_cvtss_f32(h), max_code, &scale, &bias);
    const __m256 scale8 = _mm256_set1_ps(scale);
    const __m256 bias8 = _mm256_set1_ps(bias);
    const __m256 zero = _mm256_setzero_ps();
    const __m256 top = _mm256_set1_ps(max_code);
    for (size_t v = 0; v < vectors; ++v) {
      __m256 code = _mm256_div_ps(_mm256_sub_ps(values[v], bias8), scale8);
      code = _mm256_round_ps(code, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      code = _mm256_min_ps(_mm256_max_ps(code, zero), top);
      __m256i shifted = _mm256_sllv_epi32(_mm256_cvttps_epi32(code), shifts);
      if (params.bits == 4) {
        *out++ = OrLanes(
            _mm_or_si128(_mm256_castsi256_si128(shifted), _mm256_extracti128_si256(shifted, 1)));
      } else {
        *out++ = OrLanes(_mm256_castsi256_si128(shifted));
        *out++ = OrLanes(_mm256_extracti128_si256(shifted, 1));
      }
    }
    scales[g] = FromFloat(scale, type);
    biases[g] = FromFloat(bias, type);
  }
}

ENGRAM_AVX2 void DequantizeAvx2(const uint32_t* words, const uint16_t* scales,
                                const uint16_t* biases, FloatType in_type, size_t rows, size_t dim,
                                const CodecParams& params, FloatType out_type, uint16_t* output) {
  const size_t group = static_cast<size_t>(params.group_size);
  const size_t groups = rows * (dim / group);
  const __m256i mask = _mm256_set1_epi32((1 << params.bits) - 1);
  const __m256i shifts = params.bits == 4 ? _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)
                                          : _mm256_setr_epi32(0, 8, 16, 24, 0, 8, 16, 24);
  const uint32_t* in = words;
  uint16_t* out = output;
  for (size_t g = 0; g < groups; ++g) {
    const __m256 scale = _mm256_set1_ps(ToFloat(scales[g], in_type));
    const __m256 bias = _mm256_set1_ps(ToFloat(biases[g], in_type));
    for (size_t v = 0; v < group / 8; ++v) {
      __m256i packed;
      if (params.bits == 4) {
        packed = _mm256_set1_epi32(static_cast<int>(*in++));
      } else {
        packed = _mm256_setr_m128i(_mm_set1_epi32(static_cast<int>(in[0])),
                                   _mm_set1_epi32(static_cast<int>(in[1])));
        in += 2;
      }
      __m256i codes = _mm256_and_si256(_mm256_srlv_epi32(packed, shifts), mask);
      __m256 value = _mm256_mul_ps(scale, _mm256_cvtepi32_ps(codes));
      value = _mm256_add_ps(value, bias);
      Store8(value, out_type, out);
      out += 8;
    }
  }
}

#undef ENGRAM_AVX2

bool HaveAvx2() { return CpuHasAvx2AndF16c(); }

bool UseAvx2(CodecKernel kernel) {
  return (kernel == CodecKernel::kAuto || kernel == CodecKernel::kAvx2) && HaveAvx2();
}

}  // namespace

std::string FloatTypeName(FloatType type) {
  return type == FloatType::kFloat16 ? "float16" : "bfloat16";
}

absl::Status ValidateCodec(const CodecParams& params, size_t dim) {
  if (params.bits != 4 && params.bits != 8) {
    return absl::InvalidArgumentError(absl::StrCat("kv_bits must be 4 or 8, got ", params.bits));
  }
  if (params.group_size != 32 && params.group_size != 64 && params.group_size != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_group_size must be 32, 64 or 128, got ", params.group_size));
  }
  if (dim == 0 || dim % static_cast<size_t>(params.group_size) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "head_dim ", dim, " must be a positive multiple of the group size ", params.group_size));
  }
  return absl::OkStatus();
}

bool CodecKernelAvailable(CodecKernel kernel) { return kernel != CodecKernel::kAvx2 || HaveAvx2(); }

void Quantize(const uint16_t* input, FloatType type, size_t rows, size_t dim,
              const CodecParams& params, uint32_t* words, uint16_t* scales, uint16_t* biases,
              CodecKernel kernel) {
  if (UseAvx2(kernel)) {
    QuantizeAvx2(input, type, rows, dim, params, words, scales, biases);
  } else {
    QuantizeScalar(input, type, rows, dim, params, words, scales, biases);
  }
}

void Dequantize(const uint32_t* words, const uint16_t* scales, const uint16_t* biases,
                FloatType in_type, size_t rows, size_t dim, const CodecParams& params,
                FloatType out_type, uint16_t* output, CodecKernel kernel) {
  if (UseAvx2(kernel)) {
    DequantizeAvx2(words, scales, biases, in_type, rows, dim, params, out_type, output);
  } else {
    DequantizeScalar(words, scales, biases, in_type, rows, dim, params, out_type, output);
  }
}

size_t FirstNonFinite(const uint16_t* values, size_t count, FloatType type) {
  const uint16_t exponent = type == FloatType::kFloat16 ? 0x7C00 : 0x7F80;
  constexpr size_t kChunk = 256;
  for (size_t start = 0; start < count; start += kChunk) {
    size_t end = std::min(count, start + kChunk);
    bool any = false;
    for (size_t i = start; i < end; ++i) any |= (values[i] & exponent) == exponent;
    if (!any) continue;
    for (size_t i = start; i < end; ++i) {
      if ((values[i] & exponent) == exponent) return i;
    }
  }
  return count;
}

float ToFloat(uint16_t bits, FloatType type) {
  if (type == FloatType::kFloat16) return HalfToFloat(bits);
  return BFloatToFloat(bits);
}

uint16_t FromFloat(float value, FloatType type) {
  return type == FloatType::kFloat16 ? FloatToHalf(value) : FloatToBFloat(value);
}

}  // namespace engram::kvcache
