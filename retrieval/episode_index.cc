#include "retrieval/episode_index.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "fileio/atomic_file.h"
#include "index/exact_scorer.h"
#include "index/snapshot_file.h"
#include "storage/episode_filter.h"
#include "storage/stable_hash.h"

namespace engram::retrieval {
namespace {

// What graph traversal checks per vector (the rest of a filter is checked on
// the episodes read back). Hashes are FNV-1a: stable across restarts, so
// they can live in snapshots; a collision only lets an episode through to
// the exact check.
struct FilterAttributes {
  uint64_t session_hash;
  uint64_t kind_hash;
  int64_t event_time_us;
  int64_t expires_at_us;  // 0: never
  uint64_t version;       // of the episode indexed (checked against the store at startup)
};
static_assert(sizeof(FilterAttributes) == 40);

FilterAttributes AttributesOf(const Episode& episode) {
  return {StableHash(episode.session_id), StableHash(episode.kind), episode.event_time_us,
          episode.expires_at_us, episode.version};
}

std::span<const uint8_t> AsBytes(const FilterAttributes& attributes) {
  return {reinterpret_cast<const uint8_t*>(&attributes), sizeof(attributes)};
}

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

std::string SpaceKey(const std::string& tenant, const std::string& space) {
  return absl::StrCat(tenant, std::string(1, '\0'), space);
}

}  // namespace

struct EpisodeIndex::SpaceIndex {
  SpaceIndex(std::string tenant_name, SpaceInfo space_info)
      : tenant(std::move(tenant_name)), info(std::move(space_info)) {}

  struct Entry {
    index::VectorPartition* partition;
    uint64_t version;
  };

  const std::string tenant;
  const SpaceInfo info;
  mutable absl::Mutex mutex;
  absl::flat_hash_map<std::string, std::shared_ptr<index::VectorPartition>> partitions
      ABSL_GUARDED_BY(mutex);
  absl::flat_hash_map<uint64_t, Entry> entries ABSL_GUARDED_BY(mutex);
  // Ids deleted from the space: ids are never reused, so an upsert of one
  // that arrives after its delete is stale and dropped.
  absl::flat_hash_set<uint64_t> removed ABSL_GUARDED_BY(mutex);
  // While a rebuild runs: ids changed since it began, re-read before the swap.
  std::vector<uint64_t>* rebuild_log ABSL_GUARDED_BY(mutex) = nullptr;
  // Whether any episode indexed here ever had an expiry: only then must
  // traversal check attributes when the filter has none (expired episodes
  // would otherwise crowd the top k until the read-back drops them). Never
  // cleared: a rebuild starts a new space.
  std::atomic<bool> has_expiring{false};
  void NoteAttributes(const FilterAttributes& attributes) {
    if (attributes.expires_at_us != 0) has_expiring.store(true, std::memory_order_relaxed);
  }
  // Replaced by a rebuild (or dropped): writers look the space up again.
  bool retired ABSL_GUARDED_BY(mutex) = false;
  // Per agent: the partition's change_count() when its snapshot was written.
  absl::flat_hash_map<std::string, uint64_t> saved_changes ABSL_GUARDED_BY(mutex);

  // Acknowledged writes not yet in a partition: queued for the indexer, or
  // being added by it. Searches score them exactly, so a write is found as
  // soon as it is acknowledged.
  struct Pending {
    uint64_t id;
    uint64_t version;
    std::string agent_id;
    std::vector<float> vector;
    FilterAttributes attributes;
  };
  std::vector<Pending> queued ABSL_GUARDED_BY(mutex);
  std::vector<Pending> applying ABSL_GUARDED_BY(mutex);
  // Ids whose vectors must be re-read from the store (writes that landed
  // just as a rebuild swapped this space in); the indexer does it.
  std::vector<uint64_t> stale ABSL_GUARDED_BY(mutex);
  // Removals not yet applied to their partitions. The indexer applies them:
  // a partition's writers wait while the indexer builds its graph, and a
  // delete must not hold this space's lock (and so every search and write
  // of the space) that long. Searches skip these ids meanwhile. The
  // partitions are this space's (alive while in `partitions`).
  std::vector<std::pair<index::VectorPartition*, uint64_t>> unremoved ABSL_GUARDED_BY(mutex);

  // (agent, partition) of one agent, or of all when `agent` is empty.
  std::vector<std::pair<std::string, std::shared_ptr<index::VectorPartition>>> Partitions(
      const std::string& agent) const ABSL_LOCKS_EXCLUDED(mutex) {
    absl::ReaderMutexLock lock(&mutex);
    std::vector<std::pair<std::string, std::shared_ptr<index::VectorPartition>>> list;
    if (!agent.empty()) {
      auto found = partitions.find(agent);
      if (found != partitions.end()) list.emplace_back(*found);
    } else {
      for (const auto& entry : partitions) list.emplace_back(entry);
    }
    return list;
  }

  // Adds or replaces one episode's vector (from its stored record); the
  // failure, if any. Caller holds `mutex`.
  absl::Status UpsertLocked(const Episode& episode, const index::PartitionOptions& options)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) {
    if (removed.contains(episode.id)) return absl::OkStatus();
    auto existing = entries.find(episode.id);
    if (existing != entries.end()) {
      if (existing->second.version >= episode.version) return absl::OkStatus();
      existing->second.partition->Remove(episode.id);
      entries.erase(existing);
    }
    std::shared_ptr<index::VectorPartition> partition = PartitionFor(episode.agent_id, options);
    if (partition == nullptr) {
      return absl::InternalError(
          absl::StrCat("cannot create the partition of agent '", episode.agent_id, "'"));
    }
    FilterAttributes attributes = AttributesOf(episode);
    NoteAttributes(attributes);
    // A vector under this id the entries do not know (a drifted partition):
    // the stored record replaces it.
    partition->Remove(episode.id);
    absl::Status added = partition->Add(episode.id, episode.embedding, AsBytes(attributes));
    if (!added.ok()) return added;
    entries[episode.id] = {partition.get(), episode.version};
    if (rebuild_log != nullptr) rebuild_log->push_back(episode.id);
    return absl::OkStatus();
  }

