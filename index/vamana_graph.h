// The Vamana proximity graph (Subramanya et al., "DiskANN: Fast Accurate
// Billion-point Nearest Neighbor Search on a Single Node", NeurIPS 2019;
// incremental insert and delete as in FreshDiskANN, Singh et al. 2021).
// Every node keeps at most R out-edges chosen by RobustPrune with parameter
// alpha; search is a greedy beam search of width L from the entry point
// (the medoid of the first build, or a live replacement after deletes).
//
// The graph stores only edges; distances come from a GraphSpace (see
// graph_space.h), so the same code builds binary-code and INT8 graphs. Node
// ids are dense and chosen by the caller (0, 1, 2, ...).
//
// Navigation layer: every 32nd node (chosen by a hash of its id) is also a
// node of a second, sparser Vamana graph. A search first walks that graph
// (beam 32) and starts the main beam from the few closest nodes it finds as
// well as from the entry point. On clustered data, pruning keeps almost
// only a node's own cluster among its R edges, so clusters become islands
// that a walk from one entry point cannot leave; in the sparse layer a
// cluster has R/32 as many members, so edges between clusters survive (the
// idea of HNSW's upper layers, with one extra layer).
//
// Thread safety: Search, Insert, MarkDeleted and Consolidate may all run
// concurrently. Searches take no lock: each edge slot is an atomic, and a
// reader that races with a rewrite of a neighbour list sees a mix of old and
// new neighbours, every one a valid node. Writers lock one node's list at a
// time (striped mutexes, never nested), so inserts proceed in parallel.
// Consolidate is serialised with itself by consolidate_mutex_. The locks are
// std::mutex rather than absl::Mutex so that ThreadSanitizer, which the
// concurrency test runs under, understands them (Debian's Abseil is not
// built with its annotations). They carry no thread-safety annotations: a
// stripe guards "the lists of the nodes that hash to it", which clang's
// analysis cannot name, and the data they protect (edge slots) are atomics
// that searches read without any lock; scripts/check-thread-safety.sh
// checks the rest of the index.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/functional/function_ref.h"
#include "index/chunked_array.h"
#include "index/graph_space.h"
#include "index/snapshot_file.h"

namespace engram::index {

struct VamanaParams {
  // R: the most out-edges a node keeps. More edges raise recall per hop and
  // the cost of each hop, and memory (4 bytes per edge).
  // Default: 64
  uint32_t max_degree = 64;
  // L used while inserting: the beam width of the search that finds a new
  // node's candidate neighbours. Larger builds a better graph, slower.
  // Default: 128
  uint32_t build_beam_width = 128;
  // alpha of RobustPrune: a candidate b is dropped when some kept neighbour a
  // has alpha * d(a, b) <= d(p, b). Above 1 keeps longer edges, which shortens
  // search paths. Default: 1.2
  float alpha = 1.2f;
};

struct Neighbor {
  uint32_t node;
  float distance;
};

class VamanaGraph {
 public:
  static constexpr uint32_t kNoNode = UINT32_MAX;

  // `navigation_layer`: keep the sparse layer described above (the layer's
  // own graph has none).
  explicit VamanaGraph(const VamanaParams& params, bool navigation_layer = true);
  ~VamanaGraph();
  VamanaGraph(const VamanaGraph&) = delete;
  VamanaGraph& operator=(const VamanaGraph&) = delete;

  const VamanaParams& params() const { return params_; }
  // One past the highest node id reserved.
  uint32_t node_count() const { return node_count_.load(std::memory_order_acquire); }
  uint32_t entry_point() const { return entry_point_.load(std::memory_order_acquire); }

  // Makes room for node ids below `count`. Called by the owner before adding
  // node data, so that any thread may Insert those ids afterwards.
  void Reserve(uint32_t count);

  // Links `node` (already present in `space`) into the graph. The first node
  // inserted becomes the entry point unless SetEntryPoint chose one.
  void Insert(uint32_t node, const GraphSpace& space);

  // Builds the graph over nodes [0, count) using `threads` threads: inserts
  // `entry` first (pass the medoid), then the rest in a shuffled order, and
  // finally prunes every node back to R. `progress` (may be empty) is called
  // with the number of nodes linked. When `cancel` (may be null) becomes
  // true the build stops early and returns false: the graph is then
  // incomplete and must be discarded.
  bool Build(uint32_t count, uint32_t entry, const GraphSpace& space, int threads,
             const std::function<void(uint32_t)>& progress = {},
             const std::atomic<bool>* cancel = nullptr);

  // Greedy beam search of width `beam_width` for `query`. Returns up to
  // `count` closest nodes for which `accept` is true (deleted nodes never),
  // closest first. Rejected and deleted nodes are still traversed.
  std::vector<Neighbor> Search(const GraphSpace::Point& query, uint32_t beam_width, uint32_t count,
                               absl::FunctionRef<bool(uint32_t)> accept) const;
  std::vector<Neighbor> Search(const GraphSpace::Point& query, uint32_t beam_width,
                               uint32_t count) const;

