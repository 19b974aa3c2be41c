// PartitionScanner with the CPU twin: answers equal a direct Scan of the
// same rows (identical fp16 arithmetic), rows added after the copy (host
// tail), removals, attribute filters, micro-batching under concurrency, a
// lone scan that does not wait for the window, the budget (LRU eviction and
// the host fallback). The GPU path runs the same searcher interface; its
// equality with the twin is tests/gpu/exact_batch_gpu_test.cc.
#include "index/partition_scanner.h"

#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "tests/unit/index/scan_expectations.h"

namespace engram::index {
namespace {

constexpr uint32_t kDim = 48;

std::vector<float> RandomVectors(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> values(count * kDim);
  for (float& v : values) v = normal(rng);
  return values;
}

std::shared_ptr<VectorPartition> MakePartition(Metric metric, size_t count, uint32_t seed) {
  PartitionOptions options;
  options.metric = metric;
  options.dimension = kDim;
  options.attribute_bytes = 1;
  options.build_threads = 2;
  options.graph_threshold = 1u << 30;  // the scanner does not care; keep the test fast
  std::shared_ptr<VectorPartition> partition = *VectorPartition::Create(options);
  std::vector<float> vectors = RandomVectors(count, seed);
  for (size_t i = 0; i < count; ++i) {
    uint8_t parity = static_cast<uint8_t>(i % 2);
    EXPECT_TRUE(partition->Add(1000 + i, {&vectors[i * kDim], kDim}, {&parity, 1}).ok());
  }
  return partition;
}

// The reference: a fresh CPU twin over every row the partition has now.
std::vector<ScoredId> Reference(const VectorPartition& partition, std::span<const float> query,
                                uint32_t k, const AcceptFunction* accept) {
  auto searcher = MakeCpuExactBatchSearcher();
  const uint32_t rows = partition.row_count();
  std::vector<float> vectors(size_t{rows} * kDim);
  partition.CopyRows(0, rows, vectors.data());
  EXPECT_TRUE(
      searcher->SetPartition(1, partition.options().metric, vectors.data(), rows, kDim).ok());
  std::vector<uint64_t> bits = partition.LiveRowBitmap(rows, accept);
  auto top = searcher->Scan(1, query.data(), 1, static_cast<int>(k), bits.data());
  EXPECT_TRUE(top.ok());
  std::vector<ScoredId> out;
  for (int i = 0; i < top->k; ++i) {
    if (top->rows[i] == kNoRow) break;
    out.push_back({partition.RowId(top->rows[i]), top->scores[i]});
  }
  return out;
}

void ExpectSame(const std::vector<ScoredId>& got, const std::vector<ScoredId>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].id, want[i].id) << "rank " << i;
    EXPECT_NEAR(got[i].score, want[i].score, 1e-4f) << "rank " << i;
  }
}

ScannerOptions CpuOptions() {
  ScannerOptions options;
  options.searcher_for_test = MakeCpuExactBatchSearcher();
  return options;
}

TEST(PartitionScanner, MatchesADirectScanForEveryMetric) {
  for (Metric metric : {Metric::kCosine, Metric::kInnerProduct, Metric::kL2}) {
    PartitionScanner scanner(CpuOptions());
    auto partition = MakePartition(metric, 3000, 1);
    std::vector<float> queries = RandomVectors(10, 2);
    for (int q = 0; q < 10; ++q) {
      std::span<const float> query(&queries[q * kDim], kDim);
      auto got = scanner.Scan(partition, query, 25);
      ASSERT_TRUE(got.ok()) << got.status();
      ExpectSame(*got, Reference(*partition, query, 25, nullptr));
      // And the same neighbours as the fp32 exact search, but for fp16 near-ties.
      auto exact = partition->ExactSearch(query, 25);
      size_t common = 0;
      for (const ScoredId& a : *got) {
        for (const ScoredId& b : exact) common += a.id == b.id;
      }
      EXPECT_GE(common, 23u);
    }
    ScannerStats stats = scanner.Stats();
    EXPECT_EQ(stats.backend, "cpu");
    EXPECT_EQ(stats.uploads, 1u);
    EXPECT_EQ(stats.scans, 10u);
    EXPECT_EQ(stats.resident_partitions, 1u);
  }
}