  std::shared_ptr<index::VectorPartition> PartitionFor(const std::string& agent,
                                                       const index::PartitionOptions& options)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) {
    std::shared_ptr<index::VectorPartition>& partition = partitions[agent];
    if (partition == nullptr) {
      absl::StatusOr<std::unique_ptr<index::VectorPartition>> created =
          index::VectorPartition::Create(options);
      if (!created.ok()) {
        spdlog::error("event=index_partition_failed space={} agent={} error=\"{}\"", info.name,
                      agent, created.status().ToString());
        partitions.erase(agent);
        return nullptr;
      }
      partition = *std::move(created);
    }
    return partition;
  }

  // Never waits for a partition: the vector itself leaves it when the
  // indexer applies `unremoved`.
  void RemoveLocked(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) {
    removed.insert(id);
    std::erase_if(queued, [id](const Pending& p) { return p.id == id; });
    auto existing = entries.find(id);
    if (existing != entries.end()) {
      unremoved.emplace_back(existing->second.partition, id);
      entries.erase(existing);
    }
    if (rebuild_log != nullptr) rebuild_log->push_back(id);
  }

  // On the indexer thread, which alone builds graphs: never waits long.
  void ApplyRemovalsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) {
    for (const auto& [partition, id] : unremoved) partition->Remove(id);
    unremoved.clear();
  }
};

EpisodeIndex::EpisodeIndex(const IndexOptions& options, storage::EpisodeStore* store,
                           const std::string& default_snapshot_dir,
                           index::ScannerOptions scanner_options)
    : options_(options),
      scanner_(std::move(scanner_options)),
      store_(store),
      snapshot_root_(options.snapshot_dir.empty() ? default_snapshot_dir : options.snapshot_dir) {}

EpisodeIndex::~EpisodeIndex() {
  {
    absl::MutexLock lock(&stop_mutex_);
    stopping_ = true;
  }
  if (snapshot_thread_.joinable()) snapshot_thread_.join();
  {
    absl::MutexLock lock(&work_mutex_);
    stopping_indexer_ = true;
  }
  if (indexer_.joinable()) indexer_.join();
}

std::string EpisodeIndex::SpaceSnapshotDir(const std::string& tenant, const SpaceInfo& info) const {
  return (std::filesystem::path(snapshot_root_) / absl::BytesToHexString(tenant) /
          absl::StrCat(absl::BytesToHexString(info.name), "-", info.created_at_us))
      .string();
}

void EpisodeIndex::SnapshotLoop(absl::Duration first_wait) {
  absl::MutexLock lock(&stop_mutex_);
  for (absl::Duration wait = first_wait;; wait = absl::Seconds(options_.snapshot_interval_s)) {
    auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(stop_mutex_) { return stopping_; };
    if (stop_mutex_.AwaitWithTimeout(absl::Condition(&stop), wait)) return;
    stop_mutex_.Unlock();
    absl::Status saved = SaveSnapshots();
    if (!saved.ok()) {
      spdlog::error("event=index_snapshot_failed error=\"{}\"", saved.ToString());
    }
    stop_mutex_.Lock();
  }
}

namespace {

// The LAYOUT file in the snapshot root names the layout of the attributes
// the engine stores with each vector. Layout 1 (no file) was written when
// the index copied request episodes before the store filled their defaults,
// so its attributes may be wrong: such snapshots are never trusted.
std::filesystem::path LayoutFile(const std::string& snapshot_root) {
  return std::filesystem::path(snapshot_root) / "LAYOUT";
}

int ReadSnapshotLayout(const std::string& snapshot_root) {
  std::ifstream in(LayoutFile(snapshot_root));
  int layout = 1;
  if (!(in >> layout)) return 1;
  return layout;
}

absl::Status WriteSnapshotLayout(const std::string& snapshot_root, int layout) {
  std::error_code ec;
  std::filesystem::create_directories(snapshot_root, ec);
  return fileio::WriteFileAtomically(LayoutFile(snapshot_root).string(),
                                     absl::StrCat(layout, "\n"));
}

}  // namespace

absl::Status EpisodeIndex::SaveSnapshots() {
  absl::MutexLock save_lock(&save_mutex_);
  std::vector<std::pair<std::string, std::shared_ptr<SpaceIndex>>> spaces;
  {
    absl::ReaderMutexLock lock(&spaces_mutex_);
    for (const auto& [key, space] : spaces_) spaces.emplace_back(key, space);
  }
  absl::Status first_error;
  std::set<std::string> live_dirs;
  uint64_t written = 0;
  const absl::Time start = absl::Now();
  for (const auto& [key, space] : spaces) {
    const std::string tenant = key.substr(0, key.find('\0'));
    const std::string dir = SpaceSnapshotDir(tenant, space->info);
    live_dirs.insert(dir);
    std::vector<std::pair<std::string, std::shared_ptr<index::VectorPartition>>> partitions;
    {
      absl::ReaderMutexLock lock(&space->mutex);
      if (space->retired) continue;
      for (const auto& [agent, partition] : space->partitions) {
        auto saved = space->saved_changes.find(agent);
        if (saved == space->saved_changes.end() || saved->second != partition->change_count()) {
          partitions.emplace_back(agent, partition);
        }
      }
    }
    std::set<std::string> files;
    {
      absl::ReaderMutexLock lock(&space->mutex);
      for (const auto& [agent, partition] : space->partitions) {
        files.insert(absl::StrCat(absl::BytesToHexString(agent), ".eix"));
      }
    }
    for (const auto& [agent, partition] : partitions) {
      const uint64_t changes = partition->change_count();
      const std::string path =
          (std::filesystem::path(dir) / absl::StrCat(absl::BytesToHexString(agent), ".eix"))
              .string();
      absl::Status saved = partition->Save(path);
      if (!saved.ok()) {
        if (first_error.ok()) first_error = saved;
        continue;
      }
      ++written;
      absl::MutexLock lock(&space->mutex);
      // Unless a compaction replaced the partition meanwhile: then the copy
      // is still to be saved.
      auto current = space->partitions.find(agent);
      if (current != space->partitions.end() && current->second == partition) {
        space->saved_changes[agent] = changes;
      }
    }
    // Files of agents this space no longer has.
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      if (!files.contains(entry.path().filename().string())) {
        std::filesystem::remove(entry.path(), ec);
      }
    }
  }
  // Directories of spaces that are gone (or of earlier spaces of the same name).
  std::error_code ec;
  for (const auto& tenant_dir : std::filesystem::directory_iterator(snapshot_root_, ec)) {
    for (const auto& space_dir : std::filesystem::directory_iterator(tenant_dir.path(), ec)) {
      if (!live_dirs.contains(space_dir.path().string())) {
        std::filesystem::remove_all(space_dir.path(), ec);
      }
    }
  }
  // Written after the partitions: a crash before it leaves snapshots that the
  // next start does not trust (and rebuilds), never trusted wrong ones.
  if (first_error.ok()) first_error = WriteSnapshotLayout(snapshot_root_, kSnapshotLayout);
  if (written > 0) {
    spdlog::info("event=index_snapshot partitions={} seconds={:.2f}", written,
                 absl::ToDoubleSeconds(absl::Now() - start));
  }
  if (!first_error.ok()) RecordFailure(first_error, true);
  return first_error;
}

