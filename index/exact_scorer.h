// Exact similarity scores and a bounded top-k collector: the brute-force
// search that stands in for the quantized graph index, and the reference the
// index is measured against. Higher scores are always closer (L2 is negated).
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include "storage/metric.h"

namespace engram::index {

// Scores candidates against one query (normalised once for cosine).
class ExactScorer {
 public:
  ExactScorer(Metric metric, std::span<const float> query);
  float Score(std::span<const float> candidate) const;

 private:
  Metric metric_;
  std::vector<float> query_;  // unit length for cosine
};

// Keeps the k highest-scoring items seen so far.
template <typename Item>
class TopK {
 public:
  explicit TopK(size_t k) : k_(k) {}

  void Push(float score, Item item) {
    if (k_ == 0) return;
    if (heap_.size() < k_) {
      heap_.emplace_back(score, std::move(item));
      std::push_heap(heap_.begin(), heap_.end(), Worse);
    } else if (score > heap_.front().first) {
      std::pop_heap(heap_.begin(), heap_.end(), Worse);
      heap_.back() = {score, std::move(item)};
      std::push_heap(heap_.begin(), heap_.end(), Worse);
    }
  }

  // Best first; empties the collector.
  std::vector<std::pair<float, Item>> TakeSorted() {
    std::sort_heap(heap_.begin(), heap_.end(), Worse);
    return std::move(heap_);
  }

 private:
  // Min-heap on score: the root is the worst kept item.
  static bool Worse(const std::pair<float, Item>& a, const std::pair<float, Item>& b) {
    return a.first > b.first;
  }
  size_t k_;
  std::vector<std::pair<float, Item>> heap_;
};

}  // namespace engram::index
