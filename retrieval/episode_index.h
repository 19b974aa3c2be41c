// EpisodeIndex: the vector index of every space, kept in step with the
// EpisodeStore. Each (tenant, space, agent) has its own VectorPartition
// (index/vector_partition.h); a search without an agent filter fans out over
// the space's partitions and merges their best candidates. It is the
// engine's vector candidate source (retrieval/engine.h): it proposes ids and
// scores, and the engine reads them back from the store.
//
// The store is the source of truth, and the index only ever holds what the
// store wrote: Upsert takes the records the store returned (defaults filled
// in), never a request. Writes are queued, scored exactly by searches until a
// background indexer has added them to the graphs, and a write that arrives
// late (a put overtaken by the delete of the same id) is recognised and
// dropped. A failed add is retried from the store's record; what still fails
// is counted in Health() and logged.
//
// Filters: agent selects partitions; session, kinds, event-time range and
// expiry are checked during graph traversal from 40 bytes of attributes
// stored with each vector (with the episode's version); metadata predicates
// are left to the engine's read-back.
//
// Persistence: each partition is snapshotted (index/snapshot_file.h) under
// <snapshot_dir>/<tenant hex>/<space hex>-<space created_at>/<agent hex>.eix,
// periodically and at shutdown, with a LAYOUT file naming the attribute
// layout; snapshots of another layout (or none, as written before the file
// existed) are not trusted and the spaces are rebuilt from the store. At
// startup each snapshot is checked against the store's (id, version) list, a
// cheap key-only scan: vectors of deleted or updated episodes are dropped,
// missing ones are read from the store and inserted in batches. A corrupt or
// missing snapshot only costs time: when more than half is missing the space
// is rebuilt from the store, and a snapshot follows a second after such a
// start. Nothing is trusted that the store does not confirm.
//
// Thread safety: all methods may be called concurrently. Lock order:
// save_mutex_, then spaces_mutex_, then a space's mutex, then work_mutex_.
// Searches read a space's queue and partition list under its reader lock and
// then search the partitions without locks; writers to one space serialise
// on its mutex only to queue.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "index/partition_scanner.h"
#include "index/vector_partition.h"
#include "retrieval/candidate_source.h"
#include "storage/episode_store.h"

namespace engram::retrieval {

// The vector index's settings (index/vector_partition.h has the details).
struct IndexOptions {
  // Vectors an agent's partition needs before its INT8 ranges are fitted;
  // smaller partitions are scanned with exact float distances. Default: 256.
  uint32_t quantize_threshold = 256;
  // Vectors at which a partition gets a Vamana graph; below it its codes are
  // scanned exhaustively. Default: 4096.
  uint32_t graph_threshold = 4096;
  // R: most out-edges per graph node. Default: 64.
  uint32_t max_degree = 64;
  // L while building: beam width of the search that finds a new node's
  // neighbours. Default: 128.
  uint32_t build_beam_width = 128;
  // RobustPrune's alpha. Default: 1.2.
  float alpha = 1.2f;
  // Search beam width before calibration; each graph raises it by 1.5x until its
  // sample recall reaches target_recall. Default: 64.
  uint32_t default_beam_width = 64;
  // Recall@10 each graph must reach on a sample of its own vectors; binary
  // codes that cannot make the partition use INT8 codes. Default: 0.95.
  float target_recall = 0.95f;
  // Threads that build a graph; 0: all hardware threads. Default: 0.
  int build_threads = 0;
  // Where partition snapshots are written; "" means <data_dir>/index.
  // Default: "".
  std::string snapshot_dir;
  // Seconds between snapshots of partitions that changed; 0 disables the
  // periodic snapshot (one is still written at shutdown). Default: 300.
  int snapshot_interval_s = 300;
};

struct PartitionReport {
  std::string space;
  std::string agent_id;
  index::PartitionStats stats;
};

// Whether the index holds everything the store acknowledged.
struct IndexHealth {
  uint64_t queued = 0;             // acknowledged writes not yet in a partition
  uint64_t add_failures = 0;       // adds that failed even when retried from the store
  uint64_t healed = 0;             // adds that failed once and then succeeded
  uint64_t snapshot_failures = 0;  // snapshot writes that failed
  std::string last_error;          // of the latest failure; empty when none
};

class EpisodeIndex {
 public:
  // Snapshots go to options.snapshot_dir, or `default_snapshot_dir` if empty.
  // Scans go through a PartitionScanner made with `scanner_options`.
  EpisodeIndex(const IndexOptions& options, storage::EpisodeStore* store,
               const std::string& default_snapshot_dir, index::ScannerOptions scanner_options = {});
  // Stops the snapshot thread (without a final snapshot: call SaveSnapshots).
  ~EpisodeIndex();

