// KvCacheStore: per-agent quantized KV caches, deduplicated by token prefix.
//
// Layout (two column families of the engram RocksDB, opened by EpisodeStore):
//   kv_blocks (BlobDB)  (tenant, model fingerprint, layer, digest) -> block bytes
//   kv_meta   "m" (tenant, agent, model id)                -> KvManifestRecord
//             "r" (tenant, model fingerprint, digest)      -> references, bytes per
//                                                             layer-block, layers (8 each)
//             "p" + block key                               -> "" (staged, not committed)
// A digest's blocks exist for every layer as long as its reference count is
// positive; the count is the number of manifests that list it.
//
// Saves are atomic. BeginSave opens a PendingSave; PutBlock writes each
// layer-block as it arrives (a block some committed manifest already holds,
// or another save already wrote, is not written again) and marks it staged;
// Commit checks that every layer-block is present, then writes the manifest,
// the reference changes and the removal of blocks nobody references any
// more in one synced WriteBatch. Until then no read can see the save. A save
// that is dropped (stream cancelled, validation failed) deletes the blocks
// only it staged; after a crash, Recover() deletes staged blocks no manifest
// references. In-memory pins keep blocks staged or reused by in-flight saves
// from being deleted by a concurrent commit or delete.
//
// Reads go through a manifest: GetManifest, then ReadBlock(manifest, ...). A
// read that races a delete of the same cache gets ABORTED, never other data.
//
// Thread safety: all methods may be called concurrently; commits, deletes
// and reference changes serialise on one mutex (they are few and short).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "storage/disk_guard.h"
#include "storage/kvcache/block_pool.h"
#include "storage/kvcache/kv_model.h"
#include "storage/kvcache/save_assembler.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class WriteBatch;
}  // namespace rocksdb

namespace engram::kvcache {

struct KvStoreOptions {
  // RAM block pool budget. Default: 4 GiB.
  size_t pool_bytes = size_t{4} << 30;
  // Most tokens one cache may hold. Default: 131072.
  size_t max_tokens = 131072;
  // Most bytes of agent id. Default: 256.
  size_t max_agent_id_bytes = 256;
  // Commit manifests with a synced WAL write. Default: true.
  bool sync_writes = true;
  // The data volume's free-space floor and full-disk recovery
  // (storage/disk_guard.h), shared with the episode store; must outlive the
  // store. nullptr: none. Saves are refused below the floor; deletes pass.
  storage::DiskGuard* disk_guard = nullptr;
};

struct CacheManifest;

// One page of ListCaches.
struct CachePage {
  std::vector<CacheManifest> caches;
  std::string next_page_token;  // empty on the last page
};
inline constexpr uint32_t kDefaultCachePage = 100;
inline constexpr uint32_t kMaxCachePage = 1000;

struct CacheManifest {
  std::string agent_id;
  ModelSpec model;
  std::vector<uint32_t> tokens;
  std::vector<Digest> digests;  // one per block
  int64_t updated_at_us = 0;

  size_t block_count() const { return digests.size(); }
  uint32_t BlockTokens(size_t block) const { return BlockTokenCount(tokens.size(), block); }
  // Bytes of all its layer-blocks (before sharing).
  uint64_t LogicalBytes() const;
};

struct SaveResult {
  uint64_t tokens = 0;
  uint32_t blocks = 0;                // blocks per layer
  uint32_t layer_blocks_written = 0;  // stored by this save
  uint32_t layer_blocks_shared = 0;   // already stored (same prefix), referenced
};

struct DeleteResult {
  uint32_t caches = 0;
  uint32_t digests_freed = 0;  // blocks (all layers) whose last reference went
};

struct KvStoreStats {
  uint64_t caches = 0;
  uint64_t unique_blocks = 0;  // layer-blocks stored once each
  uint64_t stored_bytes = 0;   // their bytes
  BlockPoolStats pool;
};

class KvCacheStore {
 public:
  KvCacheStore(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* blocks,
               rocksdb::ColumnFamilyHandle* meta, KvStoreOptions options);
  ~KvCacheStore();
  KvCacheStore(const KvCacheStore&) = delete;
  KvCacheStore& operator=(const KvCacheStore&) = delete;

