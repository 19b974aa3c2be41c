// KvCacheStore on a real RocksDB: atomic saves, prefix sharing and reference
// counts, the RAM pool under a small budget, crash recovery of staged blocks.
#include "storage/kvcache/kv_cache_store.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <sys/wait.h>
#include <unistd.h>

#include <numeric>
#include <random>

#include "storage/episode_store.h"
#include "tests/util/temp_dir.h"

namespace engram::kvcache {
namespace {

const std::string kTenant = "t";

ModelSpec SmallModel(std::string id = "tiny") {
  ModelSpec model;
  model.model_id = std::move(id);
  model.n_layers = 3;
  model.n_kv_heads = 2;
  model.head_dim = 64;
  return model;
}

std::vector<uint32_t> Tokens(size_t count, uint32_t seed) {
  std::vector<uint32_t> tokens(count);
  std::iota(tokens.begin(), tokens.end(), seed * 100000);
  return tokens;
}

// Deterministic block content derived from (layer, first token, tokens).
std::string BlockContent(const ModelSpec& model, uint32_t layer, uint32_t first_token,
                         uint32_t tokens) {
  std::string bytes(model.BlockBytes(tokens), '\0');
  std::mt19937 rng(layer * 7919 + first_token);
  for (char& c : bytes) c = static_cast<char>(rng());
  return bytes;
}

class KvCacheStoreTest : public ::testing::Test {
 protected:
  void Open(size_t pool_bytes = size_t{64} << 20) {
    kv_.reset();
    store_.reset();
    storage::StoreOptions options;
    options.data_dir = dir_.Sub("db");
    store_ = *storage::EpisodeStore::Open(options);
    auto cfs = store_->kv_column_families();
    KvStoreOptions kv_options;
    kv_options.pool_bytes = pool_bytes;
    kv_ = std::make_unique<KvCacheStore>(cfs.db, cfs.blocks, cfs.meta, kv_options);
    ASSERT_TRUE(kv_->Recover().ok());
  }

  // Saves every layer-block of `tokens` (except those `skip` says to omit).
  absl::StatusOr<SaveResult> Save(const std::string& agent, const ModelSpec& model,
                                  const std::vector<uint32_t>& tokens,
                                  const std::function<bool(uint32_t, uint32_t)>& skip = nullptr) {
    auto save = kv_->BeginSave(kTenant, agent, model, tokens);
    if (!save.ok()) return save.status();
    for (uint32_t layer = 0; layer < model.n_layers; ++layer) {
      for (uint32_t block = 0; block < (*save)->manifest().block_count(); ++block) {
        if (skip && skip(layer, block)) continue;
        uint32_t count = (*save)->manifest().BlockTokens(block);
        absl::Status put = (*save)->PutBlock(
            layer, block, BlockContent(model, layer, tokens[block * kBlockTokens], count));
        if (!put.ok()) return put;
      }
    }
    return (*save)->Commit();
  }

  void ExpectCacheReadsBack(const std::string& agent, const ModelSpec& model,
                            const std::vector<uint32_t>& tokens) {
    auto manifest = kv_->GetManifest(kTenant, agent, model.model_id);
    ASSERT_TRUE(manifest.ok()) << manifest.status();
    EXPECT_EQ(manifest->tokens, tokens);
    for (uint32_t layer = 0; layer < model.n_layers; ++layer) {
      for (uint32_t block = 0; block < manifest->block_count(); ++block) {
        auto bytes = kv_->ReadBlock(kTenant, *manifest, layer, block);
        ASSERT_TRUE(bytes.ok()) << bytes.status();
        EXPECT_EQ(**bytes, BlockContent(model, layer, tokens[block * kBlockTokens],
                                        manifest->BlockTokens(block)))
            << "layer " << layer << " block " << block;
      }
    }
  }

  // Counts keys of the blocks column family (what is on disk, referenced or not).
  size_t StoredBlockKeys() {
    auto cfs = store_->kv_column_families();
    std::unique_ptr<rocksdb::Iterator> it(cfs.db->NewIterator(rocksdb::ReadOptions(), cfs.blocks));
    size_t count = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) ++count;
    return count;
  }

  engram::testing::TempDir dir_;
  std::unique_ptr<storage::EpisodeStore> store_;
  std::unique_ptr<KvCacheStore> kv_;
};

TEST_F(KvCacheStoreTest, SaveThenReadBackThroughTheManifest) {
  Open();
  ModelSpec model = SmallModel();
  std::vector<uint32_t> tokens = Tokens(600, 1);  // 256 + 256 + 88
  auto saved = Save("a", model, tokens);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->blocks, 3u);
  EXPECT_EQ(saved->layer_blocks_written, 9u);
  ExpectCacheReadsBack("a", model, tokens);
  EXPECT_EQ(kv_->Stats().caches, 1u);
  EXPECT_EQ(kv_->Stats().unique_blocks, 9u);
  // Survives a reopen (RAM pool empty: reads come from disk).
  Open();
  ExpectCacheReadsBack("a", model, tokens);
  EXPECT_EQ(kv_->Stats().unique_blocks, 9u);
  EXPECT_GT(kv_->Stats().pool.misses, 0u);
  EXPECT_EQ(kv_->GetManifest(kTenant, "b", "tiny").status().code(), absl::StatusCode::kNotFound);
}