  // Indexes every space of every tenant, from snapshots where they are good.
  // Starts the periodic snapshot thread when options.snapshot_interval_s > 0.
  absl::Status Load();

  // Writes a snapshot of every partition that changed since its last one,
  // and removes snapshot files nothing uses any more.
  absl::Status SaveSnapshots() ABSL_LOCKS_EXCLUDED(save_mutex_, spaces_mutex_);

  // After the store acknowledged these writes: queue the records the store
  // returned (never the request's copies) for the index; a new version of an
  // id replaces the old one's vector. They are proposed at once (queued
  // vectors are scored exactly); a background indexer adds them to the
  // graphs. Blocks while a space has kMaxQueuedHard writes waiting (the
  // engine admits writes at kMaxQueued first: AwaitRoom).
  void Upsert(const std::string& tenant, const SpaceInfo& space, const std::vector<Episode>& stored)
      ABSL_LOCKS_EXCLUDED(spaces_mutex_);
  void Remove(const std::string& tenant, const std::string& space, const std::vector<uint64_t>& ids)
      ABSL_LOCKS_EXCLUDED(spaces_mutex_);
  // Admission before a write is stored: waits until the space has fewer
  // than kMaxQueued writes waiting for the indexer (true), or until
  // `deadline` (false, with how many are waiting in `waiting`).
  bool AwaitRoom(const std::string& tenant, const std::string& space, absl::Time deadline,
                 size_t* waiting) ABSL_LOCKS_EXCLUDED(spaces_mutex_);
  // Forgets the space and removes its snapshots.
  void DropSpace(const std::string& tenant, const std::string& space)
      ABSL_LOCKS_EXCLUDED(save_mutex_, spaces_mutex_);

  // Up to `count` candidates for a validated query (CandidateSource's
  // contract): from each partition's graph, or with `scan` from every vector
  // of the partitions (index/partition_scanner.h), plus the writes not yet
  // indexed. Attribute filters (session, kinds, event time, expiry) are
  // applied; metadata predicates are not. Empty for a space never written.
  absl::StatusOr<std::vector<Candidate>> Propose(const SearchContext& context, uint32_t count,
                                                 bool scan);

  // Vectors a search of `agent_id` (every agent when empty) covers: the
  // partitions' live vectors plus the writes queued for them (a batch the
  // indexer is applying may be missing until it lands). The router
  // reads it to tell small agents, where deliberation costs about what the
  // fast path does, from large ones. 0 for an unknown space.
  uint64_t VectorsInScope(const std::string& tenant, const std::string& space,
                          const std::string& agent_id) const;

  // Waits until every write queued before the call is in a partition, or
  // until `deadline`; true when drained.
  bool Flush(absl::Time deadline = absl::InfiniteFuture()) ABSL_LOCKS_EXCLUDED(work_mutex_);

  // For a shutdown past its grace: cancels graph builds in progress
  // (VectorPartition::CancelBuilds) and stops the indexer once the batch it
  // is applying is in, leaving later writes queued. Nothing is lost: the
  // store holds every write, and the next start reads back whatever the
  // snapshots lack. Returns the writes left queued. Writes must have
  // stopped; the index only serves searches afterwards.
  uint64_t StopIndexing() ABSL_LOCKS_EXCLUDED(work_mutex_);

  // Rebuilds a space's partitions from the store (new graphs, fresh INT8
  // ranges, recalibrated), then swaps them in; writes made meanwhile are
  // re-read from the store and applied before the swap, without holding the
  // index's locks across the reads. `progress` gets (episodes indexed,
  // episodes in the space).
  absl::Status Rebuild(const std::string& tenant, const std::string& space,
                       const std::function<void(uint64_t, uint64_t)>& progress = {});

  std::vector<PartitionReport> Stats(const std::string& tenant) const;
  IndexHealth Health() const;
  // Which backend scans (cuda or cpu, and why), copies, launches, fallbacks.
  index::ScannerStats ScanStats() { return scanner_.Stats(); }

  struct LoadReport {
    uint64_t spaces = 0;
    uint64_t partitions_from_snapshots = 0;
    uint64_t vectors_from_snapshots = 0;
    uint64_t vectors_read_from_store = 0;  // individually: missing or changed since
    uint64_t spaces_rebuilt = 0;           // no usable snapshots: built from the store
  };
  // What the last Load did (tests, logs).
  LoadReport last_load() const { return last_load_; }

  // The snapshot attribute layout this build writes (the LAYOUT file).
  static constexpr int kSnapshotLayout = 2;

