// EpisodeStore: the durable home of spaces and episodes, on RocksDB.
//
// Layout: one column family per kind of record, every key starting with the
// tenant (storage/key_encoding.h), so tenants are disjoint key ranges:
//   spaces    (tenant, space)                    -> SpaceRecord
//   episodes  (tenant, space, agent, id)         -> EpisodeRecord (current version)
//   id_index  (tenant, space, id)                -> agent id
//   history   (tenant, space, id, version)       -> EpisodeRecord (older versions)
//   requests  (tenant, space, request id)        -> episode id (idempotent writes)
//   keys      (tenant, space, agent, key)        -> episode id (caller-chosen keys)
//   counters  (tenant, space)                    -> live episode count (merge: add)
//             (tenant, space, "lexical", ...)    -> text statistics (merge: add)
//   postings  (tenant, space, term, agent, id)   -> BM25 posting (storage/lexical_index.h),
//                                                   in the same WriteBatch as the episode
//   versions  (tenant, space, id)                -> current version (8 bytes); lets the
//                                                   index check its snapshots cheaply
//   default   "episode_id_high_water"            -> highest id ever assigned (merge: max)
//   kv_blocks, kv_meta                           -> the KV cache store's (storage/kvcache);
//                                                   here so checkpoints and backups hold them
//
// Durability: every mutating call validates the whole request first (nothing
// is written when validation fails), then commits exactly one WriteBatch. With
// StoreOptions::sync_writes (the default) the call returns only after the WAL
// record is fsynced, so an acknowledged write survives kill -9 and power loss;
// RocksDB's group commit shares one fsync among concurrent writers.
//
// Thread safety: all methods may be called concurrently. Writers to a space
// share `space_mutex_`; creating and deleting spaces takes it exclusively.
// Writes that touch the same episode or request id are serialised by a key
// lock table, so version checks and idempotency hold under races.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/disk_guard.h"
#include "storage/episode.h"
#include "storage/key_lock_table.h"
#include "storage/lexical_index.h"
#include "text/tokenizer.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class WriteBatch;
}  // namespace rocksdb

namespace engram::storage {

// The limits live with the episode types (storage/episode.h): filters are
// bounded by them too.
using ::engram::StoreLimits;

struct StoreOptions {
  // Directory of the RocksDB database; created if missing.
  std::string data_dir = "engram-data";
  // If true, a write returns only after its WAL record is fsynced (survives
  // power loss). If false, acknowledged writes survive a process crash but the
  // last few may be lost on power loss or kernel crash; throughput rises.
  // Default: true.
  bool sync_writes = true;
  // MiB of RocksDB's block cache (uncompressed data blocks, shared by every
  // column family). Search hits are read back through it, so it should hold
  // the hot agents' episodes. Default: 256.
  size_t block_cache_mb = 256;
  // MiB of memtables, all column families together: past it RocksDB flushes
  // the largest. Without a total, each family's memtables grow to their own
  // size (64 MiB, 128 for KV blocks, two of each) before flushing, which
  // adds up to most of a gigabyte. Default: 256.
  size_t memtable_mb = 256;
  // Writes that grow the database are refused with RESOURCE_EXHAUSTED
  // ("disk full") while the data volume has less than this free, so the
  // volume never fills up under RocksDB (storage/disk_guard.h). Deletes are
  // still accepted. Default: 256.
  size_t min_free_disk_mb = 256;
  // A file of this size kept in data_dir and deleted when the volume does
  // fill up (another process, or a floor of 0), so that a resume, a restart
  // and deletes always have room; made again once there is room. 0: none.
  // Default: 64.
  size_t disk_reserve_mb = 64;
  // The shard this store is (common/sharding.h): it assigns episode ids from
  // that shard's range, records the index in the database on first open,
  // and refuses to open a data dir recorded as another shard's (a volume
  // mounted into the wrong pod). Default: 0 (also the unsharded case).
  uint32_t shard_index = 0;
  // Older versions kept per episode (the current one is always kept): a
  // write that adds a version to the history drops those past this many, in
  // the same WriteBatch. 0 keeps every version: the history is then the
  // episode's whole audit trail, and it grows with every update. The limit
  // is recorded in the database; opening it with a lower one (or a first
  // one) trims every episode's history once, before Open returns.
  // Default: 0.
  uint64_t max_history_versions = 0;
  StoreLimits limits;
};

struct ColumnFamilyStats {
  std::string name;
  uint64_t estimated_keys = 0;
  uint64_t sst_bytes = 0;
  uint64_t memtable_bytes = 0;
};

struct BackupInfo {
  uint32_t backup_id = 0;
  int64_t timestamp_s = 0;
  uint64_t size_bytes = 0;
  uint32_t file_count = 0;
};

// Names of spaces, checkpoints and restores: 1-64 characters of
// [A-Za-z0-9_.-], and not "." or "..", so a name is always one safe path
// component.
bool IsValidName(std::string_view name);

class EpisodeStore {
 public:
  // Opens (or creates) the database in options.data_dir. FAILED_PRECONDITION
  // when another process holds it.
  static absl::StatusOr<std::unique_ptr<EpisodeStore>> Open(const StoreOptions& options);
  ~EpisodeStore();
  EpisodeStore(const EpisodeStore&) = delete;
  EpisodeStore& operator=(const EpisodeStore&) = delete;

