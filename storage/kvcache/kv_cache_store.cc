#include "storage/kvcache/kv_cache_store.h"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "storage/key_encoding.h"
#include "storage/page_token.h"
#include "storage/records.pb.h"
#include "storage/rocks_status.h"

namespace engram::kvcache {
namespace {

using storage::FromRocks;
using storage::KeyBuilder;
using storage::KeyReader;

constexpr char kManifestTag[] = "m";
constexpr char kRefTag[] = "r";
constexpr char kPendingTag[] = "p";

std::string_view DigestView(const Digest& digest) {
  return std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size());
}

std::string BlockKey(const std::string& tenant, const std::string& fingerprint, uint32_t layer,
                     const Digest& digest) {
  return KeyBuilder()
      .AddString(tenant)
      .AddString(fingerprint)
      .AddUint64(layer)
      .AddString(DigestView(digest))
      .Release();
}

std::string RefKey(const std::string& tenant, const std::string& fingerprint,
                   const Digest& digest) {
  return KeyBuilder(kRefTag)
      .AddString(tenant)
      .AddString(fingerprint)
      .AddString(DigestView(digest))
      .Release();
}

std::string ManifestPrefix(const std::string& tenant, const std::string& agent_id) {
  KeyBuilder key(kManifestTag);
  key.AddString(tenant);
  if (!agent_id.empty()) key.AddString(agent_id);
  return key.Release();
}

std::string ManifestKey(const std::string& tenant, const std::string& agent_id,
                        const std::string& model_id) {
  return KeyBuilder(kManifestTag)
      .AddString(tenant)
      .AddString(agent_id)
      .AddString(model_id)
      .Release();
}

std::string EncodeRef(uint64_t count, uint64_t bytes_per_layer, uint64_t layers) {
  return KeyBuilder().AddUint64(count).AddUint64(bytes_per_layer).AddUint64(layers).Release();
}

storage::KvManifestRecord ToRecord(const CacheManifest& manifest) {
  storage::KvManifestRecord record;
  storage::KvModelRecord* model = record.mutable_model();
  model->set_model_id(manifest.model.model_id);
  model->set_n_layers(manifest.model.n_layers);
  model->set_n_kv_heads(manifest.model.n_kv_heads);
  model->set_head_dim(manifest.model.head_dim);
  model->set_dtype(static_cast<uint32_t>(manifest.model.dtype));
  model->set_bits(static_cast<uint32_t>(manifest.model.codec.bits));
  model->set_group_size(static_cast<uint32_t>(manifest.model.codec.group_size));
  record.mutable_tokens()->Add(manifest.tokens.begin(), manifest.tokens.end());
  for (const Digest& digest : manifest.digests) record.add_digests(std::string(DigestView(digest)));
  record.set_updated_at_us(manifest.updated_at_us);
  return record;
}

absl::StatusOr<CacheManifest> FromRecord(std::string_view bytes, std::string agent_id) {
  storage::KvManifestRecord record;
  if (!record.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError("KV cache manifest does not parse");
  }
  CacheManifest manifest;
  manifest.agent_id = std::move(agent_id);
  const storage::KvModelRecord& model = record.model();
  manifest.model.model_id = model.model_id();
  manifest.model.n_layers = model.n_layers();
  manifest.model.n_kv_heads = model.n_kv_heads();
  manifest.model.head_dim = model.head_dim();
  manifest.model.dtype = model.dtype() == 1 ? FloatType::kBFloat16 : FloatType::kFloat16;
  manifest.model.codec.bits = static_cast<int>(model.bits());
  manifest.model.codec.group_size = static_cast<int>(model.group_size());
  manifest.tokens.assign(record.tokens().begin(), record.tokens().end());
  for (const std::string& digest : record.digests()) {
    if (digest.size() != sizeof(Digest)) return absl::DataLossError("KV manifest digest size");
    Digest& out = manifest.digests.emplace_back();
    std::memcpy(out.data(), digest.data(), out.size());
  }
  manifest.updated_at_us = record.updated_at_us();
  if (!manifest.model.Validate().ok() ||
      manifest.digests.size() != BlockCount(manifest.tokens.size())) {
    return absl::DataLossError(
        absl::StrCat("KV cache manifest of agent '", manifest.agent_id, "' is inconsistent"));
  }
  return manifest;
}

}  // namespace

