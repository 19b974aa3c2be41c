#include "index/binary_codes.h"

// GCC 12 warns about the deliberately undefined registers inside its own
// AVX-512 reduction intrinsics (GCC bug 105593); the warning is not ours.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cmath>
#include <cstring>

namespace engram::index {

// With S = sign_a ^ sign_b (signs differ), X = strong_a ^ strong_b (exactly one
// strong) and B = strong_a & strong_b (both strong), a dimension's weight is
// 1 + X + 3B and the similarity is
//   sum(weight) - 2 * sum(weight over S)
//   = dimension + |X| + 3|B| - 2 (|S| + |S & X| + 3 |S & B|).
// Padding bits are zero in every plane, so they add nothing.

//
// The same weights are the products v_a * v_b of the per-dimension values
// v = sign * (1 + strong), in {-2, -1, 1, 2}: the similarity is an inner
// product, and the squared Euclidean distance between the v vectors is
//   |X| + 4 (|S| + |S & X| + 3 |S & B|)
// (0 for identical codes), which the graph uses as its metric.
namespace {

// Sums over the planes: x = |X|, both = |B|, differ = |S| + |S&X| + 3|S&B|.
struct PlaneCounts {
  int64_t x = 0, both = 0, differ = 0;
};

int32_t ToSimilarity(const PlaneCounts& c, int32_t dimension) {
  return static_cast<int32_t>(dimension + c.x + 3 * c.both - 2 * c.differ);
}
int32_t ToDistance(const PlaneCounts& c) { return static_cast<int32_t>(c.x + 4 * c.differ); }

PlaneCounts CountScalar(const uint64_t* a, const uint64_t* b, size_t words_per_plane) {
  const uint64_t* strong_a = a + words_per_plane;
  const uint64_t* strong_b = b + words_per_plane;
  PlaneCounts c;
  for (size_t w = 0; w < words_per_plane; ++w) {
    uint64_t s = a[w] ^ b[w];
    uint64_t x = strong_a[w] ^ strong_b[w];
    uint64_t both = strong_a[w] & strong_b[w];
    c.x += __builtin_popcountll(x);
    c.both += __builtin_popcountll(both);
    c.differ +=
        __builtin_popcountll(s) + __builtin_popcountll(s & x) + 3 * __builtin_popcountll(s & both);
  }
  return c;
}

}  // namespace

int32_t BinaryCodes::SimilarityScalar(const uint64_t* a, const uint64_t* b, size_t words_per_plane,
                                      int32_t dimension) {
  return ToSimilarity(CountScalar(a, b, words_per_plane), dimension);
}

int32_t BinaryCodes::DistanceScalar(const uint64_t* a, const uint64_t* b, size_t words_per_plane,
                                    int32_t) {
  return ToDistance(CountScalar(a, b, words_per_plane));
}

namespace {

// Per-byte popcount by nibble lookup (Mula), for CPUs without VPOPCNTDQ.
__attribute__((target("avx2"))) inline __m256i PopcountBytes(__m256i v) {
  const __m256i lookup = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,
                                          2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low_mask = _mm256_set1_epi8(0x0f);
  __m256i lo = _mm256_shuffle_epi8(lookup, _mm256_and_si256(v, low_mask));
  __m256i hi = _mm256_shuffle_epi8(lookup, _mm256_and_si256(_mm256_srli_epi16(v, 4), low_mask));
  return _mm256_add_epi8(lo, hi);
}

__attribute__((target("avx2"))) inline int64_t HorizontalSum(__m256i v) {
  return _mm256_extract_epi64(v, 0) + _mm256_extract_epi64(v, 1) + _mm256_extract_epi64(v, 2) +
         _mm256_extract_epi64(v, 3);
}

}  // namespace

namespace {

__attribute__((target("avx2"))) PlaneCounts CountAvx2(const uint64_t* a, const uint64_t* b,
                                                      size_t words_per_plane) {
  const uint64_t* strong_a = a + words_per_plane;
  const uint64_t* strong_b = b + words_per_plane;
  const __m256i zero = _mm256_setzero_si256();
  __m256i x_sum = zero, both_sum = zero, differ_sum = zero;
  for (size_t w = 0; w < words_per_plane; w += 4) {
    __m256i s = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + w)),
                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + w)));
    __m256i ma = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(strong_a + w));
    __m256i mb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(strong_b + w));
    __m256i x = _mm256_xor_si256(ma, mb);
    __m256i both = _mm256_and_si256(ma, mb);
    // Per byte the differ part is at most 8 * (1 + 3) = 32: no overflow.
    __m256i s_both = PopcountBytes(_mm256_and_si256(s, both));
    __m256i differ_bytes =
        _mm256_add_epi8(_mm256_add_epi8(PopcountBytes(s), PopcountBytes(_mm256_and_si256(s, x))),
                        _mm256_add_epi8(s_both, _mm256_add_epi8(s_both, s_both)));
    x_sum = _mm256_add_epi64(x_sum, _mm256_sad_epu8(PopcountBytes(x), zero));
    both_sum = _mm256_add_epi64(both_sum, _mm256_sad_epu8(PopcountBytes(both), zero));
    differ_sum = _mm256_add_epi64(differ_sum, _mm256_sad_epu8(differ_bytes, zero));
  }
  return {HorizontalSum(x_sum), HorizontalSum(both_sum), HorizontalSum(differ_sum)};
}