  const KvStoreOptions& options() const { return options_; }

  // Loads reference counts and removes what saves interrupted by a crash
  // staged. Call once, before anything else.
  absl::Status Recover();

  class PendingSave : public BlockSink {
   public:
    ~PendingSave() override;  // an uncommitted save is rolled back
    const ModelSpec& model() const { return manifest_.model; }
    const CacheManifest& manifest() const { return manifest_; }
    // Stores one layer-block in the block layout (kv_model.h). INVALID_ARGUMENT
    // for an index out of range, a wrong size or a repeated block.
    absl::Status PutBlock(uint32_t layer, uint32_t block, std::string bytes) override;
    // Makes the save visible. Blocks not put must already be stored for this
    // tenant and model (another cache with the same prefix), else
    // INVALID_ARGUMENT naming the first missing one.
    absl::StatusOr<SaveResult> Commit();

   private:
    friend class KvCacheStore;
    PendingSave(KvCacheStore* store, std::string tenant, CacheManifest manifest);
    void Rollback();

    KvCacheStore* store_;
    const std::string tenant_;
    const std::string fingerprint_;
    CacheManifest manifest_;
    std::vector<bool> received_;                            // layer * blocks + block
    std::vector<std::pair<std::string, uint32_t>> pinned_;  // (block key, block) it pins
    uint32_t written_ = 0;
    uint32_t shared_ = 0;
    bool finished_ = false;
  };

  // INVALID_ARGUMENT for bad ids, geometry or token counts;
  // FAILED_PRECONDITION when the agent has a cache of this model id with
  // another geometry (delete it first).
  absl::StatusOr<std::unique_ptr<PendingSave>> BeginSave(const std::string& tenant,
                                                         const std::string& agent_id,
                                                         const ModelSpec& model,
                                                         std::vector<uint32_t> tokens);

  // NOT_FOUND when the agent has no cache of this model id.
  absl::StatusOr<CacheManifest> GetManifest(const std::string& tenant, const std::string& agent_id,
                                            const std::string& model_id);
  // One layer-block of a manifest's cache, from RAM or disk.
  absl::StatusOr<BlockBytes> ReadBlock(const std::string& tenant, const CacheManifest& manifest,
                                       uint32_t layer, uint32_t block);

  // Reads layer-blocks of a manifest in a given order with `threads` reader
  // threads, at most `window` blocks ahead of the consumer. Blocks that are
  // not in the RAM pool come from RocksDB one read at a time, so a restore
  // from disk is bound by the device's latency unless reads overlap.
  class BlockPrefetcher {
   public:
    BlockPrefetcher(KvCacheStore* store, std::string tenant, CacheManifest manifest,
                    std::vector<std::pair<uint32_t, uint32_t>> layer_blocks, int threads = 4,
                    size_t window = 16);
    ~BlockPrefetcher();
    BlockPrefetcher(const BlockPrefetcher&) = delete;
    BlockPrefetcher& operator=(const BlockPrefetcher&) = delete;
    // The next layer-block in order (the caller must not ask for more than
    // it listed).
    absl::StatusOr<BlockBytes> Next();

   private:
    void ReadLoop();

    KvCacheStore* store_;
    const std::string tenant_;
    const CacheManifest manifest_;
    const std::string fingerprint_;  // the manifest's model's, computed once
    const std::vector<std::pair<uint32_t, uint32_t>> order_;
    const size_t window_;
    absl::Mutex mutex_;
    std::vector<std::optional<absl::StatusOr<BlockBytes>>> slots_ ABSL_GUARDED_BY(mutex_);
    size_t next_claim_ ABSL_GUARDED_BY(mutex_) = 0;
    size_t consumed_ ABSL_GUARDED_BY(mutex_) = 0;
    bool stop_ ABSL_GUARDED_BY(mutex_) = false;
    std::vector<std::thread> threads_;
  };