uint64_t CacheManifest::LogicalBytes() const {
  uint64_t bytes = 0;
  for (size_t block = 0; block < block_count(); ++block)
    bytes += model.BlockBytes(BlockTokens(block));
  return bytes * model.n_layers;
}

KvCacheStore::KvCacheStore(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* blocks,
                           rocksdb::ColumnFamilyHandle* meta, KvStoreOptions options)
    : db_(db), blocks_cf_(blocks), meta_cf_(meta), options_(options), pool_(options.pool_bytes) {}

KvCacheStore::~KvCacheStore() = default;

absl::Status KvCacheStore::Write(rocksdb::WriteBatch* batch, bool sync) {
  storage::DiskGuard* guard = options_.disk_guard;
  if (guard != nullptr) {
    // A batch with puts saves something; one without only deletes.
    const auto kind =
        batch->HasPut() ? storage::DiskGuard::Write::kGrows : storage::DiskGuard::Write::kFrees;
    if (absl::Status admitted = guard->Admit(kind, batch->GetDataSize()); !admitted.ok()) {
      return admitted;
    }
  }
  rocksdb::WriteOptions write_options;
  write_options.sync = sync && options_.sync_writes;
  rocksdb::Status written = db_->Write(write_options, batch);
  return guard != nullptr ? guard->Check(written, "writing KV cache store batch")
                          : FromRocks(written, "writing KV cache store batch");
}

absl::Status KvCacheStore::LoadCountsLocked() {
  refs_.clear();
  tenant_bytes_.clear();
  caches_ = unique_blocks_ = stored_bytes_ = 0;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_cf_));
  for (it->Seek(kRefTag); it->Valid() && it->key().starts_with(kRefTag); it->Next()) {
    KeyReader value(it->value().ToStringView());
    absl::StatusOr<uint64_t> count = value.ReadUint64();
    absl::StatusOr<uint64_t> bytes = value.ReadUint64();
    absl::StatusOr<uint64_t> layers = value.ReadUint64();
    if (!count.ok() || !bytes.ok() || !layers.ok()) {
      return absl::DataLossError("KV reference record is malformed");
    }
    absl::StatusOr<std::string> tenant =
        KeyReader(it->key().ToStringView().substr(sizeof(kRefTag) - 1)).ReadString();
    if (!tenant.ok()) return absl::DataLossError("KV reference key is malformed");
    refs_[it->key().ToString()] = RefEntry{*count, *bytes, *layers};
    unique_blocks_ += *layers;
    stored_bytes_ += *bytes * *layers;
    tenant_bytes_[*tenant] += *bytes * *layers;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "loading KV references");
  // Manifests are only counted: references and totals need none of them.
  for (it->Seek(kManifestTag); it->Valid() && it->key().starts_with(kManifestTag); it->Next()) {
    ++caches_;
  }
  return FromRocks(it->status(), "loading KV manifests");
}

absl::Status KvCacheStore::Recover() {
  absl::MutexLock lock(&mutex_);
  if (absl::Status loaded = LoadCountsLocked(); !loaded.ok()) return loaded;
  // Blocks staged by saves that never committed.
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_cf_));
  rocksdb::WriteBatch batch;
  for (it->Seek(kPendingTag); it->Valid() && it->key().starts_with(kPendingTag); it->Next()) {
    std::string_view block_key = it->key().ToStringView().substr(1);
    KeyReader key(block_key);
    absl::StatusOr<std::string> tenant = key.ReadString();
    absl::StatusOr<std::string> fingerprint = key.ReadString();
    absl::StatusOr<uint64_t> layer = key.ReadUint64();
    absl::StatusOr<std::string> digest = key.ReadString();
    if (!tenant.ok() || !fingerprint.ok() || !layer.ok() || !digest.ok() ||
        digest->size() != sizeof(Digest)) {
      return absl::DataLossError("KV staged-block record is malformed");
    }
    Digest d;
    std::memcpy(d.data(), digest->data(), d.size());
    if (!refs_.contains(RefKey(*tenant, *fingerprint, d))) {
      batch.Delete(blocks_cf_, block_key);
    }
    batch.Delete(meta_cf_, it->key());
  }
  if (!it->status().ok()) return FromRocks(it->status(), "loading staged KV blocks");
  return Write(&batch, true);
}

