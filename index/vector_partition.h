// One partition of the index: the vectors of one (space, agent), searched in
// three stages. A first stage ranks candidates cheaply (2-bit binary codes or
// INT8 codes, through a Vamana graph or, while the partition is small, an
// exhaustive scan); in binary mode an INT8 stage re-ranks the graph's beam;
// the best candidates are finally scored with exact float distances.
//
// A partition picks its own first-stage space: when its graph is built it
// measures recall@10 on a sample of its own vectors against exact search.
// Binary codes are used when an exhaustive scan of them can reach the target
// and the graph over them does; otherwise (Euclidean-native data such as
// SIFT, where binary topology fails) the graph is built over INT8 codes. The
// default beam width is calibrated to the smallest that reaches the target,
// and measured again each time the partition doubles.
//
// Inner product on vectors of any norm: the INT8 graph space reduces
// maximum inner product search to L2 (an extra coordinate per vector, see
// Int8Space in the .cc), so graph edges, pruning and the exhaustive code
// scan follow inner-product order; binary codes see directions only, and the
// recall check rejects them when norms matter.
//
// Lifecycle: empty -> exact float scan (below quantize_threshold vectors) ->
// exhaustive code scan (INT8 ranges fitted) -> graph (from graph_threshold;
// later vectors are inserted incrementally).
//
// Thread safety: Search may run concurrently with everything and takes no
// lock: node data is append-only (chunked_array.h) and published through an
// atomic node count; the structure (mode, graph) is swapped atomically.
// Writers (Add, AddBatch, Remove, Consolidate, Save) serialise on
// write_mutex_.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "fileio/atomic_file.h"
#include "index/binary_codes.h"
#include "index/chunked_array.h"
#include "index/float_distance.h"
#include "index/scalar_quantizer.h"
#include "index/vamana_graph.h"
#include "storage/metric.h"

namespace engram::index {

// What the first stage compares.
enum class FirstStage { kExact, kBinary, kInt8 };
const char* FirstStageName(FirstStage stage);

struct PartitionOptions {
  Metric metric = Metric::kCosine;
  uint32_t dimension = 0;
  VamanaParams graph;
  // Vectors needed before INT8 ranges are fitted and codes are used; smaller
  // partitions are scanned with exact float distances. Default: 256
  uint32_t quantize_threshold = 256;
  // Vectors at which the partition gets a graph; below it, its codes are
  // scanned exhaustively. Default: 4096
  uint32_t graph_threshold = 4096;
  // Beam width L of searches that do not name one, before calibration: the
  // graph build raises it by 1.5x until the sample recall reaches
  // target_recall and keeps the first that does. Default: 64
  uint32_t default_beam_width = 64;
  // Candidates scored with exact float distances when the search does not
  // say: this many times k, at least 40, and at least half the beam width
  // (so calibrating L also deepens the rerank). In binary mode the beam is
  // first narrowed to them with INT8 distances. Float scoring is cheap next
  // to the graph walk, and a deep rerank is what recovers near-ties that
  // quantized codes cannot order. Default: 4
  uint32_t default_rerank_factor = 4;
  // Sample recall@10 the graph must reach. Binary codes that cannot reach it
  // with a beam width up to 4x default_beam_width make the partition build
  // its graph in INT8 space instead. Default: 0.95
  float target_recall = 0.95f;
  // Vectors sampled for the recall check. Default: 100
  uint32_t recall_sample = 100;
  // Graph build threads; 0 = all hardware threads. Default: 0
  int build_threads = 0;
  // Bytes of opaque attributes stored with each vector and handed to filters
  // (the server keeps what its predicates need there). Default: 0
  uint32_t attribute_bytes = 0;
  // Skip the recall check and use this first stage (tests, benchmarks).
  // kExact means "decide by measuring". Default: kExact
  FirstStage force_first_stage = FirstStage::kExact;
};

struct ScoredId {
  uint64_t id;
  float score;  // higher is closer: cosine, inner product, or -squared L2
};

// Decides during traversal whether a vector may be returned, from its id and
// the attribute bytes stored with it (PartitionOptions::attribute_bytes).
using AcceptFunction = std::function<bool(uint64_t id, const uint8_t* attributes)>;

// What a search saw on its way, for the router's quality gate
// (retrieval/quality_gate.h): how far down the quantized order the final
// top k came from, and how much the quantized and exact orders agreed.
struct SearchTrace {
  bool exhaustive = false;  // every vector scored exactly: the answer is exact
  uint32_t window = 0;      // candidates scored exactly (the rerank window)
  // 1-based position, in the quantized order, of the deepest of the final
  // top k: near `window` means true neighbours may lie beyond it.
  uint32_t deepest = 0;
  // Of the final top k, how many were in the first k of the quantized order.
  uint32_t agreement = 0;
  uint32_t returned = 0;
  float sample_recall = -1;  // the structure's calibrated recall (-1: none)
};

struct PartitionSearch {
  std::span<const float> query;
  uint32_t k = 10;
  uint32_t beam_width = 0;  // 0: options.default_beam_width
  uint32_t rerank = 0;      // candidates scored exactly; 0: from the rerank factor
  // When set, only ids it accepts are returned (checked during traversal).
  const AcceptFunction* accept = nullptr;
  // When set, filled in (costs a few comparisons per result).
  SearchTrace* trace = nullptr;
};

struct PartitionStats {
  uint64_t vectors = 0;  // live
  uint64_t deleted = 0;  // removed since the partition was created (slots kept)
  FirstStage first_stage = FirstStage::kExact;
  bool has_graph = false;
  uint32_t default_beam_width = 0;  // calibrated L
  float sample_recall = -1;         // recall@10 at that L (-1: never measured)
  // What binary codes reached when tried: the calibrated binary graph's
  // sample recall, or, when codes were rejected before building, that of an
  // exhaustive scan of the codes at 4x the default beam width (-1: not tried).
  float binary_sample_recall = -1;
  size_t code_bytes = 0;  // binary + INT8 codes
  size_t binary_code_bytes = 0;
  size_t int8_code_bytes = 0;
  size_t graph_bytes = 0;
  size_t float_bytes = 0;
  double last_build_seconds = 0;
};

class VectorPartition {
 public:
  static constexpr uint32_t kMaxBeamWidth = 4096;
  static constexpr uint32_t kMaxK = 1024;

