// PartitionScanner on the GPU against PartitionScanner on the CPU twin: the
// same scans (metrics, odd dimensions, k above the row count, rows added
// after the copy, removals, attribute filters, concurrent batches) must
// return the same ids and scores but for fp16 near-ties. Skips itself where
// no GPU answers (CI); run it on the accelerator machine (tests/gpu/README.md).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <thread>

#include "index/partition_scanner.h"
#include "tests/unit/index/scan_expectations.h"

namespace engram::index {
namespace {

std::vector<float> RandomVectors(size_t count, size_t dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> values(count * dim);
  for (float& v : values) v = normal(rng);
  return values;
}

std::shared_ptr<VectorPartition> MakePartition(Metric metric, size_t dim, size_t count,
                                               uint32_t seed) {
  PartitionOptions options;
  options.metric = metric;
  options.dimension = static_cast<uint32_t>(dim);
  options.attribute_bytes = 1;
  options.graph_threshold = 1u << 30;  // rows only: the scanner does not use the graph
  std::shared_ptr<VectorPartition> partition = *VectorPartition::Create(options);
  std::vector<float> vectors = RandomVectors(count, dim, seed);
  for (size_t i = 0; i < count; ++i) {
    uint8_t attribute = static_cast<uint8_t>(i % 3);
    EXPECT_TRUE(partition->Add(i, {&vectors[i * dim], dim}, {&attribute, 1}).ok());
  }
  return partition;
}

class PartitionScannerGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ScannerOptions gpu_options;
    gpu_options.budget_bytes = size_t{8} << 30;
    gpu_ = std::make_unique<PartitionScanner>(std::move(gpu_options));
    if (gpu_->Stats().backend != "cuda") GTEST_SKIP() << gpu_->Stats().reason;
    ScannerOptions cpu_options;
    cpu_options.use_gpu = false;
    cpu_ = std::make_unique<PartitionScanner>(std::move(cpu_options));
  }

  // GPU and CPU twin agree: same ids in order except where scores tie
  // within float tolerance; scores equal within tolerance.
  void ExpectAgree(const std::shared_ptr<VectorPartition>& partition, std::span<const float> query,
                   uint32_t k, const AcceptFunction* accept) {
    auto on_gpu = gpu_->Scan(partition, query, k, accept);
    auto on_cpu = cpu_->Scan(partition, query, k, accept);
    ASSERT_TRUE(on_gpu.ok()) << on_gpu.status();
    ASSERT_TRUE(on_cpu.ok()) << on_cpu.status();
    ASSERT_EQ(on_gpu->size(), on_cpu->size());
    for (size_t i = 0; i < on_gpu->size(); ++i) {
      const float tolerance = 1e-3f * std::max(1.0f, std::abs((*on_cpu)[i].score));
      EXPECT_NEAR((*on_gpu)[i].score, (*on_cpu)[i].score, tolerance) << "rank " << i;
      if ((*on_gpu)[i].id != (*on_cpu)[i].id) {
        // Only a near-tie may swap places.
        EXPECT_NEAR((*on_gpu)[i].score, (*on_cpu)[i].score, tolerance) << "rank " << i;
      }
    }
    size_t same = 0;
    for (size_t i = 0; i < on_gpu->size(); ++i) same += (*on_gpu)[i].id == (*on_cpu)[i].id;
    EXPECT_GE(same + 2, on_gpu->size());
  }

  std::unique_ptr<PartitionScanner> gpu_, cpu_;
};

TEST_F(PartitionScannerGpuTest, AgreesWithTheCpuTwinAcrossShapes) {
  int cases = 0;
  for (Metric metric : {Metric::kCosine, Metric::kInnerProduct, Metric::kL2}) {
    for (size_t dim : {size_t{7}, size_t{97}, size_t{768}}) {
      for (size_t rows : {size_t{5}, size_t{3000}, size_t{70000}}) {
        auto partition = MakePartition(metric, dim, rows, static_cast<uint32_t>(dim + rows));
        std::vector<float> queries = RandomVectors(3, dim, 99);
        for (uint32_t k : {1u, 10u, 100u}) {
          ExpectAgree(partition, {&queries[(k % 3) * dim], dim}, k, nullptr);
          ++cases;
        }
      }
    }
  }
  EXPECT_EQ(cases, 81);
  EXPECT_EQ(gpu_->Stats().fallbacks, 0u);
}