absl::Status KvCacheStore::ValidateAgent(const std::string& agent_id) const {
  if (agent_id.empty() || agent_id.size() > options_.max_agent_id_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("agent_id must be 1-", options_.max_agent_id_bytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KvCacheStore::PendingSave>> KvCacheStore::BeginSave(
    const std::string& tenant, const std::string& agent_id, const ModelSpec& model,
    std::vector<uint32_t> tokens) {
  if (absl::Status valid = ValidateAgent(agent_id); !valid.ok()) return valid;
  if (absl::Status valid = model.Validate(); !valid.ok()) return valid;
  if (tokens.empty() || tokens.size() > options_.max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("a cache holds 1-", options_.max_tokens, " tokens, got ", tokens.size()));
  }
  absl::StatusOr<CacheManifest> existing = GetManifest(tenant, agent_id, model.model_id);
  if (existing.ok() && !(existing->model == model)) {
    return absl::FailedPreconditionError(
        absl::StrCat("agent '", agent_id, "' has a cache of ", existing->model.Describe(),
                     "; this save is for ", model.Describe(), " (delete the old cache first)"));
  }
  if (!existing.ok() && !absl::IsNotFound(existing.status())) return existing.status();
  CacheManifest manifest;
  manifest.agent_id = agent_id;
  manifest.model = model;
  manifest.digests = ChainDigests(tokens);
  manifest.tokens = std::move(tokens);
  return std::unique_ptr<PendingSave>(new PendingSave(this, tenant, std::move(manifest)));
}

KvCacheStore::PendingSave::PendingSave(KvCacheStore* store, std::string tenant,
                                       CacheManifest manifest)
    : store_(store),
      tenant_(std::move(tenant)),
      fingerprint_(manifest.model.Fingerprint()),
      manifest_(std::move(manifest)),
      received_(size_t{manifest_.model.n_layers} * manifest_.block_count(), false) {}

KvCacheStore::PendingSave::~PendingSave() {
  if (!finished_) Rollback();
}

absl::Status KvCacheStore::PendingSave::PutBlock(uint32_t layer, uint32_t block,
                                                 std::string bytes) {
  if (finished_) return absl::FailedPreconditionError("the save has already finished");
  if (layer >= manifest_.model.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer ", layer, " is out of range (the model has ", manifest_.model.n_layers, " layers)"));
  }
  if (block >= manifest_.block_count()) {
    return absl::InvalidArgumentError(absl::StrCat("block ", block, " is out of range (",
                                                   manifest_.tokens.size(), " tokens make ",
                                                   manifest_.block_count(), " blocks)"));
  }
  size_t slot = size_t{layer} * manifest_.block_count() + block;
  if (received_[slot]) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " block ", block, " was sent twice"));
  }
  size_t expected = manifest_.model.BlockBytes(manifest_.BlockTokens(block));
  if (bytes.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " block ", block, " has ",
                                                   bytes.size(), " bytes, expected ", expected));
  }
  const Digest& digest = manifest_.digests[block];
  std::string key = BlockKey(tenant_, fingerprint_, layer, digest);
  std::string ref = RefKey(tenant_, fingerprint_, digest);
  {
    absl::MutexLock lock(&store_->mutex_);
    if (store_->refs_.contains(ref) || store_->pins_.contains(key)) {
      ++store_->pins_[key];
      pinned_.emplace_back(std::move(key), block);
      received_[slot] = true;
      ++shared_;
      return absl::OkStatus();
    }
  }
  rocksdb::WriteBatch batch;
  batch.Put(store_->blocks_cf_, key, bytes);
  batch.Put(store_->meta_cf_, std::string(kPendingTag) + key, "");
  if (absl::Status written = store_->Write(&batch, false); !written.ok()) return written;
  store_->pool_.Put(key, std::make_shared<const std::string>(std::move(bytes)));
  absl::MutexLock lock(&store_->mutex_);
  ++store_->pins_[key];
  pinned_.emplace_back(std::move(key), block);
  received_[slot] = true;
  ++written_;
  return absl::OkStatus();
}

