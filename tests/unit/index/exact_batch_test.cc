// The CPU twin of the batched exact searcher against a naive double-precision
// reference on the same fp16-rounded inputs, and its SIMD path against the
// scalar one. (tests/gpu/ holds the CUDA-vs-CPU comparison.)
#include "index/exact_batch.h"

#include <gtest/gtest.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "index/exact_batch_common.h"
#include "index/exact_batch_cpu_kernels.h"
#include "storage/half_float.h"
#include "tests/unit/index/exact_batch_reference.h"

namespace engram::index {
namespace {

TEST(HalfConversionTest, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToHalf(f), h) << std::hex << h;
  }
}

__attribute__((target("f16c"))) uint16_t HardwareHalf(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

TEST(HalfConversionTest, RoundsLikeTheHardwareOnRandomFloats) {
  // Asked through CPUID: clang 14's __builtin_cpu_supports has no "f16c".
  if (!CpuHasAvx2AndF16c()) GTEST_SKIP() << "no F16C (with AVX2) on this CPU";
  std::mt19937 rng(5);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 2000000; ++i) {
    uint32_t b = bits(rng);
    float f;
    std::memcpy(&f, &b, 4);
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToHalf(f), HardwareHalf(f)) << f;
  }
}

TEST(ExactBatchCpuTest, SimdDotMatchesScalar) {
  if (SelectDot(true) == DotScalar) GTEST_SKIP() << "no AVX2/FMA/F16C on this CPU";
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (size_t dim : {1, 7, 8, 15, 16, 17, 100, 384, 768, 1000}) {
    std::vector<float> query(dim);
    std::vector<uint16_t> row(dim);
    for (size_t i = 0; i < dim; ++i) {
      query[i] = HalfToFloat(FloatToHalf(normal(rng)));
      row[i] = FloatToHalf(normal(rng));
    }
    float scalar = DotScalar(query.data(), row.data(), dim);
    float simd = DotAvx2(query.data(), row.data(), dim);
    EXPECT_NEAR(simd, scalar, 1e-4f * (1 + std::fabs(scalar)) * std::sqrt(float(dim))) << dim;
  }
}

class ExactBatchCpuTest : public ::testing::TestWithParam<bool> {
 protected:
  std::unique_ptr<ExactBatchSearcher> Make() {
    return GetParam() ? MakeCpuExactBatchSearcher() : MakeScalarCpuExactBatchSearcherForTest();
  }
};

// fp16 partitions within 1e-3 of the reference; fp32 ones within 1e-5
// (fp16 rounding alone would miss that by far).
TEST_P(ExactBatchCpuTest, RerankAndScanMatchTheReference) {
  std::mt19937 rng(11);
  for (Precision precision : {Precision::kFp16, Precision::kFp32}) {
    for (Metric metric : {Metric::kCosine, Metric::kInnerProduct, Metric::kL2}) {
      for (size_t dim : {3, 16, 97}) {
        auto searcher = Make();
        testing_ref::Problem problem = testing_ref::RandomProblem(rng, metric, 3000, dim, 9, 300);
        problem.precision = precision;
        const double tolerance = precision == Precision::kFp32 ? 1e-5 : 1e-3;
        ASSERT_TRUE(
            searcher->SetPartition(1, metric, precision, problem.rows.data(), problem.num_rows, dim)
                .ok());
        testing_ref::Ranked rerank_reference = testing_ref::ReferenceRerank(problem);
        testing_ref::Ranked filtered_reference = testing_ref::ReferenceScan(problem, true);
        testing_ref::Ranked full_reference = testing_ref::ReferenceScan(problem, false);
        for (int k : {1, 10, 400}) {
          auto reranked = searcher->Rerank(1, problem.queries.data(), problem.num_queries,
                                           problem.offsets.data(), problem.candidates.data(), k);
          ASSERT_TRUE(reranked.ok()) << reranked.status();
          testing_ref::ExpectMatches(*reranked, rerank_reference, "rerank", tolerance);
          auto scanned = searcher->Scan(1, problem.queries.data(), problem.num_queries, k,
                                        problem.allowed.data());
          ASSERT_TRUE(scanned.ok()) << scanned.status();
          testing_ref::ExpectMatches(*scanned, filtered_reference, "scan", tolerance);
          auto unfiltered =
              searcher->Scan(1, problem.queries.data(), problem.num_queries, k, nullptr);
          ASSERT_TRUE(unfiltered.ok());
          testing_ref::ExpectMatches(*unfiltered, full_reference, "scan unfiltered", tolerance);
        }
      }
    }
  }
}

