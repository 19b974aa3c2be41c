// Row-major float matrices and the synthetic embedding generator shared by
// the benchmarks (bench_ann, bench_restart). Header-only: benchmarks only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

namespace engram::bench {

struct Matrix {
  size_t rows = 0, cols = 0;
  std::vector<float> values;
  const float* Row(size_t i) const { return &values[i * cols]; }
};

inline void Normalise(Matrix& m) {
  for (size_t r = 0; r < m.rows; ++r) {
    float* row = &m.values[r * m.cols];
    double norm = 0;
    for (size_t i = 0; i < m.cols; ++i) norm += double{row[i]} * row[i];
    norm = std::sqrt(norm);
    if (norm > 0) {
      for (size_t i = 0; i < m.cols; ++i) row[i] = static_cast<float>(row[i] / norm);
    }
  }
}

// Synthetic embeddings modelled on LaBSE's neighbour structure. A point is
// g + c_k + s_kl + e, L2-normalised: g is shared by all points (|g|^2 = 0.6,
// in 10 random dimensions only: LaBSE's mean vector has 73% of its energy in
// 10 "rogue" dimensions and most dimensions' signs are balanced); c_k is the
// centre of one of `clusters` topics (|c_k|^2 = 0.3); s_kl one of 20
// sub-topics of that topic (|s_kl|^2 = 0.3); e anisotropic Gaussian noise of
// total variance 0.35 whose per-dimension variance decays as
// (1 + j/16)^-1.5, over the dimensions in a per-topic random order. With
// 1,000 points per topic a numpy prototype of this model gave mean cosines
// of 0.39 for random pairs and
// 0.83 / 0.80 / 0.63 for the 1st / 10th / 100th neighbour (LaBSE: 0.40;
// 0.84 / 0.77 / 0.73). Queries are fresh points from the same model.
inline void MakeSynthetic(size_t base_rows, size_t query_rows, size_t dim, size_t clusters,
                          uint64_t seed, Matrix* base, Matrix* query) {
  constexpr size_t kSubTopics = 20;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  auto random_direction = [&](double squared_norm) {
    std::vector<float> v(dim);
    double norm = 0;
    for (float& x : v) {
      x = gauss(rng);
      norm += double{x} * x;
    }
    for (float& x : v) x = static_cast<float>(x * std::sqrt(squared_norm / norm));
    return v;
  };
  std::vector<float> shared(dim, 0.0f);
  {
    std::vector<size_t> order(dim);
    for (size_t j = 0; j < dim; ++j) order[j] = j;
    std::shuffle(order.begin(), order.end(), rng);
    const size_t rogue = std::min<size_t>(10, dim);
    double norm = 0;
    for (size_t j = 0; j < rogue; ++j) {
      shared[order[j]] = gauss(rng);
      norm += double{shared[order[j]]} * shared[order[j]];
    }
    for (float& x : shared) x = static_cast<float>(x * std::sqrt(0.6 / norm));
  }
  std::vector<double> variance(dim);
  double total = 0;
  for (size_t j = 0; j < dim; ++j) total += variance[j] = std::pow(1.0 + j / 16.0, -1.5);
  // Per topic and sub-topic: the mean point, and the noise spread per dimension.
  std::vector<std::vector<float>> centres(clusters * kSubTopics);
  std::vector<std::vector<float>> spread(clusters, std::vector<float>(dim));
  for (size_t c = 0; c < clusters; ++c) {
    const std::vector<float> topic = random_direction(0.3);
    for (size_t s = 0; s < kSubTopics; ++s) {
      std::vector<float> centre = random_direction(0.3);
      for (size_t j = 0; j < dim; ++j) centre[j] += shared[j] + topic[j];
      centres[c * kSubTopics + s] = std::move(centre);
    }
    std::vector<size_t> order(dim);
    for (size_t j = 0; j < dim; ++j) order[j] = j;
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t j = 0; j < dim; ++j) {
      spread[c][order[j]] = static_cast<float>(std::sqrt(0.35 * variance[j] / total));
    }
  }
  // Rows are generated in parallel blocks, each with its own generator.
  auto fill = [&](Matrix* m, size_t rows, uint64_t stream) {
    m->rows = rows;
    m->cols = dim;
    m->values.resize(rows * dim);
    const size_t threads = std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> workers;
    for (size_t t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        std::mt19937_64 local(seed * 1000003 + stream * 1009 + t);
        std::normal_distribution<float> noise(0.0f, 1.0f);
        std::uniform_int_distribution<size_t> pick(0, clusters * kSubTopics - 1);
        for (size_t r = t; r < rows; r += threads) {
          const size_t sub_topic = pick(local);
          const std::vector<float>& centre = centres[sub_topic];
          const std::vector<float>& sd = spread[sub_topic / kSubTopics];
          float* row = &m->values[r * dim];
          for (size_t j = 0; j < dim; ++j) row[j] = centre[j] + sd[j] * noise(local);
        }
      });
    }
    for (auto& worker : workers) worker.join();
    Normalise(*m);
  };
  fill(base, base_rows, 1);
  fill(query, query_rows, 2);
}

}  // namespace engram::bench