  const StoreOptions& options() const { return options_; }

  // Spaces. CreateSpace fails with ALREADY_EXISTS for a taken name and
  // INVALID_ARGUMENT for bad settings (text: an unknown stemming language,
  // k1 outside 0..100, b outside 0..1); it records the tokenizer version.
  // DeleteSpace removes the space and all its episodes and postings
  // atomically and returns the episode count.
  absl::StatusOr<SpaceInfo> CreateSpace(const std::string& tenant, const SpaceInfo& space);
  absl::StatusOr<SpaceInfo> GetSpace(const std::string& tenant, const std::string& name);
  // The space's fixed settings from memory, without the episode count (no
  // disk read): what a search or a write needs to validate against.
  absl::StatusOr<SpaceInfo> LookupSpace(const std::string& tenant, const std::string& name);
  absl::StatusOr<std::vector<SpaceInfo>> ListSpaces(const std::string& tenant);
  absl::StatusOr<uint64_t> DeleteSpace(const std::string& tenant, const std::string& name);
  // Every space of every tenant, as (tenant, space) in key order, with counts.
  absl::StatusOr<std::vector<std::pair<std::string, SpaceInfo>>> ListAllSpaces();

  // Stores a batch all-or-nothing; results are in input order. A write whose
  // request_id was applied before is not written again (deduplicated=true).
  // A write whose key names an existing episode of its agent replaces it:
  // same id and created_at, the next version, the old one kept in the
  // history (replaced=true). Two writes of one (agent, key) in a batch are
  // INVALID_ARGUMENT.
  // When `written` is given, it receives the records as written (defaults
  // filled in, ids, versions and timestamps assigned), deduplicated ones left
  // out: what the indexes must hold.
  absl::StatusOr<std::vector<PutResult>> PutEpisodes(const std::string& tenant,
                                                     const std::string& space,
                                                     std::vector<EpisodeWrite> writes,
                                                     std::vector<Episode>* written = nullptr);

  // Stores episodes exported from another store with their ids, versions,
  // keys, timestamps and history, all-or-nothing (an agent moving between
  // shards). An episode held here already at the same or a later version is
  // left alone (already_present), so an interrupted import can be re-run.
  // ALREADY_EXISTS when an id here belongs to another agent or the agent's
  // key names another episode here; INVALID_ARGUMENT for an episode the
  // space would not accept, a history out of order or of another episode,
  // or an id of this shard's range that it never assigned. `written`
  // receives the current versions written, for the indexes.
  absl::StatusOr<ImportResult> ImportEpisodes(const std::string& tenant, const std::string& space,
                                              std::vector<ImportedEpisode> episodes,
                                              std::vector<Episode>* written = nullptr);

