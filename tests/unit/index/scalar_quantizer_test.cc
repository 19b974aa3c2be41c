// INT8 scalar quantizer: fitting, rounding error, clipping, distances against
// decoded vectors, and the SIMD kernels against the scalar ones.
#include "index/scalar_quantizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace engram::index {
namespace {

std::vector<float> RandomRows(std::mt19937& rng, size_t rows, size_t dim) {
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> v(rows * dim);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t i = 0; i < dim; ++i) v[r * dim + i] = gauss(rng) * (1.0f + i % 7) + i % 3;
  }
  return v;
}

TEST(ScalarQuantizerTest, RoundTripErrorIsAtMostHalfAStep) {
  std::mt19937 rng(1);
  const size_t dim = 37, rows = 500;
  std::vector<float> data = RandomRows(rng, rows, dim);
  absl::StatusOr<ScalarQuantizer> quantizer = ScalarQuantizer::Fit(data.data(), rows, dim);
  ASSERT_TRUE(quantizer.ok()) << quantizer.status();
  std::vector<uint8_t> code(dim);
  std::vector<float> decoded(dim);
  for (size_t r = 0; r < rows; ++r) {
    quantizer->Encode(&data[r * dim], code.data());
    quantizer->Decode(code.data(), decoded.data());
    for (size_t i = 0; i < dim; ++i) {
      ASSERT_LE(std::fabs(decoded[i] - data[r * dim + i]), quantizer->step()[i] * 0.5f + 1e-5f);
    }
  }
}

TEST(ScalarQuantizerTest, ValuesOutsideTheRangeClip) {
  std::vector<float> data = {0, 1, 0, 1};  // two rows of dimension 2
  absl::StatusOr<ScalarQuantizer> quantizer = ScalarQuantizer::Fit(data.data(), 2, 2);
  ASSERT_TRUE(quantizer.ok());
  std::vector<float> far = {-100, 100};
  uint8_t code[2];
  quantizer->Encode(far.data(), code);
  EXPECT_EQ(code[0], 0);
  EXPECT_EQ(code[1], 255);
}

TEST(ScalarQuantizerTest, ConstantDimensionsGetAUsableRange) {
  std::vector<float> data(10 * 3, 2.5f);
  absl::StatusOr<ScalarQuantizer> quantizer = ScalarQuantizer::Fit(data.data(), 10, 3);
  ASSERT_TRUE(quantizer.ok());
  for (float step : quantizer->step()) EXPECT_GT(step, 0);
  uint8_t code[3];
  float decoded[3];
  quantizer->Encode(data.data(), code);
  quantizer->Decode(code, decoded);
  for (float v : decoded) EXPECT_NEAR(v, 2.5f, 0.01f);
}

TEST(ScalarQuantizerTest, RejectsUnusableInput) {
  EXPECT_EQ(ScalarQuantizer::Fit(nullptr, 0, 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> bad = {1, NAN};
  EXPECT_EQ(ScalarQuantizer::Fit(bad.data(), 1, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ScalarQuantizer::FromRanges({0, 0}, {1}).ok());
  EXPECT_FALSE(ScalarQuantizer::FromRanges({0}, {0}).ok());
  EXPECT_FALSE(ScalarQuantizer::FromRanges({0}, {INFINITY}).ok());
  EXPECT_TRUE(ScalarQuantizer::FromRanges({0}, {0.5f}).ok());
}

TEST(ScalarQuantizerTest, DistancesEqualDistancesToDecodedVectors) {
  std::mt19937 rng(2);
  for (size_t dim : {1, 7, 16, 33, 128, 768}) {
    std::vector<float> data = RandomRows(rng, 200, dim);
    ScalarQuantizer quantizer = *ScalarQuantizer::Fit(data.data(), 200, dim);
    std::vector<float> query = RandomRows(rng, 1, dim);
    for (bool simd : {false, true}) {
      quantizer.set_allow_simd(simd);
      for (Metric metric : {Metric::kInnerProduct, Metric::kL2}) {
        ScalarQuantizer::Query prepared = quantizer.Prepare(query, metric);
        std::vector<uint8_t> code(dim);
        std::vector<float> decoded(dim);
        for (size_t r = 0; r < 200; ++r) {
          quantizer.Encode(&data[r * dim], code.data());
          quantizer.Decode(code.data(), decoded.data());
          double expected = 0, scale = 0;
          for (size_t i = 0; i < dim; ++i) {
            double term = metric == Metric::kL2 ? (query[i] - decoded[i]) * (query[i] - decoded[i])
                                                : -double{query[i]} * decoded[i];
            expected += term;
            scale += std::fabs(term);
          }
          ASSERT_NEAR(prepared.Distance(code.data()), expected, 1e-4 * (scale + 1))
              << "dim " << dim << " simd " << simd;
        }
      }
    }
  }
}

}  // namespace
}  // namespace engram::index