// ListCaches pages through every cache once, in key order; tokens from
// another listing, malformed tokens and oversized pages are refused.
TEST_F(KvCacheStoreTest, ListCachesPagesThroughEveryCacheOnce) {
  Open();
  ModelSpec model = SmallModel();
  for (const char* agent : {"a1", "a2", "a3", "a4", "a5"}) {
    ASSERT_TRUE(Save(agent, model, Tokens(20, 3)).ok());
  }
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto page = kv_->ListCaches(kTenant, "", 2, token);
    ASSERT_TRUE(page.ok()) << page.status();
    ASSERT_LE(page->caches.size(), 2u);
    for (const CacheManifest& cache : page->caches) seen.push_back(cache.agent_id);
    token = page->next_page_token;
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(seen, (std::vector<std::string>{"a1", "a2", "a3", "a4", "a5"}));
  EXPECT_EQ(pages, 3);
  auto all = kv_->ListCaches(kTenant, "", 0, "");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->caches.size(), 5u);
  EXPECT_TRUE(all->next_page_token.empty());
  auto first = kv_->ListCaches(kTenant, "", 1, "");
  ASSERT_TRUE(first.ok());
  ASSERT_FALSE(first->next_page_token.empty());
  EXPECT_EQ(kv_->ListCaches(kTenant, "a3", 1, first->next_page_token).status().code(),
            absl::StatusCode::kInvalidArgument)
      << "a token of another listing";
  EXPECT_EQ(kv_->ListCaches(kTenant, "", 1, "xyz").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv_->ListCaches(kTenant, "", kMaxCachePage + 1, "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(KvCacheStoreTest, SharedPrefixIsStoredOnceAndReferenceCounted) {
  Open();
  ModelSpec model = SmallModel();
  std::vector<uint32_t> a = Tokens(700, 1);
  std::vector<uint32_t> b(a.begin(), a.begin() + 512);  // shares two full blocks
  for (uint32_t t : Tokens(100, 2)) b.push_back(t);
  ASSERT_TRUE(Save("a", model, a).ok());
  auto saved_b = Save("b", model, b);
  ASSERT_TRUE(saved_b.ok()) << saved_b.status();
  EXPECT_EQ(saved_b->layer_blocks_shared, 6u);
  EXPECT_EQ(saved_b->layer_blocks_written, 3u);
  EXPECT_EQ(kv_->Stats().unique_blocks, 12u);  // (3 + 1) blocks x 3 layers
  EXPECT_EQ(StoredBlockKeys(), 12u);

  EXPECT_EQ(kv_->MatchSharedPrefix(kTenant, model, b), 612u);
  std::vector<uint32_t> probe(a.begin(), a.begin() + 600);
  EXPECT_EQ(kv_->MatchSharedPrefix(kTenant, model, probe), 512u);  // whole blocks only
  EXPECT_EQ(*kv_->MatchAgentPrefix(kTenant, "a", model, probe), 600u);
  EXPECT_EQ(*kv_->MatchAgentPrefix(kTenant, "b", model, probe), 512u);
  EXPECT_EQ(*kv_->MatchAgentPrefix(kTenant, "nobody", model, probe), 0u);
  EXPECT_EQ(kv_->MatchSharedPrefix(kTenant, SmallModel("other"), b), 0u) << "models never share";

  auto deleted = kv_->DeleteCache(kTenant, "a", "");
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(deleted->digests_freed, 1u);  // a's last block; the shared two stay
  EXPECT_EQ(kv_->Stats().unique_blocks, 9u);
  EXPECT_EQ(StoredBlockKeys(), 9u);
  ExpectCacheReadsBack("b", model, b);
  Open();  // counts survive a restart
  EXPECT_EQ(kv_->Stats().unique_blocks, 9u);
  ASSERT_TRUE(kv_->DeleteCache(kTenant, "b", "tiny").ok());
  EXPECT_EQ(kv_->Stats().unique_blocks, 0u);
  EXPECT_EQ(StoredBlockKeys(), 0u);
  EXPECT_EQ(kv_->DeleteCache(kTenant, "b", "tiny").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(KvCacheStoreTest, ResaveReplacesAndOmittedSharedBlocksAreReferenced) {
  Open();
  ModelSpec model = SmallModel();
  std::vector<uint32_t> first = Tokens(300, 1);
  ASSERT_TRUE(Save("a", model, first).ok());
  // Extend: the first block is stored already and may be left out.
  std::vector<uint32_t> longer = Tokens(520, 1);
  auto saved = Save("a", model, longer, [](uint32_t, uint32_t block) { return block == 0; });
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->layer_blocks_shared, 3u);
  ExpectCacheReadsBack("a", model, longer);
  EXPECT_EQ(kv_->Stats().caches, 1u);
  EXPECT_EQ(kv_->Stats().unique_blocks, 9u) << "the old 44-token tail block was freed";
  EXPECT_EQ(StoredBlockKeys(), 9u);
}

TEST_F(KvCacheStoreTest, IncompleteOrInvalidSavesLeaveNothing) {
  Open();
  ModelSpec model = SmallModel();
  std::vector<uint32_t> tokens = Tokens(400, 3);
  {
    auto save = *kv_->BeginSave(kTenant, "a", model, tokens);
    EXPECT_EQ(save->PutBlock(3, 0, "").code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(save->PutBlock(0, 2, "").code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(save->PutBlock(0, 0, "short").code(), absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE(save->PutBlock(0, 0, BlockContent(model, 0, tokens[0], 256)).ok());
    EXPECT_EQ(save->PutBlock(0, 0, BlockContent(model, 0, tokens[0], 256)).code(),
              absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE(save->PutBlock(1, 1, BlockContent(model, 1, tokens[256], 144)).ok());
    absl::StatusOr<SaveResult> committed = save->Commit();
    EXPECT_EQ(committed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(committed.status().message().find("without layer"), std::string::npos);
    EXPECT_EQ(StoredBlockKeys(), 2u) << "staged until the save is dropped";
  }
  EXPECT_EQ(StoredBlockKeys(), 0u);
  EXPECT_EQ(kv_->GetManifest(kTenant, "a", "tiny").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(kv_->Stats().caches, 0u);

  EXPECT_EQ(kv_->BeginSave(kTenant, "", model, tokens).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv_->BeginSave(kTenant, "a", model, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  ModelSpec bad = model;
  bad.head_dim = 96;  // not a multiple of the group size 64
  EXPECT_EQ(kv_->BeginSave(kTenant, "a", bad, tokens).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(KvCacheStoreTest, GeometryMismatchIsAnError) {
  Open();
  ModelSpec model = SmallModel();
  std::vector<uint32_t> tokens = Tokens(100, 4);
  ASSERT_TRUE(Save("a", model, tokens).ok());
  ModelSpec other = model;
  other.n_kv_heads = 4;
  EXPECT_EQ(kv_->BeginSave(kTenant, "a", other, tokens).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(kv_->MatchAgentPrefix(kTenant, "a", other, tokens).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ExpectCacheReadsBack("a", model, tokens);
}

TEST_F(KvCacheStoreTest, EvictionUnderASmallPoolThenRestoreFromDisk) {
  ModelSpec model = SmallModel();
  Open(/*pool_bytes=*/2 * model.BlockBytes(256));
  std::vector<uint32_t> tokens = Tokens(1024, 5);
  ASSERT_TRUE(Save("a", model, tokens).ok());
  KvStoreStats after_save = kv_->Stats();
  EXPECT_LE(after_save.pool.resident_bytes, 2 * model.BlockBytes(256));
  EXPECT_GT(after_save.pool.evictions, 0u);
  ExpectCacheReadsBack("a", model, tokens);
  EXPECT_GE(kv_->Stats().pool.misses, 10u);
}

TEST_F(KvCacheStoreTest, CrashDuringASaveLeavesNoPartialCache) {
  ModelSpec model = SmallModel();
  std::vector<uint32_t> tokens = Tokens(600, 6);
  Open();
  ASSERT_TRUE(Save("keep", model, Tokens(300, 7)).ok());
  kv_.reset();
  store_.reset();
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child stages most of a save, then dies without unwinding.
    storage::StoreOptions options;
    options.data_dir = dir_.Sub("db");
    auto store = *storage::EpisodeStore::Open(options);
    auto cfs = store->kv_column_families();
    KvCacheStore kv(cfs.db, cfs.blocks, cfs.meta, KvStoreOptions{});
    if (!kv.Recover().ok()) _exit(2);
    auto save = *kv.BeginSave(kTenant, "a", model, tokens);
    for (uint32_t layer = 0; layer < 2; ++layer) {
      for (uint32_t block = 0; block < 3; ++block) {
        if (!save->PutBlock(layer, block,
                            BlockContent(model, layer, tokens[block * kBlockTokens],
                                         save->manifest().BlockTokens(block)))
                 .ok()) {
          _exit(3);
        }
      }
    }
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  storage::StoreOptions options;
  options.data_dir = dir_.Sub("db");
  store_ = *storage::EpisodeStore::Open(options);
  EXPECT_EQ(StoredBlockKeys(), 6u + 6u) << "the kept cache plus the staged blocks";
  auto cfs = store_->kv_column_families();
  kv_ = std::make_unique<KvCacheStore>(cfs.db, cfs.blocks, cfs.meta, KvStoreOptions{});
  ASSERT_TRUE(kv_->Recover().ok());
  EXPECT_EQ(StoredBlockKeys(), 6u);
  EXPECT_EQ(kv_->GetManifest(kTenant, "a", "tiny").status().code(), absl::StatusCode::kNotFound);
  ExpectCacheReadsBack("keep", model, Tokens(300, 7));
}

}  // namespace
}  // namespace engram::kvcache
