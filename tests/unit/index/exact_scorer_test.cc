#include "index/exact_scorer.h"

#include <gtest/gtest.h>

#include <random>

namespace engram::index {
namespace {

TEST(ExactScorerTest, ScoresFollowTheMetric) {
  std::vector<float> q = {3, 4}, x = {1, 0};
  EXPECT_NEAR(ExactScorer(Metric::kCosine, q).Score(x), 0.6f, 1e-6);
  EXPECT_NEAR(ExactScorer(Metric::kInnerProduct, q).Score(x), 3.0f, 1e-6);
  EXPECT_NEAR(ExactScorer(Metric::kL2, q).Score(x), -20.0f, 1e-6);
}

TEST(TopKTest, KeepsTheBestKInOrder) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(-1, 1);
  for (size_t k : {0, 1, 5, 100}) {
    std::vector<float> scores(50);
    for (float& s : scores) s = uniform(rng);
    TopK<int> top(k);
    for (int i = 0; i < 50; ++i) top.Push(scores[i], i);
    auto best = top.TakeSorted();
    std::vector<float> expected = scores;
    std::sort(expected.rbegin(), expected.rend());
    expected.resize(std::min<size_t>(k, 50));
    ASSERT_EQ(best.size(), expected.size());
    for (size_t i = 0; i < best.size(); ++i) {
      EXPECT_EQ(best[i].first, expected[i]);
      EXPECT_EQ(scores[best[i].second], best[i].first);
    }
  }
}

}  // namespace
}  // namespace engram::index
