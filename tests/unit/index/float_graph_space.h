// A GraphSpace over plain float vectors with squared L2 distances, so graph
// tests check the graph alone, without the quantizers. Vectors are appended
// before their nodes are inserted; storage is reserved up front so readers
// never see a reallocation.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "index/graph_space.h"

namespace engram::index::testing {

class FloatGraphSpace final : public GraphSpace {
 public:
  FloatGraphSpace(size_t dim, size_t capacity) : dim_(dim) { data_.reserve(capacity * dim); }

  void Append(const std::vector<float>& vector) {
    data_.insert(data_.end(), vector.begin(), vector.end());
  }
  const float* Vector(uint32_t node) const { return &data_[size_t{node} * dim_]; }
  size_t dim() const { return dim_; }

  float Distance(const float* a, uint32_t node) const {
    const float* b = Vector(node);
    float sum = 0;
    for (size_t i = 0; i < dim_; ++i) sum += (a[i] - b[i]) * (a[i] - b[i]);
    return sum;
  }

  class VectorPoint final : public Point {
   public:
    VectorPoint(const FloatGraphSpace& space, std::vector<float> vector)
        : space_(space), vector_(std::move(vector)) {}
    void Distances(const uint32_t* nodes, size_t count, float* out) const override {
      for (size_t i = 0; i < count; ++i) out[i] = space_.Distance(vector_.data(), nodes[i]);
    }

   private:
    const FloatGraphSpace& space_;
    std::vector<float> vector_;
  };

  std::unique_ptr<Point> NodePoint(uint32_t node) const override {
    return std::make_unique<VectorPoint>(*this,
                                         std::vector<float>(Vector(node), Vector(node) + dim_));
  }
  std::unique_ptr<Point> QueryPoint(const std::vector<float>& query) const {
    return std::make_unique<VectorPoint>(*this, query);
  }

 private:
  size_t dim_;
  std::vector<float> data_;
};

// Points around `clusters` random centres (the same centres for every seed,
// so queries drawn with another seed come from the same distribution).
inline std::vector<std::vector<float>> ClusteredPoints(size_t count, size_t dim, size_t clusters,
                                                       uint32_t seed) {
  std::mt19937 centre_rng(12345);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<std::vector<float>> centres(clusters, std::vector<float>(dim));
  for (auto& centre : centres) {
    for (float& v : centre) v = 2.0f * gauss(centre_rng);
  }
  std::mt19937 rng(seed);
  std::vector<std::vector<float>> points(count, std::vector<float>(dim));
  for (size_t p = 0; p < count; ++p) {
    const auto& centre = centres[p % clusters];
    for (size_t i = 0; i < dim; ++i) points[p][i] = centre[i] + gauss(rng);
  }
  return points;
}

}  // namespace engram::index::testing