// A partition grown by AppendRows answers exactly like one stored whole;
// bad appends change nothing.
TEST_P(ExactBatchCpuTest, AppendedRowsAnswerLikeAPartitionStoredWhole) {
  std::mt19937 rng(13);
  for (Precision precision : {Precision::kFp16, Precision::kFp32}) {
    for (Metric metric : {Metric::kCosine, Metric::kL2}) {
      testing_ref::Problem p = testing_ref::RandomProblem(rng, metric, 2000, 24, 5, 100);
      auto whole = Make();
      auto grown = Make();
      ASSERT_TRUE(whole->SetPartition(1, metric, precision, p.rows.data(), 2000, 24).ok());
      ASSERT_TRUE(grown->SetPartition(1, metric, precision, p.rows.data(), 700, 24).ok());
      ASSERT_TRUE(grown->AppendRows(1, p.rows.data() + 700 * 24, 1).ok());
      ASSERT_TRUE(grown->AppendRows(1, p.rows.data() + 701 * 24, 1299).ok());
      std::vector<float> bad(24, 1.0f);
      bad[3] = std::nanf("");
      EXPECT_EQ(grown->AppendRows(1, bad.data(), 1).code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(grown->AppendRows(2, bad.data(), 1).code(), absl::StatusCode::kNotFound);
      auto a = whole->Scan(1, p.queries.data(), 5, 20, p.allowed.data());
      auto b = grown->Scan(1, p.queries.data(), 5, 20, p.allowed.data());
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_EQ(a->rows, b->rows);
      EXPECT_EQ(a->scores, b->scores);
      auto c = grown->Rerank(1, p.queries.data(), 5, p.offsets.data(), p.candidates.data(), 7);
      auto d = whole->Rerank(1, p.queries.data(), 5, p.offsets.data(), p.candidates.data(), 7);
      ASSERT_TRUE(c.ok() && d.ok());
      EXPECT_EQ(c->rows, d->rows);
    }
  }
}

// A partition read piece by piece (three pieces of PieceRows rows here)
// answers like one stored from memory; a bad row in a later piece is named
// by its partition row and leaves the partition stored before in place.
TEST_P(ExactBatchCpuTest, PiecewiseStoreAnswersLikeAContiguousOne) {
  const size_t dim = 32768, rows = 1300;
  ASSERT_EQ(PieceRows(dim), 512u);
  std::mt19937 rng(17);
  testing_ref::Problem p = testing_ref::RandomProblem(rng, Metric::kCosine, rows, dim, 2, 1);
  auto whole = Make();
  auto pieces = Make();
  ASSERT_TRUE(whole->SetPartition(1, Metric::kCosine, p.rows.data(), rows, dim).ok());
  std::vector<size_t> firsts;
  RowSource source = [&](size_t first, size_t count, float* scratch) {
    firsts.push_back(first);
    EXPECT_LE(count, PieceRows(dim));
    std::copy(p.rows.begin() + first * dim, p.rows.begin() + (first + count) * dim, scratch);
    return static_cast<const float*>(scratch);
  };
  ASSERT_TRUE(
      pieces->SetPartitionFrom(1, Metric::kCosine, Precision::kFp16, rows, dim, source).ok());
  EXPECT_EQ(firsts, (std::vector<size_t>{0, 512, 1024}));
  auto a = whole->Scan(1, p.queries.data(), 2, 5, nullptr);
  auto b = pieces->Scan(1, p.queries.data(), 2, 5, nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->rows, b->rows);
  EXPECT_EQ(a->scores, b->scores);
  p.rows[1100 * dim + 7] = std::numeric_limits<float>::infinity();
  absl::Status bad =
      pieces->SetPartitionFrom(1, Metric::kCosine, Precision::kFp32, rows, dim, source);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("row 1100 has inf at [7]"), std::string::npos) << bad;
  auto c = pieces->Scan(1, p.queries.data(), 2, 5, nullptr);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->scores, a->scores) << "the fp16 partition stored before is still there";
}

TEST_P(ExactBatchCpuTest, RejectsBadRequestsAndPadsShortResults) {
  auto searcher = Make();
  std::vector<float> rows = {1, 0, 0, 1};
  ASSERT_TRUE(searcher->SetPartition(3, Metric::kInnerProduct, rows.data(), 2, 2).ok());
  std::vector<float> query = {1, 0};
  std::vector<uint32_t> offsets = {0, 1}, candidates = {1};
  auto padded = searcher->Rerank(3, query.data(), 1, offsets.data(), candidates.data(), 3);
  ASSERT_TRUE(padded.ok());
  EXPECT_EQ(padded->rows, (std::vector<uint32_t>{1, kNoRow, kNoRow}));
  EXPECT_EQ(padded->scores[0], 0.0f);
  EXPECT_TRUE(std::isinf(padded->scores[1]) && padded->scores[1] < 0);

  std::vector<uint32_t> outside = {2};
  EXPECT_EQ(searcher->Rerank(3, query.data(), 1, offsets.data(), outside.data(), 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(searcher->Scan(3, query.data(), 1, 0, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(searcher->Scan(4, query.data(), 1, 1, nullptr).status().code(),
            absl::StatusCode::kNotFound);
  std::vector<float> nan_query = {NAN, 0};
  EXPECT_EQ(searcher->Scan(3, nan_query.data(), 1, 1, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> huge = {1e6f, 0, 0, 1};
  EXPECT_EQ(searcher->SetPartition(5, Metric::kL2, huge.data(), 2, 2).code(),
            absl::StatusCode::kInvalidArgument);
  uint64_t none = 0;
  auto filtered = searcher->Scan(3, query.data(), 1, 2, &none);
  ASSERT_TRUE(filtered.ok());
  EXPECT_EQ(filtered->rows, (std::vector<uint32_t>{kNoRow, kNoRow}));
  auto empty = searcher->Scan(3, query.data(), 0, 2, nullptr);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->rows.empty());
}

INSTANTIATE_TEST_SUITE_P(SimdAndScalar, ExactBatchCpuTest, ::testing::Bool());

TEST(ExactBatchFactoryTest, SaysWhichPathServes) {
  std::string why;
  auto searcher = MakeExactBatchSearcher(size_t{1} << 30, &why);
  ASSERT_NE(searcher, nullptr);
  EXPECT_EQ(why.substr(0, searcher->name().size()), searcher->name()) << why;
}

}  // namespace
}  // namespace engram::index
