#include "storage/episode_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <functional>
#include <tuple>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/sharding.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/merge_operator.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/backup_engine.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"
#include "storage/episode_filter.h"
#include "storage/key_encoding.h"
#include "storage/page_token.h"
#include "storage/record_codec.h"
#include "storage/rocks_status.h"

namespace engram::storage {
namespace {

// Column family order; the index of each is its handle's index in handles_.
enum Cf {
  kDefault,
  kSpaces,
  kEpisodes,
  kIdIndex,
  kHistory,
  kRequests,
  kCounters,
  kVersions,
  kKvBlocks,
  kKvMeta,
  kPostings,
  kKeys,
  kNumCfs
};
constexpr const char* kCfNames[kNumCfs] = {"default",   "spaces",   "episodes", "id_index",
                                           "history",   "requests", "counters", "versions",
                                           "kv_blocks", "kv_meta",  "postings", "keys"};
// Episodes re-tokenized per WriteBatch when a space's postings are rebuilt.
constexpr size_t kTextRebuildBatch = 512;
constexpr char kIdHighWaterKey[] = "episode_id_high_water";
// The max_history_versions every history was last trimmed to (absent: 0,
// every version kept).
constexpr char kHistoryLimitKey[] = "history_limit";
constexpr char kShardIndexKey[] = "shard_index";
constexpr uint32_t kDefaultPageSize = 100;
constexpr uint32_t kMaxPageSize = 1000;

// Merge operators over 8-byte big-endian integers: running maximum (the id
// high-water mark) and signed sum (episode counters). Merges let concurrent
// batches update the same key without a read-modify-write race.
class Fixed64MergeOperator : public rocksdb::AssociativeMergeOperator {
 public:
  explicit Fixed64MergeOperator(bool take_max) : take_max_(take_max) {}
  bool Merge(const rocksdb::Slice&, const rocksdb::Slice* existing, const rocksdb::Slice& value,
             std::string* new_value, rocksdb::Logger*) const override {
    uint64_t current = existing ? DecodeFixed64(existing->ToStringView()) : 0;
    uint64_t operand = DecodeFixed64(value.ToStringView());
    *new_value = EncodeFixed64(take_max_ ? std::max(current, operand) : current + operand);
    return true;
  }
  const char* Name() const override {
    return take_max_ ? "engram.Fixed64Max" : "engram.Fixed64Add";
  }

 private:
  bool take_max_;
};

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

std::string SpaceKey(const std::string& tenant, const std::string& space) {
  return KeyBuilder().AddString(tenant).AddString(space).Release();
}
std::string AgentPrefix(const std::string& tenant, const std::string& space,
                        const std::string& agent) {
  return KeyBuilder(SpaceKey(tenant, space)).AddString(agent).Release();
}
std::string EpisodeKey(const std::string& tenant, const std::string& space,
                       const std::string& agent, uint64_t id) {
  return KeyBuilder(AgentPrefix(tenant, space, agent)).AddUint64(id).Release();
}
std::string IdIndexKey(const std::string& tenant, const std::string& space, uint64_t id) {
  return KeyBuilder(SpaceKey(tenant, space)).AddUint64(id).Release();
}
std::string HistoryKey(const std::string& tenant, const std::string& space, uint64_t id,
                       uint64_t version) {
  return KeyBuilder(IdIndexKey(tenant, space, id)).AddUint64(version).Release();
}
std::string RequestKey(const std::string& tenant, const std::string& space,
                       const std::string& request_id) {
  return KeyBuilder(SpaceKey(tenant, space)).AddString(request_id).Release();
}
std::string CallerKeyKey(const std::string& tenant, const std::string& space,
                         const std::string& agent, const std::string& key) {
  return KeyBuilder(AgentPrefix(tenant, space, agent)).AddString(key).Release();
}
// Lock-table keys; the leading letter keeps episode, caller-key and request
// keys apart.
std::string EpisodeLockKey(const std::string& tenant, const std::string& space, uint64_t id) {
  return "e" + IdIndexKey(tenant, space, id);
}

// A request's page size: 0 means kDefaultPageSize; past kMaxPageSize is
// INVALID_ARGUMENT.
absl::StatusOr<uint32_t> PageSize(uint32_t requested) {
  if (requested > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size ", requested, " exceeds the maximum of ", kMaxPageSize));
  }
  return requested == 0 ? kDefaultPageSize : requested;
}

absl::Status CheckIdLength(absl::string_view field, const std::string& value, size_t limit) {
  if (value.size() > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is ", value.size(), " bytes; the limit is ", limit));
  }
  return absl::OkStatus();
}

void ApplyField(UpdatableField field, const Episode& from, Episode& to) {
  switch (field) {
    case UpdatableField::kSessionId:
      to.session_id = from.session_id;
      break;
    case UpdatableField::kKind:
      to.kind = from.kind;
      break;
    case UpdatableField::kText:
      to.text = from.text;
      break;
    case UpdatableField::kEmbedding:
      to.embedding = from.embedding;
      break;
    case UpdatableField::kMetadata:
      to.metadata = from.metadata;
      break;
    case UpdatableField::kEventTime:
      to.event_time_us = from.event_time_us;
      break;
    case UpdatableField::kExpiresAt:
      to.expires_at_us = from.expires_at_us;
      break;
    case UpdatableField::kImportance:
      to.importance = from.importance;
      break;
    case UpdatableField::kLinks:
      to.links = from.links;
      break;
  }
}

constexpr UpdatableField kAllUpdatableFields[] = {
    UpdatableField::kSessionId, UpdatableField::kKind,       UpdatableField::kText,
    UpdatableField::kEmbedding, UpdatableField::kMetadata,   UpdatableField::kEventTime,
    UpdatableField::kExpiresAt, UpdatableField::kImportance, UpdatableField::kLinks};

// Applies the server's defaults to a new or updated episode.
void FillDefaults(Episode& episode, int64_t now_us) {
  if (episode.kind.empty()) episode.kind = "message";
  if (episode.event_time_us == 0) episode.event_time_us = now_us;
}

absl::Status ValidateTextSettings(const TextSettings& text) {
  if (!std::isfinite(text.bm25_k1) || text.bm25_k1 < 0 || text.bm25_k1 > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("bm25_k1 is ", text.bm25_k1, "; must be in 0..100"));
  }
  if (!std::isfinite(text.bm25_b) || text.bm25_b < 0 || text.bm25_b > 1) {
    return absl::InvalidArgumentError(absl::StrCat("bm25_b is ", text.bm25_b, "; must be in 0..1"));
  }
  return absl::OkStatus();
}

// INVALID_ARGUMENT for a name IsValidName refuses; the name is shown only
// when it is short enough to be one.
absl::Status InvalidSpaceName(const std::string& name) {
  return absl::InvalidArgumentError(absl::StrCat(
      "space name ",
      name.size() <= 64 ? absl::StrCat("'", name, "'") : absl::StrCat("of ", name.size(), " bytes"),
      " must be 1-64 characters of [A-Za-z0-9_.-]"));
}

}  // namespace

bool IsValidName(std::string_view name) {
  if (name.empty() || name.size() > 64 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

absl::StatusOr<std::unique_ptr<EpisodeStore>> EpisodeStore::Open(const StoreOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create data dir '", options.data_dir, "': ", ec.message()));
  }
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.IncreaseParallelism(2);
  db_options.keep_log_file_num = 5;
  // A WAL file is deleted only once every column family has flushed what it
  // holds; KV blocks fill WALs quickly while small families rarely flush, so
  // cap the total and let RocksDB flush the laggards.
  db_options.max_total_wal_size = 512 << 20;
  // One memtable budget for every column family (StoreOptions::memtable_mb).
  db_options.db_write_buffer_size = options.memtable_mb << 20;
  // One block cache for every column family; bloom filters for the point
  // lookups (reads back, id index, request ids); index and filter blocks
  // cached with a high priority so they are not evicted by data blocks.
  rocksdb::BlockBasedTableOptions table_options;
  table_options.block_cache = rocksdb::NewLRUCache(options.block_cache_mb << 20);
  table_options.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table_options.cache_index_and_filter_blocks = true;
  table_options.cache_index_and_filter_blocks_with_high_priority = true;
  table_options.pin_l0_filter_and_index_blocks_in_cache = true;
  std::shared_ptr<rocksdb::TableFactory> table_factory(
      rocksdb::NewBlockBasedTableFactory(table_options));
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (int cf = 0; cf < kNumCfs; ++cf) {
    rocksdb::ColumnFamilyOptions cf_options(db_options);
    cf_options.table_factory = table_factory;
    if (cf == kDefault) cf_options.merge_operator = std::make_shared<Fixed64MergeOperator>(true);
    if (cf == kCounters) {
      cf_options.merge_operator = std::make_shared<Fixed64MergeOperator>(false);
    }
    if (cf == kPostings) cf_options.merge_operator = LexicalIndex::NewPostingsMergeOperator();
    if (cf == kKvBlocks) {
      // KV cache blocks are large (~288 KiB for a 256-token Llama-8B layer):
      // BlobDB keeps them out of the LSM tree, so compactions move only keys.
      cf_options.enable_blob_files = true;
      cf_options.min_blob_size = 4096;
      cf_options.blob_file_size = 256 << 20;
      cf_options.enable_blob_garbage_collection = true;
      cf_options.write_buffer_size = 128 << 20;
    }
    descriptors.emplace_back(kCfNames[cf], cf_options);
  }
  DiskGuardOptions guard_options;
  guard_options.data_dir = options.data_dir;
  guard_options.min_free_bytes = uint64_t{options.min_free_disk_mb} << 20;
  guard_options.reserve_bytes = uint64_t{options.disk_reserve_mb} << 20;
  auto disk_guard = std::make_unique<DiskGuard>(guard_options);
  // Opening writes a new WAL, a MANIFEST and the recovered memtables. On a
  // volume below the floor the reserve gives way first: a failed open is
  // not retried, since RocksDB can abort on a write after a failed one (see
  // storage/disk_guard.h).
  if (disk_guard->stats().free_bytes < guard_options.min_free_bytes + guard_options.reserve_bytes) {
    disk_guard->ReleaseReserve();
  }
  rocksdb::DB* db = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::Status s = rocksdb::DB::Open(db_options, options.data_dir, descriptors, &handles, &db);
  if (!s.ok()) {
    if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
      return absl::FailedPreconditionError(absl::StrCat(
          "data dir '", options.data_dir, "' is in use by another process: ", s.ToString()));
    }
    return FromRocks(s, absl::StrCat("opening data dir '", options.data_dir, "'"));
  }
  disk_guard->set_resume([db] { return db->Resume(); });
  disk_guard->EnsureReserve();
  std::unique_ptr<EpisodeStore> store(
      new EpisodeStore(options, std::move(disk_guard), db, std::move(handles)));
  if (absl::Status loaded = store->LoadSpaces(); !loaded.ok()) return loaded;
  if (absl::Status rebuilt = store->RebuildStaleTextIndexes(); !rebuilt.ok()) return rebuilt;
  if (absl::Status claimed = store->ClaimShard(); !claimed.ok()) return claimed;
  if (absl::Status limited = store->ApplyHistoryLimit(); !limited.ok()) return limited;
  return store;
}