// fp32 copies (gpu.precision: fp32) score like the partition's own fp32
// exact search, on the copy and on rows added after it (the host tail): the
// same scores to 1e-5 relative (fp16 copies are ~1e-3 off), the same rows.
TEST(PartitionScanner, Fp32CopiesScoreLikeTheExactSearch) {
  for (Metric metric : {Metric::kCosine, Metric::kInnerProduct, Metric::kL2}) {
    ScannerOptions options = CpuOptions();
    options.precision = Precision::kFp32;
    PartitionScanner scanner(std::move(options));
    auto partition = MakePartition(metric, 3000, 7);
    std::vector<float> queries = RandomVectors(6, 8);
    ASSERT_TRUE(scanner.Scan(partition, {queries.data(), kDim}, 5).ok());
    std::vector<float> extra = RandomVectors(40, 9);
    for (int i = 0; i < 40; ++i) {
      ASSERT_TRUE(partition->Add(7000 + i, {&extra[i * kDim], kDim}, std::vector<uint8_t>{0}).ok());
    }
    for (int q = 0; q < 6; ++q) {
      testing_ref::ExpectLikeExactSearch(scanner, partition, {&queries[q * kDim], kDim}, 25,
                                         "metric " + std::to_string(int(metric)));
    }
    EXPECT_EQ(scanner.Stats().uploads, 1u);
  }
}

TEST(PartitionScanner, RowsAddedOrRemovedAfterTheCopy) {
  PartitionScanner scanner(CpuOptions());
  auto partition = MakePartition(Metric::kCosine, 2000, 3);
  std::vector<float> query = RandomVectors(1, 4);
  ASSERT_TRUE(scanner.Scan(partition, query, 10).ok());
  // New rows, one of them the query itself: it must come first (host tail).
  std::vector<float> extra = RandomVectors(50, 5);
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(partition->Add(5000 + i, {&extra[i * kDim], kDim}, std::vector<uint8_t>{0}).ok());
  }
  ASSERT_TRUE(partition->Add(9999, query, std::vector<uint8_t>{0}).ok());
  auto got = scanner.Scan(partition, query, 10);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)[0].id, 9999u);
  ExpectSame(*got, Reference(*partition, query, 10, nullptr));
  EXPECT_EQ(scanner.Stats().uploads, 1u) << "a small tail does not rebuild the copy";
  // Removed rows disappear, on the device copy and in the tail.
  const uint64_t second = (*got)[1].id;
  ASSERT_TRUE(partition->Remove(9999));
  ASSERT_TRUE(partition->Remove(second));
  got = scanner.Scan(partition, query, 10);
  ASSERT_TRUE(got.ok());
  for (const ScoredId& hit : *got) {
    EXPECT_NE(hit.id, 9999u);
    EXPECT_NE(hit.id, second);
  }
  ExpectSame(*got, Reference(*partition, query, 10, nullptr));
  // A large tail is appended to the copy (only the new rows go up), with the
  // removals still masked; and again.
  for (int round = 0; round < 2; ++round) {
    if (round > 0) {
      ASSERT_TRUE(partition->Remove(90000 + round - 1));  // on the device now
    }
    std::vector<float> many = RandomVectors(5000, 6 + round);
    for (int i = 0; i < 5000; ++i) {
      ASSERT_TRUE(
          partition->Add(20000 + 5000 * round + i, {&many[i * kDim], kDim}, std::vector<uint8_t>{1})
              .ok());
    }
    ASSERT_TRUE(partition->Add(90000 + round, query, std::vector<uint8_t>{0}).ok());
    got = scanner.Scan(partition, query, 10);
    ASSERT_TRUE(got.ok());
    EXPECT_EQ((*got)[0].id, 90000u + round);
    for (const ScoredId& hit : *got) EXPECT_NE(hit.id, second);
    ExpectSame(*got, Reference(*partition, query, 10, nullptr));
    EXPECT_EQ(scanner.Stats().uploads, 1u);
    EXPECT_EQ(scanner.Stats().appends, 1u + round);
  }
}

