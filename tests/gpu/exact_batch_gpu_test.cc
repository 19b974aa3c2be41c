// The CUDA searcher against the double-precision reference and against the
// CPU twin, on fresh random inputs of many shapes. Skips where no GPU
// answers (CI); run on the accelerator machine (tests/gpu/README.md).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "index/exact_batch.h"
#include "index/exact_batch_common.h"
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

  // Loads the problem into both searchers (at p.precision) and checks both
  // against the reference for rerank, filtered scan and full scan at `k`:
  // within 1e-3 for fp16 partitions, 1e-5 for fp32 ones.
  void Check(const testing_ref::Problem& p, int k, const std::string& label) {
    ASSERT_TRUE(
        gpu_->SetPartition(7, p.metric, p.precision, p.rows.data(), p.num_rows, p.dim).ok());
    ASSERT_TRUE(
        cpu_->SetPartition(7, p.metric, p.precision, p.rows.data(), p.num_rows, p.dim).ok());
    const double tolerance = p.precision == Precision::kFp32 ? 1e-5 : 1e-3;
    testing_ref::Ranked rerank = testing_ref::ReferenceRerank(p);
    testing_ref::Ranked filtered = testing_ref::ReferenceScan(p, true);
    testing_ref::Ranked full = testing_ref::ReferenceScan(p, false);
    for (ExactBatchSearcher* searcher : {gpu_.get(), cpu_.get()}) {
      std::string what = label + " " + searcher->name();
      auto r = searcher->Rerank(7, p.queries.data(), p.num_queries, p.offsets.data(),
                                p.candidates.data(), k);
      ASSERT_TRUE(r.ok()) << what << r.status();
      testing_ref::ExpectMatches(*r, rerank, what + " rerank", tolerance);
      auto f = searcher->Scan(7, p.queries.data(), p.num_queries, k, p.allowed.data());
      ASSERT_TRUE(f.ok()) << what << f.status();
      testing_ref::ExpectMatches(*f, filtered, what + " filtered scan", tolerance);
      auto s = searcher->Scan(7, p.queries.data(), p.num_queries, k, nullptr);
      ASSERT_TRUE(s.ok()) << what << s.status();
      testing_ref::ExpectMatches(*s, full, what + " scan", tolerance);
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
  for (Precision precision : {Precision::kFp16, Precision::kFp32}) {
    for (Metric metric : {Metric::kCosine, Metric::kInnerProduct, Metric::kL2}) {
      for (Shape s : std::vector<Shape>{{1, 1, 1, 1, 1},
                                        {50, 3, 5, 60, 10},      // k > candidates
                                        {5000, 17, 33, 300, 7},  // odd dimension
                                        {4099, 128, 64, 1024, 100},
                                        {20000, 384, 16, 4096, 1024},
                                        {3000, 768, 3, 64, 10},
                                        {2500, 1536, 2, 512, 64},
                                        // cosine: row-major fp16 dots (>= 64 queries)
                                        {45000, 40, 70, 64, 10}}) {
        testing_ref::Problem p =
            testing_ref::RandomProblem(rng, metric, s.rows, s.dim, s.queries, s.max_candidates);
        p.precision = precision;
        Check(p, s.k,
              std::string(precision == Precision::kFp32 ? "fp32" : "fp16") + " metric " +
                  std::to_string(int(metric)) + " rows " + std::to_string(s.rows) + " dim " +
                  std::to_string(s.dim) + " k " + std::to_string(s.k));
      }
    }
  }
}

TEST_F(ExactBatchGpuTest, ScanOverSeveralScoreTiles) {
  // 64 KiB score tiles: 2048 rows of 8 queries per GEMM with fp32 scores (L2),
  // 4096 with fp16 (cosine); 10 or 5 tiles in all.
  std::string why;
  gpu_ = MakeCudaExactBatchSearcher(size_t{1} << 30, &why, size_t{64} << 10);
  ASSERT_NE(gpu_, nullptr) << why;
  std::mt19937 rng(std::random_device{}());
  for (Metric metric : {Metric::kL2, Metric::kCosine}) {
    testing_ref::Problem p = testing_ref::RandomProblem(rng, metric, 20000, 24, 8, 100);
    Check(p, 50, "tiled metric " + std::to_string(int(metric)));
  }
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

// Cosine scans let the GEMM round dots to fp16 and rescore the rows that
// pass a widened threshold. A cluster of rows whose cosines with query 0 lie
// within a few fp16 steps of 1 (fp16's spacing there is 4.9e-4) must come
// back in order with fp32-accurate scores (swaps only among rows within 1e-6),
// whether the survivors fit the rescoring buffer (1,000 rows spread over
// t in [0.02, 0.5], below) or overflow it and the tile is sorted whole from
// fp32 scores (5,000 rows over [0.02, 0.05], all within the margin), with
// dots written column by column (8 queries) or row by row (72 queries).
TEST_F(ExactBatchGpuTest, CosineNearTiesBelowHalfPrecisionAreRankedExactly) {
  std::mt19937 rng(std::random_device{}());
  std::string why;
  auto tiled = MakeCudaExactBatchSearcher(size_t{1} << 30, &why, size_t{256} << 10);
  ASSERT_NE(tiled, nullptr) << why;
  struct Case {
    size_t rows, queries;
    int k;
    size_t cluster;
    double t_max;
  };
  for (Case c : std::vector<Case>{{30000, 8, 50, 1000, 0.5},
                                  {30000, 8, 50, 5000, 0.05},
                                  {50000, 72, 10, 1000, 0.5},
                                  {50000, 72, 10, 5000, 0.05}}) {
    const size_t cluster = c.cluster;
    const double t_max = c.t_max;
    const int k = c.k;
    testing_ref::Problem p =
        testing_ref::RandomProblem(rng, Metric::kCosine, c.rows, 64, c.queries, 10);
    // Query 0's direction and a unit vector orthogonal to it.
    std::vector<double> q(p.queries.begin(), p.queries.begin() + p.dim), u(p.dim);
    std::normal_distribution<double> normal;
    for (double& x : u) x = normal(rng);
    double qq = 0, qu = 0;
    for (size_t i = 0; i < p.dim; ++i) qq += q[i] * q[i], qu += q[i] * u[i];
    for (size_t i = 0; i < p.dim; ++i) u[i] -= qu / qq * q[i];
    double uu = 0;
    for (double x : u) uu += x * x;
    // Row 5000 + j = q/|q| + t_j u/|u|, t_j spread over [0.02, t_max]:
    // cosine 1/sqrt(1 + t_j^2).
    for (size_t j = 0; j < cluster; ++j) {
      double t = 0.02 + (t_max - 0.02) * double(j) / double(cluster);
      for (size_t i = 0; i < p.dim; ++i) {
        p.rows[(5000 + j) * p.dim + i] =
            static_cast<float>(q[i] / std::sqrt(qq) + t * u[i] / std::sqrt(uu));
      }
    }
    testing_ref::Ranked full = testing_ref::ReferenceScan(p, false);
    testing_ref::Ranked filtered = testing_ref::ReferenceScan(p, true);
    for (ExactBatchSearcher* searcher : {gpu_.get(), tiled.get(), cpu_.get()}) {
      std::string what = "cluster " + std::to_string(cluster) + " queries " +
                         std::to_string(c.queries) + " " + searcher->name();
      ASSERT_TRUE(searcher->SetPartition(3, p.metric, p.rows.data(), p.num_rows, p.dim).ok());
      auto scan = searcher->Scan(3, p.queries.data(), p.num_queries, k, nullptr);
      ASSERT_TRUE(scan.ok()) << what << scan.status();
      testing_ref::ExpectMatches(*scan, full, what + " scan", 5e-7);
      auto some = searcher->Scan(3, p.queries.data(), p.num_queries, k, p.allowed.data());
      ASSERT_TRUE(some.ok()) << what << some.status();
      testing_ref::ExpectMatches(*some, filtered, what + " filtered scan", 5e-7);
      // The cluster holds query 0's best k.
      for (int i = 0; i < k; ++i) {
        ASSERT_GE(scan->rows[i], 5000u) << what;
        ASSERT_LT(scan->rows[i], 5000u + cluster) << what;
      }
    }
  }
}

// A device copy grown by AppendRows (several times, so its buffers are
// replaced and the old rows copied on the device) answers exactly like one
// stored whole, and like the CPU twin; an append beyond the budget fails and
// changes nothing.
TEST_F(ExactBatchGpuTest, AppendedRowsAnswerLikeAPartitionStoredWhole) {
  std::mt19937 rng(std::random_device{}());
  for (Precision precision : {Precision::kFp16, Precision::kFp32}) {
    for (Metric metric : {Metric::kCosine, Metric::kInnerProduct}) {
      const size_t dim = 64, rows = 30000;
      testing_ref::Problem p = testing_ref::RandomProblem(rng, metric, rows, dim, 70, 200);
      p.precision = precision;
      std::string why;
      auto grown = MakeCudaExactBatchSearcher(size_t{1} << 30, &why);
      ASSERT_NE(grown, nullptr) << why;
      ASSERT_TRUE(grown->SetPartition(4, metric, precision, p.rows.data(), 1000, dim).ok());
      size_t have = 1000;
      for (size_t step : {size_t{1}, size_t{7}, size_t{200}, size_t{3000}, size_t{25792}}) {
        ASSERT_TRUE(grown->AppendRows(4, p.rows.data() + have * dim, step).ok());
        have += step;
      }
      ASSERT_EQ(have, rows);
      ASSERT_TRUE(gpu_->SetPartition(4, metric, precision, p.rows.data(), rows, dim).ok());
      for (const uint64_t* allowed : {static_cast<const uint64_t*>(nullptr),
                                      static_cast<const uint64_t*>(p.allowed.data())}) {
        auto a = gpu_->Scan(4, p.queries.data(), p.num_queries, 10, allowed);
        auto b = grown->Scan(4, p.queries.data(), p.num_queries, 10, allowed);
        ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
        EXPECT_EQ(a->rows, b->rows);
        EXPECT_EQ(a->scores, b->scores);
      }
      testing_ref::ExpectMatches(*grown->Scan(4, p.queries.data(), p.num_queries, 10, nullptr),
                                 testing_ref::ReferenceScan(p, false), "grown scan",
                                 precision == Precision::kFp32 ? 1e-5 : 1e-3);
      auto r = grown->Rerank(4, p.queries.data(), p.num_queries, p.offsets.data(),
                             p.candidates.data(), 10);
      ASSERT_TRUE(r.ok());
      testing_ref::ExpectMatches(*r, testing_ref::ReferenceRerank(p), "grown rerank",
                                 precision == Precision::kFp32 ? 1e-5 : 1e-3);
    }
  }
  // The budget: 1000 fp16 rows of 64 fit in 1 MB, 9000 more do not.
  std::string why;
  auto small = MakeCudaExactBatchSearcher(1 << 20, &why);
  ASSERT_NE(small, nullptr) << why;
  testing_ref::Problem p = testing_ref::RandomProblem(rng, Metric::kL2, 10000, 64, 3, 10);
  ASSERT_TRUE(small->SetPartition(5, Metric::kL2, p.rows.data(), 1000, 64).ok());
  auto before = small->Scan(5, p.queries.data(), 3, 5, nullptr);
  EXPECT_EQ(small->AppendRows(5, p.rows.data() + 1000 * 64, 9000).code(),
            absl::StatusCode::kResourceExhausted);
  auto after = small->Scan(5, p.queries.data(), 3, 5, nullptr);
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_EQ(before->rows, after->rows);
  EXPECT_EQ(small->AppendRows(6, p.rows.data(), 1).code(), absl::StatusCode::kNotFound);
}

// The CUDA searcher stores a partition piece by piece, two page-locked
// buffers in turn (five pieces here, so both are reused); it answers like
// the CPU twin, and a bad row in a later piece gets the twin's message and
// leaves the partition stored before in place.
TEST_F(ExactBatchGpuTest, PiecewiseStoreMatchesTheTwin) {
  const size_t dim = 16384, rows = 4500;
  ASSERT_EQ(PieceRows(dim), 1024u);
  std::mt19937 rng(std::random_device{}());
  for (Precision precision : {Precision::kFp16, Precision::kFp32}) {
    testing_ref::Problem p = testing_ref::RandomProblem(rng, Metric::kL2, rows, dim, 3, 50);
    p.precision = precision;
    RowSource source = [&](size_t first, size_t count, float* scratch) {
      std::copy(p.rows.begin() + first * dim, p.rows.begin() + (first + count) * dim, scratch);
      return static_cast<const float*>(scratch);
    };
    ASSERT_TRUE(gpu_->SetPartitionFrom(2, Metric::kL2, precision, rows, dim, source).ok());
    ASSERT_TRUE(cpu_->SetPartitionFrom(2, Metric::kL2, precision, rows, dim, source).ok());
    auto on_gpu = gpu_->Scan(2, p.queries.data(), 3, 20, p.allowed.data());
    auto on_cpu = cpu_->Scan(2, p.queries.data(), 3, 20, p.allowed.data());
    ASSERT_TRUE(on_gpu.ok() && on_cpu.ok());
    const double tolerance = precision == Precision::kFp32 ? 1e-5 : 1e-3;
    testing_ref::ExpectMatches(*on_gpu, testing_ref::ReferenceScan(p, true), "gpu", tolerance);
    testing_ref::ExpectMatches(*on_cpu, testing_ref::ReferenceScan(p, true), "cpu", tolerance);
    p.rows[4321 * dim + 5] = std::nanf("");
    absl::Status gpu_bad = gpu_->SetPartitionFrom(2, Metric::kL2, precision, rows, dim, source);
    absl::Status cpu_bad = cpu_->SetPartitionFrom(2, Metric::kL2, precision, rows, dim, source);
    EXPECT_EQ(gpu_bad.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(gpu_bad.message(), cpu_bad.message());
    auto after = gpu_->Scan(2, p.queries.data(), 3, 20, p.allowed.data());
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(after->rows, on_gpu->rows) << "the partition stored before is still there";
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

// Queries are rounded to fp16 on the device; the CPU twin rounds them on the
// host. Scanning the identity matrix returns each query component as the
// device saw it (a dot product with one non-zero term is exact), so the two
// roundings can be compared bit for bit, cosine scaling included.
TEST_F(ExactBatchGpuTest, DeviceQueryRoundingEqualsTheHostsBitForBit) {
  std::mt19937 rng(77);
  for (Precision precision : {Precision::kFp16, Precision::kFp32}) {
    for (Metric metric : {Metric::kInnerProduct, Metric::kCosine}) {
      for (size_t dim : {size_t{3}, size_t{97}, size_t{768}}) {
        std::vector<float> identity(dim * dim, 0.0f);
        for (size_t i = 0; i < dim; ++i) identity[i * dim + i] = 1.0f;
        ASSERT_TRUE(gpu_->SetPartition(9, metric, precision, identity.data(), dim, dim).ok());
        const size_t num_queries = 33;
        std::vector<float> queries(num_queries * dim);
        // Magnitudes from fp16-subnormal to large, so rounding is exercised.
        std::uniform_real_distribution<float> exponent(-20.0f, 14.0f);
        std::normal_distribution<float> normal;
        for (float& v : queries) v = normal(rng) * std::exp2(exponent(rng));
        for (size_t q = 0; q < num_queries; ++q) {
          if (metric == Metric::kInnerProduct) {
            for (size_t i = 0; i < dim; ++i) {
              queries[q * dim + i] = std::clamp(queries[q * dim + i], -60000.0f, 60000.0f);
            }
          }
        }
        auto top = gpu_->Scan(9, queries.data(), num_queries, static_cast<int>(dim), nullptr);
        ASSERT_TRUE(top.ok()) << top.status();
        // The host's prepared values (fp16 ones widened).
        std::vector<float> expected_values;
        if (precision == Precision::kFp32) {
          auto host = PrepareFloatRows(metric, queries.data(), num_queries, dim, "query");
          ASSERT_TRUE(host.ok()) << host.status();
          expected_values = host->values;
        } else {
          auto host = PrepareRows(metric, queries.data(), num_queries, dim, "query");
          ASSERT_TRUE(host.ok()) << host.status();
          for (uint16_t h : host->values) expected_values.push_back(HalfToFloat(h));
        }
        for (size_t q = 0; q < num_queries; ++q) {
          std::vector<float> seen(dim, std::nanf(""));
          for (size_t i = 0; i < dim; ++i) {
            uint32_t row = top->rows[q * dim + i];
            ASSERT_LT(row, dim);
            seen[row] = top->scores[q * dim + i];
          }
          for (size_t i = 0; i < dim; ++i) {
            const float expected = expected_values[q * dim + i];
            ASSERT_EQ(std::memcmp(&seen[i], &expected, sizeof(float)) == 0 ||
                          (seen[i] == 0.0f && expected == 0.0f),
                      true)
                << "precision " << static_cast<int>(precision) << " metric "
                << static_cast<int>(metric) << " dim " << dim << " query " << q << " component "
                << i << ": device " << seen[i] << ", host " << expected;
          }
        }
      }
    }
  }
}

TEST_F(ExactBatchGpuTest, BadQueriesAndCandidatesGetTheTwinsMessages) {
  for (Precision precision : {Precision::kFp16, Precision::kFp32}) {
    std::vector<float> rows(100 * 16, 0.25f);
    ASSERT_TRUE(gpu_->SetPartition(3, Metric::kL2, precision, rows.data(), 100, 16).ok());
    ASSERT_TRUE(cpu_->SetPartition(3, Metric::kL2, precision, rows.data(), 100, 16).ok());
    std::vector<float> queries(2 * 16, 1.0f);
    queries[16 + 5] = std::nanf("");
    std::vector<uint32_t> offsets = {0, 2, 4}, candidates = {1, 2, 3, 4};
    for (ExactBatchSearcher* s : {gpu_.get(), cpu_.get()}) {
      auto scan = s->Scan(3, queries.data(), 2, 5, nullptr);
      auto rerank = s->Rerank(3, queries.data(), 2, offsets.data(), candidates.data(), 2);
      EXPECT_EQ(scan.status().code(), absl::StatusCode::kInvalidArgument) << s->name();
      EXPECT_EQ(rerank.status().code(), absl::StatusCode::kInvalidArgument) << s->name();
    }
    EXPECT_EQ(gpu_->Scan(3, queries.data(), 2, 5, nullptr).status().message(),
              cpu_->Scan(3, queries.data(), 2, 5, nullptr).status().message());
    queries[16 + 5] = 1.0f;
    candidates[3] = 100;  // one past the last row
    auto gpu_bad = gpu_->Rerank(3, queries.data(), 2, offsets.data(), candidates.data(), 2);
    auto cpu_bad = cpu_->Rerank(3, queries.data(), 2, offsets.data(), candidates.data(), 2);
    EXPECT_EQ(gpu_bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(gpu_bad.status().message(), cpu_bad.status().message());
    candidates[3] = 99;
    EXPECT_TRUE(gpu_->Rerank(3, queries.data(), 2, offsets.data(), candidates.data(), 2).ok())
        << "a bad call leaves nothing behind";
  }
}

}  // namespace
}  // namespace engram::index