absl::Status EpisodeStore::ClaimShard() {
  const uint32_t index = options_.shard_index;
  if (index >= sharding::kMaxShards) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard index ", index, " is past the last one, ", sharding::kMaxShards - 1));
  }
  std::string high_water, recorded;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), handles_[kDefault], kIdHighWaterKey, &high_water);
  if (!s.ok() && !s.IsNotFound()) return FromRocks(s, "reading the episode id high-water mark");
  const bool assigned_before = s.ok();
  s = db_->Get(rocksdb::ReadOptions(), handles_[kDefault], kShardIndexKey, &recorded);
  if (!s.ok() && !s.IsNotFound()) return FromRocks(s, "reading the shard index");
  // A database from before sharding records no index; the ids it assigned
  // say whose it is.
  std::optional<uint32_t> owner;
  if (s.ok()) {
    owner = static_cast<uint32_t>(DecodeFixed64(recorded));
  } else if (assigned_before) {
    owner = sharding::ShardOfId(DecodeFixed64(high_water));
  }
  if (owner.has_value() && *owner != index) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data dir '", options_.data_dir, "' holds shard ", *owner,
        "'s data; this engramd is configured as shard ", index,
        " (shard.index or --shard-index). Each shard keeps its own data dir: mount shard ", *owner,
        "'s volume only into shard ", *owner));
  }
  if (!s.ok()) {
    // A few bytes, admitted below the free-space floor like a delete: a
    // restart on a full volume must still come up.
    rocksdb::WriteBatch batch;
    batch.Put(handles_[kDefault], kShardIndexKey, EncodeFixed64(index));
    if (absl::Status committed = Commit(&batch, DiskGuard::Write::kFrees); !committed.ok()) {
      return committed;
    }
  }
  next_episode_id_ = assigned_before ? DecodeFixed64(high_water) + 1 : sharding::FirstId(index);
  return absl::OkStatus();
}

EpisodeStore::EpisodeStore(StoreOptions options, std::unique_ptr<DiskGuard> disk_guard,
                           rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> handles)
    : options_(std::move(options)),
      disk_guard_(std::move(disk_guard)),
      db_(db),
      handles_(std::move(handles)),
      lexical_(db_, handles_[kPostings], handles_[kCounters]) {}

EpisodeStore::~EpisodeStore() {
  // A clean shutdown leaves no WAL to replay (and frees its disk space).
  db_->Flush(rocksdb::FlushOptions(), handles_).PermitUncheckedError();
  for (rocksdb::ColumnFamilyHandle* handle : handles_) db_->DestroyColumnFamilyHandle(handle);
  db_->Close().PermitUncheckedError();
  delete db_;
}

EpisodeStore::KvColumnFamilies EpisodeStore::kv_column_families() {
  return KvColumnFamilies{db_, handles_[kKvBlocks], handles_[kKvMeta]};
}

absl::Status EpisodeStore::LoadSpaces() {
  absl::MutexLock lock(&space_mutex_);
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions(), handles_[kSpaces]));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    absl::StatusOr<SpaceInfo> space = DecodeSpace(it->value().ToStringView());
    if (!space.ok()) return space.status();
    spaces_[it->key().ToString()] = *std::move(space);
  }
  return FromRocks(it->status(), "loading spaces");
}

absl::StatusOr<std::shared_ptr<const text::Tokenizer>> EpisodeStore::TokenizerFor(
    const std::string& stem_language) {
  absl::MutexLock lock(&tokenizer_mutex_);
  auto it = tokenizers_.find(stem_language);
  if (it != tokenizers_.end()) return it->second;
  absl::StatusOr<std::unique_ptr<text::Tokenizer>> created =
      text::Tokenizer::Create({stem_language});
  if (!created.ok()) return created.status();
  std::shared_ptr<const text::Tokenizer> tokenizer = *std::move(created);
  tokenizers_.emplace(stem_language, tokenizer);
  return tokenizer;
}

absl::Status EpisodeStore::RebuildStaleTextIndexes() {
  // Open runs this before the store is shared, but the annotations ask for
  // the lock, and holding it costs nothing here.
  absl::MutexLock lock(&space_mutex_);
  for (auto& [key, space] : spaces_) {
    if (absl::Status rebuilt = RebuildTextIndex(key, space); !rebuilt.ok()) {
      return absl::Status(rebuilt.code(), absl::StrCat("rebuilding the text index of space '",
                                                       space.name, "': ", rebuilt.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status EpisodeStore::RebuildTextIndex(const std::string& space_key, SpaceInfo& space) {
  absl::StatusOr<std::shared_ptr<const text::Tokenizer>> tokenizer =
      TokenizerFor(space.text.stem_language);
  if (!tokenizer.ok()) return tokenizer.status();
  const std::string version = LexicalIndex::IndexedVersion(**tokenizer);
  if (space.text.tokenizer_version == version) return absl::OkStatus();
  // Drop the old postings, index every episode again in batches, and only
  // then record the new version: a crash midway leaves the old version in
  // the record, so the next Open starts over.
  rocksdb::WriteBatch drop;
  lexical_.DropSpace(drop, space_key);
  if (absl::Status s = Commit(&drop); !s.ok()) return s;
  const std::string end = PrefixSuccessor(space_key);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, handles_[kEpisodes]));
  it->Seek(space_key);
  while (true) {
    rocksdb::WriteBatch batch;
    LexicalBatch lexical(lexical_, batch, space_key, **tokenizer);
    size_t in_batch = 0;
    for (; it->Valid() && in_batch < kTextRebuildBatch; it->Next(), ++in_batch) {
      absl::StatusOr<Episode> episode = DecodeEpisode(it->value().ToStringView());
      if (!episode.ok()) return episode.status();
      lexical.Add(*episode);
    }
    if (absl::Status s = FromRocks(it->status(), "scanning episodes"); !s.ok()) return s;
    if (in_batch == 0) break;
    lexical.Finish();
    if (absl::Status s = Commit(&batch); !s.ok()) return s;
    text_report_.episodes_indexed += in_batch;
  }
  SpaceInfo updated = space;
  updated.text.tokenizer_version = version;
  rocksdb::WriteBatch record;
  record.Put(handles_[kSpaces], space_key, EncodeSpace(updated));
  if (absl::Status s = Commit(&record); !s.ok()) return s;
  space = std::move(updated);
  ++text_report_.spaces_rebuilt;
  return absl::OkStatus();
}

absl::Status EpisodeStore::Commit(rocksdb::WriteBatch* batch, DiskGuard::Write kind) {
  if (absl::Status admitted = disk_guard_->Admit(kind, batch->GetDataSize()); !admitted.ok()) {
    return admitted;
  }
  rocksdb::WriteOptions write_options;
  write_options.sync = options_.sync_writes;
  return disk_guard_->Check(db_->Write(write_options, batch), "committing write batch");
}

bool EpisodeStore::HistoryKeeps(uint64_t version, uint64_t newest) const {
  return options_.max_history_versions == 0 || version + options_.max_history_versions > newest;
}

void EpisodeStore::TrimHistory(rocksdb::WriteBatch& batch, const std::string& tenant,
                               const std::string& space, uint64_t id, uint64_t previous,
                               uint64_t newest) {
  const uint64_t max = options_.max_history_versions;
  if (max == 0 || newest <= max) return;
  // Kept while `previous` was the newest: versions above previous - max.
  const uint64_t first = previous > max ? previous - max + 1 : 1;
  for (uint64_t version = first; version <= newest - max; ++version) {
    batch.Delete(handles_[kHistory], HistoryKey(tenant, space, id, version));
  }
}

absl::Status EpisodeStore::ApplyHistoryLimit() {
  const uint64_t limit = options_.max_history_versions;
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), handles_[kDefault], kHistoryLimitKey, &value);
  if (!s.ok() && !s.IsNotFound()) return FromRocks(s, "reading the history limit");
  const uint64_t recorded = s.ok() ? DecodeFixed64(value) : 0;  // none: every version kept
  if (s.ok() && recorded == limit) return absl::OkStatus();
  uint64_t trimmed = 0;
  if (limit != 0 && (recorded == 0 || limit < recorded)) {
    // Keys are (tenant, space, id, version), the version 8 bytes at the end:
    // one episode's versions are adjacent, oldest first.
    const absl::Time start = absl::Now();
    rocksdb::WriteBatch batch;
    std::string episode;
    std::vector<std::pair<std::string, uint64_t>> versions;  // one episode's
    auto trim_episode = [&]() -> absl::Status {
      if (versions.empty()) return absl::OkStatus();
      const uint64_t newest = versions.back().second;
      for (const auto& [key, version] : versions) {
        if (HistoryKeeps(version, newest)) break;
        batch.Delete(handles_[kHistory], key);
        ++trimmed;
      }
      versions.clear();
      if (batch.Count() < 10000) return absl::OkStatus();
      absl::Status committed = Commit(&batch, DiskGuard::Write::kFrees);
      batch.Clear();
      return committed;
    };
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions(), handles_[kHistory]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string_view key = it->key().ToStringView();
      if (key.size() < 8) return absl::DataLossError("a history key shorter than its version");
      if (key.substr(0, key.size() - 8) != episode) {
        if (absl::Status done = trim_episode(); !done.ok()) return done;
        episode = std::string(key.substr(0, key.size() - 8));
      }
      versions.emplace_back(std::string(key), DecodeFixed64(key.substr(key.size() - 8)));
    }
    if (absl::Status status = FromRocks(it->status(), "reading history"); !status.ok()) {
      return status;
    }
    if (absl::Status done = trim_episode(); !done.ok()) return done;
    if (batch.Count() > 0) {
      if (absl::Status committed = Commit(&batch, DiskGuard::Write::kFrees); !committed.ok()) {
        return committed;
      }
    }
    spdlog::info("event=history_trimmed max_history_versions={} versions_dropped={} seconds={:.2f}",
                 limit, trimmed, absl::ToDoubleSeconds(absl::Now() - start));
  }
  // Admitted below the free-space floor, like the trim: it only frees.
  rocksdb::WriteBatch record;
  record.Put(handles_[kDefault], kHistoryLimitKey, EncodeFixed64(limit));
  return Commit(&record, DiskGuard::Write::kFrees);
}