absl::StatusOr<SaveResult> KvCacheStore::PendingSave::Commit() {
  if (finished_) return absl::FailedPreconditionError("the save has already finished");
  const ModelSpec& model = manifest_.model;
  const std::string manifest_key = ManifestKey(tenant_, manifest_.agent_id, model.model_id);
  absl::MutexLock lock(&store_->mutex_);
  // Everything not sent must be held by a committed cache of the same prefix.
  uint32_t omitted = 0;
  for (uint32_t layer = 0; layer < model.n_layers; ++layer) {
    for (uint32_t block = 0; block < manifest_.block_count(); ++block) {
      if (received_[size_t{layer} * manifest_.block_count() + block]) continue;
      if (store_->refs_.contains(RefKey(tenant_, fingerprint_, manifest_.digests[block]))) {
        ++omitted;
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "the save ended without layer ", layer, " block ", block, " (", written_ + shared_,
          " of ", received_.size(), " layer-blocks received) and no stored cache holds it"));
    }
  }
  std::string old_value;
  rocksdb::Status read =
      store_->db_->Get(rocksdb::ReadOptions(), store_->meta_cf_, manifest_key, &old_value);
  if (!read.ok() && !read.IsNotFound()) return FromRocks(read, "reading the previous KV manifest");
  std::optional<CacheManifest> old;
  if (read.ok()) {
    absl::StatusOr<CacheManifest> decoded = FromRecord(old_value, manifest_.agent_id);
    if (!decoded.ok()) return decoded.status();
    if (!(decoded->model == model)) {
      return absl::FailedPreconditionError(
          absl::StrCat("agent '", manifest_.agent_id, "' now has a cache of ",
                       decoded->model.Describe(), "; this save is for ", model.Describe()));
    }
    old = *std::move(decoded);
  }

  manifest_.updated_at_us = absl::ToUnixMicros(absl::Now());
  rocksdb::WriteBatch batch;
  batch.Put(store_->meta_cf_, manifest_key, ToRecord(manifest_).SerializeAsString());
  // References: new digests first, then release the old manifest's, so a
  // digest in both never drops to zero.
  absl::flat_hash_map<std::string, RefEntry> changed;
  for (size_t block = 0; block < manifest_.block_count(); ++block) {
    std::string ref = RefKey(tenant_, fingerprint_, manifest_.digests[block]);
    auto [entry, inserted] = store_->refs_.try_emplace(
        ref, RefEntry{0, model.BlockBytes(manifest_.BlockTokens(block)), model.n_layers});
    if (entry->second.count == 0) {
      store_->unique_blocks_ += model.n_layers;
      store_->stored_bytes_ += entry->second.bytes_per_layer * model.n_layers;
      store_->tenant_bytes_[tenant_] += entry->second.bytes_per_layer * model.n_layers;
    }
    ++entry->second.count;
    batch.Put(store_->meta_cf_, ref,
              EncodeRef(entry->second.count, entry->second.bytes_per_layer, model.n_layers));
  }
  for (const auto& [key, block] : pinned_) {
    batch.Delete(store_->meta_cf_, std::string(kPendingTag) + key);
  }
  std::vector<std::string> erase_from_pool;
  uint32_t freed = 0;
  if (old) store_->ReleaseLocked(tenant_, *old, &batch, &erase_from_pool, &freed);
  absl::Status written = store_->Write(&batch, true);
  if (!written.ok()) {
    store_->LoadCountsLocked().IgnoreError();  // the counts ran ahead of the failed write
    return written;
  }
  if (!old) ++store_->caches_;
  for (const std::string& key : erase_from_pool) store_->pool_.Erase(key);
  for (const auto& [key, block] : pinned_) {
    auto pin = store_->pins_.find(key);
    if (--pin->second == 0) store_->pins_.erase(pin);
  }
  pinned_.clear();
  finished_ = true;
  shared_ += omitted;
  return SaveResult{manifest_.tokens.size(), static_cast<uint32_t>(manifest_.block_count()),
                    written_, shared_};
}

void KvCacheStore::PendingSave::Rollback() {
  finished_ = true;
  rocksdb::WriteBatch batch;
  std::vector<std::string> erase_from_pool;
  {
    absl::MutexLock lock(&store_->mutex_);
    for (const auto& [key, block] : pinned_) {
      auto pin = store_->pins_.find(key);
      if (--pin->second > 0) continue;
      store_->pins_.erase(pin);
      if (store_->refs_.contains(RefKey(tenant_, fingerprint_, manifest_.digests[block]))) continue;
      batch.Delete(store_->blocks_cf_, key);
      batch.Delete(store_->meta_cf_, std::string(kPendingTag) + key);
      erase_from_pool.push_back(key);
    }
  }
  pinned_.clear();
  for (const std::string& key : erase_from_pool) store_->pool_.Erase(key);
  // Best effort: what a failed delete leaves behind is removed by Recover().
  store_->Write(&batch, false).IgnoreError();
}