  // Tombstones `node`: no longer returned, still traversed until Consolidate.
  void MarkDeleted(uint32_t node);
  bool IsDeleted(uint32_t node) const;
  uint32_t deleted_count() const { return deleted_count_.load(std::memory_order_relaxed); }

  // Removes tombstoned nodes from the graph: every live node that pointed to
  // one gets that node's live neighbours as candidates and is re-pruned to R
  // (FreshDiskANN's delete consolidation). Deleted nodes lose their edges
  // and become unreachable; their ids stay taken. Returns how many nodes were
  // removed.
  uint32_t Consolidate(const GraphSpace& space);

  // Pruning can take away a node's last in-edge. This finds live nodes the
  // entry point cannot reach and gives each an in-edge from the closest
  // reachable node with room below R (else past R, into the slack). Called
  // by Build and Consolidate; returns how many nodes it connected.
  uint32_t ConnectUnreachable(const GraphSpace& space);

  // Prunes every node below `count` with more than R out-edges back to R.
  void PruneToMaxDegree(uint32_t count, const GraphSpace& space, int threads);

  // Out-edges allowed between prunes: in-edges added by later inserts append
  // until a node holds this many (1.3 R, as DiskANN's slack factor), then it
  // is pruned to R. After Build and Consolidate every node has at most R.
  uint32_t slack_degree() const { return slack_degree_; }

  // A copy of `node`'s current out-edges.
  std::vector<uint32_t> Neighbors(uint32_t node) const;
  void SetEntryPoint(uint32_t node) { entry_point_.store(node, std::memory_order_release); }
  // Whether `node` has been removed by Consolidate (deleted and unlinked).
  bool IsRemoved(uint32_t node) const;
  void MarkRemovedForLoad(uint32_t node);

  // Bytes held by the edge lists (both layers).
  size_t memory_bytes() const;

  // Writes the graph (edges, flags, entry point, navigation layer) for nodes
  // below `node_limit`. Load reads it back; false when the data is not
  // consistent (edges out of range, degrees above the slack degree).
  void Save(SnapshotWriter& out, uint32_t node_limit) const;
  static std::unique_ptr<VamanaGraph> Load(SnapshotReader& in, const VamanaParams& params,
                                           uint32_t node_limit, bool navigation_layer = true);

  // RobustPrune: from `candidates` (distances to `node`), chooses at most R
  // neighbours for `node`. Exposed for tests.
  std::vector<uint32_t> RobustPrune(uint32_t node, std::vector<Neighbor> candidates,
                                    const GraphSpace& space) const;

 private:
  static constexpr uint32_t kLockStripes = 4096;

  // Node state flags.
  static constexpr uint8_t kDeleted = 1;
  static constexpr uint8_t kRemoved = 2;

  std::atomic<uint32_t>* Slots(uint32_t node) const;  // [0] = count, [1..R] = edges
  std::atomic<uint8_t>& Flags(uint32_t node) const;
  std::mutex& LockFor(uint32_t node) const { return locks_[node % kLockStripes]; }

  // The beam search shared by Search and Insert. Fills `expanded` (when not
  // null) with every node expanded, for use as prune candidates.
  class MappedPoint;
  class MappedSpace;
  static bool InNavigationLayer(uint32_t node);
  void AddToNavigation(uint32_t node, const GraphSpace& space);
  // The closest few navigation nodes to `query` (main-graph ids).
  void FindEntries(const GraphSpace::Point& query, std::vector<uint32_t>* entries) const;

  std::vector<Neighbor> BeamSearch(const GraphSpace::Point& query, uint32_t beam_width,
                                   uint32_t count, absl::FunctionRef<bool(uint32_t)> accept,
                                   std::vector<Neighbor>* expanded) const;
  // Adds the edge source -> target, re-pruning source when it is full.
  void AddEdge(uint32_t source, uint32_t target, const GraphSpace& space);
  void WriteNeighbors(uint32_t node, const std::vector<uint32_t>& neighbors);

  const VamanaParams params_;
  const uint32_t slack_degree_;
  const uint32_t slots_per_node_;              // count + slack_degree_ edges
  ChunkedArray<std::atomic<uint32_t>> slots_;  // slots_per_node_ per node
  ChunkedArray<std::atomic<uint8_t>> flags_;
  std::mutex grow_mutex_;  // Reserve
  std::atomic<uint32_t> node_count_{0};
  std::atomic<uint32_t> entry_point_{kNoNode};
  std::atomic<uint32_t> deleted_count_{0};
  mutable std::unique_ptr<std::mutex[]> locks_;
  std::mutex consolidate_mutex_;

  // The navigation layer (null in a layer's own graph): its node i is main
  // node navigation_nodes_[i]; ids below navigation_count_ are handed out.
  std::unique_ptr<VamanaGraph> navigation_;
  ChunkedArray<uint32_t> navigation_nodes_{1};
  std::atomic<uint32_t> navigation_count_{0};
  std::mutex navigation_mutex_;  // grows navigation_nodes_
};

}  // namespace engram::index