uint64_t EpisodeStore::MemtableBytes() {
  uint64_t bytes = 0;
  db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kCurSizeAllMemTables, &bytes);
  return bytes;
}

uint64_t EpisodeStore::EpisodeCount(const std::string& tenant, const std::string& space) {
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), handles_[kCounters], SpaceKey(tenant, space), &value);
  return s.ok() ? DecodeFixed64(value) : 0;
}

absl::Status EpisodeStore::CheckSpace(const std::string& tenant, const std::string& space) {
  absl::ReaderMutexLock lock(&space_mutex_);
  return FindSpace(tenant, space).status();
}

absl::StatusOr<SpaceInfo> EpisodeStore::FindSpace(const std::string& tenant,
                                                  const std::string& name) {
  if (!IsValidName(name)) return InvalidSpaceName(name);
  auto it = spaces_.find(SpaceKey(tenant, name));
  if (it == spaces_.end()) {
    return absl::NotFoundError(absl::StrCat("space '", name, "' does not exist"));
  }
  return it->second;
}

absl::StatusOr<SpaceInfo> EpisodeStore::CreateSpace(const std::string& tenant,
                                                    const SpaceInfo& requested) {
  if (!IsValidName(requested.name)) return InvalidSpaceName(requested.name);
  if (requested.dimension == 0 || requested.dimension > options_.limits.max_dimension) {
    return absl::InvalidArgumentError(absl::StrCat(
        "space dimension ", requested.dimension, " is outside 1..", options_.limits.max_dimension));
  }
  if (absl::Status valid = ValidateTextSettings(requested.text); !valid.ok()) return valid;
  absl::StatusOr<std::shared_ptr<const text::Tokenizer>> tokenizer =
      TokenizerFor(requested.text.stem_language);
  if (!tokenizer.ok()) return tokenizer.status();
  absl::MutexLock lock(&space_mutex_);
  std::string key = SpaceKey(tenant, requested.name);
  if (spaces_.contains(key)) {
    return absl::AlreadyExistsError(absl::StrCat("space '", requested.name, "' already exists"));
  }
  SpaceInfo space = requested;
  space.text.tokenizer_version = LexicalIndex::IndexedVersion(**tokenizer);
  space.created_at_us = NowMicros();
  space.episode_count = 0;
  rocksdb::WriteBatch batch;
  batch.Put(handles_[kSpaces], key, EncodeSpace(space));
  if (absl::Status s = Commit(&batch); !s.ok()) return s;
  spaces_[key] = space;
  return space;
}

absl::StatusOr<SpaceInfo> EpisodeStore::GetSpace(const std::string& tenant,
                                                 const std::string& name) {
  absl::ReaderMutexLock lock(&space_mutex_);
  absl::StatusOr<SpaceInfo> space = FindSpace(tenant, name);
  if (space.ok()) space->episode_count = EpisodeCount(tenant, name);
  return space;
}

absl::StatusOr<SpaceInfo> EpisodeStore::LookupSpace(const std::string& tenant,
                                                    const std::string& name) {
  absl::ReaderMutexLock lock(&space_mutex_);
  return FindSpace(tenant, name);
}

absl::StatusOr<std::vector<std::pair<std::string, SpaceInfo>>> EpisodeStore::ListAllSpaces() {
  std::vector<std::pair<std::string, SpaceInfo>> spaces;
  {
    absl::ReaderMutexLock lock(&space_mutex_);
    for (const auto& [key, space] : spaces_) {
      KeyReader reader(key);
      absl::StatusOr<std::string> tenant = reader.ReadString();
      if (!tenant.ok()) return absl::DataLossError("malformed space key");
      spaces.emplace_back(*std::move(tenant), space);
    }
  }
  for (auto& [tenant, space] : spaces) space.episode_count = EpisodeCount(tenant, space.name);
  std::sort(spaces.begin(), spaces.end(), [](const auto& a, const auto& b) {
    return std::tie(a.first, a.second.name) < std::tie(b.first, b.second.name);
  });
  return spaces;
}

absl::StatusOr<std::vector<SpaceInfo>> EpisodeStore::ListSpaces(const std::string& tenant) {
  absl::ReaderMutexLock lock(&space_mutex_);
  std::string prefix = KeyBuilder().AddString(tenant).Release();
  std::vector<SpaceInfo> spaces;
  for (const auto& [key, space] : spaces_) {
    if (key.starts_with(prefix)) {
      spaces.push_back(space);
      spaces.back().episode_count = EpisodeCount(tenant, space.name);
    }
  }
  std::sort(spaces.begin(), spaces.end(),
            [](const SpaceInfo& a, const SpaceInfo& b) { return a.name < b.name; });
  return spaces;
}

absl::StatusOr<uint64_t> EpisodeStore::DeleteSpace(const std::string& tenant,
                                                   const std::string& name) {
  absl::MutexLock lock(&space_mutex_);
  if (absl::StatusOr<SpaceInfo> found = FindSpace(tenant, name); !found.ok()) {
    return found.status();
  }
  uint64_t count = EpisodeCount(tenant, name);
  std::string key = SpaceKey(tenant, name);
  std::string end = PrefixSuccessor(key);
  rocksdb::WriteBatch batch;
  batch.Delete(handles_[kSpaces], key);
  batch.Delete(handles_[kCounters], key);
  for (Cf cf : {kEpisodes, kIdIndex, kHistory, kRequests, kVersions, kKeys}) {
    batch.DeleteRange(handles_[cf], key, end);
  }
  lexical_.DropSpace(batch, key);
  if (absl::Status s = Commit(&batch, DiskGuard::Write::kFrees); !s.ok()) return s;
  spaces_.erase(key);
  return count;
}

absl::Status EpisodeStore::ValidateEpisode(const SpaceInfo& space, const Episode& e) const {
  const StoreLimits& limits = options_.limits;
  if (e.agent_id.empty()) return absl::InvalidArgumentError("agent_id is empty");
  if (absl::Status s = CheckIdLength("agent_id", e.agent_id, limits.max_id_bytes); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckIdLength("session_id", e.session_id, limits.max_id_bytes); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckIdLength("kind", e.kind, limits.max_kind_bytes); !s.ok()) return s;
  if (absl::Status s = CheckIdLength("key", e.key, limits.max_id_bytes); !s.ok()) return s;
  if (e.text.size() > limits.max_text_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is ", e.text.size(), " bytes; the limit is ", limits.max_text_bytes));
  }
  if (e.embedding.size() != space.dimension) {
    return absl::InvalidArgumentError(absl::StrCat("embedding has ", e.embedding.size(),
                                                   " dimensions; space '", space.name, "' expects ",
                                                   space.dimension));
  }
  double norm = 0;
  for (size_t i = 0; i < e.embedding.size(); ++i) {
    if (!std::isfinite(e.embedding[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("embedding[", i, "] is ", e.embedding[i], "; values must be finite"));
    }
    norm += double{e.embedding[i]} * e.embedding[i];
  }
  if (space.metric == Metric::kCosine && norm == 0) {
    return absl::InvalidArgumentError(
        "embedding is all zeros; cosine similarity needs a non-zero vector");
  }
  if (e.metadata.size() > limits.max_metadata_entries) {
    return absl::InvalidArgumentError(absl::StrCat("metadata has ", e.metadata.size(),
                                                   " entries; the limit is ",
                                                   limits.max_metadata_entries));
  }
  for (const auto& [key, value] : e.metadata) {
    if (key.empty()) return absl::InvalidArgumentError("metadata key is empty");
    if (std::holds_alternative<double>(value) && !std::isfinite(std::get<double>(value))) {
      return absl::InvalidArgumentError(
          absl::StrCat("metadata '", key, "' is ", std::get<double>(value), "; must be finite"));
    }
  }
  if (size_t bytes = MetadataBytes(e.metadata); bytes > limits.max_metadata_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("metadata is ", bytes, " bytes; the limit is ", limits.max_metadata_bytes));
  }
  if (e.links.size() > limits.max_links) {
    return absl::InvalidArgumentError(
        absl::StrCat("episode has ", e.links.size(), " links; the limit is ", limits.max_links));
  }
  if (std::find(e.links.begin(), e.links.end(), 0) != e.links.end()) {
    return absl::InvalidArgumentError("links contain id 0, which is never an episode id");
  }
  if (!std::isfinite(e.importance)) {
    return absl::InvalidArgumentError(absl::StrCat("importance is ", e.importance));
  }
  if (e.expires_at_us < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("expires_at_us is ", e.expires_at_us, "; must be >= 0"));
  }
  return absl::OkStatus();
}

