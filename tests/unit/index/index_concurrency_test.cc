// Searches running while vectors are inserted and removed, at the graph
// level and through a partition. Built twice: as a normal unit test, and
// with ThreadSanitizer (index_concurrency_tsan_test, label "tsan"), which
// reports any data race the lock-free search path has.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "index/vamana_graph.h"
#include "index/vector_partition.h"
#include "tests/unit/index/float_graph_space.h"

namespace engram::index {
namespace {

using testing::ClusteredPoints;
using testing::FloatGraphSpace;

TEST(IndexConcurrencyTest, GraphInsertsRaceWithSearches) {
  const size_t dim = 16, total = 3000, initial = 500;
  FloatGraphSpace space(dim, total);
  for (const auto& point : ClusteredPoints(total, dim, 10, 1)) space.Append(point);
  VamanaParams params;
  params.max_degree = 12;
  params.build_beam_width = 32;
  VamanaGraph graph(params);
  graph.Build(initial, 0, space, 1);
  graph.Reserve(total);

  std::atomic<uint32_t> next{initial};
  std::atomic<bool> writing{true};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&] {
      for (uint32_t node; (node = next.fetch_add(1)) < total;) {
        graph.Insert(node, space);
        if (node % 10 == 0) graph.MarkDeleted(node - 5);
      }
    });
  }
  std::atomic<uint64_t> searches{0};
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto queries = ClusteredPoints(50, dim, 10, 10 + r);
      while (writing.load()) {
        for (const auto& query : queries) {
          for (const Neighbor& n : graph.Search(*space.QueryPoint(query), 32, 10)) {
            ASSERT_LT(n.node, total);
          }
          searches.fetch_add(1);
        }
      }
    });
  }
  threads[0].join();
  threads[1].join();
  graph.Consolidate(space);
  writing.store(false);
  for (size_t t = 2; t < threads.size(); ++t) threads[t].join();
  EXPECT_GT(searches.load(), 0u);
  // Every live node can still be found by searching for itself.
  size_t found = 0, live = 0;
  for (uint32_t node = 0; node < total; node += 11) {
    if (graph.IsDeleted(node)) continue;
    ++live;
    std::vector<float> self(space.Vector(node), space.Vector(node) + dim);
    auto hits = graph.Search(*space.QueryPoint(self), 64, 1);
    found += !hits.empty() && hits[0].distance == 0.0f;
  }
  EXPECT_GE(static_cast<double>(found) / live, 0.98);
}

TEST(IndexConcurrencyTest, PartitionAddsAndRemovesRaceWithSearches) {
  const uint32_t dim = 16;
  PartitionOptions options;
  options.dimension = dim;
  options.quantize_threshold = 100;
  options.graph_threshold = 800;
  options.graph.max_degree = 12;
  options.build_threads = 2;
  options.recall_sample = 20;
  auto created = VectorPartition::Create(options);
  ASSERT_TRUE(created.ok());
  VectorPartition& partition = **created;
  auto points = ClusteredPoints(2500, dim, 10, 2);

  std::atomic<bool> writing{true};
  std::thread writer([&] {
    // One by one through every stage: exact, INT8 scan, graph build, inserts.
    for (uint64_t id = 0; id < points.size(); ++id) {
      ASSERT_TRUE(partition.Add(id, points[id]).ok());
      if (id % 7 == 0 && id > 0) partition.Remove(id - 1);
      if (id % 500 == 499) partition.Consolidate();
    }
    writing.store(false);
  });
  std::vector<std::thread> readers;
  std::atomic<uint64_t> searches{0};
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      auto queries = ClusteredPoints(20, dim, 10, 20 + r);
      while (writing.load()) {
        for (const auto& query : queries) {
          auto found = partition.Search({.query = query, .k = 5});
          ASSERT_TRUE(found.ok()) << found.status();
          for (size_t i = 0; i < found->size(); ++i) {
            ASSERT_LT((*found)[i].id, points.size());
            if (i > 0) {
              ASSERT_GE((*found)[i - 1].score, (*found)[i].score);
            }
          }
          (void)partition.Stats();
          searches.fetch_add(1);
        }
      }
    });
  }
  writer.join();
  for (auto& reader : readers) reader.join();
  EXPECT_GT(searches.load(), 0u);
  EXPECT_TRUE(partition.Stats().has_graph);
}

}  // namespace
}  // namespace engram::index