index::PartitionOptions EpisodeIndex::PartitionOptionsFor(const SpaceInfo& info) const {
  index::PartitionOptions options;
  options.metric = info.metric;
  options.dimension = info.dimension;
  options.quantize_threshold = options_.quantize_threshold;
  options.graph_threshold = options_.graph_threshold;
  options.graph.max_degree = options_.max_degree;
  options.graph.build_beam_width = options_.build_beam_width;
  options.graph.alpha = options_.alpha;
  options.default_beam_width = options_.default_beam_width;
  options.target_recall = options_.target_recall;
  options.build_threads = options_.build_threads;
  options.attribute_bytes = sizeof(FilterAttributes);
  return options;
}

std::shared_ptr<EpisodeIndex::SpaceIndex> EpisodeIndex::FindSpace(const std::string& tenant,
                                                                  const std::string& space) const {
  absl::ReaderMutexLock lock(&spaces_mutex_);
  auto found = spaces_.find(SpaceKey(tenant, space));
  return found == spaces_.end() ? nullptr : found->second;
}

std::shared_ptr<EpisodeIndex::SpaceIndex> EpisodeIndex::GetOrCreateSpace(const std::string& tenant,
                                                                         const SpaceInfo& info) {
  absl::MutexLock lock(&spaces_mutex_);
  std::shared_ptr<SpaceIndex>& space = spaces_[SpaceKey(tenant, info.name)];
  // A space deleted and created again under the same name is a new space.
  if (space == nullptr || space->info.created_at_us < info.created_at_us) {
    if (space != nullptr) {
      absl::MutexLock retire(&space->mutex);
      space->retired = true;
    }
    space = std::make_shared<SpaceIndex>(tenant, info);
  }
  return space;
}

void EpisodeIndex::Upsert(const std::string& tenant, const SpaceInfo& info,
                          const std::vector<Episode>& episodes) {
  for (;;) {
    std::shared_ptr<SpaceIndex> space = GetOrCreateSpace(tenant, info);
    if (space->info.created_at_us != info.created_at_us) return;  // for a deleted space
    absl::MutexLock lock(&space->mutex);
    // Backpressure: writers wait while the indexer is this far behind.
    SpaceIndex* raw = space.get();
    auto has_room = [raw]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(raw->mutex) {
      return raw->queued.size() < kMaxQueuedHard || raw->retired;
    };
    space->mutex.Await(absl::Condition(&has_room));
    if (space->retired) continue;
    for (const Episode& episode : episodes) {
      if (space->removed.contains(episode.id)) continue;
      space->queued.push_back({episode.id, episode.version, episode.agent_id, episode.embedding,
                               AttributesOf(episode)});
      space->NoteAttributes(space->queued.back().attributes);
      if (space->rebuild_log != nullptr) space->rebuild_log->push_back(episode.id);
    }
    break;
  }
  absl::MutexLock lock(&work_mutex_);
  ++work_generation_;
}

bool EpisodeIndex::AwaitRoom(const std::string& tenant, const std::string& space_name,
                             absl::Time deadline, size_t* waiting) {
  std::shared_ptr<SpaceIndex> space = FindSpace(tenant, space_name);
  if (space == nullptr) return true;
  SpaceIndex* raw = space.get();
  absl::MutexLock lock(&raw->mutex);
  auto has_room = [raw]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(raw->mutex) {
    return raw->queued.size() < kMaxQueued || raw->retired;
  };
  const bool room = raw->mutex.AwaitWithDeadline(absl::Condition(&has_room), deadline);
  if (waiting != nullptr) *waiting = raw->queued.size();
  return room;
}

void EpisodeIndex::IndexLoop() {
  uint64_t seen = 0;
  for (;;) {
    {
      absl::MutexLock lock(&work_mutex_);
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(work_mutex_) {
        return stopping_indexer_ || work_generation_ != seen;
      };
      work_mutex_.Await(absl::Condition(&ready));
      if (stopping_indexer_ && work_generation_ == seen) return;
      if (abandon_queue_.load(std::memory_order_relaxed)) return;
      seen = work_generation_;
    }
    std::vector<std::shared_ptr<SpaceIndex>> spaces;
    {
      absl::ReaderMutexLock lock(&spaces_mutex_);
      for (const auto& [key, space] : spaces_) spaces.push_back(space);
    }
    for (const auto& space : spaces) {
      while (!abandon_queue_.load(std::memory_order_relaxed) && DrainQueue(*space)) {
      }
      if (!abandon_queue_.load(std::memory_order_relaxed)) MaintainPartitions(*space);
    }
    absl::MutexLock lock(&work_mutex_);
    drained_generation_ = seen;
  }
}