absl::Status EpisodeStore::CheckBatchSize(size_t count, const char* what) const {
  if (count == 0) return absl::InvalidArgumentError(absl::StrCat("the ", what, " has no episodes"));
  if (count > options_.limits.max_batch_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ", what, " has ", count, " episodes; the limit is ", options_.limits.max_batch_size));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PutResult>> EpisodeStore::PutEpisodes(const std::string& tenant,
                                                                 const std::string& space_name,
                                                                 std::vector<EpisodeWrite> writes,
                                                                 std::vector<Episode>* written) {
  absl::ReaderMutexLock space_lock(&space_mutex_);
  absl::StatusOr<SpaceInfo> space = FindSpace(tenant, space_name);
  if (!space.ok()) return space.status();
  if (absl::Status sized = CheckBatchSize(writes.size(), "batch"); !sized.ok()) return sized;
  int64_t now_us = NowMicros();
  std::vector<std::string> request_keys;
  // (index in `writes`, caller-key key) of every write that has a key.
  std::vector<std::pair<size_t, std::string>> caller_keys;
  absl::flat_hash_map<std::string, size_t> first_with_key;
  for (size_t i = 0; i < writes.size(); ++i) {
    Episode& e = writes[i].episode;
    std::string where = absl::StrCat("episodes[", i, "]: ");
    if (e.id != 0 || e.version != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "id and version are assigned by the server; leave them 0"));
    }
    FillDefaults(e, now_us);
    absl::Status valid = ValidateEpisode(*space, e);
    if (valid.ok()) {
      valid = CheckIdLength("request_id", writes[i].request_id, options_.limits.max_id_bytes);
    }
    if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat(where, valid.message()));
    if (!writes[i].request_id.empty()) {
      request_keys.push_back(RequestKey(tenant, space_name, writes[i].request_id));
    }
    if (!e.key.empty()) {
      std::string key = CallerKeyKey(tenant, space_name, e.agent_id, e.key);
      auto [first, inserted] = first_with_key.try_emplace(key, i);
      if (!inserted) {
        // Which of the two would win is not obvious to a reader of the
        // batch, so neither does.
        return absl::InvalidArgumentError(absl::StrCat(where, "agent '", e.agent_id, "' and key '",
                                                       e.key, "' repeat episodes[", first->second,
                                                       "]; one write per key per batch"));
      }
      caller_keys.emplace_back(i, std::move(key));
    }
  }
  std::vector<std::string> sorted_keys = request_keys;
  std::sort(sorted_keys.begin(), sorted_keys.end());
  if (std::adjacent_find(sorted_keys.begin(), sorted_keys.end()) != sorted_keys.end()) {
    return absl::InvalidArgumentError("two episodes of the batch share a request_id");
  }

  absl::StatusOr<std::shared_ptr<const text::Tokenizer>> tokenizer =
      TokenizerFor(space->text.stem_language);
  if (!tokenizer.ok()) return tokenizer.status();

  // Held until the commit, so a concurrent retry waits and then sees our
  // write, and two writers of one key take turns. Lock order: request and
  // caller keys, then episodes; no one holding an episode lock waits for
  // the others, so the two guards cannot deadlock.
  std::vector<std::string> lock_keys;
  for (const std::string& key : request_keys) lock_keys.push_back("r" + key);
  for (const auto& [i, key] : caller_keys) lock_keys.push_back("k" + key);
  KeyLockTable::Guard request_guard = key_locks_.Lock(std::move(lock_keys));

  // One lookup for every request id and caller key.
  std::vector<rocksdb::Slice> lookup_keys(request_keys.begin(), request_keys.end());
  std::vector<rocksdb::ColumnFamilyHandle*> cfs(request_keys.size(), handles_[kRequests]);
  for (const auto& [i, key] : caller_keys) {
    lookup_keys.emplace_back(key);
    cfs.push_back(handles_[kKeys]);
  }
  std::vector<std::string> found(lookup_keys.size());
  std::vector<rocksdb::Status> lookups =
      db_->MultiGet(rocksdb::ReadOptions(), cfs, lookup_keys, &found);
  for (const rocksdb::Status& lookup : lookups) {
    if (!lookup.ok() && !lookup.IsNotFound()) return FromRocks(lookup, "looking up keys");
  }
  auto request_found = [&](size_t r) { return lookups[r].ok(); };

  // The episodes that keyed writes replace, read under their episode locks
  // so that no update or delete interleaves. A key whose episode was deleted
  // since the lookup names nothing: that write creates a new episode.
  std::vector<std::optional<Episode>> replacing(writes.size());
  std::vector<std::string> episode_locks;
  std::vector<std::pair<size_t, uint64_t>> replaced_ids;
  {
    std::vector<bool> deduplicated(writes.size(), false);
    for (size_t i = 0, r = 0; i < writes.size(); ++i) {
      if (!writes[i].request_id.empty()) deduplicated[i] = request_found(r++);
    }
    for (size_t c = 0; c < caller_keys.size(); ++c) {
      const size_t lookup = request_keys.size() + c;
      const size_t i = caller_keys[c].first;
      if (!lookups[lookup].ok() || deduplicated[i]) continue;
      const uint64_t id = DecodeFixed64(found[lookup]);
      replaced_ids.emplace_back(i, id);
      episode_locks.push_back(EpisodeLockKey(tenant, space_name, id));
    }
  }
  KeyLockTable::Guard episode_guard = key_locks_.Lock(std::move(episode_locks));
  for (const auto& [i, id] : replaced_ids) {
    absl::StatusOr<Episode> current = ReadCurrent(tenant, space_name, id);
    if (absl::IsNotFound(current.status())) continue;
    if (!current.ok()) return current.status();
    replacing[i] = *std::move(current);
  }

  std::vector<PutResult> results(writes.size());
  rocksdb::WriteBatch batch;
  LexicalBatch lexical(lexical_, batch, SpaceKey(tenant, space_name), **tokenizer);
  uint64_t new_count = 0, max_id = 0, changed = 0;
  size_t request_index = 0;
  for (size_t i = 0; i < writes.size(); ++i) {
    if (!writes[i].request_id.empty()) {
      if (request_found(request_index)) {
        results[i] = {DecodeFixed64(found[request_index]), true};
        ++request_index;
        continue;
      }
    }
    Episode& e = writes[i].episode;
    if (replacing[i].has_value()) {
      // The same id at its next version, its predecessor kept as history:
      // what UpdateEpisode does with every field replaced.
      const Episode& old = *replacing[i];
      e.id = old.id;
      e.version = old.version + 1;
      e.created_at_us = old.created_at_us;
      e.updated_at_us = now_us;
      lexical.Remove(old);
      batch.Put(handles_[kHistory], HistoryKey(tenant, space_name, old.id, old.version),
                EncodeEpisode(old));
      TrimHistory(batch, tenant, space_name, old.id, old.version - 1, old.version);
      results[i] = {e.id, false, true};
    } else {
      e.id = next_episode_id_.fetch_add(1);
      if (e.id >= sharding::EndId(options_.shard_index)) {
        return absl::ResourceExhaustedError(
            absl::StrCat("shard ", options_.shard_index, " has assigned all of its ",
                         sharding::kSerialsPerShard - 1, " episode ids (common/sharding.h)"));
      }
      e.version = 1;
      e.created_at_us = e.updated_at_us = now_us;
      batch.Put(handles_[kIdIndex], IdIndexKey(tenant, space_name, e.id), e.agent_id);
      if (!e.key.empty()) {
        batch.Put(handles_[kKeys], CallerKeyKey(tenant, space_name, e.agent_id, e.key),
                  EncodeFixed64(e.id));
      }
      results[i] = {e.id, false};
      ++new_count;
      max_id = std::max(max_id, e.id);
    }
    batch.Put(handles_[kEpisodes], EpisodeKey(tenant, space_name, e.agent_id, e.id),
              EncodeEpisode(e));
    batch.Put(handles_[kVersions], IdIndexKey(tenant, space_name, e.id), EncodeFixed64(e.version));
    lexical.Add(e);
    if (!writes[i].request_id.empty()) {
      batch.Put(handles_[kRequests], request_keys[request_index++], EncodeFixed64(e.id));
    }
    ++changed;
  }
  if (changed == 0) return results;
  lexical.Finish();
  if (new_count > 0) {
    batch.Merge(handles_[kCounters], SpaceKey(tenant, space_name), EncodeFixed64(new_count));
    batch.Merge(handles_[kDefault], kIdHighWaterKey, EncodeFixed64(max_id));
  }
  if (absl::Status s = Commit(&batch); !s.ok()) return s;
  if (written != nullptr) {
    for (size_t i = 0; i < writes.size(); ++i) {
      if (!results[i].deduplicated) written->push_back(std::move(writes[i].episode));
    }
  }
  return results;
}

