// EpisodeIndex: the vector index of every space, kept in step with the
// EpisodeStore. Each (tenant, space, agent) has its own VectorPartition
// (index/vector_partition.h); a search without an agent filter fans out over
// the space's partitions and merges their best hits.
//
// The store is the source of truth. Writers call the index after the store
// has acknowledged a write: their vectors are queued, scored exactly by
// searches until a background indexer has added them to the graphs, and a
// write that arrives late (a put overtaken by the delete of the same id) is
// recognised and dropped. Hits are always re-read from the store and
// checked against the whole filter before they are returned, so an index
// that lags by a write never returns a deleted or non-matching episode.
//
// Filters: agent selects partitions; session, kinds, event-time range and
// expiry are checked during graph traversal from 40 bytes of attributes
// stored with each vector (with the episode's version); metadata predicates
// are checked on the episodes read back, widening the search (then scanning
// exactly) until k match.
//
// Persistence: each partition is snapshotted (index/snapshot_file.h) under
// <snapshot_dir>/<tenant hex>/<space hex>-<space created_at>/<agent hex>.eix,
// periodically and at shutdown. At startup each snapshot is checked against
// the store's (id, version) list, a cheap key-only scan: vectors of deleted or
// updated episodes are dropped, missing ones are read from the store and
// inserted in batches. A corrupt or missing snapshot only costs time: when
// more than half is missing the space is rebuilt from the store, and a
// snapshot follows a second after such a start. Nothing is trusted that the
// store does not confirm.
//
// Thread safety: all methods may be called concurrently. Searches read a
// space's queue and partition list under its reader lock and then search the
// partitions without locks; writers to one space serialise on its mutex only
// to queue.
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
#include "server/config.h"
#include "storage/episode_store.h"

namespace engram::server {

struct IndexSearchRequest {
  std::span<const float> query;
  uint32_t k = 10;
  uint32_t beam_width = 0;  // 0: each partition's calibrated default
  // Scan every vector of the partitions (index/partition_scanner.h) instead
  // of walking their graphs.
  bool scan = false;
  EpisodeFilter filter;
  absl::Time deadline = absl::InfiniteFuture();
};

struct IndexSearchResult {
  std::vector<std::pair<float, Episode>> hits;  // best first
  std::string route;                            // "index", "scan" or "exact"
  uint64_t candidates = 0;  // hits the partitions proposed (read back and checked)
};

struct PartitionReport {
  std::string space;
  std::string agent_id;
  index::PartitionStats stats;
};

class EpisodeIndex {
 public:
  // Snapshots go to config.snapshot_dir, or `default_snapshot_dir` if empty.
  // Scans (IndexSearchRequest::scan) go through a PartitionScanner made
  // with `scanner_options`.
  EpisodeIndex(const IndexConfig& config, storage::EpisodeStore* store,
               const std::string& default_snapshot_dir, index::ScannerOptions scanner_options = {});
  // Stops the snapshot thread (without a final snapshot: call SaveSnapshots).
  ~EpisodeIndex();

  // Indexes everything in the store, from snapshots where they are good.
  // Starts the periodic snapshot thread when config.snapshot_interval_s > 0.
  absl::Status Load();

  // Writes a snapshot of every partition that changed since its last one,
  // and removes snapshot files nothing uses any more.
  absl::Status SaveSnapshots() ABSL_LOCKS_EXCLUDED(save_mutex_, spaces_mutex_);

  // After the store acknowledged these writes: queue the episodes for the
  // index (a new version of an id replaces the old one's vector). They are
  // searchable at once (queued vectors are scored exactly); a background
  // indexer adds them to the graphs. Blocks while a space has kMaxQueued
  // writes waiting.
  void Upsert(const std::string& tenant, const SpaceInfo& space,
              const std::vector<Episode>& episodes) ABSL_LOCKS_EXCLUDED(spaces_mutex_);
  void Remove(const std::string& tenant, const std::string& space, const std::vector<uint64_t>& ids)
      ABSL_LOCKS_EXCLUDED(spaces_mutex_);
  // Forgets the space and removes its snapshots.
  void DropSpace(const std::string& tenant, const std::string& space)
      ABSL_LOCKS_EXCLUDED(save_mutex_, spaces_mutex_);

  // The k best episodes for the query. NOT_FOUND for an unknown space,
  // INVALID_ARGUMENT for a bad query, k or beam width, or a bad filter,
  // DEADLINE_EXCEEDED when the deadline passes.
  absl::StatusOr<IndexSearchResult> Search(const std::string& tenant, const std::string& space,
                                           const IndexSearchRequest& request);

  // Waits until every write queued before the call is in a partition.
  void Flush() ABSL_LOCKS_EXCLUDED(work_mutex_);

  // Rebuilds a space's partitions from the store (new graphs, fresh INT8
  // ranges, recalibrated), then swaps them in; writes made meanwhile are
  // applied to the new partitions before the swap. `progress` gets
  // (episodes indexed, episodes in the space).
  absl::Status Rebuild(const std::string& tenant, const std::string& space,
                       const std::function<void(uint64_t, uint64_t)>& progress = {});

  std::vector<PartitionReport> Stats(const std::string& tenant) const;
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

  void set_max_k(uint32_t max_k) { max_k_ = max_k; }

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
  absl::StatusOr<std::shared_ptr<SpaceIndex>> LoadSpace(const std::string& tenant,
                                                        const SpaceInfo& info);
  std::string SpaceSnapshotDir(const std::string& tenant, const SpaceInfo& info) const;
  void SnapshotLoop(absl::Duration first_wait);
  void IndexLoop();
  // Adds one batch of a space's queued writes to its partitions; false when
  // nothing was queued.
  bool DrainQueue(SpaceIndex& space);

  // Writes waiting per space before Upsert blocks.
  static constexpr size_t kMaxQueued = 16384;

  const IndexConfig config_;
  index::PartitionScanner scanner_;
  storage::EpisodeStore* const store_;
  const std::string snapshot_root_;
  uint32_t max_k_ = 1000;
  LoadReport last_load_;

  // One SaveSnapshots (or snapshot directory removal) at a time. Taken
  // before spaces_mutex_ and any space's mutex.
  absl::Mutex save_mutex_;
  absl::Mutex stop_mutex_;
  bool stopping_ ABSL_GUARDED_BY(stop_mutex_) = false;
  std::thread snapshot_thread_;

  // The indexer: Upsert bumps work_generation_; the indexer drains every
  // space and records the generation it has drained.
  absl::Mutex work_mutex_;
  uint64_t work_generation_ ABSL_GUARDED_BY(work_mutex_) = 0;
  uint64_t drained_generation_ ABSL_GUARDED_BY(work_mutex_) = 0;
  bool stopping_indexer_ ABSL_GUARDED_BY(work_mutex_) = false;
  std::thread indexer_;

  mutable absl::Mutex spaces_mutex_;
  // Keyed by tenant + '\0' + space.
  absl::flat_hash_map<std::string, std::shared_ptr<SpaceIndex>> spaces_
      ABSL_GUARDED_BY(spaces_mutex_);
};

}  // namespace engram::server
