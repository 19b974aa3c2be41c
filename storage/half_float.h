// IEEE fp16 and bfloat16 conversions, rounding to nearest even; shared by
// the KV cache codec and the index's exact batch searcher so that both round
// exactly alike (tests compare them with the CPU's F16C instructions). Plain
// C++17, no dependencies, like metric.h.
#pragma once

#include <cpuid.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace engram {

// Whether the CPU has AVX2 and the F16C conversions (CPUID leaf 1, ECX bit
// 29; asked directly because clang 14's __builtin_cpu_supports has no
// "f16c"). Kernels that use both dispatch on this.
inline bool CpuHasAvx2AndF16c() {
  static const bool have = [] {
    unsigned eax, ebx, ecx, edx;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
    return f16c && __builtin_cpu_supports("avx2");
  }();
  return have;
}

inline uint32_t FloatBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

inline float BitsFloat(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

inline float HalfToFloat(uint16_t half) {
  uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  uint32_t exponent = (half >> 10) & 0x1Fu;
  uint32_t mantissa = half & 0x3FFu;
  if (exponent == 0) {
    float magnitude = static_cast<float>(mantissa) * 0x1p-24f;  // subnormal (or zero), exact
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return BitsFloat(sign | 0x7F800000u | (mantissa << 13));
  return BitsFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// Overflow gives infinity, NaN a quiet NaN.
inline uint16_t FloatToHalf(float value) {
  uint32_t bits = FloatBits(value);
  uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude >= 0x7F800000u) {  // inf or NaN
    return static_cast<uint16_t>(sign | (magnitude > 0x7F800000u ? 0x7E00u : 0x7C00u));
  }
  if (magnitude >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520
  if (magnitude < 0x38800000u) {  // below 2^-14: a subnormal half, in units of 2^-24
    float units = BitsFloat(magnitude) * 0x1p24f;  // exact
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(units)));
  }
  uint32_t rounded = magnitude + 0xFFFu + ((magnitude >> 13) & 1u);  // round to nearest even
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

inline float BFloatToFloat(uint16_t bits) { return BitsFloat(static_cast<uint32_t>(bits) << 16); }

inline uint16_t FloatToBFloat(float value) {
  uint32_t bits = FloatBits(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

}  // namespace engram