absl::StatusOr<ImportResult> EpisodeStore::ImportEpisodes(const std::string& tenant,
                                                          const std::string& space_name,
                                                          std::vector<ImportedEpisode> episodes,
                                                          std::vector<Episode>* written) {
  absl::ReaderMutexLock space_lock(&space_mutex_);
  absl::StatusOr<SpaceInfo> space = FindSpace(tenant, space_name);
  if (!space.ok()) return space.status();
  if (absl::Status sized = CheckBatchSize(episodes.size(), "import"); !sized.ok()) return sized;
  // Ids of this shard's range above the high-water mark were never
  // assigned: importing one would collide with a future put.
  const uint64_t next_id = next_episode_id_.load();
  absl::flat_hash_set<uint64_t> ids;
  absl::flat_hash_set<std::string> caller_keys;
  std::vector<std::string> key_locks, episode_locks;
  for (size_t i = 0; i < episodes.size(); ++i) {
    const Episode& e = episodes[i].current;
    const std::string where = absl::StrCat("episodes[", i, "] (id ", e.id, "): ");
    if (e.id == 0 || e.version == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "an imported episode keeps its id and version; both must be set"));
    }
    if (sharding::ShardOfId(e.id) == options_.shard_index && e.id >= next_id) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "the id is in this shard's range but was never assigned here (next is ", next_id,
          ")"));
    }
    if (!ids.insert(e.id).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, "the id repeats in the import"));
    }
    if (absl::Status valid = ValidateEpisode(*space, e); !valid.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, valid.message()));
    }
    uint64_t previous = 0;
    for (const Episode& old : episodes[i].history) {
      if (old.id != e.id || old.agent_id != e.agent_id || old.key != e.key ||
          old.version <= previous || old.version >= e.version) {
        return absl::InvalidArgumentError(absl::StrCat(
            where,
            "its history must hold older versions of the same episode (id, agent and key), "
            "oldest first; version ",
            old.version, " does not fit"));
      }
      if (absl::Status valid = ValidateEpisode(*space, old); !valid.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "history version ", old.version, ": ", valid.message()));
      }
      previous = old.version;
    }
    episode_locks.push_back(EpisodeLockKey(tenant, space_name, e.id));
    if (!e.key.empty()) {
      std::string key = CallerKeyKey(tenant, space_name, e.agent_id, e.key);
      if (!caller_keys.insert(key).second) {
        return absl::InvalidArgumentError(absl::StrCat(where, "agent '", e.agent_id, "''s key '",
                                                       e.key, "' repeats in the import"));
      }
      key_locks.push_back("k" + std::move(key));
    }
  }
  absl::StatusOr<std::shared_ptr<const text::Tokenizer>> tokenizer =
      TokenizerFor(space->text.stem_language);
  if (!tokenizer.ok()) return tokenizer.status();
  // PutEpisodes' lock order: caller keys, then episodes.
  KeyLockTable::Guard key_guard = key_locks_.Lock(std::move(key_locks));
  KeyLockTable::Guard episode_guard = key_locks_.Lock(std::move(episode_locks));

  ImportResult result;
  rocksdb::WriteBatch batch;
  LexicalBatch lexical(lexical_, batch, SpaceKey(tenant, space_name), **tokenizer);
  std::vector<size_t> imported;
  uint64_t new_count = 0;
  for (size_t i = 0; i < episodes.size(); ++i) {
    const Episode& e = episodes[i].current;
    absl::StatusOr<Episode> held = ReadCurrent(tenant, space_name, e.id);
    if (!held.ok() && !absl::IsNotFound(held.status())) return held.status();
    if (held.ok()) {
      if (held->agent_id != e.agent_id) {
        return absl::AlreadyExistsError(absl::StrCat("episode ", e.id, " exists here for agent '",
                                                     held->agent_id, "', not '", e.agent_id, "'"));
      }
      if (held->version >= e.version) {
        ++result.already_present;
        continue;
      }
      if (held->key != e.key) {
        return absl::InvalidArgumentError(absl::StrCat("episode ", e.id, " has key '", held->key,
                                                       "' here, not '", e.key,
                                                       "': a key is fixed for an episode's life"));
      }
      lexical.Remove(*held);
    } else {
      if (!e.key.empty()) {
        std::string holder;
        rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), handles_[kKeys],
                                     CallerKeyKey(tenant, space_name, e.agent_id, e.key), &holder);
        if (s.ok()) {
          return absl::AlreadyExistsError(absl::StrCat("agent '", e.agent_id, "''s key '", e.key,
                                                       "' names episode ", DecodeFixed64(holder),
                                                       " here, not the imported ", e.id));
        }
        if (!s.IsNotFound()) return FromRocks(s, "reading the key index");
        batch.Put(handles_[kKeys], CallerKeyKey(tenant, space_name, e.agent_id, e.key),
                  EncodeFixed64(e.id));
      }
      batch.Put(handles_[kIdIndex], IdIndexKey(tenant, space_name, e.id), e.agent_id);
      ++new_count;
    }
    if (!episodes[i].history.empty()) {
      const uint64_t newest = episodes[i].history.back().version;
      for (const Episode& old : episodes[i].history) {
        if (!HistoryKeeps(old.version, newest)) continue;
        batch.Put(handles_[kHistory], HistoryKey(tenant, space_name, old.id, old.version),
                  EncodeEpisode(old));
      }
      // What the held version's history kept and the import's does not.
      if (held.ok()) TrimHistory(batch, tenant, space_name, e.id, held->version - 1, newest);
    }
    batch.Put(handles_[kEpisodes], EpisodeKey(tenant, space_name, e.agent_id, e.id),
              EncodeEpisode(e));
    batch.Put(handles_[kVersions], IdIndexKey(tenant, space_name, e.id), EncodeFixed64(e.version));
    lexical.Add(e);
    imported.push_back(i);
  }
  result.imported = imported.size();
  if (imported.empty()) return result;
  lexical.Finish();
  if (new_count > 0) {
    batch.Merge(handles_[kCounters], SpaceKey(tenant, space_name), EncodeFixed64(new_count));
  }
  if (absl::Status s = Commit(&batch); !s.ok()) return s;
  if (written != nullptr) {
    for (size_t i : imported) written->push_back(std::move(episodes[i].current));
  }
  return result;
}

absl::StatusOr<std::string> EpisodeStore::AgentOf(const std::string& tenant,
                                                  const std::string& space, uint64_t id) {
  if (absl::Status known = CheckSpace(tenant, space); !known.ok()) return known;
  return ReadAgent(tenant, space, id);
}

absl::StatusOr<std::string> EpisodeStore::ReadAgent(const std::string& tenant,
                                                    const std::string& space, uint64_t id) {
  std::string agent;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), handles_[kIdIndex], IdIndexKey(tenant, space, id), &agent);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("episode ", id, " not found in space '", space, "'"));
  }
  if (!s.ok()) return FromRocks(s, "reading the id index");
  return agent;
}

absl::StatusOr<uint64_t> EpisodeStore::ResolveKey(const std::string& tenant,
                                                  const std::string& space,
                                                  const std::string& agent_id,
                                                  const std::string& key) {
  if (absl::Status known = CheckSpace(tenant, space); !known.ok()) return known;
  if (agent_id.empty() || key.empty()) {
    return absl::InvalidArgumentError("a key lookup needs both agent_id and key");
  }
  std::string id;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), handles_[kKeys],
                               CallerKeyKey(tenant, space, agent_id, key), &id);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("agent '", agent_id, "' has no episode with key '", key,
                                            "' in space '", space, "'"));
  }
  if (!s.ok()) return FromRocks(s, "reading the key index");
  return DecodeFixed64(id);
}

absl::StatusOr<Episode> EpisodeStore::ReadCurrent(const std::string& tenant,
                                                  const std::string& space, uint64_t id) {
  absl::StatusOr<std::string> agent = ReadAgent(tenant, space, id);
  if (!agent.ok()) return agent.status();
  std::string record;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), handles_[kEpisodes],
                               EpisodeKey(tenant, space, *agent, id), &record);
  if (s.IsNotFound()) {
    return absl::DataLossError(absl::StrCat("episode ", id, " is indexed but has no record"));
  }
  if (!s.ok()) return FromRocks(s, "reading an episode");
  return DecodeEpisode(record);
}

absl::StatusOr<Episode> EpisodeStore::GetEpisode(const std::string& tenant,
                                                 const std::string& space, uint64_t id) {
  if (absl::Status known = CheckSpace(tenant, space); !known.ok()) return known;
  absl::StatusOr<Episode> episode = ReadCurrent(tenant, space, id);
  if (episode.ok() && episode->expires_at_us != 0 && episode->expires_at_us <= NowMicros()) {
    return absl::NotFoundError(
        absl::StrCat("episode ", id, " expired at ", episode->expires_at_us, " us"));
  }
  return episode;
}