 private:
  struct SpaceIndex;
  std::shared_ptr<SpaceIndex> FindSpace(const std::string& tenant, const std::string& space) const
      ABSL_LOCKS_EXCLUDED(spaces_mutex_);
  std::shared_ptr<SpaceIndex> GetOrCreateSpace(const std::string& tenant, const SpaceInfo& info)
      ABSL_LOCKS_EXCLUDED(spaces_mutex_);
  index::PartitionOptions PartitionOptionsFor(const SpaceInfo& info) const;
  // Builds partitions for every episode of a space, grouped by agent.
  absl::StatusOr<std::shared_ptr<SpaceIndex>> BuildSpace(
      const std::string& tenant, const SpaceInfo& info,
      const std::function<void(uint64_t, uint64_t)>& progress);

  // Loads one space: snapshots checked against the store, or a rebuild.
  // `trust_snapshots` is false when the snapshot layout is not this build's.
  absl::StatusOr<std::shared_ptr<SpaceIndex>> LoadSpace(const std::string& tenant,
                                                        const SpaceInfo& info,
                                                        bool trust_snapshots);
  std::string SpaceSnapshotDir(const std::string& tenant, const SpaceInfo& info) const;
  void SnapshotLoop(absl::Duration first_wait);
  void IndexLoop();
  // Adds one batch of a space's queued writes to its partitions; false when
  // nothing was queued.
  bool DrainQueue(SpaceIndex& space);
  // Upkeep of a space's partitions, on the indexer thread between drains
  // (so nothing else adds to a partition meanwhile):
  // - compaction: a partition whose removed vectors are a quarter of its
  //   rows or more (and at least kCompactMinRemoved) is replaced with a copy
  //   of its live vectors (VectorPartition::LiveCopy), so that updates and
  //   deletes do not grow the index without bound; removals that land
  //   during the copy are replayed at the swap;
  // - late graphs: a partition past graph_threshold without a graph (its
  //   build was cancelled at a shutdown) gets one now rather than at its
  //   next write. Load() has the indexer make one pass at startup.
  void MaintainPartitions(SpaceIndex& space);
  // Adds what failed in a batch one by one from the store's records.
  void Heal(SpaceIndex& space, const std::string& agent, std::span<const uint64_t> ids,
            const absl::Status& failure);
  void RecordFailure(const absl::Status& failure, bool snapshot) ABSL_LOCKS_EXCLUDED(health_mutex_);

  // Writes waiting per space beyond which new writes wait for admission
  // (AwaitRoom), and beyond which Upsert itself blocks (writes admitted
  // together may overshoot the first; the second bounds memory).
  static constexpr size_t kMaxQueued = 16384;
  static constexpr size_t kMaxQueuedHard = 2 * kMaxQueued;
  // Below this many removed vectors a partition is not worth compacting.
  static constexpr uint64_t kCompactMinRemoved = 64;

  const IndexOptions options_;
  index::PartitionScanner scanner_;
  storage::EpisodeStore* const store_;
  const std::string snapshot_root_;
  LoadReport last_load_;

  mutable absl::Mutex health_mutex_;
  IndexHealth health_ ABSL_GUARDED_BY(health_mutex_);

  // One SaveSnapshots (or snapshot directory removal) at a time.
  absl::Mutex save_mutex_ ABSL_ACQUIRED_BEFORE(spaces_mutex_);
  absl::Mutex stop_mutex_;
  bool stopping_ ABSL_GUARDED_BY(stop_mutex_) = false;
  std::thread snapshot_thread_;

  // The indexer: Upsert bumps work_generation_; the indexer drains every
  // space and records the generation it has drained.
  absl::Mutex work_mutex_;
  uint64_t work_generation_ ABSL_GUARDED_BY(work_mutex_) = 0;
  uint64_t drained_generation_ ABSL_GUARDED_BY(work_mutex_) = 0;
  bool stopping_indexer_ ABSL_GUARDED_BY(work_mutex_) = false;
  std::atomic<bool> abandon_queue_{false};  // StopIndexing: leave the rest queued
  std::thread indexer_;
  // The copy a compaction is building a graph for, so that StopIndexing can
  // cancel that build too.
  absl::Mutex compaction_mutex_;
  std::shared_ptr<index::VectorPartition> compacting_ ABSL_GUARDED_BY(compaction_mutex_);

  mutable absl::Mutex spaces_mutex_;
  // Keyed by tenant + '\0' + space.
  absl::flat_hash_map<std::string, std::shared_ptr<SpaceIndex>> spaces_
      ABSL_GUARDED_BY(spaces_mutex_);
};

}  // namespace engram::retrieval