  // Leading tokens of `tokens` the agent's cache of this model holds (0 when
  // it has none); FAILED_PRECONDITION when its geometry differs from `model`.
  absl::StatusOr<uint64_t> MatchAgentPrefix(const std::string& tenant, const std::string& agent_id,
                                            const ModelSpec& model,
                                            std::span<const uint32_t> tokens);
  // Leading tokens of `tokens` stored for any agent of the tenant with this
  // exact model, in whole blocks.
  uint64_t MatchSharedPrefix(const std::string& tenant, const ModelSpec& model,
                             std::span<const uint32_t> tokens);

  // Caches of the tenant (of one agent when `agent_id` is set), in key order,
  // `page_size` at a time (0: kDefaultCachePage; at most kMaxCachePage),
  // continuing after `page_token` (a previous page's next_page_token; empty
  // for the first page). INVALID_ARGUMENT for a page size above the limit or
  // a token that is malformed or belongs to another listing.
  absl::StatusOr<CachePage> ListCaches(const std::string& tenant, const std::string& agent_id,
                                       uint32_t page_size, const std::string& page_token);
  // The agent's cache of `model_id`, or all its caches when `model_id` is
  // empty. NOT_FOUND when there is none.
  absl::StatusOr<DeleteResult> DeleteCache(const std::string& tenant, const std::string& agent_id,
                                           const std::string& model_id);

  KvStoreStats Stats();
  // Bytes of the layer-blocks `tenant`'s caches hold (each shared block
  // once), as KvStoreStats::stored_bytes counts them; for per-tenant limits.
  uint64_t TenantStoredBytes(const std::string& tenant);

 private:
  struct RefEntry {
    uint64_t count = 0;
    uint64_t bytes_per_layer = 0;
    uint64_t layers = 0;  // the model's: this digest stores as many blocks
  };
  absl::Status ValidateAgent(const std::string& agent_id) const;
  // ReadBlock with the model's fingerprint already computed (a SHA-256, once
  // per prefetcher rather than once per block).
  absl::StatusOr<BlockBytes> ReadBlock(const std::string& tenant, const std::string& fingerprint,
                                       const CacheManifest& manifest, uint32_t layer,
                                       uint32_t block);
  // (Re)loads reference counts and totals from disk.
  absl::Status LoadCountsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Manifests under `prefix` in key order, after `resume_after` when set;
  // stops after `limit` of them, reporting the last key read and whether
  // more follow.
  absl::StatusOr<std::vector<CacheManifest>> ScanManifests(const std::string& prefix,
                                                           const std::string& resume_after = "",
                                                           size_t limit = SIZE_MAX,
                                                           std::string* last_key = nullptr,
                                                           bool* more = nullptr);
  // Drops one reference of each digest (all layers); blocks whose count
  // reaches zero are deleted in `batch` unless an in-flight save pins them.
  void ReleaseLocked(const std::string& tenant, const CacheManifest& manifest,
                     rocksdb::WriteBatch* batch, std::vector<std::string>* erase_from_pool,
                     uint32_t* freed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::Status Write(rocksdb::WriteBatch* batch, bool sync);

  rocksdb::DB* db_;
  rocksdb::ColumnFamilyHandle* blocks_cf_;
  rocksdb::ColumnFamilyHandle* meta_cf_;
  const KvStoreOptions options_;
  BlockPool pool_;

  absl::Mutex mutex_;
  // Ref key -> count of manifests listing the digest.
  absl::flat_hash_map<std::string, RefEntry> refs_ ABSL_GUARDED_BY(mutex_);
  // Block key -> in-flight saves that staged or reuse it.
  absl::flat_hash_map<std::string, int> pins_ ABSL_GUARDED_BY(mutex_);
  uint64_t caches_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t unique_blocks_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t stored_bytes_ ABSL_GUARDED_BY(mutex_) = 0;
  // stored_bytes_ by tenant (blocks are never shared across tenants).
  absl::flat_hash_map<std::string, uint64_t> tenant_bytes_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace engram::kvcache
