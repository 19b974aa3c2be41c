// A naive double-precision reference for ExactBatchSearcher, on the same
// prepared (fp16-rounded or fp32) inputs, and the comparison both the CPU twin's tests and the
// GPU tests use: ids may differ only among scores equal within tolerance.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "index/exact_batch.h"
#include "index/exact_batch_common.h"

namespace engram::index::testing_ref {

struct Problem {
  Metric metric;
  Precision precision = Precision::kFp16;  // how the searcher holds the partition
  size_t num_rows, dim, num_queries;
  std::vector<float> rows, queries;
  std::vector<uint32_t> offsets, candidates;
  std::vector<uint64_t> allowed;  // about half the rows
};

inline Problem RandomProblem(std::mt19937& rng, Metric metric, size_t num_rows, size_t dim,
                             size_t num_queries, size_t max_candidates) {
  Problem p;
  p.metric = metric;
  p.num_rows = num_rows;
  p.dim = dim;
  p.num_queries = num_queries;
  std::normal_distribution<float> normal;
  p.rows.resize(num_rows * dim);
  for (float& x : p.rows) x = normal(rng);
  p.queries.resize(num_queries * dim);
  for (float& x : p.queries) x = normal(rng);
  p.offsets.push_back(0);
  std::vector<uint32_t> all(num_rows);
  for (uint32_t r = 0; r < num_rows; ++r) all[r] = r;
  for (size_t q = 0; q < num_queries; ++q) {
    size_t count = std::min(num_rows, size_t(rng() % (max_candidates + 1)));
    std::shuffle(all.begin(), all.end(), rng);
    p.candidates.insert(p.candidates.end(), all.begin(), all.begin() + count);
    p.offsets.push_back(static_cast<uint32_t>(p.candidates.size()));
  }
  p.allowed.assign((num_rows + 63) / 64, 0);
  for (size_t r = 0; r < num_rows; ++r) {
    if (rng() % 2) p.allowed[r / 64] |= uint64_t{1} << (r % 64);
  }
  return p;
}

// Per query, every eligible row with its score, best first.
using Ranked = std::vector<std::vector<std::pair<double, uint32_t>>>;

// Prepared values (fp16 ones widened) as the searcher sees them.
inline std::vector<double> PreparedValues(const Problem& p, const std::vector<float>& raw,
                                          size_t count, const char* what) {
  std::vector<double> out;
  if (p.precision == Precision::kFp32) {
    FloatRows rows = *PrepareFloatRows(p.metric, raw.data(), count, p.dim, what);
    out.assign(rows.values.begin(), rows.values.end());
  } else {
    HalfRows rows = *PrepareRows(p.metric, raw.data(), count, p.dim, what);
    for (uint16_t h : rows.values) out.push_back(HalfToFloat(h));
  }
  return out;
}

inline double ReferenceScore(const Problem& p, const std::vector<double>& rows,
                             const std::vector<double>& queries, size_t q, uint32_t r) {
  double dot = 0, row_norm = 0, query_norm = 0;
  for (size_t i = 0; i < p.dim; ++i) {
    double x = rows[r * p.dim + i];
    double y = queries[q * p.dim + i];
    dot += x * y;
    row_norm += x * x;
    query_norm += y * y;
  }
  return p.metric == Metric::kL2 ? -(row_norm - 2 * dot + query_norm) : dot;
}

inline Ranked Rank(const Problem& p, const std::vector<std::vector<uint32_t>>& eligible) {
  std::vector<double> rows = PreparedValues(p, p.rows, p.num_rows, "row");
  std::vector<double> queries = PreparedValues(p, p.queries, p.num_queries, "query");
  Ranked ranked(p.num_queries);
  for (size_t q = 0; q < p.num_queries; ++q) {
    for (uint32_t r : eligible[q])
      ranked[q].emplace_back(ReferenceScore(p, rows, queries, q, r), r);
    std::sort(ranked[q].begin(), ranked[q].end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
  }
  return ranked;  // not cut to k: ExpectMatches needs every eligible row's score
}

inline Ranked ReferenceRerank(const Problem& p) {
  std::vector<std::vector<uint32_t>> eligible(p.num_queries);
  for (size_t q = 0; q < p.num_queries; ++q) {
    eligible[q].assign(p.candidates.begin() + p.offsets[q],
                       p.candidates.begin() + p.offsets[q + 1]);
  }
  return Rank(p, eligible);
}

inline Ranked ReferenceScan(const Problem& p, bool filtered) {
  std::vector<std::vector<uint32_t>> eligible(p.num_queries);
  for (uint32_t r = 0; r < p.num_rows; ++r) {
    if (filtered && !((p.allowed[r / 64] >> (r % 64)) & 1)) continue;
    for (size_t q = 0; q < p.num_queries; ++q) eligible[q].push_back(r);
  }
  return Rank(p, eligible);
}

// Scores must match the reference position by position within tolerance
// (`relative` x (1 + |score|)), every returned row must carry its own
// reference score, short results must be padded with (kNoRow, -inf), and
// nothing may be NaN (unwritten).
inline void ExpectMatches(const TopKBatch& actual, const Ranked& expected, const std::string& what,
                          double relative = 1e-3) {
  ASSERT_EQ(actual.num_queries, expected.size()) << what;
  for (size_t q = 0; q < expected.size(); ++q) {
    std::map<uint32_t, double> reference_score;
    for (const auto& [score, row] : expected[q]) reference_score[row] = score;
    std::set<uint32_t> seen;
    for (int i = 0; i < actual.k; ++i) {
      uint32_t row = actual.rows[q * actual.k + i];
      float score = actual.scores[q * actual.k + i];
      ASSERT_FALSE(std::isnan(score)) << what << ": query " << q << " slot " << i << " unwritten";
      if (size_t(i) >= expected[q].size()) {
        ASSERT_EQ(row, kNoRow) << what << ": query " << q << " slot " << i;
        ASSERT_TRUE(std::isinf(score) && score < 0) << what;
        continue;
      }
      double tolerance = relative * (1.0 + std::fabs(expected[q][i].first));
      ASSERT_NEAR(score, expected[q][i].first, tolerance)
          << what << ": query " << q << " slot " << i;
      ASSERT_TRUE(seen.insert(row).second) << what << ": row " << row << " twice";
      auto own = reference_score.find(row);
      ASSERT_NE(own, reference_score.end()) << what << ": row " << row << " was not eligible";
      ASSERT_NEAR(score, own->second, tolerance) << what << ": query " << q << " row " << row;
    }
  }
}

}  // namespace engram::index::testing_ref
