#include "index/exact_scorer.h"

#include <cmath>

namespace engram::index {
namespace {
double Dot(std::span<const float> a, std::span<const float> b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += double{a[i]} * b[i];
  return sum;
}
}  // namespace

ExactScorer::ExactScorer(Metric metric, std::span<const float> query)
    : metric_(metric), query_(query.begin(), query.end()) {
  if (metric_ == Metric::kCosine) {
    double norm = std::sqrt(Dot(query_, query_));
    if (norm > 0) {
      for (float& v : query_) v = static_cast<float>(v / norm);
    }
  }
}

float ExactScorer::Score(std::span<const float> candidate) const {
  switch (metric_) {
    case Metric::kInnerProduct:
      return static_cast<float>(Dot(query_, candidate));
    case Metric::kCosine: {
      double norm = std::sqrt(Dot(candidate, candidate));
      return norm > 0 ? static_cast<float>(Dot(query_, candidate) / norm) : 0.0f;
    }
    case Metric::kL2: {
      double sum = 0;
      for (size_t i = 0; i < candidate.size(); ++i) {
        double d = double{query_[i]} - candidate[i];
        sum += d * d;
      }
      return static_cast<float>(-sum);
    }
  }
  return 0;
}

}  // namespace engram::index