  // The id of the episode an agent stored under `key`: NOT_FOUND when there
  // is none (or the space is unknown), INVALID_ARGUMENT for an empty agent
  // or key.
  absl::StatusOr<uint64_t> ResolveKey(const std::string& tenant, const std::string& space,
                                      const std::string& agent_id, const std::string& key);

  // The agent an episode belongs to (fixed for its life), from the id index
  // alone: expired episodes still have one. NOT_FOUND for an unknown space
  // or a deleted episode.
  absl::StatusOr<std::string> AgentOf(const std::string& tenant, const std::string& space,
                                      uint64_t id);

  // NOT_FOUND for unknown, deleted or expired episodes.
  absl::StatusOr<Episode> GetEpisode(const std::string& tenant, const std::string& space,
                                     uint64_t id);

  // Reads many episodes with one batched lookup (RocksDB MultiGet), in the
  // order of `refs`; an entry is nullopt when the episode does not exist
  // under that agent, was deleted or has expired. NOT_FOUND for an unknown
  // space.
  absl::StatusOr<std::vector<std::optional<Episode>>> GetEpisodes(const std::string& tenant,
                                                                  const std::string& space,
                                                                  std::span<const EpisodeRef> refs);

  // The episodes written just before and just after each seed in the same
  // agent and session (id order is write order): up to `per_side` live ones
  // each way, nearest first, looking at most 16 * per_side keys each way
  // (turns of other sessions interleaved are skipped). Seeds carry their
  // session_id. One list per seed, in seed order; seeds themselves are never
  // listed. Deliberation's context expansion (retrieval/deliberation.cc).
  absl::StatusOr<std::vector<std::vector<EpisodeRef>>> SessionNeighbors(
      const std::string& tenant, const std::string& space, std::span<const Episode* const> seeds,
      uint32_t per_side);

  // Replaces the selected fields, keeps the previous version in the history
  // and returns the new version. FAILED_PRECONDITION on a version mismatch;
  // INVALID_ARGUMENT when update.values.key is set and differs (keys are
  // fixed).
  absl::StatusOr<Episode> UpdateEpisode(const std::string& tenant, const std::string& space,
                                        const EpisodeUpdate& update);

  // One page of an episode's versions, oldest first; the last page ends with
  // the current one. page_size 0 means 100; at most 1000. NOT_FOUND for an
  // unknown or deleted episode; INVALID_ARGUMENT for a malformed token or
  // one of another episode.
  absl::StatusOr<HistoryPage> GetHistory(const std::string& tenant, const std::string& space,
                                         uint64_t id, uint32_t page_size = 0,
                                         const std::string& page_token = "");

  // Deletes by ids or by one agent's keys (all must exist, else NOT_FOUND and
  // nothing changes), or every episode of an agent, or of one agent's
  // session. Returns the count.
  // When `deleted_ids` is given, it receives the ids of the episodes deleted.
  absl::StatusOr<uint64_t> DeleteEpisodes(const std::string& tenant, const std::string& space,
                                          const DeleteTarget& target,
                                          std::vector<uint64_t>* deleted_ids = nullptr);

  // One page of matching episodes in key order (agent, then id).
  // page_size 0 means 100; at most 1000.
  absl::StatusOr<EpisodePage> ListEpisodes(const std::string& tenant, const std::string& space,
                                           const EpisodeFilter& filter, uint32_t page_size,
                                           const std::string& page_token);

  // One page of the agents holding episodes in a space (expired ones
  // count until deleted), in key order. page_size 0 means 100; at most
  // 1000. One seek per agent, whatever its episode count.
  struct AgentPage {
    std::vector<std::string> agent_ids;
    std::string next_page_token;  // empty on the last page
  };
  absl::StatusOr<AgentPage> ListAgents(const std::string& tenant, const std::string& space,
                                       uint32_t page_size, const std::string& page_token);

