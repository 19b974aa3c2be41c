// 2-bit sign-magnitude binary codes, the index's first (graph) stage, after
// QuIVer ("QuIVer: quantized vector graph search", binary quantization with a
// magnitude bit). Per vector, alpha = mean |x_i|; per dimension a sign bit
// (x_i > 0) and a strong bit (|x_i| > alpha). Two codes are compared per
// dimension: the weight is 4 when both are strong, 2 when one is, 1 when
// neither, added when the signs agree and subtracted when they differ. The sum
// (higher = closer) is computed from XOR/AND/popcount over the two bit planes.
//
// Layout of one code: `words_per_plane` uint64 words of sign bits, then as
// many of strong bits; dimension i is bit (i % 64) of word (i / 64). Planes are
// padded with zero bits to a multiple of 256 bits so the SIMD kernels need no
// tail; the padding contributes nothing to the similarity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace engram::index {

class BinaryCodes {
 public:
  explicit BinaryCodes(size_t dimension);

  size_t dimension() const { return dimension_; }
  size_t words_per_plane() const { return words_per_plane_; }
  // uint64 words of one code (both planes).
  size_t code_words() const { return 2 * words_per_plane_; }

  // Writes the code of `vector` (dimension() floats) into code_words() words.
  void Encode(const float* vector, uint64_t* code) const;

  // Similarity of two codes: sum over dimensions of +-weight (see above).
  // Ranges from -4*dimension to 4*dimension.
  int32_t Similarity(const uint64_t* a, const uint64_t* b) const {
    return similarity_(a, b, words_per_plane_, static_cast<int32_t>(dimension_));
  }

  // The weights are products v_a * v_b of per-dimension values
  // v = sign * (1 + strong) in {-2, -1, 1, 2}, so Similarity is an inner
  // product; Distance is the squared Euclidean distance between those v
  // vectors, Similarity(a,a) + Similarity(b,b) - 2 Similarity(a,b): 0 for
  // identical codes, a metric the graph can prune with.
  int32_t Distance(const uint64_t* a, const uint64_t* b) const {
    return distance_(a, b, words_per_plane_, static_cast<int32_t>(dimension_));
  }

  using Kernel = int32_t (*)(const uint64_t* a, const uint64_t* b, size_t words_per_plane,
                             int32_t dimension);
  // Kernels, exposed so tests can check each SIMD path against the scalar one.
  // Each needs the CPU features named (see CpuHasAvx512Popcount/CpuHasAvx2).
  static int32_t SimilarityScalar(const uint64_t* a, const uint64_t* b, size_t words_per_plane,
                                  int32_t dimension);
  static int32_t SimilarityAvx2(const uint64_t* a, const uint64_t* b, size_t words_per_plane,
                                int32_t dimension);
  static int32_t SimilarityAvx512(const uint64_t* a, const uint64_t* b, size_t words_per_plane,
                                  int32_t dimension);
  static int32_t DistanceScalar(const uint64_t* a, const uint64_t* b, size_t words_per_plane,
                                int32_t dimension);
  static int32_t DistanceAvx2(const uint64_t* a, const uint64_t* b, size_t words_per_plane,
                              int32_t dimension);
  static int32_t DistanceAvx512(const uint64_t* a, const uint64_t* b, size_t words_per_plane,
                                int32_t dimension);
  static bool CpuHasAvx512Popcount();
  static bool CpuHasAvx2();

 private:
  void UseKernels(Kernel similarity, Kernel distance) {
    similarity_ = similarity;
    distance_ = distance;
  }

  size_t dimension_;
  size_t words_per_plane_;
  Kernel similarity_;
  Kernel distance_;
};

}  // namespace engram::index
