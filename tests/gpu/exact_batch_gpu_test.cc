// The CUDA searcher against the double-precision reference and against the
// CPU twin, on fresh random inputs of many shapes. Skips where no GPU
// answers (CI); run on the accelerator machine (tests/gpu/README.md).
#include <gtest/gtest.h>

#include <random>

#include "index/exact_batch.h"
#include "index/gpu/cuda_exact_batch.h"
#include "tests/unit/index/exact_batch_reference.h"

namespace engram::index {
namespace {

class ExactBatchGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    gpu_ = MakeCudaExactBatchSearcher(size_t{8} << 30, &why);
    if (gpu_ == nullptr) GTEST_SKIP() << why;
    cpu_ = MakeCpuExactBatchSearcher();
  }

  // Loads the problem into both searchers and checks both against the
  // reference for rerank, filtered scan and full scan at `k`.
  void Check(const testing_ref::Problem& p, int k, const std::string& label) {
    ASSERT_TRUE(gpu_->SetPartition(7, p.metric, p.rows.data(), p.num_rows, p.dim).ok());
    ASSERT_TRUE(cpu_->SetPartition(7, p.metric, p.rows.data(), p.num_rows, p.dim).ok());
    testing_ref::Ranked rerank = testing_ref::ReferenceRerank(p);
    testing_ref::Ranked filtered = testing_ref::ReferenceScan(p, true);
    testing_ref::Ranked full = testing_ref::ReferenceScan(p, false);
    for (ExactBatchSearcher* searcher : {gpu_.get(), cpu_.get()}) {
      std::string what = label + " " + searcher->name();
      auto r = searcher->Rerank(7, p.queries.data(), p.num_queries, p.offsets.data(),
                                p.candidates.data(), k);
      ASSERT_TRUE(r.ok()) << what << r.status();
      testing_ref::ExpectMatches(*r, rerank, what + " rerank");
      auto f = searcher->Scan(7, p.queries.data(), p.num_queries, k, p.allowed.data());
      ASSERT_TRUE(f.ok()) << what << f.status();
      testing_ref::ExpectMatches(*f, filtered, what + " filtered scan");
      auto s = searcher->Scan(7, p.queries.data(), p.num_queries, k, nullptr);
      ASSERT_TRUE(s.ok()) << what << s.status();
      testing_ref::ExpectMatches(*s, full, what + " scan");
    }
  }

  std::unique_ptr<ExactBatchSearcher> gpu_, cpu_;
};

TEST_F(ExactBatchGpuTest, ManyShapesMatchReferenceAndCpuTwin) {
  std::mt19937 rng(std::random_device{}());
  struct Shape {
    size_t rows, dim, queries, max_candidates;
    int k;
  };
  for (Metric metric : {Metric::kCosine, Metric::kInnerProduct, Metric::kL2}) {
    for (Shape s : std::vector<Shape>{{1, 1, 1, 1, 1},
                                      {50, 3, 5, 60, 10},      // k > candidates
                                      {5000, 17, 33, 300, 7},  // odd dimension
                                      {4099, 128, 64, 1024, 100},
                                      {20000, 384, 16, 4096, 1024},
                                      {3000, 768, 3, 64, 10},
                                      {2500, 1536, 2, 512, 64}}) {
      testing_ref::Problem p =
          testing_ref::RandomProblem(rng, metric, s.rows, s.dim, s.queries, s.max_candidates);
      Check(p, s.k,
            "metric " + std::to_string(int(metric)) + " rows " + std::to_string(s.rows) + " dim " +
                std::to_string(s.dim) + " k " + std::to_string(s.k));
    }
  }
}

TEST_F(ExactBatchGpuTest, ScanOverSeveralScoreTiles) {
  // 64 KiB score tiles: 2048 rows of 8 queries per GEMM, 10 tiles in all.
  std::string why;
  gpu_ = MakeCudaExactBatchSearcher(size_t{1} << 30, &why, size_t{64} << 10);
  ASSERT_NE(gpu_, nullptr) << why;
  std::mt19937 rng(std::random_device{}());
  testing_ref::Problem p = testing_ref::RandomProblem(rng, Metric::kL2, 20000, 24, 8, 100);
  Check(p, 50, "tiled");
}

TEST_F(ExactBatchGpuTest, TiesAtTheThresholdFallBackToSortingAndKeepTheSmallerRows) {
  // Identical rows: every score ties, so the threshold filter overflows and
  // the tile is sorted whole; ties go to the smaller row on both paths.
  std::mt19937 rng(std::random_device{}());
  testing_ref::Problem p = testing_ref::RandomProblem(rng, Metric::kInnerProduct, 10000, 32, 4, 8);
  for (size_t r = 1; r < p.num_rows; ++r) {
    std::copy(p.rows.begin(), p.rows.begin() + p.dim, p.rows.begin() + r * p.dim);
  }
  Check(p, 10, "ties");
  for (const uint64_t* allowed :
       {static_cast<const uint64_t*>(nullptr), static_cast<const uint64_t*>(p.allowed.data())}) {
    auto gpu = gpu_->Scan(7, p.queries.data(), p.num_queries, 10, allowed);
    auto cpu = cpu_->Scan(7, p.queries.data(), p.num_queries, 10, allowed);
    ASSERT_TRUE(gpu.ok() && cpu.ok());
    EXPECT_EQ(gpu->rows, cpu->rows);
  }
}

TEST_F(ExactBatchGpuTest, EmptyBatchesAndFiltersThatRemoveEverything) {
  std::vector<float> rows(64 * 8, 0.5f);
  ASSERT_TRUE(gpu_->SetPartition(1, Metric::kInnerProduct, rows.data(), 64, 8).ok());
  std::vector<float> query(8, 1.0f);
  auto empty = gpu_->Scan(1, query.data(), 0, 5, nullptr);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->rows.empty());
  uint64_t none = 0;
  auto filtered = gpu_->Scan(1, query.data(), 1, 5, &none);
  ASSERT_TRUE(filtered.ok());
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(filtered->rows[i], kNoRow);
    EXPECT_TRUE(std::isinf(filtered->scores[i]) && filtered->scores[i] < 0);
  }
  std::vector<uint32_t> offsets = {0, 0};
  auto no_candidates = gpu_->Rerank(1, query.data(), 1, offsets.data(), nullptr, 3);
  ASSERT_TRUE(no_candidates.ok()) << no_candidates.status();
  EXPECT_EQ(no_candidates->rows[0], kNoRow);
}

TEST_F(ExactBatchGpuTest, BudgetIsEnforced) {
  std::string why;
  auto small = MakeCudaExactBatchSearcher(1000, &why);
  ASSERT_NE(small, nullptr);
  std::vector<float> rows(1000, 1.0f);
  EXPECT_EQ(small->SetPartition(1, Metric::kL2, rows.data(), 100, 10).code(),
            absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace engram::index