TEST(PartitionScanner, AttributeFiltersAndBadInput) {
  PartitionScanner scanner(CpuOptions());
  auto partition = MakePartition(Metric::kL2, 1500, 7);
  const AcceptFunction odd_only = [](uint64_t, const uint8_t* attributes) {
    return attributes[0] == 1;
  };
  std::vector<float> query = RandomVectors(1, 8);
  auto got = scanner.Scan(partition, query, 30, &odd_only);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 30u);
  for (const ScoredId& hit : *got) EXPECT_EQ((hit.id - 1000) % 2, 1u);
  ExpectSame(*got, Reference(*partition, query, 30, &odd_only));
  const AcceptFunction none = [](uint64_t, const uint8_t*) { return false; };
  got = scanner.Scan(partition, query, 30, &none);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->empty());

  EXPECT_EQ(scanner.Scan(partition, std::vector<float>(kDim - 1, 0.5f), 5).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> nan = query;
  nan[3] = std::nanf("");
  EXPECT_EQ(scanner.Scan(partition, nan, 5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scanner.Scan(partition, query, 0).status().code(), absl::StatusCode::kInvalidArgument);
  auto empty = MakePartition(Metric::kL2, 0, 9);
  got = scanner.Scan(empty, query, 5);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->empty());
}

TEST(PartitionScanner, ConcurrentScansShareLaunches) {
  ScannerOptions options = CpuOptions();
  options.batch_window = absl::Milliseconds(2);
  PartitionScanner scanner(std::move(options));
  auto partition = MakePartition(Metric::kInnerProduct, 4000, 10);
  std::vector<float> queries = RandomVectors(64, 11);
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        std::span<const float> query(&queries[(t * 8 + i) * kDim], kDim);
        auto got = scanner.Scan(partition, query, 10);
        auto want = Reference(*partition, query, 10, nullptr);
        if (!got.ok() || got->size() != want.size() || (*got)[0].id != want[0].id) ++wrong;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
  ScannerStats stats = scanner.Stats();
  EXPECT_EQ(stats.scans, 64u);
  EXPECT_LT(stats.launches, 64u) << "concurrent scans were never batched";
}

TEST(PartitionScanner, ALoneScanDoesNotWaitForTheWindow) {
  ScannerOptions options = CpuOptions();
  options.batch_window = absl::Seconds(20);
  PartitionScanner scanner(std::move(options));
  auto partition = MakePartition(Metric::kCosine, 500, 12);
  std::vector<float> query = RandomVectors(1, 13);
  for (int i = 0; i < 3; ++i) {
    absl::Time start = absl::Now();
    ASSERT_TRUE(scanner.Scan(partition, query, 5).ok());
    EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  }
}

TEST(PartitionScanner, BudgetEvictsOrFallsBack) {
  auto a = MakePartition(Metric::kCosine, 1000, 14);
  auto b = MakePartition(Metric::kCosine, 1000, 15);
  std::vector<float> query = RandomVectors(1, 16);
  {
    ScannerOptions options = CpuOptions();
    options.budget_bytes = 1000 * (kDim * 2 + 4) + 100;  // one partition
    PartitionScanner scanner(std::move(options));
    for (int i = 0; i < 3; ++i) {
      ExpectSame(*scanner.Scan(a, query, 5), Reference(*a, query, 5, nullptr));
      ExpectSame(*scanner.Scan(b, query, 5), Reference(*b, query, 5, nullptr));
    }
    ScannerStats stats = scanner.Stats();
    EXPECT_EQ(stats.resident_partitions, 1u);
    EXPECT_EQ(stats.uploads, 6u);
    EXPECT_LE(stats.resident_bytes, 1000u * (kDim * 2 + 4));
  }
  {
    ScannerOptions options = CpuOptions();
    options.budget_bytes = 1000;  // nothing fits: scanned on the host in fp32
    PartitionScanner scanner(std::move(options));
    auto got = scanner.Scan(a, query, 5);
    ASSERT_TRUE(got.ok());
    auto exact = a->ExactSearch(query, 5);
    ASSERT_EQ(got->size(), exact.size());
    for (size_t i = 0; i < exact.size(); ++i) EXPECT_EQ((*got)[i].id, exact[i].id);
    EXPECT_EQ(scanner.Stats().fallbacks, 1u);
    EXPECT_EQ(scanner.Stats().resident_partitions, 0u);
  }
}

}  // namespace
}  // namespace engram::index
