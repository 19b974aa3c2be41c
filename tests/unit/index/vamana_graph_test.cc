// The Vamana graph on exact float distances: structural invariants after
// build, insert and consolidation, RobustPrune's rule, and recall.
#include "index/vamana_graph.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <set>

#include "tests/unit/index/float_graph_space.h"

namespace engram::index {
namespace {

using testing::ClusteredPoints;
using testing::FloatGraphSpace;

constexpr size_t kDim = 24;

// Degree <= R, no self loops, no duplicate or out-of-range edges, no edge to
// a removed node, and every live node reachable from the entry point.
void ExpectInvariants(const VamanaGraph& graph) {
  const uint32_t count = graph.node_count();
  ASSERT_NE(graph.entry_point(), VamanaGraph::kNoNode);
  ASSERT_FALSE(graph.IsDeleted(graph.entry_point()));
  for (uint32_t node = 0; node < count; ++node) {
    std::vector<uint32_t> neighbors = graph.Neighbors(node);
    if (graph.IsRemoved(node)) {
      EXPECT_TRUE(neighbors.empty()) << node;
      continue;
    }
    EXPECT_LE(neighbors.size(), graph.params().max_degree) << node;
    std::set<uint32_t> unique(neighbors.begin(), neighbors.end());
    EXPECT_EQ(unique.size(), neighbors.size()) << "duplicate edge at " << node;
    for (uint32_t neighbor : neighbors) {
      ASSERT_LT(neighbor, count);
      EXPECT_NE(neighbor, node) << "self loop";
      EXPECT_FALSE(graph.IsRemoved(neighbor)) << node << " -> removed " << neighbor;
    }
  }
  std::vector<bool> seen(count, false);
  std::deque<uint32_t> queue = {graph.entry_point()};
  seen[graph.entry_point()] = true;
  while (!queue.empty()) {
    uint32_t node = queue.front();
    queue.pop_front();
    for (uint32_t neighbor : graph.Neighbors(node)) {
      if (!seen[neighbor]) {
        seen[neighbor] = true;
        queue.push_back(neighbor);
      }
    }
  }
  for (uint32_t node = 0; node < count; ++node) {
    if (!graph.IsDeleted(node)) {
      EXPECT_TRUE(seen[node]) << "live node " << node << " unreachable";
    }
  }
}

// Recall@10 of beam searches for `queries` against brute force over live nodes.
double Recall(const VamanaGraph& graph, const FloatGraphSpace& space,
              const std::vector<std::vector<float>>& queries, uint32_t beam_width) {
  size_t hits = 0;
  for (const auto& query : queries) {
    std::vector<std::pair<float, uint32_t>> exact;
    for (uint32_t node = 0; node < graph.node_count(); ++node) {
      if (!graph.IsDeleted(node)) exact.emplace_back(space.Distance(query.data(), node), node);
    }
    std::partial_sort(exact.begin(), exact.begin() + 10, exact.end());
    std::vector<Neighbor> found = graph.Search(*space.QueryPoint(query), beam_width, 10);
    for (const Neighbor& n : found) {
      for (int i = 0; i < 10; ++i) hits += exact[i].second == n.node;
    }
  }
  return static_cast<double>(hits) / (10.0 * queries.size());
}

struct Built {
  std::unique_ptr<FloatGraphSpace> space;
  std::unique_ptr<VamanaGraph> graph;
};

Built BuildGraph(size_t count, VamanaParams params, int threads) {
  Built built;
  built.space = std::make_unique<FloatGraphSpace>(kDim, count);
  for (const auto& point : ClusteredPoints(count, kDim, 20, 1)) built.space->Append(point);
  built.graph = std::make_unique<VamanaGraph>(params);
  built.graph->Build(static_cast<uint32_t>(count), 0, *built.space, threads);
  return built;
}

TEST(VamanaGraphTest, BuildKeepsInvariantsAndFindsNeighbours) {
  VamanaParams params;
  params.max_degree = 16;
  params.build_beam_width = 48;
  Built built = BuildGraph(3000, params, 2);
  ExpectInvariants(*built.graph);
  std::vector<std::vector<float>> queries = ClusteredPoints(100, kDim, 20, 2);
  EXPECT_GE(Recall(*built.graph, *built.space, queries, 64), 0.95);
  // A wider beam cannot do worse on average.
  EXPECT_GE(Recall(*built.graph, *built.space, queries, 128),
            Recall(*built.graph, *built.space, queries, 16) - 1e-9);
}

TEST(VamanaGraphTest, EveryNodeFindsItself) {
  VamanaParams params;
  params.max_degree = 16;
  Built built = BuildGraph(1000, params, 1);
  for (uint32_t node = 0; node < 1000; node += 7) {
    std::vector<float> self(built.space->Vector(node), built.space->Vector(node) + kDim);
    std::vector<Neighbor> found = built.graph->Search(*built.space->QueryPoint(self), 32, 1);
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].distance, 0.0f) << node;
  }
}