bool EpisodeIndex::DrainQueue(SpaceIndex& space) {
  const index::PartitionOptions options = PartitionOptionsFor(space.info);
  struct Batch {
    std::shared_ptr<index::VectorPartition> partition;
    std::vector<uint64_t> ids, versions;
    std::vector<float> vectors;
    std::vector<uint8_t> attributes;
  };
  absl::flat_hash_map<std::string, Batch> batches;
  std::vector<uint64_t> stale;
  {
    absl::MutexLock lock(&space.mutex);
    space.ApplyRemovalsLocked();
    stale.swap(space.stale);
  }
  for (uint64_t id : stale) {
    absl::StatusOr<Episode> episode = store_->GetEpisode(space.tenant, space.info.name, id);
    absl::MutexLock lock(&space.mutex);
    if (episode.ok()) {
      if (absl::Status added = space.UpsertLocked(*episode, options); !added.ok()) {
        RecordFailure(added, false);
      }
    } else if (absl::IsNotFound(episode.status())) {
      space.RemoveLocked(id);
    } else {
      RecordFailure(episode.status(), false);
      space.stale.push_back(id);  // the next round tries again
    }
  }
  {
    absl::MutexLock lock(&space.mutex);
    if (space.queued.empty()) return false;
    space.applying = std::move(space.queued);
    space.queued.clear();
    // The newest version of each id wins; older vectors leave the partitions.
    absl::flat_hash_map<uint64_t, size_t> newest;
    for (size_t i = 0; i < space.applying.size(); ++i) {
      auto [at, inserted] = newest.try_emplace(space.applying[i].id, i);
      if (!inserted && space.applying[at->second].version < space.applying[i].version) {
        at->second = i;
      }
    }
    for (const auto& [id, i] : newest) {
      const SpaceIndex::Pending& item = space.applying[i];
      auto existing = space.entries.find(id);
      if (existing != space.entries.end()) {
        if (existing->second.version >= item.version) continue;
        existing->second.partition->Remove(id);
        space.entries.erase(existing);
      }
      Batch& batch = batches[item.agent_id];
      if (batch.partition == nullptr) batch.partition = space.PartitionFor(item.agent_id, options);
      if (batch.partition == nullptr) continue;
      batch.ids.push_back(id);
      batch.versions.push_back(item.version);
      batch.vectors.insert(batch.vectors.end(), item.vector.begin(), item.vector.end());
      const std::span<const uint8_t> bytes = AsBytes(item.attributes);
      batch.attributes.insert(batch.attributes.end(), bytes.begin(), bytes.end());
    }
  }
  // Graph inserts run without the space's lock: searches and new writes go
  // on (the partition serialises its own writers).
  for (auto& [agent, batch] : batches) {
    absl::Status added = batch.partition->AddBatch(batch.ids, batch.vectors, batch.attributes);
    if (!added.ok()) {
      Heal(space, agent, batch.ids, added);
      batch.ids.clear();
    }
  }
  absl::MutexLock lock(&space.mutex);
  for (auto& [agent, batch] : batches) {
    for (size_t i = 0; i < batch.ids.size(); ++i) {
      if (space.removed.contains(batch.ids[i])) {  // deleted while being added
        batch.partition->Remove(batch.ids[i]);
        continue;
      }
      space.entries[batch.ids[i]] = {batch.partition.get(), batch.versions[i]};
    }
  }
  space.applying.clear();
  return true;
}

void EpisodeIndex::MaintainPartitions(SpaceIndex& space) {
  std::vector<std::pair<std::string, std::shared_ptr<index::VectorPartition>>> due;
  std::vector<std::shared_ptr<index::VectorPartition>> graph_due;
  {
    absl::ReaderMutexLock lock(&space.mutex);
    if (space.retired) return;
    for (const auto& [agent, partition] : space.partitions) {
      const uint64_t removed = partition->deleted_count();
      if (removed >= kCompactMinRemoved && removed * 4 >= partition->row_count()) {
        due.emplace_back(agent, partition);  // the copy gets its graph
      } else if (partition->graph_due()) {
        graph_due.push_back(partition);
      }
    }
  }
  for (const auto& partition : graph_due) {
    if (abandon_queue_.load(std::memory_order_relaxed)) return;
    partition->BuildGraphIfDue();
  }
  for (const auto& item : due) {
    const std::string& agent = item.first;
    const std::shared_ptr<index::VectorPartition>& old = item.second;
    if (abandon_queue_.load(std::memory_order_relaxed)) return;
    const absl::Time start = absl::Now();
    std::shared_ptr<index::VectorPartition> copy = old->LiveCopy();
    {
      absl::MutexLock lock(&compaction_mutex_);
      compacting_ = copy;
    }
    // StopIndexing sets abandon_queue_ before it looks at compacting_.
    if (abandon_queue_.load(std::memory_order_relaxed)) copy->CancelBuilds();
    copy->BuildGraphIfDue();
    {
      absl::MutexLock lock(&compaction_mutex_);
      compacting_.reset();
    }
    // Shutdown stopped the build: keep the partition that has its graph.
    if (copy->builds_cancelled()) return;
    absl::MutexLock lock(&space.mutex);
    auto current = space.partitions.find(agent);
    if (space.retired || current == space.partitions.end() || current->second != old) continue;
    // What was removed or replaced since the copy: the entries know.
    std::vector<uint64_t> copied;
    copy->ForEachLive([&copied](uint64_t id, const uint8_t*) { copied.push_back(id); });
    for (uint64_t id : copied) {
      auto entry = space.entries.find(id);
      if (entry == space.entries.end() || entry->second.partition != old.get()) copy->Remove(id);
    }
    // Removals from the old partition still pending: done by the above.
    std::erase_if(space.unremoved,
                  [&old](const auto& removal) { return removal.first == old.get(); });
    for (auto& [id, entry] : space.entries) {
      if (entry.partition == old.get()) entry.partition = copy.get();
    }
    current->second = copy;
    space.saved_changes.erase(agent);  // the next snapshot writes the copy
    spdlog::info(
        "event=index_partition_compacted space={} agent={} rows_before={} rows_after={} "
        "seconds={:.2f}",
        space.info.name, agent, old->row_count(), copy->row_count(),
        absl::ToDoubleSeconds(absl::Now() - start));
  }
}

void EpisodeIndex::RecordFailure(const absl::Status& failure, bool snapshot) {
  absl::MutexLock lock(&health_mutex_);
  if (snapshot) {
    ++health_.snapshot_failures;
  } else {
    ++health_.add_failures;
  }
  health_.last_error = failure.ToString();
}

