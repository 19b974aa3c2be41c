// EpisodeIndex: the vector index of every space, kept in step with the
// EpisodeStore. Each (tenant, space, agent) has its own VectorPartition
// (index/vector_partition.h); a search without an agent filter fans out over
// the space's partitions and merges their best hits.
//
// The store is the source of truth. Writers call the index after the store
// has acknowledged a write; every index change re-reads nothing and cannot
// fail, and one that arrives late (a put overtaken by the delete of the same
// id) is recognised and dropped. Hits are always re-read from the store and
// checked against the whole filter before they are returned, so an index
// that lags by a write never returns a deleted or non-matching episode.
//
// Filters: agent selects partitions; session, kinds, event-time range and
// expiry are checked during graph traversal from 32 bytes of attributes
// stored with each vector; metadata predicates are checked on the episodes
// read back, widening the search (then scanning exactly) until k match.
//
// Thread safety: all methods may be called concurrently. Searches copy the
// space's partition list under a reader lock and then search without locks;
// writers to one space serialise on its mutex.
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
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "index/vector_partition.h"
#include "server/config.h"
#include "storage/episode_store.h"

namespace engram::server {

struct IndexSearchRequest {
  std::span<const float> query;
  uint32_t k = 10;
  uint32_t beam_width = 0;  // 0: each partition's calibrated default
  EpisodeFilter filter;
  absl::Time deadline = absl::InfiniteFuture();
};

struct IndexSearchResult {
  std::vector<std::pair<float, Episode>> hits;  // best first
  std::string route;                            // "index" or "exact"
  uint64_t candidates = 0;  // hits the partitions proposed (read back and checked)
};

struct PartitionReport {
  std::string space;
  std::string agent_id;
  index::PartitionStats stats;
};

class EpisodeIndex {
 public:
  EpisodeIndex(const IndexConfig& config, storage::EpisodeStore* store);
  ~EpisodeIndex();

  // Indexes everything in the store. `progress` gets (space, episodes done).
  absl::Status Load(const std::function<void(const std::string&, uint64_t)>& progress = {});

  // After the store acknowledged these writes: index the episodes (a new
  // version of an id replaces the old one's vector).
  void Upsert(const std::string& tenant, const SpaceInfo& space,
              const std::vector<Episode>& episodes) ABSL_LOCKS_EXCLUDED(spaces_mutex_);
  void Remove(const std::string& tenant, const std::string& space, const std::vector<uint64_t>& ids)
      ABSL_LOCKS_EXCLUDED(spaces_mutex_);
  void DropSpace(const std::string& tenant, const std::string& space)
      ABSL_LOCKS_EXCLUDED(spaces_mutex_);

  // The k best episodes for the query. NOT_FOUND for an unknown space,
  // INVALID_ARGUMENT for a bad query, k or beam width, or a bad filter,
  // DEADLINE_EXCEEDED when the deadline passes.
  absl::StatusOr<IndexSearchResult> Search(const std::string& tenant, const std::string& space,
                                           const IndexSearchRequest& request);

  // Rebuilds a space's partitions from the store (new graphs, fresh INT8
  // ranges, recalibrated), then swaps them in; writes made meanwhile are
  // applied to the new partitions before the swap. `progress` gets
  // (episodes indexed, episodes in the space).
  absl::Status Rebuild(const std::string& tenant, const std::string& space,
                       const std::function<void(uint64_t, uint64_t)>& progress = {});

  std::vector<PartitionReport> Stats(const std::string& tenant) const;

  uint32_t max_k() const { return max_k_; }
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

  const IndexConfig config_;
  storage::EpisodeStore* const store_;
  uint32_t max_k_ = 1000;

  mutable absl::Mutex spaces_mutex_;
  // Keyed by tenant + '\0' + space.
  absl::flat_hash_map<std::string, std::shared_ptr<SpaceIndex>> spaces_
      ABSL_GUARDED_BY(spaces_mutex_);
};

}  // namespace engram::server