absl::StatusOr<std::vector<std::optional<Episode>>> EpisodeStore::GetEpisodes(
    const std::string& tenant, const std::string& space, std::span<const EpisodeRef> refs) {
  if (absl::Status known = CheckSpace(tenant, space); !known.ok()) return known;
  std::vector<std::string> keys;
  keys.reserve(refs.size());
  for (const EpisodeRef& ref : refs)
    keys.push_back(EpisodeKey(tenant, space, ref.agent_id, ref.id));
  std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
  std::vector<rocksdb::PinnableSlice> values(keys.size());
  std::vector<rocksdb::Status> statuses(keys.size());
  db_->MultiGet(rocksdb::ReadOptions(), handles_[kEpisodes], slices.size(), slices.data(),
                values.data(), statuses.data());
  const int64_t now_us = NowMicros();
  std::vector<std::optional<Episode>> episodes(refs.size());
  for (size_t i = 0; i < refs.size(); ++i) {
    if (statuses[i].IsNotFound()) continue;
    if (!statuses[i].ok()) return FromRocks(statuses[i], "reading episodes");
    absl::StatusOr<Episode> episode = DecodeEpisode(values[i].ToStringView());
    if (!episode.ok()) return episode.status();
    if (episode->expires_at_us != 0 && episode->expires_at_us <= now_us) continue;
    episodes[i] = *std::move(episode);
  }
  return episodes;
}

absl::StatusOr<std::vector<std::vector<EpisodeRef>>> EpisodeStore::SessionNeighbors(
    const std::string& tenant, const std::string& space, std::span<const Episode* const> seeds,
    uint32_t per_side) {
  if (absl::Status known = CheckSpace(tenant, space); !known.ok()) return known;
  absl::flat_hash_set<uint64_t> seed_ids;
  for (const Episode* seed : seeds) seed_ids.insert(seed->id);
  std::vector<std::vector<EpisodeRef>> neighbors(seeds.size());
  if (per_side == 0) return neighbors;
  const uint32_t max_steps = 16 * per_side;
  rocksdb::ReadOptions read_options;
  std::unique_ptr<const rocksdb::Snapshot, std::function<void(const rocksdb::Snapshot*)>> snapshot(
      db_->GetSnapshot(), [this](const rocksdb::Snapshot* s) { db_->ReleaseSnapshot(s); });
  read_options.snapshot = snapshot.get();
  read_options.total_order_seek = true;  // steps backwards across keys
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, handles_[kEpisodes]));
  const int64_t now_us = NowMicros();
  for (size_t s = 0; s < seeds.size(); ++s) {
    const Episode* seed = seeds[s];
    const std::string prefix = AgentPrefix(tenant, space, seed->agent_id);
    const std::string seed_key = EpisodeKey(tenant, space, seed->agent_id, seed->id);
    for (const bool forward : {false, true}) {
      auto step = [&it, forward] { forward ? it->Next() : it->Prev(); };
      forward ? it->Seek(seed_key) : it->SeekForPrev(seed_key);
      if (it->Valid() && it->key() == seed_key) step();
      uint32_t found = 0;
      for (uint32_t steps = 0;
           steps < max_steps && found < per_side && it->Valid() && it->key().starts_with(prefix);
           ++steps, step()) {
        absl::StatusOr<Episode> episode = DecodeEpisode(it->value().ToStringView());
        if (!episode.ok()) return episode.status();
        if (episode->session_id != seed->session_id) continue;
        if (episode->expires_at_us != 0 && episode->expires_at_us <= now_us) continue;
        ++found;
        if (!seed_ids.contains(episode->id)) neighbors[s].push_back({seed->agent_id, episode->id});
      }
      if (!it->status().ok()) return FromRocks(it->status(), "reading session neighbours");
    }
  }
  return neighbors;
}

absl::StatusOr<Episode> EpisodeStore::UpdateEpisode(const std::string& tenant,
                                                    const std::string& space_name,
                                                    const EpisodeUpdate& update) {
  absl::ReaderMutexLock space_lock(&space_mutex_);
  absl::StatusOr<SpaceInfo> space = FindSpace(tenant, space_name);
  if (!space.ok()) return space.status();
  KeyLockTable::Guard guard = key_locks_.Lock({EpisodeLockKey(tenant, space_name, update.id)});
  absl::StatusOr<Episode> current = ReadCurrent(tenant, space_name, update.id);
  if (!current.ok()) return current.status();
  if (update.expected_version != 0 && update.expected_version != current->version) {
    return absl::FailedPreconditionError(
        absl::StrCat("episode ", update.id, " is at version ", current->version,
                     "; the update expected version ", update.expected_version));
  }
  if (!update.values.key.empty() && update.values.key != current->key) {
    return absl::InvalidArgumentError(
        absl::StrCat("episode ", update.id, "'s key is '", current->key,
                     "'; a key is fixed for an episode's life (put a new episode to rename)"));
  }
  Episode next = *current;
  if (update.fields.empty()) {
    for (UpdatableField field : kAllUpdatableFields) ApplyField(field, update.values, next);
  } else {
    for (UpdatableField field : update.fields) ApplyField(field, update.values, next);
  }
  int64_t now_us = NowMicros();
  FillDefaults(next, now_us);
  if (absl::Status valid = ValidateEpisode(*space, next); !valid.ok()) return valid;
  next.version = current->version + 1;
  next.updated_at_us = now_us;
  rocksdb::WriteBatch batch;
  if (next.text != current->text) {
    absl::StatusOr<std::shared_ptr<const text::Tokenizer>> tokenizer =
        TokenizerFor(space->text.stem_language);
    if (!tokenizer.ok()) return tokenizer.status();
    LexicalBatch lexical(lexical_, batch, SpaceKey(tenant, space_name), **tokenizer);
    lexical.Remove(*current);
    lexical.Add(next);
    lexical.Finish();
  }
  batch.Put(handles_[kHistory], HistoryKey(tenant, space_name, update.id, current->version),
            EncodeEpisode(*current));
  TrimHistory(batch, tenant, space_name, update.id, current->version - 1, current->version);
  batch.Put(handles_[kEpisodes], EpisodeKey(tenant, space_name, next.agent_id, next.id),
            EncodeEpisode(next));
  batch.Put(handles_[kVersions], IdIndexKey(tenant, space_name, next.id),
            EncodeFixed64(next.version));
  if (absl::Status s = Commit(&batch); !s.ok()) return s;
  return next;
}

absl::StatusOr<HistoryPage> EpisodeStore::GetHistory(const std::string& tenant,
                                                     const std::string& space, uint64_t id,
                                                     uint32_t page_size,
                                                     const std::string& page_token) {
  if (absl::Status known = CheckSpace(tenant, space); !known.ok()) return known;
  absl::StatusOr<uint32_t> page_limit = PageSize(page_size);
  if (!page_limit.ok()) return page_limit.status();
  page_size = *page_limit;
  const std::string prefix = IdIndexKey(tenant, space, id);
  std::string start_after;
  if (!page_token.empty()) {
    absl::StatusOr<std::string> key = DecodePageToken(page_token, prefix, "this episode's history");
    if (!key.ok()) return key.status();
    start_after = *std::move(key);
  }
  // One snapshot for every read, so a concurrent update is seen entirely or
  // not at all.
  const rocksdb::Snapshot* snapshot = db_->GetSnapshot();
  rocksdb::ReadOptions read_options;
  read_options.snapshot = snapshot;
  auto release = absl::MakeCleanup([&] { db_->ReleaseSnapshot(snapshot); });
  std::string agent;
  rocksdb::Status s = db_->Get(read_options, handles_[kIdIndex], prefix, &agent);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("episode ", id, " not found in space '", space, "'"));
  }
  if (!s.ok()) return FromRocks(s, "reading the id index");

  HistoryPage page;
  const std::string end = PrefixSuccessor(prefix);
  rocksdb::Slice upper(end);
  read_options.iterate_upper_bound = &upper;
  std::string last_key;
  bool more = false;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, handles_[kHistory]));
    it->Seek(start_after.empty() ? prefix : start_after);
    if (!start_after.empty() && it->Valid() && it->key() == start_after) it->Next();
    for (; it->Valid(); it->Next()) {
      if (page.versions.size() == page_size) {
        more = true;
        break;
      }
      absl::StatusOr<Episode> version = DecodeEpisode(it->value().ToStringView());
      if (!version.ok()) return version.status();
      page.versions.push_back(*std::move(version));
      last_key = it->key().ToString();
    }
    if (absl::Status status = FromRocks(it->status(), "reading history"); !status.ok()) {
      return status;
    }
  }
  // The current version closes the last page, when there is room for it.
  if (more || page.versions.size() == page_size) {
    page.next_page_token = EncodePageToken(last_key.empty() ? start_after : last_key);
    return page;
  }
  read_options.iterate_upper_bound = nullptr;
  std::string record;
  s = db_->Get(read_options, handles_[kEpisodes], EpisodeKey(tenant, space, agent, id), &record);
  if (s.IsNotFound()) {
    return absl::DataLossError(absl::StrCat("episode ", id, " is indexed but has no record"));
  }
  if (!s.ok()) return FromRocks(s, "reading an episode");
  absl::StatusOr<Episode> current = DecodeEpisode(record);
  if (!current.ok()) return current.status();
  page.versions.push_back(*std::move(current));
  return page;
}