// gpu.precision: fp32 on the GPU scores like the partition's own fp32
// exact search, on the copy and on rows added after it: scores to 1e-5
// relative (fp16 copies are ~1e-3 off), the same rows but for near-ties.
TEST_F(PartitionScannerGpuTest, Fp32CopiesScoreLikeTheExactSearch) {
  ScannerOptions options;
  options.precision = Precision::kFp32;
  PartitionScanner fp32(std::move(options));
  ASSERT_EQ(fp32.Stats().backend, "cuda");
  for (Metric metric : {Metric::kCosine, Metric::kInnerProduct, Metric::kL2}) {
    const size_t dim = 96;
    auto partition = MakePartition(metric, dim, 50000, 11);
    std::vector<float> queries = RandomVectors(4, dim, 12);
    ASSERT_TRUE(fp32.Scan(partition, {queries.data(), dim}, 5).ok());
    std::vector<float> extra = RandomVectors(200, dim, 13);
    for (size_t i = 0; i < 200; ++i) {
      ASSERT_TRUE(partition->Add(200000 + i, {&extra[i * dim], dim}, std::vector<uint8_t>{0}).ok());
    }
    for (size_t q = 0; q < 4; ++q) {
      testing_ref::ExpectLikeExactSearch(fp32, partition, {&queries[q * dim], dim}, 30,
                                         "metric " + std::to_string(int(metric)));
    }
  }
  EXPECT_EQ(fp32.Stats().fallbacks, 0u);
}

TEST_F(PartitionScannerGpuTest, TailRemovalsFiltersAndNothingLeft) {
  const size_t dim = 128;
  auto partition = MakePartition(Metric::kCosine, dim, 20000, 5);
  std::vector<float> query = RandomVectors(1, dim, 6);
  ExpectAgree(partition, query, 20, nullptr);
  std::vector<float> extra = RandomVectors(300, dim, 7);
  for (size_t i = 0; i < 300; ++i) {
    ASSERT_TRUE(partition->Add(100000 + i, {&extra[i * dim], dim}, std::vector<uint8_t>{1}).ok());
  }
  ASSERT_TRUE(partition->Add(999999, query, std::vector<uint8_t>{2}).ok());
  auto found = gpu_->Scan(partition, query, 20);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ((*found)[0].id, 999999u) << "a row added after the copy";
  ExpectAgree(partition, query, 20, nullptr);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(partition->Remove((*found)[i].id));
  ExpectAgree(partition, query, 20, nullptr);
  const AcceptFunction ones = [](uint64_t, const uint8_t* a) { return a[0] == 1; };
  ExpectAgree(partition, query, 50, &ones);
  const AcceptFunction none = [](uint64_t, const uint8_t*) { return false; };
  auto empty = gpu_->Scan(partition, query, 50, &none);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  // More rows than the host tail takes: they are appended to the device copy.
  std::vector<float> many = RandomVectors(6000, dim, 8);
  for (size_t i = 0; i < 6000; ++i) {
    ASSERT_TRUE(partition->Add(300000 + i, {&many[i * dim], dim}, std::vector<uint8_t>{1}).ok());
  }
  ASSERT_TRUE(partition->Add(999998, query, std::vector<uint8_t>{1}).ok());
  auto grown = gpu_->Scan(partition, query, 20);
  ASSERT_TRUE(grown.ok());
  EXPECT_EQ((*grown)[0].id, 999998u);
  ExpectAgree(partition, query, 20, nullptr);
  ExpectAgree(partition, query, 50, &ones);
  EXPECT_EQ(gpu_->Stats().appends, 1u);
  EXPECT_EQ(gpu_->Stats().uploads, 1u);
}

TEST_F(PartitionScannerGpuTest, ConcurrentScansAreBatchedAndCorrect) {
  const size_t dim = 256;
  auto partition = MakePartition(Metric::kInnerProduct, dim, 50000, 8);
  std::vector<float> queries = RandomVectors(256, dim, 9);
  std::vector<std::vector<ScoredId>> results(256);
  std::vector<std::thread> threads;
  for (int t = 0; t < 32; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        int q = t * 8 + i;
        auto found = gpu_->Scan(partition, {&queries[q * dim], dim}, 10);
        if (found.ok()) results[q] = *found;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  ScannerStats stats = gpu_->Stats();
  EXPECT_LT(stats.launches, stats.scans) << "no two concurrent scans shared a launch";
  for (int q = 0; q < 256; ++q) {
    auto expected = cpu_->Scan(partition, {&queries[q * dim], dim}, 10);
    ASSERT_TRUE(expected.ok());
    ASSERT_EQ(results[q].size(), expected->size()) << q;
    EXPECT_NEAR(results[q][0].score, (*expected)[0].score, 1e-2f) << q;
  }
  std::cout << "scans " << stats.scans << " launches " << stats.launches << "\n";
}

}  // namespace
}  // namespace engram::index