void EpisodeIndex::Heal(SpaceIndex& space, const std::string& agent, std::span<const uint64_t> ids,
                        const absl::Status& failure) {
  spdlog::warn("event=index_add_failed space={} agent={} episodes={} error=\"{}\" action=heal",
               space.info.name, agent, ids.size(), failure.ToString());
  std::vector<EpisodeRef> refs;
  for (uint64_t id : ids) refs.push_back({agent, id});
  // Not under the space's lock: the reads may take a while.
  absl::StatusOr<std::vector<std::optional<Episode>>> stored =
      store_->GetEpisodes(space.tenant, space.info.name, refs);
  if (!stored.ok()) {
    RecordFailure(stored.status(), false);
    return;
  }
  const index::PartitionOptions options = PartitionOptionsFor(space.info);
  uint64_t healed = 0;
  absl::MutexLock lock(&space.mutex);
  for (std::optional<Episode>& episode : *stored) {
    if (!episode.has_value()) continue;  // deleted or expired since
    absl::Status added = space.UpsertLocked(*episode, options);
    if (added.ok()) {
      ++healed;
    } else {
      spdlog::error("event=index_add_failed space={} id={} error=\"{}\"", space.info.name,
                    episode->id, added.ToString());
      RecordFailure(added, false);
    }
  }
  absl::MutexLock health_lock(&health_mutex_);
  health_.healed += healed;
}

IndexHealth EpisodeIndex::Health() const {
  uint64_t queued = 0;
  {
    absl::ReaderMutexLock lock(&spaces_mutex_);
    for (const auto& [key, space] : spaces_) {
      absl::ReaderMutexLock space_lock(&space->mutex);
      queued += space->queued.size() + space->applying.size();
    }
  }
  absl::MutexLock lock(&health_mutex_);
  IndexHealth health = health_;
  health.queued = queued;
  return health;
}

bool EpisodeIndex::Flush(absl::Time deadline) {
  absl::MutexLock lock(&work_mutex_);
  const uint64_t target = work_generation_;
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(work_mutex_) {
    return drained_generation_ >= target || !indexer_.joinable();
  };
  return work_mutex_.AwaitWithDeadline(absl::Condition(&done), deadline);
}

uint64_t EpisodeIndex::StopIndexing() {
  abandon_queue_.store(true, std::memory_order_relaxed);
  {
    absl::MutexLock lock(&compaction_mutex_);
    if (compacting_ != nullptr) compacting_->CancelBuilds();
  }
  std::vector<std::shared_ptr<SpaceIndex>> spaces;
  {
    absl::ReaderMutexLock lock(&spaces_mutex_);
    for (const auto& [key, space] : spaces_) spaces.push_back(space);
  }
  for (const auto& space : spaces) {
    absl::MutexLock lock(&space->mutex);
    for (const auto& [agent, partition] : space->partitions) partition->CancelBuilds();
  }
  {
    absl::MutexLock lock(&work_mutex_);
    stopping_indexer_ = true;
  }
  if (indexer_.joinable()) indexer_.join();
  uint64_t left = 0;
  for (const auto& space : spaces) {
    absl::MutexLock lock(&space->mutex);
    left += space->queued.size();
  }
  return left;
}

void EpisodeIndex::Remove(const std::string& tenant, const std::string& space_name,
                          const std::vector<uint64_t>& ids) {
  for (;;) {
    std::shared_ptr<SpaceIndex> space = FindSpace(tenant, space_name);
    if (space == nullptr) return;
    {
      absl::MutexLock lock(&space->mutex);
      if (space->retired) continue;
      for (uint64_t id : ids) space->RemoveLocked(id);
    }
    // Wakes the indexer, which compacts partitions that removals emptied.
    absl::MutexLock lock(&work_mutex_);
    ++work_generation_;
    return;
  }
}

void EpisodeIndex::DropSpace(const std::string& tenant, const std::string& space_name) {
  absl::MutexLock save_lock(&save_mutex_);
  absl::MutexLock lock(&spaces_mutex_);
  auto found = spaces_.find(SpaceKey(tenant, space_name));
  if (found == spaces_.end()) return;
  {
    absl::MutexLock retire(&found->second->mutex);
    found->second->retired = true;
  }
  std::error_code ec;
  std::filesystem::remove_all(SpaceSnapshotDir(tenant, found->second->info), ec);
  spaces_.erase(found);
}

absl::StatusOr<std::shared_ptr<EpisodeIndex::SpaceIndex>> EpisodeIndex::BuildSpace(
    const std::string& tenant, const SpaceInfo& info,
    const std::function<void(uint64_t, uint64_t)>& progress) {
  auto space = std::make_shared<SpaceIndex>(tenant, info);
  const index::PartitionOptions options = PartitionOptionsFor(info);
  // Episodes come in key order, agent by agent: each agent's are indexed in
  // one batch (one graph build) when the next agent starts.
  std::string agent;
  std::vector<uint64_t> ids, versions;
  std::vector<float> vectors;
  std::vector<uint8_t> attributes;
  uint64_t done = 0;
  absl::Status failed;
  auto flush = [&]() -> absl::Status {
    if (ids.empty()) return absl::OkStatus();
    absl::StatusOr<std::unique_ptr<index::VectorPartition>> partition =
        index::VectorPartition::Create(options);
    if (!partition.ok()) return partition.status();
    if (absl::Status added = (*partition)->AddBatch(ids, vectors, attributes); !added.ok()) {
      return added;
    }
    absl::MutexLock lock(&space->mutex);
    for (size_t i = 0; i < ids.size(); ++i) {
      space->entries[ids[i]] = {partition->get(), versions[i]};
    }
    space->partitions[agent] = *std::move(partition);
    done += ids.size();
    if (progress) progress(done, info.episode_count);
    ids.clear();
    versions.clear();
    vectors.clear();
    attributes.clear();
    return absl::OkStatus();
  };
  absl::Status scanned = store_->ForEachEpisode(
      tenant, info.name, EpisodeFilter{}, absl::InfiniteFuture(), [&](Episode&& episode) {
        if (episode.agent_id != agent) {
          failed = flush();
          if (!failed.ok()) return false;
          agent = episode.agent_id;
        }
        ids.push_back(episode.id);
        versions.push_back(episode.version);
        vectors.insert(vectors.end(), episode.embedding.begin(), episode.embedding.end());
        FilterAttributes a = AttributesOf(episode);
        space->NoteAttributes(a);
        attributes.insert(attributes.end(), AsBytes(a).begin(), AsBytes(a).end());
        return true;
      });
  if (!scanned.ok()) return scanned;
  if (!failed.ok()) return failed;
  if (absl::Status last = flush(); !last.ok()) return last;
  return space;
}

