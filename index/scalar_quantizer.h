// INT8 scalar quantization, the index's second stage and its fallback graph
// space for data on which binary codes lose the neighbourhood structure
// (Euclidean-native data such as SIFT). Each dimension has its own range
// [low_i, low_i + 255 * step_i], fitted on the data (a little beyond the
// sample's extremes so later vectors rarely clip); a value is stored as the
// nearest of the 256 levels, clipped to the range.
//
// Distances are asymmetric: the query stays in float and is compared with the
// decoded levels, so the only error is the stored vector's rounding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/metric.h"

namespace engram::index {

class ScalarQuantizer {
 public:
  // Fits ranges on `count` vectors of `dimension` floats (row-major).
  // INVALID_ARGUMENT when count is 0 or a value is not finite.
  static absl::StatusOr<ScalarQuantizer> Fit(const float* vectors, size_t count, size_t dimension);
  // From stored ranges (snapshots); INVALID_ARGUMENT when they do not agree.
  static absl::StatusOr<ScalarQuantizer> FromRanges(std::vector<float> low,
                                                    std::vector<float> step);

  size_t dimension() const { return low_.size(); }
  const std::vector<float>& low() const { return low_; }
  const std::vector<float>& step() const { return step_; }

  void Encode(const float* vector, uint8_t* code) const;
  void Decode(const uint8_t* code, float* vector) const;

  // A query prepared for one metric, giving distances to codes (lower =
  // closer): -inner product for kInnerProduct/kCosine (the caller normalises
  // for cosine), squared L2 for kL2.
  class Query {
   public:
    float Distance(const uint8_t* code) const;

   private:
    friend class ScalarQuantizer;
    bool l2_ = false;
    // Inner product: -(bias + sum weight_i * c_i), weight_i = q_i * step_i,
    // bias = sum q_i * low_i. L2: sum weight_i * (offset_i - c_i)^2 with
    // weight_i = step_i^2, offset_i = (q_i - low_i) / step_i.
    std::vector<float> weight_;
    std::vector<float> offset_;
    float bias_ = 0;
    float (*kernel_)(const Query&, const uint8_t*) = nullptr;
  };
  Query Prepare(std::span<const float> query, Metric metric) const;

  // Kernel selection for tests: false forces the scalar kernels.
  void set_allow_simd(bool allow) { allow_simd_ = allow; }

 private:
  ScalarQuantizer(std::vector<float> low, std::vector<float> step)
      : low_(std::move(low)), step_(std::move(step)) {}
  std::vector<float> low_;
  std::vector<float> step_;
  bool allow_simd_ = true;
};

}  // namespace engram::index