  // INVALID_ARGUMENT for a zero dimension or unusable graph parameters.
  static absl::StatusOr<std::unique_ptr<VectorPartition>> Create(const PartitionOptions& options);
  ~VectorPartition();

  const PartitionOptions& options() const { return options_; }

  // Adds one vector under `id`. INVALID_ARGUMENT for a wrong dimension or a
  // non-finite value, ALREADY_EXISTS for an id already present. May build the
  // graph (when the partition reaches graph_threshold).
  // `attributes` holds attribute_bytes bytes (empty when that is 0).
  absl::Status Add(uint64_t id, std::span<const float> vector,
                   std::span<const uint8_t> attributes = {}) ABSL_LOCKS_EXCLUDED(write_mutex_);
  // Adds many vectors (row-major, ids.size() rows; attributes likewise) with
  // the same checks, validated all first (nothing is added on error). Large
  // batches are linked into the graph in parallel.
  absl::Status AddBatch(std::span<const uint64_t> ids, std::span<const float> vectors,
                        std::span<const uint8_t> attributes = {},
                        const std::function<void(uint64_t done, uint64_t total)>& progress = {})
      ABSL_LOCKS_EXCLUDED(write_mutex_);
  // Tombstones `id`; false when absent.
  bool Remove(uint64_t id) ABSL_LOCKS_EXCLUDED(write_mutex_);
  // Unlinks tombstoned vectors from the graph; returns how many.
  uint32_t Consolidate() ABSL_LOCKS_EXCLUDED(write_mutex_);

  // Compaction gives back what removed vectors hold (slots are never reused,
  // so a partition that only sees updates grows without bound otherwise):
  // LiveCopy makes a new partition of the live vectors alone, bit for bit
  // with their attributes, codes fitted, no graph yet; BuildGraphIfDue then
  // builds its graph when it is past graph_threshold (CancelBuilds stops it:
  // the copy is then left without one, see builds_cancelled). Writers of
  // this partition wait while the rows are copied, not during the build;
  // searches never wait. Removals made after the copy are the caller's to
  // replay (retrieval/episode_index.cc does it at the swap).
  std::unique_ptr<VectorPartition> LiveCopy() const ABSL_LOCKS_EXCLUDED(write_mutex_);
  void BuildGraphIfDue() ABSL_LOCKS_EXCLUDED(write_mutex_);
  // Past graph_threshold without a graph: a copy from LiveCopy, or a
  // partition whose build CancelBuilds stopped before a restart.
  bool graph_due() const;
  bool builds_cancelled() const { return builds_cancelled_.load(std::memory_order_relaxed); }