__attribute__((target("avx512f,avx512vl,avx512vpopcntdq"))) PlaneCounts CountAvx512(
    const uint64_t* a, const uint64_t* b, size_t words_per_plane) {
  const uint64_t* strong_a = a + words_per_plane;
  const uint64_t* strong_b = b + words_per_plane;
  __m512i x_sum = _mm512_setzero_si512(), both_sum = _mm512_setzero_si512(),
          differ_sum = _mm512_setzero_si512();
  size_t w = 0;
  for (; w + 8 <= words_per_plane; w += 8) {
    __m512i s = _mm512_xor_si512(_mm512_loadu_si512(a + w), _mm512_loadu_si512(b + w));
    __m512i ma = _mm512_loadu_si512(strong_a + w);
    __m512i mb = _mm512_loadu_si512(strong_b + w);
    __m512i x = _mm512_xor_si512(ma, mb);
    __m512i both = _mm512_and_si512(ma, mb);
    __m512i s_both = _mm512_popcnt_epi64(_mm512_and_si512(s, both));
    x_sum = _mm512_add_epi64(x_sum, _mm512_popcnt_epi64(x));
    both_sum = _mm512_add_epi64(both_sum, _mm512_popcnt_epi64(both));
    differ_sum = _mm512_add_epi64(differ_sum, _mm512_popcnt_epi64(s));
    differ_sum = _mm512_add_epi64(differ_sum, _mm512_popcnt_epi64(_mm512_and_si512(s, x)));
    differ_sum =
        _mm512_add_epi64(differ_sum, _mm512_add_epi64(s_both, _mm512_slli_epi64(s_both, 1)));
  }
  PlaneCounts c{_mm512_reduce_add_epi64(x_sum), _mm512_reduce_add_epi64(both_sum),
                _mm512_reduce_add_epi64(differ_sum)};
  if (w < words_per_plane) {  // planes are padded to 4 words: one 256-bit step left
    __m256i s = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + w)),
                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + w)));
    __m256i ma = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(strong_a + w));
    __m256i mb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(strong_b + w));
    __m256i x = _mm256_xor_si256(ma, mb);
    __m256i both = _mm256_and_si256(ma, mb);
    __m256i s_both = _mm256_popcnt_epi64(_mm256_and_si256(s, both));
    __m256i differ = _mm256_add_epi64(
        _mm256_add_epi64(_mm256_popcnt_epi64(s), _mm256_popcnt_epi64(_mm256_and_si256(s, x))),
        _mm256_add_epi64(s_both, _mm256_slli_epi64(s_both, 1)));
    c.x += HorizontalSum(_mm256_popcnt_epi64(x));
    c.both += HorizontalSum(_mm256_popcnt_epi64(both));
    c.differ += HorizontalSum(differ);
  }
  return c;
}

}  // namespace

int32_t BinaryCodes::SimilarityAvx2(const uint64_t* a, const uint64_t* b, size_t words_per_plane,
                                    int32_t dimension) {
  return ToSimilarity(CountAvx2(a, b, words_per_plane), dimension);
}

int32_t BinaryCodes::DistanceAvx2(const uint64_t* a, const uint64_t* b, size_t words_per_plane,
                                  int32_t) {
  return ToDistance(CountAvx2(a, b, words_per_plane));
}

int32_t BinaryCodes::SimilarityAvx512(const uint64_t* a, const uint64_t* b, size_t words_per_plane,
                                      int32_t dimension) {
  return ToSimilarity(CountAvx512(a, b, words_per_plane), dimension);
}

int32_t BinaryCodes::DistanceAvx512(const uint64_t* a, const uint64_t* b, size_t words_per_plane,
                                    int32_t) {
  return ToDistance(CountAvx512(a, b, words_per_plane));
}

bool BinaryCodes::CpuHasAvx512Popcount() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vpopcntdq");
}

bool BinaryCodes::CpuHasAvx2() { return __builtin_cpu_supports("avx2"); }

BinaryCodes::BinaryCodes(size_t dimension)
    : dimension_(dimension), words_per_plane_((dimension + 255) / 256 * 4) {
  if (CpuHasAvx512Popcount()) {
    UseKernels(SimilarityAvx512, DistanceAvx512);
  } else if (CpuHasAvx2()) {
    UseKernels(SimilarityAvx2, DistanceAvx2);
  } else {
    UseKernels(SimilarityScalar, DistanceScalar);
  }
}

void BinaryCodes::Encode(const float* vector, uint64_t* code) const {
  std::memset(code, 0, code_words() * sizeof(uint64_t));
  double magnitude_sum = 0;
  for (size_t i = 0; i < dimension_; ++i) magnitude_sum += std::fabs(vector[i]);
  const float alpha = dimension_ == 0 ? 0.0f : static_cast<float>(magnitude_sum / dimension_);
  uint64_t* strong = code + words_per_plane_;
  for (size_t i = 0; i < dimension_; ++i) {
    const uint64_t bit = uint64_t{1} << (i % 64);
    if (vector[i] > 0) code[i / 64] |= bit;
    if (std::fabs(vector[i]) > alpha) strong[i / 64] |= bit;
  }
}

}  // namespace engram::index