TEST(VamanaGraphTest, RobustPruneKeepsTheClosestAndDropsOccludedCandidates) {
  // On a line: node 0 at 0; candidates at 1, 2, 3 and -1. With alpha = 1,
  // 2 and 3 are occluded by 1 (closer to 1 than to 0); -1 is not.
  FloatGraphSpace space(1, 8);
  for (float x : {0.0f, 1.0f, 2.0f, 3.0f, -1.0f}) space.Append({x});
  VamanaParams params;
  params.max_degree = 4;
  params.alpha = 1.0f;
  VamanaGraph graph(params);
  graph.Reserve(5);
  std::vector<Neighbor> candidates;
  for (uint32_t node : {0u, 1u, 2u, 3u, 4u, 1u}) {  // itself and a duplicate included
    candidates.push_back({node, space.Distance(space.Vector(0), node)});
  }
  std::vector<uint32_t> kept = graph.RobustPrune(0, candidates, space);
  EXPECT_EQ(kept, (std::vector<uint32_t>{1, 4}));
  params.max_degree = 1;
  VamanaGraph narrow(params);
  narrow.Reserve(5);
  EXPECT_EQ(narrow.RobustPrune(0, candidates, space), (std::vector<uint32_t>{1}));
}

TEST(VamanaGraphTest, DeletedNodesAreNeverReturnedAndConsolidationRepairs) {
  VamanaParams params;
  params.max_degree = 16;
  params.build_beam_width = 48;
  Built built = BuildGraph(3000, params, 2);
  VamanaGraph& graph = *built.graph;
  // Delete every fifth node, the entry point among them.
  graph.MarkDeleted(graph.entry_point());
  for (uint32_t node = 0; node < 3000; node += 5) graph.MarkDeleted(node);
  std::vector<std::vector<float>> queries = ClusteredPoints(100, kDim, 20, 3);
  for (const auto& query : queries) {
    for (const Neighbor& n : graph.Search(*built.space->QueryPoint(query), 64, 10)) {
      ASSERT_FALSE(graph.IsDeleted(n.node));
    }
  }
  const uint32_t deleted = graph.deleted_count();
  EXPECT_EQ(graph.Consolidate(*built.space), deleted);
  EXPECT_EQ(graph.Consolidate(*built.space), 0u) << "nothing left to remove";
  ExpectInvariants(graph);
  EXPECT_GE(Recall(graph, *built.space, queries, 64), 0.93);
}

TEST(VamanaGraphTest, IncrementalInsertsAfterBuild) {
  VamanaParams params;
  params.max_degree = 16;
  auto points = ClusteredPoints(2000, kDim, 20, 4);
  FloatGraphSpace space(kDim, 2000);
  for (const auto& p : points) space.Append(p);
  VamanaGraph graph(params);
  graph.Build(1000, 0, space, 2);
  graph.Reserve(2000);
  for (uint32_t node = 1000; node < 2000; ++node) graph.Insert(node, space);
  graph.PruneToMaxDegree(2000, space, 1);
  ExpectInvariants(graph);
  EXPECT_GE(Recall(graph, space, ClusteredPoints(100, kDim, 20, 5), 64), 0.95);
}

TEST(VamanaGraphTest, EmptyGraphAndZeroCount) {
  VamanaGraph graph(VamanaParams{});
  FloatGraphSpace space(kDim, 1);
  std::vector<float> query(kDim, 0.0f);
  EXPECT_TRUE(graph.Search(*space.QueryPoint(query), 16, 10).empty());
  EXPECT_EQ(graph.Consolidate(space), 0u);
  space.Append(query);
  graph.Reserve(1);
  graph.Insert(0, space);
  EXPECT_TRUE(graph.Search(*space.QueryPoint(query), 16, 0).empty());
  ASSERT_EQ(graph.Search(*space.QueryPoint(query), 16, 10).size(), 1u);
}

}  // namespace
}  // namespace engram::index