  // The k closest live vectors, best first. INVALID_ARGUMENT for a query of
  // the wrong dimension or with NaN/Inf, k outside 1..kMaxK, or a beam width
  // above kMaxBeamWidth.
  absl::StatusOr<std::vector<ScoredId>> Search(const PartitionSearch& search) const;

  // Exact top-k by float distances over every live vector (the reference).
  std::vector<ScoredId> ExactSearch(std::span<const float> query, uint32_t k,
                                    const AcceptFunction* accept = nullptr) const;

  PartitionStats Stats() const;
  uint64_t size() const;

  // Writes the partition (vectors, codes, INT8 ranges, attributes, graph and
  // its calibration) to `path` as a checksummed snapshot, atomically
  // (snapshot_file.h). Writers wait while it runs; searches do not. `fs` is
  // for tests that simulate power loss.
  absl::Status Save(const std::string& path,
                    fileio::FileSystem* fs = fileio::PosixFileSystem()) const
      ABSL_LOCKS_EXCLUDED(write_mutex_);
  // Reads a snapshot written by Save. NOT_FOUND when absent, DATA_LOSS when
  // corrupt or truncated, FAILED_PRECONDITION when written with other
  // options (metric, dimension, attribute size, graph parameters): a
  // snapshot is never trusted beyond what its checksum and header prove.
  static absl::StatusOr<std::unique_ptr<VectorPartition>> Load(const std::string& path,
                                                               const PartitionOptions& options);
  // Calls `visit` with the id and attributes of every live vector.
  void ForEachLive(const std::function<void(uint64_t id, const uint8_t* attributes)>& visit) const;
  // Row access for exhaustive scanners (index/partition_scanner.h). Rows are
  // the node slots in insertion order, removed ones included (slots are never
  // reused), so a row's id and vector never change once readable.
  uint32_t row_count() const { return node_count_.load(std::memory_order_acquire); }
  // Copies rows [first, first + count) to `out` (row-major; cosine vectors
  // are stored normalised). They must be below row_count().
  void CopyRows(uint32_t first, uint32_t count, float* out) const;
  uint64_t RowId(uint32_t row) const;
  // ceil(rows / 64) words; bit r set when row r (< rows) is live and, when
  // `accept` is given, accepted.
  std::vector<uint64_t> LiveRowBitmap(uint32_t rows, const AcceptFunction* accept) const;
  uint64_t deleted_count() const { return deleted_count_.load(std::memory_order_acquire); }

  // Stops a graph build in progress and skips any later one: the partition
  // keeps the structure it has (the previous graph, or an exhaustive scan
  // over every vector), so nothing becomes unsearchable; links of new
  // vectors into an existing graph still complete. For shutdown, where a
  // build of a large partition would outlast the grace period; the next
  // write after a restart builds it.
  void CancelBuilds() { builds_cancelled_.store(true, std::memory_order_relaxed); }

  // Grows with every change (adds, removes, consolidations); a snapshot is
  // stale when this moved on since it was written.
  uint64_t change_count() const { return changes_.load(std::memory_order_acquire); }

 private:
  // How the partition is searched right now. Replaced as a whole (atomically)
  // when a graph is built; the graph itself is updated in place.
  struct Structure {
    FirstStage first_stage = FirstStage::kExact;
    std::shared_ptr<VamanaGraph> graph;  // null: exhaustive scan
    // The beam width of searches that name none: the smallest tried that
    // reached the target recall on the sample (or the default, before a graph).
    uint32_t default_beam_width = 0;
    float sample_recall = -1;
    bool reached_target = false;  // sample_recall >= target_recall
    float binary_sample_recall = -1;
    double build_seconds = 0;
    // Vectors when the calibration was measured; the partition measures again
    // each time it doubles.
    uint32_t calibrated_nodes = 0;
  };
  class BinarySpace;
  class Int8Space;

  explicit VectorPartition(const PartitionOptions& options);

