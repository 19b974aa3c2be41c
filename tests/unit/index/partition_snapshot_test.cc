// Partition snapshots: a round trip gives a partition that answers exactly as
// the original did and keeps accepting writes; corrupt, truncated, foreign or
// missing files are detected, never trusted; an uncommitted write leaves the
// previous snapshot in place.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "index/snapshot_file.h"
#include "index/vector_partition.h"
#include "tests/util/temp_dir.h"

namespace engram::index {
namespace {

constexpr uint32_t kDim = 24;

std::vector<float> Rows(size_t rows, uint32_t seed) {
  std::mt19937 centre_rng(5);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> centres(8 * kDim);
  for (float& v : centres) v = gauss(centre_rng);
  std::mt19937 rng(seed);
  std::vector<float> data(rows * kDim);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t i = 0; i < kDim; ++i)
      data[r * kDim + i] = centres[(r % 8) * kDim + i] + 0.4f * gauss(rng);
  }
  return data;
}

PartitionOptions Options() {
  PartitionOptions options;
  options.dimension = kDim;
  options.graph_threshold = 1000;
  options.graph.max_degree = 16;
  options.attribute_bytes = 8;
  return options;
}

// A partition of `rows` vectors, ids 10, 11, ...; attribute = id; every
// seventh removed.
std::unique_ptr<VectorPartition> Build(size_t rows) {
  auto partition = *VectorPartition::Create(Options());
  std::vector<float> data = Rows(rows, 1);
  std::vector<uint64_t> ids(rows);
  std::vector<uint8_t> attributes(rows * 8);
  for (size_t i = 0; i < rows; ++i) {
    ids[i] = 10 + i;
    std::memcpy(&attributes[i * 8], &ids[i], 8);
  }
  EXPECT_TRUE(partition->AddBatch(ids, data, attributes).ok());
  for (size_t i = 0; i < rows; i += 7) partition->Remove(ids[i]);
  return partition;
}

std::vector<ScoredId> Search(const VectorPartition& partition, const std::vector<float>& queries,
                             size_t q) {
  PartitionSearch search{.query = {&queries[q * kDim], kDim}, .k = 10};
  return *partition.Search(search);
}

void ExpectSameAnswers(const VectorPartition& a, const VectorPartition& b) {
  PartitionStats sa = a.Stats(), sb = b.Stats();
  EXPECT_EQ(sa.vectors, sb.vectors);
  EXPECT_EQ(sa.deleted, sb.deleted);
  EXPECT_EQ(sa.first_stage, sb.first_stage);
  EXPECT_EQ(sa.has_graph, sb.has_graph);
  EXPECT_EQ(sa.default_beam_width, sb.default_beam_width);
  EXPECT_EQ(sa.sample_recall, sb.sample_recall);
  std::vector<float> queries = Rows(20, 2);
  for (size_t q = 0; q < 20; ++q) {
    std::vector<ScoredId> ra = Search(a, queries, q), rb = Search(b, queries, q);
    ASSERT_EQ(ra.size(), rb.size());
    for (size_t i = 0; i < ra.size(); ++i) {
      EXPECT_EQ(ra[i].id, rb[i].id);
      EXPECT_EQ(ra[i].score, rb[i].score);
    }
  }
  std::vector<std::pair<uint64_t, uint64_t>> live_a, live_b;
  auto collect = [](auto* out) {
    return [out](uint64_t id, const uint8_t* attributes) {
      uint64_t value;
      std::memcpy(&value, attributes, 8);
      out->emplace_back(id, value);
    };
  };
  a.ForEachLive(collect(&live_a));
  b.ForEachLive(collect(&live_b));
  EXPECT_EQ(live_a, live_b);
  for (const auto& [id, value] : live_a) ASSERT_EQ(id, value);
}

TEST(PartitionSnapshotTest, RoundTripAnswersAlikeAndKeepsAcceptingWrites) {
  testing::TempDir dir;
  for (size_t rows : {size_t{100}, size_t{600}, size_t{3000}}) {  // exact, INT8 scan, graph
    auto original = Build(rows);
    const std::string path = dir.Sub("p" + std::to_string(rows) + ".snap");
    ASSERT_TRUE(original->Save(path).ok());
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
    auto loaded = VectorPartition::Load(path, Options());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ExpectSameAnswers(*original, **loaded);

    // Writes continue on the loaded copy as on the original.
    std::vector<float> more = Rows(50, 3);
    for (size_t i = 0; i < 50; ++i) {
      uint64_t id = 100000 + i;
      uint8_t attributes[8];
      std::memcpy(attributes, &id, 8);
      ASSERT_TRUE(original->Add(id, {&more[i * kDim], kDim}, attributes).ok());
      ASSERT_TRUE((*loaded)->Add(id, {&more[i * kDim], kDim}, attributes).ok());
    }
    uint8_t attributes[8] = {};
    EXPECT_EQ((*loaded)->Add(11, {&more[0], kDim}, attributes).code(),
              absl::StatusCode::kAlreadyExists);
    EXPECT_TRUE((*loaded)->Remove(12));
    EXPECT_TRUE(original->Remove(12));
    EXPECT_FALSE((*loaded)->Remove(10)) << "removed before the snapshot";
    ExpectSameAnswers(*original, **loaded);
  }
}

TEST(PartitionSnapshotTest, DamageIsDetected) {
  testing::TempDir dir;
  auto partition = Build(1500);
  const std::string path = dir.Sub("p.snap");
  ASSERT_TRUE(partition->Save(path).ok());
  const uintmax_t size = std::filesystem::file_size(path);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream out(dir.Sub(name), std::ios::binary);
    out << content;
    return dir.Sub(name);
  };
  for (size_t offset : {size_t{0}, size_t{40}, size / 3, size / 2, size - 20, size - 1}) {
    std::string flipped = bytes;
    flipped[offset] ^= 0x40;
    auto loaded = VectorPartition::Load(write("flipped", flipped), Options());
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << "offset " << offset;
  }
  for (size_t length : {size_t{0}, size_t{5}, size_t{100}, size / 2, size - 1}) {
    auto loaded = VectorPartition::Load(write("short", bytes.substr(0, length)), Options());
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << "length " << length;
  }
  auto longer = VectorPartition::Load(write("long", bytes + "x"), Options());
  EXPECT_EQ(longer.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(VectorPartition::Load(dir.Sub("absent"), Options()).status().code(),
            absl::StatusCode::kNotFound);
  PartitionOptions other = Options();
  other.graph.max_degree = 20;
  EXPECT_EQ(VectorPartition::Load(path, other).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(VectorPartition::Load(path, Options()).ok()) << "the original is intact";
}

TEST(PartitionSnapshotTest, AnUncommittedWriteLeavesThePreviousSnapshot) {
  testing::TempDir dir;
  const std::string path = dir.Sub("p.snap");
  ASSERT_TRUE(Build(200)->Save(path).ok());
  const uintmax_t size = std::filesystem::file_size(path);
  {
    auto writer = SnapshotWriter::Create(path);
    ASSERT_TRUE(writer.ok());
    (*writer)->Put(uint64_t{42});
    // Destroyed without Commit, as when the process dies mid-write.
  }
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(std::filesystem::file_size(path), size);
  EXPECT_TRUE(VectorPartition::Load(path, Options()).ok());
}

}  // namespace
}  // namespace engram::index