  // Calls `visit` for every live episode matching `filter` until it returns
  // false. DEADLINE_EXCEEDED if `deadline` passes during the scan.
  absl::Status ForEachEpisode(const std::string& tenant, const std::string& space,
                              const EpisodeFilter& filter, absl::Time deadline,
                              const std::function<bool(Episode&&)>& visit);

  // Lexical search (storage/lexical_index.h) over a space's postings.
  // NOT_FOUND for an unknown space.
  absl::StatusOr<LexicalResult> SearchText(const std::string& tenant, const std::string& space,
                                           const LexicalQuery& query);
  // The tokenizer a space's text is indexed with: queries must use it too.
  absl::StatusOr<std::shared_ptr<const text::Tokenizer>> SpaceTokenizer(const std::string& tenant,
                                                                        const std::string& space);
  // What Open did to the lexical index: spaces whose postings were (re)built
  // because they predate it or were built by another tokenizer version.
  struct TextIndexReport {
    uint32_t spaces_rebuilt = 0;
    uint64_t episodes_indexed = 0;
  };
  TextIndexReport text_index_report() const { return text_report_; }

  // Operations.
  // (id, current version) of every episode of a space, in id order, expired
  // ones included. Reads only small keys: the index uses it to check its
  // snapshots against the store at startup.
  absl::Status ForEachEpisodeVersion(
      const std::string& tenant, const std::string& space,
      const std::function<void(uint64_t id, uint64_t version)>& visit);

  std::vector<ColumnFamilyStats> ColumnFamilies();
  // What one tenant holds, for per-tenant limits: its live episodes (exact,
  // from the durable counters) and the bytes its episodes, history, id index
  // and postings take (RocksDB's estimate of the tenant's key ranges, files
  // and memtables: compressed, so below the logical size, and approximate).
  struct TenantUsage {
    uint64_t episodes = 0;
    uint64_t stored_bytes = 0;
  };
  TenantUsage Usage(const std::string& tenant);
  // Compacts every column family, reporting (fraction, stage) after each.
  // CANCELLED when *cancel becomes true.
  absl::Status Compact(const std::function<void(double, const std::string&)>& progress,
                       std::atomic<bool>* cancel);
  // Creates a consistent, openable copy of the database in `dir` (must not exist).
  absl::Status Checkpoint(const std::string& dir);
  absl::StatusOr<BackupInfo> CreateBackup(const std::string& backup_dir);
  absl::StatusOr<std::vector<BackupInfo>> ListBackups(const std::string& backup_dir);
  absl::Status VerifyBackup(const std::string& backup_dir, uint32_t backup_id);
  // Restores a backup (0: latest) into `target_dir`, which must not be this
  // store's data directory. Does not touch the open database.
  static absl::Status RestoreBackup(const std::string& backup_dir, uint32_t backup_id,
                                    const std::string& target_dir);

  // The KV cache store's column families (storage/kvcache/kv_cache_store.h).
  struct KvColumnFamilies {
    rocksdb::DB* db;
    rocksdb::ColumnFamilyHandle* blocks;
    rocksdb::ColumnFamilyHandle* meta;
  };
  KvColumnFamilies kv_column_families();

  // Makes every write so far durable (matters only with sync_writes=false).
  absl::Status SyncWal();

  // The free-space floor, reserve and resume after a full disk, shared with
  // the KV cache store, which writes to the same database.
  DiskGuard& disk_guard() { return *disk_guard_; }