absl::StatusOr<std::shared_ptr<EpisodeIndex::SpaceIndex>> EpisodeIndex::LoadSpace(
    const std::string& tenant, const SpaceInfo& info, bool trust_snapshots) {
  // What the store holds: (id, version) per episode.
  absl::flat_hash_map<uint64_t, uint64_t> versions;
  absl::Status scanned = store_->ForEachEpisodeVersion(
      tenant, info.name, [&](uint64_t id, uint64_t version) { versions[id] = version; });
  if (!scanned.ok()) return scanned;
  auto rebuild = [&](const std::string& why) {
    spdlog::info("event=index_rebuild space={} reason=\"{}\"", info.name, why);
    ++last_load_.spaces_rebuilt;
    return BuildSpace(tenant, info, {});
  };
  if (!trust_snapshots) return rebuild("the snapshots are of an older layout");
  if (versions.size() != info.episode_count) {
    return rebuild(absl::StrCat("the store lists ", versions.size(), " versions for ",
                                info.episode_count, " episodes"));
  }
  auto space = std::make_shared<SpaceIndex>(tenant, info);
  const index::PartitionOptions options = PartitionOptionsFor(info);
  const std::string dir = SpaceSnapshotDir(tenant, info);
  absl::flat_hash_set<uint64_t> covered;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(".eix")) continue;
    const std::string agent = absl::HexStringToBytes(name.substr(0, name.size() - 4));
    absl::StatusOr<std::unique_ptr<index::VectorPartition>> loaded =
        index::VectorPartition::Load(entry.path().string(), options);
    if (!loaded.ok()) {
      spdlog::warn("event=index_snapshot_unusable path={} error=\"{}\"", entry.path().string(),
                   loaded.status().ToString());
      continue;
    }
    std::shared_ptr<index::VectorPartition> partition = *std::move(loaded);
    std::vector<uint64_t> stale;
    absl::MutexLock lock(&space->mutex);
    SpaceIndex* loading = space.get();
    partition->ForEachLive(
        [&](uint64_t id, const uint8_t* bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(loading->mutex) {
          FilterAttributes attributes;
          std::memcpy(&attributes, bytes, sizeof(attributes));
          loading->NoteAttributes(attributes);
          auto current = versions.find(id);
          if (current == versions.end() || current->second != attributes.version ||
              covered.contains(id)) {
            stale.push_back(id);
            return;
          }
          covered.insert(id);
          loading->entries[id] = {partition.get(), attributes.version};
        });
    for (uint64_t id : stale) partition->Remove(id);
    ++last_load_.partitions_from_snapshots;
    last_load_.vectors_from_snapshots += partition->size();
    space->saved_changes[agent] = stale.empty() ? partition->change_count() : UINT64_MAX;
    space->partitions[agent] = std::move(partition);
  }
  // Episodes no snapshot holds (added or updated since, or a lost snapshot)
  // are read back and added per agent in batches (parallel graph inserts);
  // only when most of the space is missing is it built again from scratch.
  std::vector<uint64_t> missing;
  for (const auto& [id, version] : versions) {
    if (!covered.contains(id)) missing.push_back(id);
  }
  if (!versions.empty() && missing.size() > versions.size() / 2) {
    return rebuild(absl::StrCat(missing.size(), " of ", versions.size(),
                                " episodes are in no usable snapshot"));
  }
  std::sort(missing.begin(), missing.end());
  struct Batch {
    std::vector<uint64_t> ids, versions;
    std::vector<float> vectors;
    std::vector<uint8_t> attributes;
  };
  std::map<std::string, Batch> batches;
  for (uint64_t id : missing) {
    absl::StatusOr<Episode> episode = store_->GetEpisode(tenant, info.name, id);
    if (absl::IsNotFound(episode.status())) continue;  // expired
    if (!episode.ok()) return episode.status();
    Batch& batch = batches[episode->agent_id];
    batch.ids.push_back(id);
    batch.versions.push_back(episode->version);
    batch.vectors.insert(batch.vectors.end(), episode->embedding.begin(), episode->embedding.end());
    const FilterAttributes attributes = AttributesOf(*episode);
    space->NoteAttributes(attributes);
    batch.attributes.insert(batch.attributes.end(), AsBytes(attributes).begin(),
                            AsBytes(attributes).end());
  }
  absl::MutexLock lock(&space->mutex);  // not shared yet: no contention
  for (auto& [agent, batch] : batches) {
    std::shared_ptr<index::VectorPartition> partition = space->PartitionFor(agent, options);
    if (partition == nullptr) continue;
    absl::Status added = partition->AddBatch(batch.ids, batch.vectors, batch.attributes);
    if (!added.ok()) return added;
    for (size_t i = 0; i < batch.ids.size(); ++i) {
      space->entries[batch.ids[i]] = {partition.get(), batch.versions[i]};
    }
    last_load_.vectors_read_from_store += batch.ids.size();
  }
  return space;
}