  absl::Status Validate(std::span<const float> vector) const;
  // Appends one node's data (float, codes) and publishes it. `prepared`:
  // the vector is already as stored (normalised for cosine), e.g. copied
  // from another partition, and is kept bit for bit.
  void AppendNode(uint64_t id, const float* vector, const uint8_t* attributes,
                  bool prepared = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mutex_);
  // Stores |vector|^2 of a node whose vector is written, and raises M^2.
  void RecordSquaredNorm(uint32_t node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mutex_);
  float max_squared_norm() const { return max_squared_norm_.load(std::memory_order_acquire); }
  void FitQuantizer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mutex_);
  // Measures the sample recall again after growth; builds the graph again
  // when binary codes no longer reach the target.
  void Recalibrate(const Structure& current,
                   const std::function<void(uint64_t, uint64_t)>& progress)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mutex_);
  // Builds a graph over all nodes, choosing the first stage.
  void BuildGraph(const std::function<void(uint64_t, uint64_t)>& progress)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mutex_);
  // The graph over nodes [0, node_count) in `stage`'s space; nullptr when
  // CancelBuilds stopped it.
  std::unique_ptr<VamanaGraph> BuildGraphIn(FirstStage stage, uint32_t node_count,
                                            const std::function<void(uint32_t)>& progress) const;
  uint32_t Medoid(uint32_t node_count) const;
  std::unique_ptr<GraphSpace> MakeSpace(FirstStage stage) const;
  std::shared_ptr<const Structure> structure() const;
  int build_threads() const;

  // The search behind Search, over nodes below `node_count` (query prepared).
  std::vector<ScoredId> SearchIn(const Structure& structure, uint32_t node_count,
                                 const float* query, uint32_t k, uint32_t beam_width,
                                 uint32_t rerank, const AcceptFunction* accept,
                                 SearchTrace* trace = nullptr) const;
  // The fraction of live nodes `accept` takes, on an evenly spaced sample.
  double EstimateSelectivity(uint32_t node_count, const AcceptFunction& accept) const;
  std::vector<ScoredId> ExactIn(uint32_t node_count, const float* query, uint32_t k,
                                const AcceptFunction* accept) const;
  // Exact neighbours of a sample of the partition's own vectors.
  struct SampleTruth {
    std::vector<uint32_t> queries;                    // nodes used as queries
    std::vector<std::vector<uint64_t>> neighbor_ids;  // their exact top-10, self excluded
  };
  SampleTruth ComputeSampleTruth(uint32_t node_count, uint32_t sample) const;
  float SampleRecall(const Structure& structure, uint32_t node_count, const SampleTruth& truth,
                     uint32_t beam_width) const;
  // Raises the structure's default beam width by 1.5x from options' default
  // until the sample recall reaches the target or max_beam_width; true if
  // reached.
  bool Calibrate(Structure& structure, uint32_t node_count, const SampleTruth& truth,
                 uint32_t max_beam_width) const;
  float ExactScore(const float* query, uint32_t node) const;
  // The normalised (cosine) copy of a query.
  std::vector<float> PrepareQuery(std::span<const float> query) const;

  const PartitionOptions options_;
  const FloatKernels& kernels_;
  BinaryCodes binary_codes_;

  // Node data, append-only; node n is readable once n < node_count_.
  ChunkedArray<uint64_t> ids_;
  ChunkedArray<float> vectors_;       // normalised for cosine
  ChunkedArray<uint64_t> binary_;     // BinaryCodes layout
  ChunkedArray<uint8_t> int8_;        // written once the quantizer is fitted
  ChunkedArray<uint8_t> attributes_;  // attribute_bytes per node (see PartitionOptions)
  ChunkedArray<std::atomic<uint8_t>> deleted_;
  // |vector|^2 per node, and the largest (M^2): the inner-product graph
  // space's reduction to L2 (see Int8Space) needs them. Not in snapshots:
  // recomputed from the vectors when one is loaded.
  ChunkedArray<float> squared_norms_;
  std::atomic<float> max_squared_norm_{0};
  std::atomic<uint32_t> node_count_{0};
  std::atomic<uint64_t> deleted_count_{0};
  std::atomic<uint64_t> changes_{0};
  std::atomic<bool> builds_cancelled_{false};

  // INT8 ranges: fitted once, then fixed (a rebuild makes a new partition).
  std::unique_ptr<ScalarQuantizer> quantizer_;
  std::atomic<const ScalarQuantizer*> published_quantizer_{nullptr};

  std::shared_ptr<const Structure> structure_;  // atomic_load/atomic_store only

  mutable absl::Mutex write_mutex_;
  absl::flat_hash_map<uint64_t, uint32_t> node_of_id_ ABSL_GUARDED_BY(write_mutex_);
};

}  // namespace engram::index