absl::StatusOr<uint64_t> EpisodeStore::DeleteEpisodes(const std::string& tenant,
                                                      const std::string& space,
                                                      const DeleteTarget& target,
                                                      std::vector<uint64_t>* deleted_ids) {
  if (target.ids.size() > options_.limits.max_delete_ids) {
    return absl::InvalidArgumentError(absl::StrCat("the delete names ", target.ids.size(),
                                                   " ids; the limit is ",
                                                   options_.limits.max_delete_ids,
                                                   " per call (delete by agent or session, or "
                                                   "in several calls)"));
  }
  absl::ReaderMutexLock space_lock(&space_mutex_);
  absl::StatusOr<SpaceInfo> found = FindSpace(tenant, space);
  if (!found.ok()) return found.status();
  absl::StatusOr<std::shared_ptr<const text::Tokenizer>> tokenizer =
      TokenizerFor(found->text.stem_language);
  if (!tokenizer.ok()) return tokenizer.status();
  std::vector<uint64_t> ids = target.ids;
  // Ids and keys name episodes that must all exist; an agent or a session
  // names whatever it holds.
  const bool named = target.agent_id.empty() || !target.keys.empty();
  if (target.agent_id.empty()) {
    if (!target.session_id.empty()) {
      return absl::InvalidArgumentError("deleting a session needs its agent_id");
    }
    if (!target.keys.empty())
      return absl::InvalidArgumentError("deleting keys needs their agent_id");
    if (ids.empty()) return absl::InvalidArgumentError("no episode ids to delete");
  } else if (!target.keys.empty()) {
    if (!target.session_id.empty()) {
      return absl::InvalidArgumentError("delete by keys or by session, not both");
    }
    if (target.keys.size() > options_.limits.max_delete_ids) {
      return absl::InvalidArgumentError(absl::StrCat("the delete names ", target.keys.size(),
                                                     " keys; the limit is ",
                                                     options_.limits.max_delete_ids, " per call"));
    }
    std::vector<std::string> keys;
    for (const std::string& key : target.keys) {
      if (key.empty()) return absl::InvalidArgumentError("an empty key names no episode");
      keys.push_back(CallerKeyKey(tenant, space, target.agent_id, key));
    }
    std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
    std::vector<std::string> found_ids(keys.size());
    std::vector<rocksdb::ColumnFamilyHandle*> cfs(keys.size(), handles_[kKeys]);
    std::vector<rocksdb::Status> lookups =
        db_->MultiGet(rocksdb::ReadOptions(), cfs, slices, &found_ids);
    ids.clear();
    for (size_t i = 0; i < keys.size(); ++i) {
      if (lookups[i].IsNotFound()) {
        return absl::NotFoundError(absl::StrCat("agent '", target.agent_id,
                                                "' has no episode with key '", target.keys[i],
                                                "' in space '", space, "'; nothing deleted"));
      }
      if (!lookups[i].ok()) return FromRocks(lookups[i], "reading the key index");
      ids.push_back(DecodeFixed64(found_ids[i]));
    }
  } else {
    ids.clear();
    // Expired episodes are deleted too: visit raw records, not the filtered view.
    std::string prefix = AgentPrefix(tenant, space, target.agent_id);
    std::string end = PrefixSuccessor(prefix);
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions read_options;
    read_options.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, handles_[kEpisodes]));
    for (it->Seek(prefix); it->Valid(); it->Next()) {
      if (!target.session_id.empty()) {
        absl::StatusOr<Episode> e = DecodeEpisode(it->value().ToStringView());
        if (!e.ok()) return e.status();
        if (e->session_id != target.session_id) continue;
        ids.push_back(e->id);
      } else {
        KeyReader reader(it->key().ToStringView().substr(prefix.size()));
        absl::StatusOr<uint64_t> id = reader.ReadUint64();
        if (!id.ok()) return absl::DataLossError("malformed episode key");
        ids.push_back(*id);
      }
    }
    if (absl::Status s = FromRocks(it->status(), "scanning episodes"); !s.ok()) return s;
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::vector<std::string> lock_keys;
  for (uint64_t id : ids) lock_keys.push_back(EpisodeLockKey(tenant, space, id));
  KeyLockTable::Guard guard = key_locks_.Lock(std::move(lock_keys));

  rocksdb::WriteBatch batch;
  // The postings to remove come from the text as stored: the record is read
  // under the episode's lock, so no update slips in between.
  LexicalBatch lexical(lexical_, batch, SpaceKey(tenant, space), **tokenizer);
  uint64_t deleted = 0;
  std::vector<uint64_t> deleting;
  for (uint64_t id : ids) {
    absl::StatusOr<Episode> current = ReadCurrent(tenant, space, id);
    if (absl::IsNotFound(current.status())) {
      // Gone since the scan (another delete): nothing to do for an agent-wide
      // delete, but an explicit id or key must exist.
      if (named) {
        return absl::NotFoundError(
            absl::StrCat("episode ", id, " not found in space '", space, "'; nothing deleted"));
      }
      continue;
    }
    if (!current.ok()) return current.status();
    const std::string& agent = current->agent_id;
    lexical.Remove(*current);
    batch.Delete(handles_[kEpisodes], EpisodeKey(tenant, space, agent, id));
    batch.Delete(handles_[kIdIndex], IdIndexKey(tenant, space, id));
    batch.Delete(handles_[kVersions], IdIndexKey(tenant, space, id));
    if (!current->key.empty()) {
      batch.Delete(handles_[kKeys], CallerKeyKey(tenant, space, agent, current->key));
    }
    std::string history_prefix = IdIndexKey(tenant, space, id);
    batch.DeleteRange(handles_[kHistory], history_prefix, PrefixSuccessor(history_prefix));
    ++deleted;
    deleting.push_back(id);
  }
  if (deleted == 0) return 0;
  lexical.Finish();
  batch.Merge(handles_[kCounters], SpaceKey(tenant, space), EncodeFixed64(-deleted));
  if (absl::Status s = Commit(&batch, DiskGuard::Write::kFrees); !s.ok()) return s;
  if (deleted_ids != nullptr) *deleted_ids = std::move(deleting);
  return deleted;
}

absl::StatusOr<EpisodePage> EpisodeStore::ListEpisodes(const std::string& tenant,
                                                       const std::string& space,
                                                       const EpisodeFilter& filter,
                                                       uint32_t page_size,
                                                       const std::string& page_token) {
  absl::StatusOr<uint32_t> page_limit = PageSize(page_size);
  if (!page_limit.ok()) return page_limit.status();
  page_size = *page_limit;
  std::string resume_after;
  if (!page_token.empty()) {
    std::string prefix = filter.agent_id.empty() ? SpaceKey(tenant, space)
                                                 : AgentPrefix(tenant, space, filter.agent_id);
    absl::StatusOr<std::string> key = DecodePageToken(page_token, prefix, "this space and filter");
    if (!key.ok()) return key.status();
    resume_after = *std::move(key);
  }
  EpisodePage page;
  std::string last_key;
  bool more = false;
  absl::Status status = ScanEpisodes(tenant, space, filter, resume_after, absl::InfiniteFuture(),
                                     [&](std::string_view key, Episode&& episode) {
                                       if (page.episodes.size() == page_size) {
                                         more = true;
                                         return false;
                                       }
                                       last_key = std::string(key);
                                       page.episodes.push_back(std::move(episode));
                                       return true;
                                     });
  if (!status.ok()) return status;
  if (more) page.next_page_token = EncodePageToken(last_key);
  return page;
}

absl::StatusOr<EpisodeStore::AgentPage> EpisodeStore::ListAgents(const std::string& tenant,
                                                                 const std::string& space,
                                                                 uint32_t page_size,
                                                                 const std::string& page_token) {
  if (absl::Status known = CheckSpace(tenant, space); !known.ok()) return known;
  absl::StatusOr<uint32_t> page_limit = PageSize(page_size);
  if (!page_limit.ok()) return page_limit.status();
  page_size = *page_limit;
  const std::string prefix = SpaceKey(tenant, space);
  std::string start = prefix;
  if (!page_token.empty()) {
    absl::StatusOr<std::string> last = DecodePageToken(page_token, prefix, "this space's agents");
    if (!last.ok()) return last.status();
    start = PrefixSuccessor(*last);
  }
  const std::string end = PrefixSuccessor(prefix);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, handles_[kEpisodes]));
  AgentPage page;
  std::string last_prefix;
  // Each agent's episodes are one key range: read its id, then skip past it.
  for (it->Seek(start); it->Valid(); it->Seek(PrefixSuccessor(last_prefix))) {
    if (page.agent_ids.size() == page_size) {
      page.next_page_token = EncodePageToken(last_prefix);
      break;
    }
    KeyReader reader(it->key().ToStringView().substr(prefix.size()));
    absl::StatusOr<std::string> agent = reader.ReadString();
    if (!agent.ok()) return absl::DataLossError("malformed episode key");
    last_prefix = AgentPrefix(tenant, space, *agent);
    page.agent_ids.push_back(*std::move(agent));
  }
  if (absl::Status s = FromRocks(it->status(), "listing agents"); !s.ok()) return s;
  return page;
}

absl::Status EpisodeStore::ForEachEpisode(const std::string& tenant, const std::string& space,
                                          const EpisodeFilter& filter, absl::Time deadline,
                                          const std::function<bool(Episode&&)>& visit) {
  return ScanEpisodes(
      tenant, space, filter, /*start_after=*/"", deadline,
      [&visit](std::string_view, Episode&& episode) { return visit(std::move(episode)); });
}

absl::StatusOr<LexicalResult> EpisodeStore::SearchText(const std::string& tenant,
                                                       const std::string& space,
                                                       const LexicalQuery& query) {
  if (absl::Status known = CheckSpace(tenant, space); !known.ok()) return known;
  return lexical_.Search(SpaceKey(tenant, space), query);
}

absl::StatusOr<std::shared_ptr<const text::Tokenizer>> EpisodeStore::SpaceTokenizer(
    const std::string& tenant, const std::string& space) {
  std::string stem_language;
  {
    absl::ReaderMutexLock lock(&space_mutex_);
    absl::StatusOr<SpaceInfo> found = FindSpace(tenant, space);
    if (!found.ok()) return found.status();
    stem_language = found->text.stem_language;
  }
  return TokenizerFor(stem_language);
}