void KvCacheStore::ReleaseLocked(const std::string& tenant, const CacheManifest& manifest,
                                 rocksdb::WriteBatch* batch,
                                 std::vector<std::string>* erase_from_pool, uint32_t* freed) {
  const std::string fingerprint = manifest.model.Fingerprint();
  for (const Digest& digest : manifest.digests) {
    std::string ref = RefKey(tenant, fingerprint, digest);
    auto entry = refs_.find(ref);
    if (entry == refs_.end()) continue;  // Recover() reported such damage already
    if (--entry->second.count > 0) {
      batch->Put(
          meta_cf_, ref,
          EncodeRef(entry->second.count, entry->second.bytes_per_layer, entry->second.layers));
      continue;
    }
    unique_blocks_ -= manifest.model.n_layers;
    stored_bytes_ -= entry->second.bytes_per_layer * manifest.model.n_layers;
    if (auto bytes = tenant_bytes_.find(tenant); bytes != tenant_bytes_.end()) {
      bytes->second -=
          std::min(bytes->second, entry->second.bytes_per_layer * manifest.model.n_layers);
      if (bytes->second == 0) tenant_bytes_.erase(bytes);
    }
    refs_.erase(entry);
    batch->Delete(meta_cf_, ref);
    ++*freed;
    for (uint32_t layer = 0; layer < manifest.model.n_layers; ++layer) {
      std::string key = BlockKey(tenant, fingerprint, layer, digest);
      if (pins_.contains(key)) {
        // An in-flight save reuses it: keep it as staged, for that save's
        // commit or rollback (or Recover) to settle.
        batch->Put(meta_cf_, std::string(kPendingTag) + key, "");
        continue;
      }
      batch->Delete(blocks_cf_, key);
      erase_from_pool->push_back(std::move(key));
    }
  }
}

absl::StatusOr<CacheManifest> KvCacheStore::GetManifest(const std::string& tenant,
                                                        const std::string& agent_id,
                                                        const std::string& model_id) {
  if (absl::Status valid = ValidateAgent(agent_id); !valid.ok()) return valid;
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), meta_cf_, ManifestKey(tenant, agent_id, model_id), &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(
        absl::StrCat("agent '", agent_id, "' has no KV cache of model '", model_id, "'"));
  }
  if (!s.ok()) return FromRocks(s, "reading a KV manifest");
  return FromRecord(value, agent_id);
}

absl::StatusOr<BlockBytes> KvCacheStore::ReadBlock(const std::string& tenant,
                                                   const CacheManifest& manifest, uint32_t layer,
                                                   uint32_t block) {
  return ReadBlock(tenant, manifest.model.Fingerprint(), manifest, layer, block);
}

absl::StatusOr<BlockBytes> KvCacheStore::ReadBlock(const std::string& tenant,
                                                   const std::string& fingerprint,
                                                   const CacheManifest& manifest, uint32_t layer,
                                                   uint32_t block) {
  if (layer >= manifest.model.n_layers || block >= manifest.block_count()) {
    return absl::InvalidArgumentError("layer or block out of range");
  }
  std::string key = BlockKey(tenant, fingerprint, layer, manifest.digests[block]);
  if (BlockBytes cached = pool_.Get(key)) return cached;
  auto bytes = std::make_shared<std::string>();
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), blocks_cf_, key, bytes.get());
  if (s.IsNotFound()) {
    return absl::AbortedError(absl::StrCat("the KV cache of agent '", manifest.agent_id,
                                           "' changed while it was read; retry"));
  }
  if (!s.ok()) return FromRocks(s, "reading a KV block");
  if (bytes->size() != manifest.model.BlockBytes(manifest.BlockTokens(block))) {
    return absl::DataLossError(
        absl::StrCat("KV block layer ", layer, " block ", block, " of agent '", manifest.agent_id,
                     "' has ", bytes->size(), " bytes, expected ",
                     manifest.model.BlockBytes(manifest.BlockTokens(block))));
  }
  BlockBytes shared = std::move(bytes);
  pool_.Put(key, shared);
  return shared;
}

