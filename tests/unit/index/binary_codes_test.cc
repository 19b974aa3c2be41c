// 2-bit codes: encoding, the similarity and distance against a naive
// per-dimension reference, and every SIMD kernel against the scalar one.
#include "index/binary_codes.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace engram::index {
namespace {

std::vector<float> RandomVector(std::mt19937& rng, size_t dim) {
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> v(dim);
  for (float& x : v) x = gauss(rng);
  return v;
}

// The definition, one dimension at a time.
int32_t NaiveSimilarity(const std::vector<float>& a, const std::vector<float>& b) {
  auto alpha = [](const std::vector<float>& v) {
    double sum = 0;
    for (float x : v) sum += std::fabs(x);
    return static_cast<float>(sum / v.size());
  };
  const float alpha_a = alpha(a), alpha_b = alpha(b);
  int32_t similarity = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const bool strong_a = std::fabs(a[i]) > alpha_a, strong_b = std::fabs(b[i]) > alpha_b;
    const int32_t weight = strong_a && strong_b ? 4 : (strong_a || strong_b ? 2 : 1);
    similarity += (a[i] > 0) == (b[i] > 0) ? weight : -weight;
  }
  return similarity;
}

struct Coded {
  std::vector<float> vector;
  std::vector<uint64_t> code;
};

Coded Make(const BinaryCodes& codes, std::mt19937& rng) {
  Coded c{RandomVector(rng, codes.dimension()), std::vector<uint64_t>(codes.code_words())};
  codes.Encode(c.vector.data(), c.code.data());
  return c;
}

TEST(BinaryCodesTest, SimilarityMatchesTheDefinition) {
  std::mt19937 rng(7);
  for (size_t dim : {1, 2, 63, 64, 65, 255, 256, 257, 384, 768, 1000, 1536}) {
    BinaryCodes codes(dim);
    EXPECT_EQ(codes.code_words() % 8, 0u) << "planes padded to 256 bits";
    for (int trial = 0; trial < 50; ++trial) {
      Coded a = Make(codes, rng), b = Make(codes, rng);
      ASSERT_EQ(codes.Similarity(a.code.data(), b.code.data()), NaiveSimilarity(a.vector, b.vector))
          << "dim " << dim;
    }
  }
}

TEST(BinaryCodesTest, DistanceIsTheSquaredDistanceOfTheWeightedSigns) {
  std::mt19937 rng(8);
  for (size_t dim : {1, 65, 768, 1000}) {
    BinaryCodes codes(dim);
    for (int trial = 0; trial < 50; ++trial) {
      Coded a = Make(codes, rng), b = Make(codes, rng);
      const int32_t expected = NaiveSimilarity(a.vector, a.vector) +
                               NaiveSimilarity(b.vector, b.vector) -
                               2 * NaiveSimilarity(a.vector, b.vector);
      ASSERT_EQ(codes.Distance(a.code.data(), b.code.data()), expected) << "dim " << dim;
      ASSERT_EQ(codes.Distance(a.code.data(), a.code.data()), 0);
      ASSERT_GE(codes.Distance(a.code.data(), b.code.data()), 0);
    }
  }
}

TEST(BinaryCodesTest, SimilarityExtremes) {
  BinaryCodes codes(4);
  // Magnitudes 1, 1, 3, 3: alpha = 2, so dimensions 2 and 3 are strong.
  std::vector<float> v = {1, -1, 3, -3}, opposite = {-1, 1, -3, 3};
  std::vector<uint64_t> a(codes.code_words()), b(codes.code_words());
  codes.Encode(v.data(), a.data());
  codes.Encode(opposite.data(), b.data());
  EXPECT_EQ(codes.Similarity(a.data(), a.data()), 1 + 1 + 4 + 4);
  EXPECT_EQ(codes.Similarity(a.data(), b.data()), -(1 + 1 + 4 + 4));
  EXPECT_EQ(a[0], 0b0101u);                        // sign bits: x > 0
  EXPECT_EQ(a[codes.words_per_plane()], 0b1100u);  // strong bits: |x| > alpha
}

TEST(BinaryCodesTest, SimdKernelsEqualScalar) {
  std::mt19937 rng(9);
  struct Pair {
    const char* name;
    bool supported;
    BinaryCodes::Kernel similarity, distance;
  };
  const Pair kernels[] = {
      {"avx2", BinaryCodes::CpuHasAvx2(), BinaryCodes::SimilarityAvx2, BinaryCodes::DistanceAvx2},
      {"avx512", BinaryCodes::CpuHasAvx512Popcount(), BinaryCodes::SimilarityAvx512,
       BinaryCodes::DistanceAvx512}};
  int tested = 0;
  for (const Pair& kernel : kernels) {
    if (!kernel.supported) continue;
    ++tested;
    for (size_t dim : {1, 100, 256, 512, 768, 1024, 1536, 2000}) {
      BinaryCodes codes(dim);
      const size_t words = codes.words_per_plane();
      const int32_t d = static_cast<int32_t>(dim);
      for (int trial = 0; trial < 200; ++trial) {
        Coded a = Make(codes, rng), b = Make(codes, rng);
        if (trial % 10 == 0) b = a;  // identical codes
        ASSERT_EQ(kernel.similarity(a.code.data(), b.code.data(), words, d),
                  BinaryCodes::SimilarityScalar(a.code.data(), b.code.data(), words, d))
            << kernel.name << " dim " << dim;
        ASSERT_EQ(kernel.distance(a.code.data(), b.code.data(), words, d),
                  BinaryCodes::DistanceScalar(a.code.data(), b.code.data(), words, d))
            << kernel.name << " dim " << dim;
      }
    }
  }
  if (tested == 0) GTEST_SKIP() << "this CPU has neither AVX2 nor AVX-512 VPOPCNTDQ";
}

TEST(BinaryCodesTest, AllBitsSetStressesByteCounters) {
  // Every plane word all ones in both codes (not a real encoding): the AVX2
  // per-byte counters must not overflow.
  BinaryCodes codes(1024);
  const size_t words = codes.words_per_plane();
  std::vector<uint64_t> a(codes.code_words(), ~uint64_t{0}), b(codes.code_words(), 0);
  for (size_t w = words; w < 2 * words; ++w) b[w] = ~uint64_t{0};  // strong, negative
  for (const auto& [x, y] : {std::pair{&a, &b}, std::pair{&a, &a}}) {
    const int32_t scalar = BinaryCodes::SimilarityScalar(x->data(), y->data(), words, 1024);
    const int32_t distance = BinaryCodes::DistanceScalar(x->data(), y->data(), words, 1024);
    if (BinaryCodes::CpuHasAvx2()) {
      EXPECT_EQ(BinaryCodes::SimilarityAvx2(x->data(), y->data(), words, 1024), scalar);
      EXPECT_EQ(BinaryCodes::DistanceAvx2(x->data(), y->data(), words, 1024), distance);
    }
    if (BinaryCodes::CpuHasAvx512Popcount()) {
      EXPECT_EQ(BinaryCodes::SimilarityAvx512(x->data(), y->data(), words, 1024), scalar);
      EXPECT_EQ(BinaryCodes::DistanceAvx512(x->data(), y->data(), words, 1024), distance);
    }
  }
  EXPECT_EQ(BinaryCodes::SimilarityScalar(a.data(), b.data(), words, 1024), -4 * 1024);
  EXPECT_EQ(BinaryCodes::DistanceScalar(a.data(), b.data(), words, 1024), 16 * 1024);
}

}  // namespace
}  // namespace engram::index