absl::Status EpisodeStore::ForEachEpisodeVersion(
    const std::string& tenant, const std::string& space,
    const std::function<void(uint64_t id, uint64_t version)>& visit) {
  if (absl::Status known = CheckSpace(tenant, space); !known.ok()) return known;
  const std::string prefix = SpaceKey(tenant, space);
  const std::string end = PrefixSuccessor(prefix);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, handles_[kVersions]));
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    KeyReader reader(it->key().ToStringView().substr(prefix.size()));
    absl::StatusOr<uint64_t> id = reader.ReadUint64();
    if (!id.ok()) return absl::DataLossError("malformed version key");
    visit(*id, DecodeFixed64(it->value().ToStringView()));
  }
  return FromRocks(it->status(), "scanning episode versions");
}

absl::Status EpisodeStore::ScanEpisodes(
    const std::string& tenant, const std::string& space, const EpisodeFilter& filter,
    const std::string& start_after, absl::Time deadline,
    const std::function<bool(std::string_view, Episode&&)>& visit) {
  if (absl::Status known = CheckSpace(tenant, space); !known.ok()) return known;
  if (absl::Status valid = ValidateFilter(filter, options_.limits); !valid.ok()) return valid;
  std::string prefix = filter.agent_id.empty() ? SpaceKey(tenant, space)
                                               : AgentPrefix(tenant, space, filter.agent_id);
  std::string end = PrefixSuccessor(prefix);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, handles_[kEpisodes]));
  int64_t now_us = NowMicros();
  uint64_t visited = 0;
  it->Seek(start_after.empty() ? prefix : start_after);
  if (!start_after.empty() && it->Valid() && it->key() == start_after) it->Next();
  for (; it->Valid(); it->Next()) {
    if (++visited % 1024 == 0 && absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("deadline passed after scanning ", visited, " episodes"));
    }
    absl::StatusOr<Episode> episode = DecodeEpisode(it->value().ToStringView());
    if (!episode.ok()) return episode.status();
    if (!MatchesFilter(filter, *episode, now_us)) continue;
    if (!visit(it->key().ToStringView(), *std::move(episode))) return absl::OkStatus();
  }
  return FromRocks(it->status(), "scanning episodes");
}

EpisodeStore::TenantUsage EpisodeStore::Usage(const std::string& tenant) {
  TenantUsage usage;
  const std::string prefix = KeyBuilder().AddString(tenant).Release();
  std::vector<std::string> spaces;
  {
    absl::ReaderMutexLock lock(&space_mutex_);
    for (const auto& [key, space] : spaces_) {
      if (absl::StartsWith(key, prefix)) spaces.push_back(space.name);
    }
  }
  for (const std::string& space : spaces) usage.episodes += EpisodeCount(tenant, space);
  const std::string limit = PrefixSuccessor(prefix);
  rocksdb::Range range(prefix, limit);
  rocksdb::SizeApproximationOptions options;
  options.include_memtables = true;
  options.include_files = true;
  for (int cf : {kEpisodes, kHistory, kIdIndex, kPostings}) {
    uint64_t bytes = 0;
    if (db_->GetApproximateSizes(options, handles_[cf], &range, 1, &bytes).ok()) {
      usage.stored_bytes += bytes;
    }
  }
  return usage;
}

std::vector<ColumnFamilyStats> EpisodeStore::ColumnFamilies() {
  std::vector<ColumnFamilyStats> stats;
  for (int cf = 0; cf < kNumCfs; ++cf) {
    ColumnFamilyStats s;
    s.name = kCfNames[cf];
    db_->GetIntProperty(handles_[cf], "rocksdb.estimate-num-keys", &s.estimated_keys);
    db_->GetIntProperty(handles_[cf], "rocksdb.total-sst-files-size", &s.sst_bytes);
    db_->GetIntProperty(handles_[cf], "rocksdb.cur-size-all-mem-tables", &s.memtable_bytes);
    stats.push_back(s);
  }
  return stats;
}

absl::Status EpisodeStore::Compact(const std::function<void(double, const std::string&)>& progress,
                                   std::atomic<bool>* cancel) {
  for (int cf = 0; cf < kNumCfs; ++cf) {
    std::string stage = absl::StrCat("column family ", kCfNames[cf]);
    progress(static_cast<double>(cf) / static_cast<double>(kNumCfs), stage);
    if (cancel->load()) return absl::CancelledError("compaction cancelled");
    rocksdb::CompactRangeOptions compact_options;
    compact_options.canceled = cancel;
    compact_options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    rocksdb::Status s = db_->CompactRange(compact_options, handles_[cf], nullptr, nullptr);
    if (cancel->load()) return absl::CancelledError("compaction cancelled");
    if (absl::Status status = FromRocks(s, absl::StrCat("compacting ", stage)); !status.ok()) {
      return status;
    }
  }
  progress(1.0, "done");
  return absl::OkStatus();
}

absl::Status EpisodeStore::Checkpoint(const std::string& dir) {
  if (std::filesystem::exists(dir)) {
    return absl::AlreadyExistsError(absl::StrCat("checkpoint directory '", dir, "' exists"));
  }
  // A checkpoint flushes the memtables first (then hard-links the files).
  if (absl::Status admitted = disk_guard_->Admit(DiskGuard::Write::kGrows, MemtableBytes());
      !admitted.ok()) {
    return admitted;
  }
  std::filesystem::create_directories(std::filesystem::path(dir).parent_path());
  rocksdb::Checkpoint* raw = nullptr;
  if (absl::Status s = FromRocks(rocksdb::Checkpoint::Create(db_, &raw), "checkpoint"); !s.ok()) {
    return s;
  }
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  return disk_guard_->Check(checkpoint->CreateCheckpoint(dir), "creating checkpoint");
}

namespace {
absl::StatusOr<std::unique_ptr<rocksdb::BackupEngine>> OpenBackupEngine(
    const std::string& backup_dir) {
  rocksdb::BackupEngine* raw = nullptr;
  rocksdb::IOStatus s = rocksdb::BackupEngine::Open(rocksdb::Env::Default(),
                                                    rocksdb::BackupEngineOptions(backup_dir), &raw);
  if (!s.ok()) {
    return FromRocks(s, absl::StrCat("opening backup directory '", backup_dir, "'"));
  }
  return std::unique_ptr<rocksdb::BackupEngine>(raw);
}

BackupInfo ToBackupInfo(const rocksdb::BackupInfo& info) {
  return BackupInfo{info.backup_id, info.timestamp, info.size, info.number_files};
}
}  // namespace

absl::StatusOr<BackupInfo> EpisodeStore::CreateBackup(const std::string& backup_dir) {
  // A backup flushes the memtables first; the copies may go to the same
  // volume, where the floor applies as it does to any write.
  if (absl::Status admitted = disk_guard_->Admit(DiskGuard::Write::kGrows, MemtableBytes());
      !admitted.ok()) {
    return admitted;
  }
  absl::MutexLock lock(&backup_mutex_);
  absl::StatusOr<std::unique_ptr<rocksdb::BackupEngine>> engine = OpenBackupEngine(backup_dir);
  if (!engine.ok()) return engine.status();
  rocksdb::CreateBackupOptions create_options;
  create_options.flush_before_backup = true;
  rocksdb::BackupID id = 0;
  if (absl::Status s =
          disk_guard_->Check((*engine)->CreateNewBackup(create_options, db_, &id), "backup");
      !s.ok()) {
    return s;
  }
  rocksdb::BackupInfo info;
  if (absl::Status s = FromRocks((*engine)->GetBackupInfo(id, &info), "backup info"); !s.ok()) {
    return s;
  }
  return ToBackupInfo(info);
}

absl::StatusOr<std::vector<BackupInfo>> EpisodeStore::ListBackups(const std::string& backup_dir) {
  absl::MutexLock lock(&backup_mutex_);
  absl::StatusOr<std::unique_ptr<rocksdb::BackupEngine>> engine = OpenBackupEngine(backup_dir);
  if (!engine.ok()) return engine.status();
  std::vector<rocksdb::BackupInfo> infos;
  (*engine)->GetBackupInfo(&infos);
  std::vector<BackupInfo> backups;
  for (const rocksdb::BackupInfo& info : infos) backups.push_back(ToBackupInfo(info));
  return backups;
}

absl::Status EpisodeStore::VerifyBackup(const std::string& backup_dir, uint32_t backup_id) {
  absl::MutexLock lock(&backup_mutex_);
  absl::StatusOr<std::unique_ptr<rocksdb::BackupEngine>> engine = OpenBackupEngine(backup_dir);
  if (!engine.ok()) return engine.status();
  rocksdb::IOStatus s = (*engine)->VerifyBackup(backup_id, /*verify_with_checksum=*/true);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("backup ", backup_id, " does not exist"));
  }
  return FromRocks(s, absl::StrCat("verifying backup ", backup_id));
}

absl::Status EpisodeStore::RestoreBackup(const std::string& backup_dir, uint32_t backup_id,
                                         const std::string& target_dir) {
  std::error_code ec;
  std::filesystem::create_directories(target_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create restore directory '", target_dir, "': ", ec.message()));
  }
  absl::StatusOr<std::unique_ptr<rocksdb::BackupEngine>> engine = OpenBackupEngine(backup_dir);
  if (!engine.ok()) return engine.status();
  rocksdb::IOStatus s = backup_id == 0
                            ? (*engine)->RestoreDBFromLatestBackup(target_dir, target_dir)
                            : (*engine)->RestoreDBFromBackup(backup_id, target_dir, target_dir);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("backup ", backup_id, " does not exist"));
  }
  return FromRocks(s, absl::StrCat("restoring backup ", backup_id, " into '", target_dir, "'"));
}

absl::Status EpisodeStore::SyncWal() { return FromRocks(db_->SyncWAL(), "syncing the WAL"); }

}  // namespace engram::storage