KvCacheStore::BlockPrefetcher::BlockPrefetcher(
    KvCacheStore* store, std::string tenant, CacheManifest manifest,
    std::vector<std::pair<uint32_t, uint32_t>> layer_blocks, int threads, size_t window)
    : store_(store),
      tenant_(std::move(tenant)),
      manifest_(std::move(manifest)),
      fingerprint_(manifest_.model.Fingerprint()),
      order_(std::move(layer_blocks)),
      window_(std::max<size_t>(window, 1)),
      slots_(order_.size()) {
  int count = static_cast<int>(std::min<size_t>(std::max(threads, 1), order_.size()));
  for (int i = 0; i < count; ++i) threads_.emplace_back([this] { ReadLoop(); });
}

KvCacheStore::BlockPrefetcher::~BlockPrefetcher() {
  {
    absl::MutexLock lock(&mutex_);
    stop_ = true;
  }
  for (std::thread& thread : threads_) thread.join();
}

void KvCacheStore::BlockPrefetcher::ReadLoop() {
  while (true) {
    size_t index;
    {
      absl::MutexLock lock(&mutex_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
        return stop_ || next_claim_ >= order_.size() || next_claim_ < consumed_ + window_;
      };
      mutex_.Await(absl::Condition(&ready));
      if (stop_ || next_claim_ >= order_.size()) return;
      index = next_claim_++;
    }
    absl::StatusOr<BlockBytes> block = store_->ReadBlock(tenant_, fingerprint_, manifest_,
                                                         order_[index].first, order_[index].second);
    absl::MutexLock lock(&mutex_);
    slots_[index] = std::move(block);
  }
}

absl::StatusOr<BlockBytes> KvCacheStore::BlockPrefetcher::Next() {
  absl::MutexLock lock(&mutex_);
  if (consumed_ >= order_.size()) return absl::OutOfRangeError("no more blocks were listed");
  auto ready = [this]()
                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return slots_[consumed_].has_value(); };
  mutex_.Await(absl::Condition(&ready));
  absl::StatusOr<BlockBytes> block = *std::move(slots_[consumed_]);
  slots_[consumed_].reset();
  ++consumed_;
  return block;
}

absl::StatusOr<uint64_t> KvCacheStore::MatchAgentPrefix(const std::string& tenant,
                                                        const std::string& agent_id,
                                                        const ModelSpec& model,
                                                        std::span<const uint32_t> tokens) {
  absl::StatusOr<CacheManifest> manifest = GetManifest(tenant, agent_id, model.model_id);
  if (absl::IsNotFound(manifest.status())) return 0;
  if (!manifest.ok()) return manifest.status();
  if (!(manifest->model == model)) {
    return absl::FailedPreconditionError(absl::StrCat("agent '", agent_id, "' has a cache of ",
                                                      manifest->model.Describe(), ", not ",
                                                      model.Describe()));
  }
  size_t limit = std::min(tokens.size(), manifest->tokens.size());
  size_t matched = 0;
  while (matched < limit && tokens[matched] == manifest->tokens[matched]) ++matched;
  return matched;
}

uint64_t KvCacheStore::MatchSharedPrefix(const std::string& tenant, const ModelSpec& model,
                                         std::span<const uint32_t> tokens) {
  std::vector<Digest> digests = ChainDigests(tokens);
  std::string fingerprint = model.Fingerprint();
  absl::MutexLock lock(&mutex_);
  uint64_t matched = 0;
  for (size_t block = 0; block < digests.size(); ++block) {
    if (!refs_.contains(RefKey(tenant, fingerprint, digests[block]))) break;
    matched += BlockTokenCount(tokens.size(), block);
  }
  return matched;
}

absl::StatusOr<std::vector<CacheManifest>> KvCacheStore::ScanManifests(
    const std::string& prefix, const std::string& resume_after, size_t limit, std::string* last_key,
    bool* more) {
  std::vector<CacheManifest> manifests;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_cf_));
  it->Seek(resume_after.empty() ? prefix : resume_after);
  if (!resume_after.empty() && it->Valid() && it->key() == resume_after) it->Next();
  for (; it->Valid() && it->key().starts_with(prefix); it->Next()) {
    if (manifests.size() == limit) {
      if (more != nullptr) *more = true;
      break;
    }
    if (last_key != nullptr) *last_key = it->key().ToString();
    KeyReader key(it->key().ToStringView().substr(1));
    (void)key.ReadString();
    absl::StatusOr<std::string> agent = key.ReadString();
    if (!agent.ok()) return absl::DataLossError("KV manifest key is malformed");
    absl::StatusOr<CacheManifest> manifest = FromRecord(it->value().ToStringView(), *agent);
    if (!manifest.ok()) return manifest.status();
    manifests.push_back(*std::move(manifest));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "listing KV caches");
  return manifests;
}