absl::Status EpisodeIndex::Load() {
  last_load_ = LoadReport();
  const int layout = ReadSnapshotLayout(snapshot_root_);
  const bool trust_snapshots = layout == kSnapshotLayout;
  if (!trust_snapshots && std::filesystem::exists(snapshot_root_)) {
    spdlog::info("event=index_snapshots_ignored layout={} expected={} action=rebuild", layout,
                 kSnapshotLayout);
  }
  absl::StatusOr<std::vector<std::pair<std::string, SpaceInfo>>> spaces = store_->ListAllSpaces();
  if (!spaces.ok()) return spaces.status();
  for (const auto& [tenant, info] : *spaces) {
    absl::Time start = absl::Now();
    absl::StatusOr<std::shared_ptr<SpaceIndex>> loaded = LoadSpace(tenant, info, trust_snapshots);
    if (!loaded.ok()) {
      return absl::Status(loaded.status().code(), absl::StrCat("indexing space '", info.name,
                                                               "': ", loaded.status().message()));
    }
    ++last_load_.spaces;
    absl::MutexLock lock(&spaces_mutex_);
    spaces_[SpaceKey(tenant, info.name)] = *std::move(loaded);
    spdlog::info("event=index_loaded tenant={} space={} episodes={} seconds={:.2f}", tenant,
                 info.name, info.episode_count, absl::ToDoubleSeconds(absl::Now() - start));
  }
  spdlog::info(
      "event=index_load_done spaces={} partitions_from_snapshots={} vectors_from_snapshots={} "
      "vectors_read_from_store={} spaces_rebuilt={}",
      last_load_.spaces, last_load_.partitions_from_snapshots, last_load_.vectors_from_snapshots,
      last_load_.vectors_read_from_store, last_load_.spaces_rebuilt);
  {
    // One pass of the indexer at startup: partitions loaded with many
    // removed vectors, or without the graph a shutdown cancelled.
    absl::MutexLock lock(&work_mutex_);
    ++work_generation_;
  }
  indexer_ = std::thread([this] { IndexLoop(); });
  if (options_.snapshot_interval_s > 0) {
    // After a crash the index was (partly) rebuilt from the store: snapshot
    // it soon rather than an interval later, so the next restart is quick.
    const bool rebuilt = last_load_.spaces_rebuilt > 0 || last_load_.vectors_read_from_store > 0;
    const absl::Duration first_wait =
        rebuilt ? absl::Seconds(1) : absl::Seconds(options_.snapshot_interval_s);
    snapshot_thread_ = std::thread([this, first_wait] { SnapshotLoop(first_wait); });
  }
  return absl::OkStatus();
}

absl::Status EpisodeIndex::Rebuild(const std::string& tenant, const std::string& space_name,
                                   const std::function<void(uint64_t, uint64_t)>& progress) {
  absl::StatusOr<SpaceInfo> info = store_->GetSpace(tenant, space_name);
  if (!info.ok()) return info.status();
  Flush();
  std::shared_ptr<SpaceIndex> old = GetOrCreateSpace(tenant, *info);
  std::vector<uint64_t> changed;
  {
    absl::MutexLock lock(&old->mutex);
    if (old->rebuild_log != nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("space '", space_name, "' is already being rebuilt"));
    }
    old->rebuild_log = &changed;
  }
  absl::StatusOr<std::shared_ptr<SpaceIndex>> built = BuildSpace(tenant, *info, progress);
  auto stop_logging = [&] {
    absl::MutexLock lock(&old->mutex);
    old->rebuild_log = nullptr;
  };
  if (!built.ok()) {
    stop_logging();
    return built.status();
  }
  std::shared_ptr<SpaceIndex> fresh = *std::move(built);
  const index::PartitionOptions options = PartitionOptionsFor(*info);
  // Writes that landed while building are re-read from the store and
  // applied to the new partitions. The reads happen without the index's
  // locks (searches and writes go on); writes that land during them are
  // logged again and read in the next round, until a round finds the log
  // empty while holding the locks for the swap.
  for (;;) {
    std::vector<uint64_t> ids;
    {
      absl::MutexLock lock(&old->mutex);
      ids.swap(changed);
    }
    if (ids.empty()) break;
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    for (uint64_t id : ids) {
      absl::StatusOr<Episode> episode = store_->GetEpisode(tenant, space_name, id);
      absl::MutexLock lock(&fresh->mutex);
      if (episode.ok()) {
        if (absl::Status added = fresh->UpsertLocked(*episode, options); !added.ok()) {
          RecordFailure(added, false);
        }
      } else if (absl::IsNotFound(episode.status())) {
        fresh->RemoveLocked(id);
      } else {
        stop_logging();
        return episode.status();
      }
    }
  }
  {
    absl::MutexLock spaces_lock(&spaces_mutex_);
    absl::MutexLock old_lock(&old->mutex);
    old->rebuild_log = nullptr;
    if (old->retired) return absl::AbortedError("the space was deleted during the rebuild");
    if (!changed.empty()) {
      // Writes that slipped in after the last round: rare, and few. Their
      // vectors are in the old space's entries or queue; re-queue them from
      // the store through the indexer instead of reading under the locks.
      absl::MutexLock lock(&fresh->mutex);
      for (uint64_t id : changed) fresh->stale.push_back(id);
    }
    {
      absl::MutexLock lock(&fresh->mutex);
      fresh->removed = old->removed;
      fresh->queued = std::move(old->queued);  // the indexer adds them to the new partitions
      old->queued.clear();
    }
    spaces_[SpaceKey(tenant, space_name)] = fresh;
    old->retired = true;
  }
  // Wake the indexer for the queue and any stale ids the new space holds.
  absl::MutexLock lock(&work_mutex_);
  ++work_generation_;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Candidate>> EpisodeIndex::Propose(const SearchContext& context,
                                                             uint32_t count, bool scan) {
  std::shared_ptr<SpaceIndex> space = FindSpace(context.tenant, context.space.name);
  if (space == nullptr || space->info.created_at_us != context.space.created_at_us)
    return std::vector<Candidate>();

  const EpisodeFilter& filter = context.filter;
  const int64_t now_us = NowMicros();
  const uint64_t session_hash = StableHash(filter.session_id);
  std::vector<uint64_t> kind_hashes;
  for (const std::string& kind : filter.kinds) kind_hashes.push_back(StableHash(kind));
  const index::AcceptFunction accept = [&](uint64_t, const uint8_t* bytes) {
    FilterAttributes a;
    std::memcpy(&a, bytes, sizeof(a));
    if (a.expires_at_us != 0 && a.expires_at_us <= now_us) return false;
    if (!filter.session_id.empty() && a.session_hash != session_hash) return false;
    if (!kind_hashes.empty() &&
        std::find(kind_hashes.begin(), kind_hashes.end(), a.kind_hash) == kind_hashes.end()) {
      return false;
    }
    if (filter.event_time_from_us && a.event_time_us < *filter.event_time_from_us) return false;
    if (filter.event_time_to_us && a.event_time_us >= *filter.event_time_to_us) return false;
    return true;
  };
  // Scans leave expiry to the read-back check, so that unfiltered scans of a
  // partition can share one batched launch (index/partition_scanner.h).
  const bool attribute_filter = !filter.session_id.empty() || !kind_hashes.empty() ||
                                filter.event_time_from_us.has_value() ||
                                filter.event_time_to_us.has_value();
  // Graph traversal calls the check per visited node: only when it can
  // reject something (a filter, or expiries in the space).
  const index::AcceptFunction* traversal_accept =
      attribute_filter || space->has_expiring.load(std::memory_order_relaxed) ? &accept : nullptr;
  const uint32_t asked = std::min(count, index::VectorPartition::kMaxK);
  const index::ExactScorer scorer(context.space.metric, context.query);

  // The agent strings live in `pending_agents` (queued writes) or in
  // `partitions` (keys), both alive until the candidates are made.
  struct Proposed {
    uint64_t id;
    const std::string* agent;
  };
  index::TopK<Proposed> merged(asked);
  std::deque<std::string> pending_agents;
  // An id being added is both queued and in its partition: counted once, or
  // duplicates would crowd unique candidates out of the top `count`.
  absl::flat_hash_set<uint64_t> pending_ids;
  // Removed, but still in their partitions (SpaceIndex::unremoved): skipped,
  // and each partition asked for as many more as it holds, up to k more (a
  // long graph build can leave thousands pending; asking for them all would
  // make every search a top-1024 one).
  absl::flat_hash_set<uint64_t> unremoved_ids;
  absl::flat_hash_map<const index::VectorPartition*, uint32_t> unremoved_per_partition;
  {
    // Writes the indexer has not added yet, scored exactly. Read before the
    // partitions: a write moves from here into a partition, never back.
    absl::ReaderMutexLock lock(&space->mutex);
    for (const auto& [partition, id] : space->unremoved) {
      unremoved_ids.insert(id);
      ++unremoved_per_partition[partition];
    }
    for (const auto* list : {&space->queued, &space->applying}) {
      for (const SpaceIndex::Pending& item : *list) {
        if (!filter.agent_id.empty() && item.agent_id != filter.agent_id) continue;
        if (!accept(item.id, reinterpret_cast<const uint8_t*>(&item.attributes))) continue;
        if (!pending_ids.insert(item.id).second) continue;
        pending_agents.push_back(item.agent_id);
        merged.Push(scorer.Score(item.vector), {item.id, &pending_agents.back()});
      }
    }
  }
  // Listed after the queue: a partition created meanwhile holds what left it.
  std::vector<std::pair<std::string, std::shared_ptr<index::VectorPartition>>> partitions =
      space->Partitions(filter.agent_id);
  VectorTrace trace;
  for (const auto& [agent, partition] : partitions) {
    index::SearchTrace partition_trace;
    auto pending_here = unremoved_per_partition.find(partition.get());
    const uint32_t extra =
        pending_here == unremoved_per_partition.end() ? 0 : std::min(pending_here->second, asked);
    const uint32_t wanted = std::min(asked + extra, index::VectorPartition::kMaxK);
    absl::StatusOr<std::vector<index::ScoredId>> found =
        scan ? scanner_.Scan(partition, context.query, wanted, attribute_filter ? &accept : nullptr)
             : partition->Search({.query = context.query,
                                  .k = wanted,
                                  .beam_width = context.beam_width,
                                  .accept = traversal_accept,
                                  .trace = &partition_trace});
    if (!found.ok()) return found.status();
    ++trace.partitions;
    if (!scan && !partition_trace.exhaustive && partition_trace.returned > 0) {
      trace.exhaustive = false;
      trace.rerank_depth =
          std::max(trace.rerank_depth, static_cast<double>(partition_trace.deepest) /
                                           std::max<uint32_t>(1, partition_trace.window));
      trace.order_disagreement =
          std::max(trace.order_disagreement,
                   1.0 - static_cast<double>(partition_trace.agreement) / partition_trace.returned);
      if (partition_trace.sample_recall >= 0) {
        trace.sample_recall = std::min(trace.sample_recall, partition_trace.sample_recall);
      }
    }
    for (const index::ScoredId& hit : *found) {
      if (!pending_ids.contains(hit.id) && !unremoved_ids.contains(hit.id)) {
        merged.Push(hit.score, {hit.id, &agent});
      }
    }
    if (absl::Now() > context.deadline) {
      return absl::DeadlineExceededError("deadline passed while searching the index");
    }
  }
  if (context.trace != nullptr) *context.trace = trace;
  std::vector<Candidate> candidates;
  for (auto& [score, item] : merged.TakeSorted()) {
    candidates.push_back({item.id, score, *item.agent});
  }
  return candidates;
}

