#include "index/scalar_quantizer.h"

// GCC 12 warns about the deliberately undefined registers inside its own
// AVX-512 reduction intrinsics (GCC bug 105593); the warning is not ours.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace engram::index {
namespace {

float InnerProductScalar(const float* weight, const uint8_t* code, size_t begin, size_t end) {
  float sum = 0;
  for (size_t i = begin; i < end; ++i) sum += weight[i] * static_cast<float>(code[i]);
  return sum;
}

float L2Scalar(const float* weight, const float* offset, const uint8_t* code, size_t begin,
               size_t end) {
  float sum = 0;
  for (size_t i = begin; i < end; ++i) {
    float diff = offset[i] - static_cast<float>(code[i]);
    sum += weight[i] * diff * diff;
  }
  return sum;
}

__attribute__((target("avx512f"))) float InnerProductAvx512(const float* weight,
                                                            const uint8_t* code, size_t dim) {
  __m512 acc = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    __m512 levels = _mm512_cvtepi32_ps(
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code + i))));
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(weight + i), levels, acc);
  }
  return _mm512_reduce_add_ps(acc) + InnerProductScalar(weight, code, i, dim);
}

__attribute__((target("avx512f"))) float L2Avx512(const float* weight, const float* offset,
                                                  const uint8_t* code, size_t dim) {
  __m512 acc = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    __m512 levels = _mm512_cvtepi32_ps(
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code + i))));
    __m512 diff = _mm512_sub_ps(_mm512_loadu_ps(offset + i), levels);
    acc = _mm512_fmadd_ps(_mm512_mul_ps(diff, diff), _mm512_loadu_ps(weight + i), acc);
  }
  return _mm512_reduce_add_ps(acc) + L2Scalar(weight, offset, code, i, dim);
}

__attribute__((target("avx2,fma"))) float Sum8(__m256 v) {
  __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum4 = _mm_hadd_ps(sum4, sum4);
  sum4 = _mm_hadd_ps(sum4, sum4);
  return _mm_cvtss_f32(sum4);
}

__attribute__((target("avx2,fma"))) float InnerProductAvx2(const float* weight, const uint8_t* code,
                                                           size_t dim) {
  __m256 acc = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    __m256 levels = _mm256_cvtepi32_ps(
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(code + i))));
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(weight + i), levels, acc);
  }
  return Sum8(acc) + InnerProductScalar(weight, code, i, dim);
}

__attribute__((target("avx2,fma"))) float L2Avx2(const float* weight, const float* offset,
                                                 const uint8_t* code, size_t dim) {
  __m256 acc = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    __m256 levels = _mm256_cvtepi32_ps(
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(code + i))));
    __m256 diff = _mm256_sub_ps(_mm256_loadu_ps(offset + i), levels);
    acc = _mm256_fmadd_ps(_mm256_mul_ps(diff, diff), _mm256_loadu_ps(weight + i), acc);
  }
  return Sum8(acc) + L2Scalar(weight, offset, code, i, dim);
}

}  // namespace

absl::StatusOr<ScalarQuantizer> ScalarQuantizer::Fit(const float* vectors, size_t count,
                                                     size_t dimension) {
  if (count == 0 || dimension == 0) {
    return absl::InvalidArgumentError("cannot fit a scalar quantizer on no data");
  }
  std::vector<float> low(dimension, INFINITY), high(dimension, -INFINITY);
  for (size_t row = 0; row < count; ++row) {
    for (size_t i = 0; i < dimension; ++i) {
      float v = vectors[row * dimension + i];
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("vector ", row, " has a non-finite value at dimension ", i));
      }
      low[i] = std::min(low[i], v);
      high[i] = std::max(high[i], v);
    }
  }
  std::vector<float> step(dimension);
  for (size_t i = 0; i < dimension; ++i) {
    // 2% margin each side: vectors added after the fit rarely clip.
    float span = high[i] - low[i];
    float margin = span > 0 ? 0.02f * span : std::max(1e-6f, std::fabs(low[i]) * 0.02f);
    low[i] -= margin;
    step[i] = (span + 2 * margin) / 255.0f;
  }
  return ScalarQuantizer(std::move(low), std::move(step));
}

absl::StatusOr<ScalarQuantizer> ScalarQuantizer::FromRanges(std::vector<float> low,
                                                            std::vector<float> step) {
  if (low.empty() || low.size() != step.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("scalar quantizer has ", low.size(), " lows and ", step.size(), " steps"));
  }
  for (size_t i = 0; i < low.size(); ++i) {
    if (!std::isfinite(low[i]) || !std::isfinite(step[i]) || step[i] <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("scalar quantizer range ", i, " is invalid (step ", step[i], ")"));
    }
  }
  return ScalarQuantizer(std::move(low), std::move(step));
}

void ScalarQuantizer::Encode(const float* vector, uint8_t* code) const {
  for (size_t i = 0; i < low_.size(); ++i) {
    float level = std::nearbyint((vector[i] - low_[i]) / step_[i]);
    code[i] = static_cast<uint8_t>(std::clamp(level, 0.0f, 255.0f));
  }
}

void ScalarQuantizer::Decode(const uint8_t* code, float* vector) const {
  for (size_t i = 0; i < low_.size(); ++i) vector[i] = low_[i] + step_[i] * code[i];
}

ScalarQuantizer::Query ScalarQuantizer::Prepare(std::span<const float> query, Metric metric) const {
  const size_t dim = low_.size();
  Query prepared;
  prepared.l2_ = metric == Metric::kL2;
  prepared.weight_.resize(dim);
  if (prepared.l2_) {
    prepared.offset_.resize(dim);
    for (size_t i = 0; i < dim; ++i) {
      prepared.weight_[i] = step_[i] * step_[i];
      prepared.offset_[i] = (query[i] - low_[i]) / step_[i];
    }
  } else {
    double bias = 0;
    for (size_t i = 0; i < dim; ++i) {
      prepared.weight_[i] = query[i] * step_[i];
      bias += double{query[i]} * low_[i];
    }
    prepared.bias_ = static_cast<float>(bias);
  }
  const bool avx512 = allow_simd_ && __builtin_cpu_supports("avx512f");
  const bool avx2 = allow_simd_ && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (prepared.l2_) {
    if (avx512) {
      prepared.kernel_ = [](const Query& q, const uint8_t* code) {
        return L2Avx512(q.weight_.data(), q.offset_.data(), code, q.weight_.size());
      };
    } else if (avx2) {
      prepared.kernel_ = [](const Query& q, const uint8_t* code) {
        return L2Avx2(q.weight_.data(), q.offset_.data(), code, q.weight_.size());
      };
    } else {
      prepared.kernel_ = [](const Query& q, const uint8_t* code) {
        return L2Scalar(q.weight_.data(), q.offset_.data(), code, 0, q.weight_.size());
      };
    }
  } else {
    if (avx512) {
      prepared.kernel_ = [](const Query& q, const uint8_t* code) {
        return -(q.bias_ + InnerProductAvx512(q.weight_.data(), code, q.weight_.size()));
      };
    } else if (avx2) {
      prepared.kernel_ = [](const Query& q, const uint8_t* code) {
        return -(q.bias_ + InnerProductAvx2(q.weight_.data(), code, q.weight_.size()));
      };
    } else {
      prepared.kernel_ = [](const Query& q, const uint8_t* code) {
        return -(q.bias_ + InnerProductScalar(q.weight_.data(), code, 0, q.weight_.size()));
      };
    }
  }
  return prepared;
}

float ScalarQuantizer::Query::Distance(const uint8_t* code) const { return kernel_(*this, code); }

}  // namespace engram::index