absl::StatusOr<CachePage> KvCacheStore::ListCaches(const std::string& tenant,
                                                   const std::string& agent_id, uint32_t page_size,
                                                   const std::string& page_token) {
  if (!agent_id.empty()) {
    if (absl::Status valid = ValidateAgent(agent_id); !valid.ok()) return valid;
  }
  if (page_size > kMaxCachePage) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size ", page_size, " exceeds the maximum of ", kMaxCachePage));
  }
  if (page_size == 0) page_size = kDefaultCachePage;
  const std::string prefix = ManifestPrefix(tenant, agent_id);
  std::string resume_after;
  if (!page_token.empty()) {
    absl::StatusOr<std::string> key = storage::DecodePageToken(page_token, prefix, "this listing");
    if (!key.ok()) return key.status();
    resume_after = *std::move(key);
  }
  CachePage page;
  std::string last_key;
  bool more = false;
  absl::StatusOr<std::vector<CacheManifest>> caches =
      ScanManifests(prefix, resume_after, page_size, &last_key, &more);
  if (!caches.ok()) return caches.status();
  page.caches = *std::move(caches);
  if (more) page.next_page_token = storage::EncodePageToken(last_key);
  return page;
}

absl::StatusOr<DeleteResult> KvCacheStore::DeleteCache(const std::string& tenant,
                                                       const std::string& agent_id,
                                                       const std::string& model_id) {
  if (absl::Status valid = ValidateAgent(agent_id); !valid.ok()) return valid;
  absl::MutexLock lock(&mutex_);
  std::vector<CacheManifest> targets;
  if (model_id.empty()) {
    absl::StatusOr<std::vector<CacheManifest>> all =
        ScanManifests(ManifestPrefix(tenant, agent_id));
    if (!all.ok()) return all.status();
    targets = *std::move(all);
  } else {
    std::string value;
    rocksdb::Status s =
        db_->Get(rocksdb::ReadOptions(), meta_cf_, ManifestKey(tenant, agent_id, model_id), &value);
    if (!s.ok() && !s.IsNotFound()) return FromRocks(s, "reading a KV manifest");
    if (s.ok()) {
      absl::StatusOr<CacheManifest> manifest = FromRecord(value, agent_id);
      if (!manifest.ok()) return manifest.status();
      targets.push_back(*std::move(manifest));
    }
  }
  if (targets.empty()) {
    return absl::NotFoundError(absl::StrCat("agent '", agent_id, "' has no KV cache",
                                            model_id.empty() ? "" : " of model '", model_id,
                                            model_id.empty() ? "" : "'"));
  }
  rocksdb::WriteBatch batch;
  std::vector<std::string> erase_from_pool;
  DeleteResult result;
  for (const CacheManifest& manifest : targets) {
    batch.Delete(meta_cf_, ManifestKey(tenant, agent_id, manifest.model.model_id));
    ReleaseLocked(tenant, manifest, &batch, &erase_from_pool, &result.digests_freed);
    ++result.caches;
  }
  if (absl::Status written = Write(&batch, true); !written.ok()) {
    LoadCountsLocked().IgnoreError();  // the counts ran ahead of the failed write
    return written;
  }
  caches_ -= result.caches;
  for (const std::string& key : erase_from_pool) pool_.Erase(key);
  return result;
}

uint64_t KvCacheStore::TenantStoredBytes(const std::string& tenant) {
  absl::MutexLock lock(&mutex_);
  auto bytes = tenant_bytes_.find(tenant);
  return bytes == tenant_bytes_.end() ? 0 : bytes->second;
}

KvStoreStats KvCacheStore::Stats() {
  KvStoreStats stats;
  {
    absl::MutexLock lock(&mutex_);
    stats.caches = caches_;
    stats.unique_blocks = unique_blocks_;
    stats.stored_bytes = stored_bytes_;
  }
  stats.pool = pool_.Stats();
  return stats;
}

}  // namespace engram::kvcache