 private:
  EpisodeStore(StoreOptions options, std::unique_ptr<DiskGuard> disk_guard, rocksdb::DB* db,
               std::vector<rocksdb::ColumnFamilyHandle*> handles);
  absl::Status LoadSpaces();
  // Records options_.shard_index in a new database, refuses one recorded as
  // (or holding the ids of) another shard, and sets the next id.
  absl::Status ClaimShard();
  // Rebuilds the postings of every space whose recorded tokenizer version is
  // not the current one (or is absent). Runs inside Open, before any writer.
  absl::Status RebuildStaleTextIndexes();
  absl::Status RebuildTextIndex(const std::string& space_key, SpaceInfo& space);
  // One tokenizer per stemming language, shared by every space using it.
  absl::StatusOr<std::shared_ptr<const text::Tokenizer>> TokenizerFor(
      const std::string& stem_language);
  absl::StatusOr<SpaceInfo> FindSpace(const std::string& tenant, const std::string& name)
      ABSL_SHARED_LOCKS_REQUIRED(space_mutex_);
  // OK when the space exists, else FindSpace's NOT_FOUND.
  absl::Status CheckSpace(const std::string& tenant, const std::string& space)
      ABSL_LOCKS_EXCLUDED(space_mutex_);
  // The agent an episode belongs to, from the id index (AgentOf without the
  // space check): NOT_FOUND for a deleted or unknown episode.
  absl::StatusOr<std::string> ReadAgent(const std::string& tenant, const std::string& space,
                                        uint64_t id);
  absl::StatusOr<Episode> ReadCurrent(const std::string& tenant, const std::string& space,
                                      uint64_t id);
  absl::Status ValidateEpisode(const SpaceInfo& space, const Episode& episode) const;
  // INVALID_ARGUMENT for an empty `what` ("batch", "import") or one past
  // limits.max_batch_size.
  absl::Status CheckBatchSize(size_t count, const char* what) const;
  // Visits matching episodes with their keys, starting after `start_after`
  // (a full episode key; empty: from the first).
  absl::Status ScanEpisodes(const std::string& tenant, const std::string& space,
                            const EpisodeFilter& filter, const std::string& start_after,
                            absl::Time deadline,
                            const std::function<bool(std::string_view, Episode&&)>& visit);
  uint64_t EpisodeCount(const std::string& tenant, const std::string& space);
  // Bytes in every memtable: what a flush writes.
  uint64_t MemtableBytes();
  // Whether the history limit keeps version `version` once the newest older
  // version of its episode is `newest`.
  bool HistoryKeeps(uint64_t version, uint64_t newest) const;
  // Deletes in `batch` the history versions of episode `id` that the limit
  // keeps while `previous` is its newest older version (0: none) but not
  // once `newest` is: blind point deletes, no read. Every earlier write
  // trimmed under the same limit (ApplyHistoryLimit makes sure), so nothing
  // older is left; reading would cost a walk over the tombstones of every
  // earlier trim of the episode.
  void TrimHistory(rocksdb::WriteBatch& batch, const std::string& tenant, const std::string& space,
                   uint64_t id, uint64_t previous, uint64_t newest);
  // At open: records max_history_versions in the database and, when it is
  // lower than the recorded one (or the first), trims every episode's
  // history to it in one pass.
  absl::Status ApplyHistoryLimit();
  // Writes `batch` through the disk guard: a batch that grows the database
  // is refused below the free-space floor; deletes pass.
  absl::Status Commit(rocksdb::WriteBatch* batch, DiskGuard::Write kind = DiskGuard::Write::kGrows);

  const StoreOptions options_;
  std::unique_ptr<DiskGuard> disk_guard_;
  rocksdb::DB* db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  LexicalIndex lexical_;
  TextIndexReport text_report_;
  std::atomic<uint64_t> next_episode_id_{1};
  KeyLockTable key_locks_;
  absl::Mutex backup_mutex_;

  absl::Mutex tokenizer_mutex_;
  absl::flat_hash_map<std::string, std::shared_ptr<const text::Tokenizer>> tokenizers_
      ABSL_GUARDED_BY(tokenizer_mutex_);

  absl::Mutex space_mutex_;
  // (tenant, space) key -> space.
  absl::flat_hash_map<std::string, SpaceInfo> spaces_ ABSL_GUARDED_BY(space_mutex_);
};

}  // namespace engram::storage