uint64_t EpisodeIndex::VectorsInScope(const std::string& tenant, const std::string& space_name,
                                      const std::string& agent_id) const {
  std::shared_ptr<SpaceIndex> space = FindSpace(tenant, space_name);
  if (space == nullptr) return 0;
  uint64_t vectors = 0;
  {
    // Queued writes only: a batch being applied is on its way into the
    // partitions, counted there as it lands (so the count may lag by one
    // batch, never doubles it).
    absl::ReaderMutexLock lock(&space->mutex);
    if (agent_id.empty()) {
      vectors += space->queued.size();
    } else {
      for (const SpaceIndex::Pending& item : space->queued) {
        vectors += item.agent_id == agent_id ? 1 : 0;
      }
    }
  }
  for (const auto& [agent, partition] : space->Partitions(agent_id)) vectors += partition->size();
  return vectors;
}

std::vector<PartitionReport> EpisodeIndex::Stats(const std::string& tenant) const {
  std::vector<std::shared_ptr<SpaceIndex>> spaces;
  {
    absl::ReaderMutexLock lock(&spaces_mutex_);
    for (const auto& [key, space] : spaces_) {
      if (key.starts_with(SpaceKey(tenant, ""))) spaces.push_back(space);
    }
  }
  std::vector<PartitionReport> reports;
  for (const auto& space : spaces) {
    absl::ReaderMutexLock lock(&space->mutex);
    for (const auto& [agent, partition] : space->partitions) {
      reports.push_back({space->info.name, agent, partition->Stats()});
    }
  }
  std::sort(reports.begin(), reports.end(), [](const auto& a, const auto& b) {
    return std::tie(a.space, a.agent_id) < std::tie(b.space, b.agent_id);
  });
  return reports;
}

}  // namespace engram::retrieval
