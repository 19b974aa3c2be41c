#include "storage/episode_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/sharding.h"
#include "tests/util/temp_dir.h"

namespace engram::storage {
namespace {

constexpr char kTenant[] = "default";

class EpisodeStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen(uint64_t max_history_versions = 0) {
    store_.reset();
    StoreOptions options;
    options.data_dir = dir_.Sub("db");
    options.max_history_versions = max_history_versions;
    options.limits.max_text_bytes = 100;
    options.limits.max_batch_size = 8;
    auto opened = EpisodeStore::Open(options);
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = *std::move(opened);
  }

  void CreateSpace(const std::string& name = "notes", uint32_t dim = 3,
                   Metric metric = Metric::kCosine) {
    SpaceInfo space{name, dim, metric};
    ASSERT_TRUE(store_->CreateSpace(kTenant, space).ok());
  }

  static EpisodeWrite Write(std::string agent, std::vector<float> embedding, std::string text = "",
                            std::string request_id = "", std::string session = "") {
    EpisodeWrite w;
    w.request_id = std::move(request_id);
    w.episode.agent_id = std::move(agent);
    w.episode.session_id = std::move(session);
    w.episode.text = std::move(text);
    w.episode.embedding = std::move(embedding);
    return w;
  }

  std::vector<uint64_t> Put(std::vector<EpisodeWrite> writes, const std::string& space = "notes") {
    auto results = store_->PutEpisodes(kTenant, space, std::move(writes));
    EXPECT_TRUE(results.ok()) << results.status();
    std::vector<uint64_t> ids;
    if (results.ok()) {
      for (const PutResult& r : *results) ids.push_back(r.id);
    }
    return ids;
  }

  uint64_t Count(const std::string& space = "notes") {
    return store_->GetSpace(kTenant, space)->episode_count;
  }

  engram::testing::TempDir dir_;
  std::unique_ptr<EpisodeStore> store_;
};

TEST_F(EpisodeStoreTest, PutThenGetReturnsTheEpisodeWithServerFields) {
  CreateSpace();
  EpisodeWrite w = Write("agent-1", {1, 2, 3}, "hello");
  w.episode.metadata = {{"topic", std::string("x")}, {"n", int64_t{4}}};
  w.episode.links = {7};
  std::vector<uint64_t> ids = Put({w});
  ASSERT_EQ(ids.size(), 1u);
  auto got = store_->GetEpisode(kTenant, "notes", ids[0]);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->id, ids[0]);
  EXPECT_EQ(got->text, "hello");
  EXPECT_EQ(got->embedding, (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(got->metadata, w.episode.metadata);
  EXPECT_EQ(got->links, w.episode.links);
  EXPECT_EQ(got->kind, "message");
  EXPECT_EQ(got->version, 1u);
  EXPECT_GT(got->event_time_us, 0);
  EXPECT_EQ(Count(), 1u);
}

TEST_F(EpisodeStoreTest, InvalidEpisodesWriteNothingAndNameTheProblem) {
  CreateSpace();
  struct Case {
    EpisodeWrite write;
    std::string expected;
  };
  std::vector<Case> cases = {
      {Write("a", {1, 2}), "embedding has 2 dimensions; space 'notes' expects 3"},
      {Write("a", {1, NAN, 3}), "embedding[1] is nan"},
      {Write("a", {1, INFINITY, 3}), "embedding[1] is inf"},
      {Write("a", {0, 0, 0}), "all zeros"},
      {Write("", {1, 2, 3}), "agent_id is empty"},
      {Write(std::string(300, 'a'), {1, 2, 3}), "agent_id is 300 bytes; the limit is 256"},
      {Write("a", {1, 2, 3}, std::string(101, 't')), "text is 101 bytes; the limit is 100"},
  };
  for (const Case& c : cases) {
    // The bad episode sits second in a batch with a good one: nothing is written.
    auto result = store_->PutEpisodes(kTenant, "notes", {Write("ok", {1, 0, 0}), c.write});
    ASSERT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << c.expected;
    EXPECT_NE(result.status().message().find("episodes[1]: "), std::string::npos)
        << result.status();
    EXPECT_NE(result.status().message().find(c.expected), std::string::npos) << result.status();
  }
  EXPECT_EQ(Count(), 0u);
  EpisodePage page = *store_->ListEpisodes(kTenant, "notes", {}, 0, "");
  EXPECT_TRUE(page.episodes.empty());

  EXPECT_EQ(store_->PutEpisodes(kTenant, "nope", {Write("a", {1, 2, 3})}).status().code(),
            absl::StatusCode::kNotFound);
  std::vector<EpisodeWrite> too_many(9, Write("a", {1, 2, 3}));
  EXPECT_EQ(store_->PutEpisodes(kTenant, "notes", too_many).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->PutEpisodes(kTenant, "notes", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Count(), 0u);
}

TEST_F(EpisodeStoreTest, RetriedRequestIdIsAppliedOnce) {
  CreateSpace();
  auto first = *store_->PutEpisodes(kTenant, "notes", {Write("a", {1, 0, 0}, "x", "req-1")});
  auto again = *store_->PutEpisodes(
      kTenant, "notes", {Write("a", {1, 0, 0}, "x", "req-1"), Write("a", {0, 1, 0}, "y", "req-2")});
  EXPECT_FALSE(first[0].deduplicated);
  EXPECT_TRUE(again[0].deduplicated);
  EXPECT_EQ(again[0].id, first[0].id);
  EXPECT_FALSE(again[1].deduplicated);
  EXPECT_EQ(Count(), 2u);
  // The same request id twice within one batch is a client bug.
  EXPECT_EQ(store_
                ->PutEpisodes(kTenant, "notes",
                              {Write("a", {1, 0, 0}, "", "dup"), Write("a", {1, 0, 0}, "", "dup")})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(EpisodeStoreTest, ConcurrentRetriesOfOneRequestStoreOneEpisode) {
  CreateSpace();
  std::vector<std::thread> threads;
  std::vector<uint64_t> ids(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto r = store_->PutEpisodes(kTenant, "notes", {Write("a", {1, 0, 0}, "", "same")});
      ids[t] = r.ok() ? (*r)[0].id : 0;
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(std::set<uint64_t>(ids.begin(), ids.end()).size(), 1u);
  EXPECT_NE(ids[0], 0u);
  EXPECT_EQ(Count(), 1u);
}

TEST_F(EpisodeStoreTest, UpdateKeepsHistoryAndChecksVersions) {
  CreateSpace();
  uint64_t id = Put({Write("a", {1, 0, 0}, "v1")})[0];
  EpisodeUpdate update;
  update.id = id;
  update.values.text = "v2";
  update.fields = {UpdatableField::kText};
  auto v2 = store_->UpdateEpisode(kTenant, "notes", update);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->version, 2u);
  EXPECT_EQ(v2->text, "v2");
  EXPECT_EQ(v2->embedding, (std::vector<float>{1, 0, 0}));  // not in the mask: kept

  update.expected_version = 1;  // stale
  update.values.text = "v3";
  EXPECT_EQ(store_->UpdateEpisode(kTenant, "notes", update).status().code(),
            absl::StatusCode::kFailedPrecondition);
  update.expected_version = 2;
  ASSERT_TRUE(store_->UpdateEpisode(kTenant, "notes", update).ok());

  update.values.embedding = {1, 2};  // invalid new value: nothing changes
  update.fields = {UpdatableField::kEmbedding};
  update.expected_version = 0;
  EXPECT_EQ(store_->UpdateEpisode(kTenant, "notes", update).status().code(),
            absl::StatusCode::kInvalidArgument);

  auto history = store_->GetHistory(kTenant, "notes", id);
  ASSERT_TRUE(history.ok()) << history.status();
  ASSERT_EQ(history->versions.size(), 3u);
  EXPECT_EQ(history->versions[0].text, "v1");
  EXPECT_EQ(history->versions[1].text, "v2");
  EXPECT_EQ(history->versions[2].text, "v3");
  EXPECT_EQ(history->versions[2].version, 3u);
  EXPECT_TRUE(history->next_page_token.empty());
  update.id = 999;
  EXPECT_EQ(store_->UpdateEpisode(kTenant, "notes", update).status().code(),
            absl::StatusCode::kNotFound);
}

// A history too long for one message is read page by page: every page size
// yields every version once, in order, ending with the current one; tokens
// of another episode or malformed ones are refused.
TEST_F(EpisodeStoreTest, HistoryPagesCoverEveryVersionOnce) {
  CreateSpace();
  const uint64_t id = Put({Write("a", {1, 0, 0}, "v1")})[0];
  const uint64_t other = Put({Write("a", {0, 1, 0}, "other")})[0];
  EpisodeUpdate update;
  update.id = id;
  update.fields = {UpdatableField::kText};
  for (int v = 2; v <= 7; ++v) {
    update.values.text = absl::StrCat("v", v);
    ASSERT_TRUE(store_->UpdateEpisode(kTenant, "notes", update).ok());
  }
  for (uint32_t page_size : {1u, 2u, 3u, 6u, 7u, 100u}) {
    SCOPED_TRACE(page_size);
    std::vector<std::string> texts;
    std::string token;
    int pages = 0;
    do {
      auto page = store_->GetHistory(kTenant, "notes", id, page_size, token);
      ASSERT_TRUE(page.ok()) << page.status();
      ASSERT_LE(page->versions.size(), page_size);
      for (const Episode& version : page->versions) texts.push_back(version.text);
      token = page->next_page_token;
      ASSERT_LT(++pages, 20);
    } while (!token.empty());
    EXPECT_EQ(texts, (std::vector<std::string>{"v1", "v2", "v3", "v4", "v5", "v6", "v7"}));
  }
  auto first = store_->GetHistory(kTenant, "notes", id, 2);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(store_->GetHistory(kTenant, "notes", other, 2, first->next_page_token).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->GetHistory(kTenant, "notes", id, 2, "zz").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->GetHistory(kTenant, "notes", id, 1001).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->GetHistory(kTenant, "notes", 999999).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(EpisodeStoreTest, DeletesByIdsAgentAndSession) {
  CreateSpace();
  std::vector<uint64_t> ids =
      Put({Write("a", {1, 0, 0}, "", "", "s1"), Write("a", {1, 0, 0}, "", "", "s2"),
           Write("a", {1, 0, 0}, "", "", "s2"), Write("b", {1, 0, 0}), Write("b", {1, 0, 0})});
  // One unknown id: NOT_FOUND and nothing deleted.
  DeleteTarget by_ids;
  by_ids.ids = {ids[3], 12345};
  EXPECT_EQ(store_->DeleteEpisodes(kTenant, "notes", by_ids).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Count(), 5u);
  by_ids.ids = {ids[3]};
  EXPECT_EQ(*store_->DeleteEpisodes(kTenant, "notes", by_ids), 1u);
  EXPECT_EQ(store_->GetEpisode(kTenant, "notes", ids[3]).status().code(),
            absl::StatusCode::kNotFound);

  DeleteTarget session{{}, "a", "s2", {}};
  EXPECT_EQ(*store_->DeleteEpisodes(kTenant, "notes", session), 2u);
  EXPECT_TRUE(store_->GetEpisode(kTenant, "notes", ids[0]).ok());
  DeleteTarget agent{{}, "a", "", {}};
  EXPECT_EQ(*store_->DeleteEpisodes(kTenant, "notes", agent), 1u);
  EXPECT_EQ(Count(), 1u);
  EXPECT_TRUE(store_->GetEpisode(kTenant, "notes", ids[4]).ok());
}

EpisodeWrite Keyed(std::string agent, std::string key, std::string text,
                   std::vector<float> embedding = {1, 0, 0}) {
  EpisodeWrite w;
  w.episode.agent_id = std::move(agent);
  w.episode.key = std::move(key);
  w.episode.text = std::move(text);
  w.episode.embedding = std::move(embedding);
  return w;
}

// Ids of the episodes whose text holds `term`.
std::set<uint64_t> TextMatches(EpisodeStore& store, const std::string& term) {
  LexicalQuery query;
  query.terms = {term};
  query.limit = 100;
  auto result = store.SearchText(kTenant, "notes", query);
  EXPECT_TRUE(result.ok()) << result.status();
  std::set<uint64_t> ids;
  if (result.ok()) {
    for (const LexicalHit& hit : result->hits) ids.insert(hit.id);
  }
  return ids;
}

TEST_F(EpisodeStoreTest, AKeyedWriteReplacesTheAgentsEpisodeWithThatKey) {
  CreateSpace();
  auto first = store_->PutEpisodes(kTenant, "notes", {Keyed("a", "profile", "likes tea")});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE((*first)[0].replaced);
  const uint64_t id = (*first)[0].id;
  const Episode original = *store_->GetEpisode(kTenant, "notes", id);
  EXPECT_EQ(original.key, "profile");

  // The same key again, in a batch with a new keyed and an unkeyed write.
  std::vector<Episode> written;
  auto second = store_->PutEpisodes(
      kTenant, "notes",
      {Write("a", {0, 1, 0}, "plain"), Keyed("a", "profile", "likes coffee", {0, 0, 1}),
       Keyed("a", "other", "new")},
      &written);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE((*second)[0].replaced);
  EXPECT_TRUE((*second)[1].replaced);
  EXPECT_EQ((*second)[1].id, id);
  EXPECT_FALSE((*second)[2].replaced);
  EXPECT_NE((*second)[2].id, id);
  EXPECT_EQ(Count(), 3u) << "a replacement adds no episode";
  ASSERT_EQ(written.size(), 3u);
  EXPECT_EQ(written[1].version, 2u) << "the index is handed the new version";

  const Episode replaced = *store_->GetEpisode(kTenant, "notes", id);
  EXPECT_EQ(replaced.text, "likes coffee");
  EXPECT_EQ(replaced.embedding, (std::vector<float>{0, 0, 1}));
  EXPECT_EQ(replaced.version, 2u);
  EXPECT_EQ(replaced.key, "profile");
  EXPECT_EQ(replaced.created_at_us, original.created_at_us);
  EXPECT_GE(replaced.updated_at_us, original.updated_at_us);
  auto history = store_->GetHistory(kTenant, "notes", id);
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->versions.size(), 2u);
  EXPECT_EQ(history->versions[0], original);
  // The text index follows: the old words no longer find the episode.
  EXPECT_EQ(TextMatches(*store_, "tea"), std::set<uint64_t>{});
  EXPECT_EQ(TextMatches(*store_, "coffee"), std::set<uint64_t>{id});
  EXPECT_EQ(*store_->ResolveKey(kTenant, "notes", "a", "profile"), id);

  // Keys belong to an agent: another agent's "profile" is its own episode.
  uint64_t other_agent = Put({Keyed("b", "profile", "b's")})[0];
  EXPECT_NE(other_agent, id);
  EXPECT_EQ(*store_->ResolveKey(kTenant, "notes", "b", "profile"), other_agent);
  EXPECT_EQ(store_->ResolveKey(kTenant, "notes", "c", "profile").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->ResolveKey(kTenant, "notes", "a", "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ResolveKey(kTenant, "nope", "a", "profile").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(EpisodeStoreTest, KeyedBatchesAreAllOrNothingAndKeysAreChecked) {
  CreateSpace();
  const uint64_t id = Put({Keyed("a", "k", "one")})[0];
  // A replacement in a batch that fails validation changes nothing.
  auto refused = store_->PutEpisodes(kTenant, "notes",
                                     {Keyed("a", "k", "two"), Keyed("a", "fresh", "x", {1, 2})});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->GetEpisode(kTenant, "notes", id)->version, 1u);
  EXPECT_EQ(store_->ResolveKey(kTenant, "notes", "a", "fresh").status().code(),
            absl::StatusCode::kNotFound);
  // One key twice in a batch.
  auto twice = store_->PutEpisodes(kTenant, "notes", {Keyed("a", "k", "2"), Keyed("a", "k", "3")});
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(twice.status().message().find("episodes[0]"), std::string::npos) << twice.status();
  // Over the id limit.
  auto too_long = store_->PutEpisodes(kTenant, "notes", {Keyed("a", std::string(257, 'x'), "")});
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.status().message().find("key is 257 bytes"), std::string::npos);
  // A key is fixed: an update may not change it, and may repeat it.
  EpisodeUpdate rename;
  rename.id = id;
  rename.values.key = "renamed";
  rename.fields = {UpdatableField::kText};
  EXPECT_EQ(store_->UpdateEpisode(kTenant, "notes", rename).status().code(),
            absl::StatusCode::kInvalidArgument);
  rename.values.key = "k";
  rename.values.text = "updated";
  auto updated = store_->UpdateEpisode(kTenant, "notes", rename);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->key, "k");
  // The request id wins over the key: a retried keyed write applies once.
  EpisodeWrite retried = Keyed("a", "k", "retried");
  retried.request_id = "req";
  auto applied = *store_->PutEpisodes(kTenant, "notes", {retried});
  auto again = *store_->PutEpisodes(kTenant, "notes", {retried});
  EXPECT_TRUE(applied[0].replaced);
  EXPECT_TRUE(again[0].deduplicated);
  EXPECT_EQ(store_->GetEpisode(kTenant, "notes", id)->version, 3u);
}

TEST_F(EpisodeStoreTest, DeletingFreesKeysAndKeysSurviveReopen) {
  CreateSpace();
  std::vector<uint64_t> ids = Put({Keyed("a", "x", ""), Keyed("a", "y", ""),
                                   Keyed("a", "z", "", {0, 1, 0}), Keyed("b", "x", "")});
  DeleteTarget by_keys;
  by_keys.agent_id = "a";
  by_keys.keys = {"x", "missing"};
  auto missing = store_->DeleteEpisodes(kTenant, "notes", by_keys);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("'missing'"), std::string::npos);
  EXPECT_EQ(Count(), 4u);
  by_keys.keys = {"x"};
  std::vector<uint64_t> deleted;
  EXPECT_EQ(*store_->DeleteEpisodes(kTenant, "notes", by_keys, &deleted), 1u);
  EXPECT_EQ(deleted, std::vector<uint64_t>{ids[0]});
  EXPECT_EQ(store_->ResolveKey(kTenant, "notes", "a", "x").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(*store_->ResolveKey(kTenant, "notes", "b", "x"), ids[3]) << "b's own x stays";
  // A freed key makes a new episode.
  auto reused = *store_->PutEpisodes(kTenant, "notes", {Keyed("a", "x", "")});
  EXPECT_FALSE(reused[0].replaced);
  EXPECT_GT(reused[0].id, ids[3]);
  DeleteTarget keys_without_agent;
  keys_without_agent.keys = {"x"};
  EXPECT_EQ(store_->DeleteEpisodes(kTenant, "notes", keys_without_agent).status().code(),
            absl::StatusCode::kInvalidArgument);

  Reopen();
  EXPECT_EQ(*store_->ResolveKey(kTenant, "notes", "a", "y"), ids[1]);
  EXPECT_EQ(store_->GetEpisode(kTenant, "notes", ids[1])->key, "y");
  // Deleting the agent, or its session, deletes its keys too.
  DeleteTarget agent{{}, "a", "", {}};
  EXPECT_EQ(*store_->DeleteEpisodes(kTenant, "notes", agent), 3u);
  for (const char* key : {"x", "y", "z"}) {
    EXPECT_EQ(store_->ResolveKey(kTenant, "notes", "a", key).status().code(),
              absl::StatusCode::kNotFound)
        << key;
  }
  // So does deleting the space.
  ASSERT_TRUE(store_->DeleteSpace(kTenant, "notes").ok());
  CreateSpace();
  EXPECT_EQ(store_->ResolveKey(kTenant, "notes", "b", "x").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(EpisodeStoreTest, ConcurrentWritersOfOneKeyKeepOneEpisode) {
  CreateSpace();
  constexpr int kThreads = 6, kWrites = 25;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int w = 0; w < kWrites; ++w) {
        // Writers of the key race with a deleter of it.
        if (t == 0 && w % 5 == 4) {
          DeleteTarget target;
          target.agent_id = "a";
          target.keys = {"shared"};
          auto deleted = store_->DeleteEpisodes(kTenant, "notes", target);
          if (!deleted.ok() && !absl::IsNotFound(deleted.status())) ++failures;
          continue;
        }
        auto put = store_->PutEpisodes(kTenant, "notes",
                                       {Keyed("a", "shared", absl::StrCat("t", t, "w", w))});
        if (!put.ok()) ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  // Whatever the interleaving: at most one live episode holds the key, and
  // the key names it.
  auto page = store_->ListEpisodes(kTenant, "notes", EpisodeFilter{}, 1000, "");
  ASSERT_TRUE(page.ok());
  auto id = store_->ResolveKey(kTenant, "notes", "a", "shared");
  ASSERT_EQ(page->episodes.size(), id.ok() ? 1u : 0u);
  EXPECT_EQ(Count(), page->episodes.size());
  if (id.ok()) {
    EXPECT_EQ(page->episodes[0].id, *id);
    EXPECT_EQ(page->episodes[0].key, "shared");
    auto history = store_->GetHistory(kTenant, "notes", *id, 1000);
    ASSERT_TRUE(history.ok());
    EXPECT_EQ(history->versions.size(), page->episodes[0].version);
  }
}

TEST_F(EpisodeStoreTest, ListAgentsPagesThroughEachAgentOnce) {
  CreateSpace();
  CreateSpace("other");
  // Agents with one and with many episodes, ids that prefix each other,
  // and a zero byte.
  std::vector<std::string> agents = {"a", "ab", "b", std::string("c\0d", 3), "z"};
  for (const std::string& agent : agents) {
    std::vector<EpisodeWrite> writes;
    for (int i = 0; i < (agent == "ab" ? 7 : 1); ++i) writes.push_back(Write(agent, {1, 0, 0}));
    Put(std::move(writes));
  }
  Put({Write("elsewhere", {1, 0, 0})}, "other");
  for (uint32_t page_size : {1u, 2u, 100u}) {
    std::vector<std::string> listed;
    std::string token;
    int pages = 0;
    do {
      auto page = store_->ListAgents(kTenant, "notes", page_size, token);
      ASSERT_TRUE(page.ok()) << page.status();
      EXPECT_LE(page->agent_ids.size(), page_size);
      listed.insert(listed.end(), page->agent_ids.begin(), page->agent_ids.end());
      token = page->next_page_token;
      ASSERT_LT(++pages, 10);
    } while (!token.empty());
    EXPECT_EQ(listed, agents) << "page size " << page_size;
  }
  DeleteTarget agent{{}, "b", "", {}};
  ASSERT_TRUE(store_->DeleteEpisodes(kTenant, "notes", agent).ok());
  auto page = store_->ListAgents(kTenant, "notes", 0, "");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->agent_ids.size(), 4u);
  EXPECT_EQ(store_->ListAgents(kTenant, "notes", 1001, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ListAgents(kTenant, "notes", 1, "garbage").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ListAgents(kTenant, "nope", 1, "").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->ListAgents(kTenant, "other", 0, "")->agent_ids,
            std::vector<std::string>{"elsewhere"});
}

TEST_F(EpisodeStoreTest, ListPagesThroughFilteredEpisodes) {
  CreateSpace();
  std::vector<EpisodeWrite> writes;
  for (int i = 0; i < 8; ++i) {
    writes.push_back(Write(i % 2 ? "odd" : "even", {1, float(i), 0}));
    writes.back().episode.metadata = {{"i", int64_t{i}}};
  }
  Put(writes);
  EpisodeFilter filter;
  filter.agent_id = "even";
  filter.metadata = {{"i", MetadataPredicate::Op::kGe, int64_t{2}}};
  std::vector<int64_t> seen;
  std::string token;
  int pages = 0;
  do {
    auto page = store_->ListEpisodes(kTenant, "notes", filter, 2, token);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const Episode& e : page->episodes) seen.push_back(std::get<int64_t>(e.metadata.at("i")));
    token = page->next_page_token;
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(seen, (std::vector<int64_t>{2, 4, 6}));
  EXPECT_EQ(pages, 2);

  EXPECT_EQ(store_->ListEpisodes(kTenant, "notes", filter, 2, "zz").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ListEpisodes(kTenant, "notes", filter, 2001, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  filter.agent_id = "odd";  // a token from another agent's scan is refused
  EpisodeFilter even;
  even.agent_id = "even";
  auto first = *store_->ListEpisodes(kTenant, "notes", even, 1, "");
  EXPECT_EQ(
      store_->ListEpisodes(kTenant, "notes", filter, 2, first.next_page_token).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_F(EpisodeStoreTest, ReopenKeepsDataAndNeverReusesIds) {
  CreateSpace();
  std::vector<uint64_t> first = Put({Write("a", {1, 0, 0}), Write("a", {0, 1, 0})});
  DeleteTarget last;
  last.ids = {first[1]};
  ASSERT_TRUE(store_->DeleteEpisodes(kTenant, "notes", last).ok());
  Reopen();
  EXPECT_EQ(Count(), 1u);
  EXPECT_TRUE(store_->GetEpisode(kTenant, "notes", first[0]).ok());
  uint64_t next = Put({Write("a", {1, 1, 0})})[0];
  EXPECT_GT(next, first[1]);
}

std::unique_ptr<EpisodeStore> OpenShard(const std::string& dir, uint32_t shard_index,
                                        uint64_t max_history_versions = 0) {
  StoreOptions options;
  options.data_dir = dir;
  options.shard_index = shard_index;
  options.max_history_versions = max_history_versions;
  auto opened = EpisodeStore::Open(options);
  EXPECT_TRUE(opened.ok()) << opened.status();
  return opened.ok() ? *std::move(opened) : nullptr;
}

TEST_F(EpisodeStoreTest, AShardAssignsIdsFromItsRangeAndKeepsItsDataDir) {
  store_.reset();
  const std::string dir = dir_.Sub("shard3");
  std::unique_ptr<EpisodeStore> shard = OpenShard(dir, 3);
  ASSERT_NE(shard, nullptr);
  ASSERT_TRUE(shard->CreateSpace(kTenant, SpaceInfo{"notes", 3, Metric::kCosine}).ok());
  auto put = shard->PutEpisodes(kTenant, "notes", {Write("a", {1, 0, 0}), Write("b", {0, 1, 0})});
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ((*put)[0].id, sharding::FirstId(3));
  EXPECT_EQ(sharding::ShardOfId((*put)[1].id), 3u);
  shard.reset();
  // Mounted into another shard's pod, the data dir is refused by name.
  StoreOptions wrong;
  wrong.data_dir = dir;
  wrong.shard_index = 1;
  auto refused = EpisodeStore::Open(wrong);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("holds shard 3's data"), std::string::npos)
      << refused.status();
  // Its own index reopens it and carries on after the last id.
  shard = OpenShard(dir, 3);
  ASSERT_NE(shard, nullptr);
  put = shard->PutEpisodes(kTenant, "notes", {Write("a", {1, 1, 0})});
  ASSERT_TRUE(put.ok());
  EXPECT_EQ((*put)[0].id, sharding::FirstId(3) + 2);
  shard.reset();
  // A database from before sharding is shard 0's by its ids.
  Reopen();
  CreateSpace();
  Put({Write("a", {1, 0, 0})});
  store_.reset();
  wrong.data_dir = dir_.Sub("db");
  EXPECT_EQ(EpisodeStore::Open(wrong).status().code(), absl::StatusCode::kFailedPrecondition);
}

// What an agent move reads from the source: each episode's current version
// and its older versions, oldest first.
std::vector<ImportedEpisode> ExportAgent(EpisodeStore& store, const std::string& agent) {
  EpisodeFilter filter;
  filter.agent_id = agent;
  std::vector<ImportedEpisode> exported;
  auto page = store.ListEpisodes(kTenant, "notes", filter, 1000, "");
  EXPECT_TRUE(page.ok()) << page.status();
  for (Episode& episode : page->episodes) {
    auto versions = store.GetHistory(kTenant, "notes", episode.id, 1000);
    EXPECT_TRUE(versions.ok()) << versions.status();
    versions->versions.pop_back();  // the current one
    exported.push_back({std::move(episode), std::move(versions->versions)});
  }
  return exported;
}

TEST_F(EpisodeStoreTest, ImportKeepsIdsVersionsKeysAndHistoryAndCanBeRerun) {
  CreateSpace();
  EpisodeWrite keyed = Write("mover", {1, 2, 3}, "first words");
  keyed.episode.key = "profile";
  const uint64_t id = Put({keyed})[0];
  keyed.episode.text = "second words";
  Put({keyed});  // an upsert: version 2
  EpisodeUpdate update;
  update.id = id;
  update.values.text = "third words zebra";
  update.fields = {UpdatableField::kText};
  ASSERT_TRUE(store_->UpdateEpisode(kTenant, "notes", update).ok());
  const uint64_t plain = Put({Write("mover", {0, 0, 1}, "plain zebra", "", "s1")})[0];
  Put({Write("stays", {1, 0, 0}, "zebra")});

  std::unique_ptr<EpisodeStore> target = OpenShard(dir_.Sub("target"), 1);
  ASSERT_NE(target, nullptr);
  ASSERT_TRUE(target->CreateSpace(kTenant, SpaceInfo{"notes", 3, Metric::kCosine}).ok());
  std::vector<ImportedEpisode> exported = ExportAgent(*store_, "mover");
  ASSERT_EQ(exported.size(), 2u);
  std::vector<Episode> written;
  auto imported = target->ImportEpisodes(kTenant, "notes", exported, &written);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->imported, 2u);
  EXPECT_EQ(written.size(), 2u);
  EXPECT_EQ(target->GetSpace(kTenant, "notes")->episode_count, 2u);
  for (uint64_t moved : {id, plain}) {
    auto before = store_->GetHistory(kTenant, "notes", moved, 1000);
    auto after = target->GetHistory(kTenant, "notes", moved, 1000);
    ASSERT_TRUE(after.ok()) << after.status();
    ASSERT_EQ(after->versions.size(), before->versions.size());
    for (size_t v = 0; v < before->versions.size(); ++v) {
      EXPECT_EQ(after->versions[v].version, before->versions[v].version);
      EXPECT_EQ(after->versions[v].text, before->versions[v].text);
      EXPECT_EQ(after->versions[v].created_at_us, before->versions[v].created_at_us);
      EXPECT_EQ(after->versions[v].updated_at_us, before->versions[v].updated_at_us);
    }
  }
  EXPECT_EQ(*target->ResolveKey(kTenant, "notes", "mover", "profile"), id);
  EXPECT_EQ(TextMatches(*target, "zebra"), (std::set<uint64_t>{id, plain}));
  EXPECT_TRUE(TextMatches(*target, "first").empty());

  // A re-run (an interrupted move) changes nothing.
  imported = target->ImportEpisodes(kTenant, "notes", exported);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->imported, 0u);
  EXPECT_EQ(imported->already_present, 2u);
  EXPECT_EQ(target->GetSpace(kTenant, "notes")->episode_count, 2u);

  // Writes there go on from the imported state: the key upserts the moved
  // episode, new episodes take ids of the target's range.
  keyed.episode.text = "fourth";
  auto upsert = target->PutEpisodes(kTenant, "notes", {keyed, Write("mover", {1, 1, 1})});
  ASSERT_TRUE(upsert.ok()) << upsert.status();
  EXPECT_EQ((*upsert)[0].id, id);
  EXPECT_TRUE((*upsert)[0].replaced);
  EXPECT_EQ(target->GetEpisode(kTenant, "notes", id)->version, 4u);
  EXPECT_EQ((*upsert)[1].id, sharding::FirstId(1));
}

// Every version of an episode, oldest first, read in pages of one.
std::vector<uint64_t> VersionsOf(EpisodeStore& store, uint64_t id) {
  std::vector<uint64_t> versions;
  std::string token;
  do {
    auto page = store.GetHistory(kTenant, "notes", id, 1, token);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) break;
    for (const Episode& version : page->versions) versions.push_back(version.version);
    token = page->next_page_token;
  } while (!token.empty() && versions.size() < 100);
  return versions;
}

// max_history_versions keeps the newest older versions of each episode, for
// updates, upserts by key and imports alike; opening with a lower limit than
// the data was written under trims every history at once, a higher one lets
// histories grow to it.
TEST_F(EpisodeStoreTest, TheHistoryLimitKeepsTheNewestVersions) {
  CreateSpace();
  EpisodeWrite keyed = Write("a", {1, 0, 0}, "keyed v1");
  keyed.episode.key = "profile";
  const uint64_t keyed_id = Put({keyed})[0];
  const uint64_t plain = Put({Write("a", {0, 1, 0}, "plain v1")})[0];
  EpisodeUpdate update;
  update.id = plain;
  update.fields = {UpdatableField::kText};
  for (int v = 2; v <= 6; ++v) {  // no limit yet: all six kept
    update.values.text = absl::StrCat("plain v", v);
    ASSERT_TRUE(store_->UpdateEpisode(kTenant, "notes", update).ok());
  }
  EXPECT_EQ(VersionsOf(*store_, plain), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));

  Reopen(/*max_history_versions=*/3);
  EXPECT_EQ(VersionsOf(*store_, plain), (std::vector<uint64_t>{3, 4, 5, 6}));
  for (int v = 2; v <= 6; ++v) {  // upserts by key
    keyed.episode.text = absl::StrCat("keyed v", v);
    ASSERT_TRUE(store_->PutEpisodes(kTenant, "notes", {keyed}).ok());
  }
  EXPECT_EQ(VersionsOf(*store_, keyed_id), (std::vector<uint64_t>{3, 4, 5, 6}));
  update.values.text = "plain v7";
  ASSERT_TRUE(store_->UpdateEpisode(kTenant, "notes", update).ok());
  EXPECT_EQ(VersionsOf(*store_, plain), (std::vector<uint64_t>{4, 5, 6, 7}));
  auto history = store_->GetHistory(kTenant, "notes", plain);
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_EQ(history->versions.front().text, "plain v4");
  EXPECT_EQ(history->versions.back().text, "plain v7");
  EXPECT_EQ(store_->GetEpisode(kTenant, "notes", plain)->text, "plain v7");

  Reopen(/*max_history_versions=*/5);  // higher: nothing trimmed, room to grow
  EXPECT_EQ(VersionsOf(*store_, plain), (std::vector<uint64_t>{4, 5, 6, 7}));
  for (int v = 8; v <= 10; ++v) {
    update.values.text = absl::StrCat("plain v", v);
    ASSERT_TRUE(store_->UpdateEpisode(kTenant, "notes", update).ok());
  }
  EXPECT_EQ(VersionsOf(*store_, plain), (std::vector<uint64_t>{5, 6, 7, 8, 9, 10}));
  Reopen(/*max_history_versions=*/0);  // every version kept from now on
  update.values.text = "plain v11";
  ASSERT_TRUE(store_->UpdateEpisode(kTenant, "notes", update).ok());
  EXPECT_EQ(VersionsOf(*store_, plain), (std::vector<uint64_t>{5, 6, 7, 8, 9, 10, 11}));
  Reopen(/*max_history_versions=*/3);
  EXPECT_EQ(VersionsOf(*store_, plain), (std::vector<uint64_t>{8, 9, 10, 11}));
  EXPECT_EQ(VersionsOf(*store_, keyed_id), (std::vector<uint64_t>{3, 4, 5, 6}));

  // An import into a store with a lower limit keeps only what it allows.
  std::unique_ptr<EpisodeStore> target = OpenShard(dir_.Sub("target"), 1, 1);
  ASSERT_NE(target, nullptr);
  ASSERT_TRUE(target->CreateSpace(kTenant, SpaceInfo{"notes", 3, Metric::kCosine}).ok());
  auto imported = target->ImportEpisodes(kTenant, "notes", ExportAgent(*store_, "a"));
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->imported, 2u);
  EXPECT_EQ(VersionsOf(*target, plain), (std::vector<uint64_t>{10, 11}));
  EXPECT_EQ(VersionsOf(*target, keyed_id), (std::vector<uint64_t>{5, 6}));
  keyed.episode.text = "keyed v7";
  ASSERT_TRUE(target->PutEpisodes(kTenant, "notes", {keyed}).ok());
  EXPECT_EQ(VersionsOf(*target, keyed_id), (std::vector<uint64_t>{6, 7}));
}

// What a sharded engramd checks an update's owner with: the id index, so an
// expired episode still has its agent; a deleted one has none.
TEST_F(EpisodeStoreTest, AgentOfReadsTheIdIndex) {
  CreateSpace();
  EpisodeWrite expired = Write("ghost", {1, 0, 0});
  expired.episode.expires_at_us = 1;
  const std::vector<uint64_t> ids = Put({expired, Write("alive", {0, 1, 0})});
  EXPECT_EQ(store_->GetEpisode(kTenant, "notes", ids[0]).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(*store_->AgentOf(kTenant, "notes", ids[0]), "ghost");
  EXPECT_EQ(*store_->AgentOf(kTenant, "notes", ids[1]), "alive");
  DeleteTarget target;
  target.ids = {ids[1]};
  ASSERT_TRUE(store_->DeleteEpisodes(kTenant, "notes", target).ok());
  EXPECT_EQ(store_->AgentOf(kTenant, "notes", ids[1]).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->AgentOf(kTenant, "nowhere", ids[0]).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(EpisodeStoreTest, ImportRefusesWhatWouldCollideAndWritesNothing) {
  CreateSpace();
  EpisodeWrite keyed = Write("a", {1, 2, 3}, "x");
  keyed.episode.key = "k";
  const uint64_t held = Put({keyed, Write("a", {1, 0, 0})})[0];
  auto episode = [&](uint64_t id, std::string agent, uint64_t version) {
    ImportedEpisode e;
    e.current = Write(std::move(agent), {0, 1, 0}).episode;
    e.current.id = id;
    e.current.version = version;
    e.current.created_at_us = e.current.updated_at_us = 1;
    return e;
  };
  const uint64_t foreign = sharding::FirstId(2) + 10;
  struct Case {
    std::string name;
    std::vector<ImportedEpisode> episodes;
    absl::StatusCode code;
  };
  std::vector<Case> cases;
  cases.push_back(
      {"never assigned here", {episode(held + 100, "a", 1)}, absl::StatusCode::kInvalidArgument});
  cases.push_back(
      {"another agent's id", {episode(held, "b", 5)}, absl::StatusCode::kAlreadyExists});
  ImportedEpisode key_taken = episode(foreign, "a", 1);
  key_taken.current.key = "k";
  cases.push_back({"key names another episode", {key_taken}, absl::StatusCode::kAlreadyExists});
  ImportedEpisode disordered = episode(foreign, "a", 3);
  disordered.history = {episode(foreign, "a", 2).current, episode(foreign, "a", 1).current};
  cases.push_back({"history out of order", {disordered}, absl::StatusCode::kInvalidArgument});
  ImportedEpisode stranger = episode(foreign, "a", 2);
  stranger.history = {episode(foreign, "z", 1).current};
  cases.push_back({"history of another agent", {stranger}, absl::StatusCode::kInvalidArgument});
  ImportedEpisode no_version = episode(foreign, "a", 0);
  cases.push_back({"no version", {no_version}, absl::StatusCode::kInvalidArgument});
  ImportedEpisode wrong_dim = episode(foreign, "a", 1);
  wrong_dim.current.embedding = {1, 2};
  cases.push_back({"wrong dimension", {wrong_dim}, absl::StatusCode::kInvalidArgument});
  ImportedEpisode same_key_a = episode(foreign + 5, "a", 1),
                  same_key_b = episode(foreign + 6, "a", 1);
  same_key_a.current.key = same_key_b.current.key = "twice";
  cases.push_back({"one key twice", {same_key_a, same_key_b}, absl::StatusCode::kInvalidArgument});
  ImportedEpisode rekeyed = episode(held, "a", 2);
  rekeyed.current.key = "another";
  cases.push_back({"a held episode's key changed", {rekeyed}, absl::StatusCode::kInvalidArgument});
  cases.push_back({"repeated id",
                   {episode(foreign, "a", 1), episode(foreign, "a", 1)},
                   absl::StatusCode::kInvalidArgument});
  for (Case& c : cases) {
    // A good episode rides along: all or nothing.
    c.episodes.push_back(episode(foreign + 1, "a", 1));
    auto result = store_->ImportEpisodes(kTenant, "notes", c.episodes);
    EXPECT_EQ(result.status().code(), c.code) << c.name << ": " << result.status();
    EXPECT_EQ(Count(), 2u) << c.name;
    EXPECT_FALSE(store_->GetEpisode(kTenant, "notes", foreign + 1).ok()) << c.name;
  }
}

TEST_F(EpisodeStoreTest, SpacesAreValidatedAndDeletedWithTheirEpisodes) {
  EXPECT_EQ(store_->CreateSpace(kTenant, {"bad name", 3}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateSpace(kTenant, {"..", 3}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateSpace(kTenant, {"x", 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateSpace(kTenant, {"x", 5000}).status().code(),
            absl::StatusCode::kInvalidArgument);
  CreateSpace("one");
  CreateSpace("two");
  EXPECT_EQ(store_->CreateSpace(kTenant, {"one", 3}).status().code(),
            absl::StatusCode::kAlreadyExists);
  Put({Write("a", {1, 0, 0})}, "one");
  uint64_t kept = Put({Write("a", {1, 0, 0})}, "two")[0];
  EXPECT_EQ(*store_->DeleteSpace(kTenant, "one"), 1u);
  EXPECT_EQ(store_->GetSpace(kTenant, "one").status().code(), absl::StatusCode::kNotFound);
  Reopen();
  EXPECT_EQ(store_->ListSpaces(kTenant)->size(), 1u);
  EXPECT_TRUE(store_->GetEpisode(kTenant, "two", kept).ok());
  // Recreating the name starts empty.
  CreateSpace("one");
  EXPECT_EQ(Count("one"), 0u);
  EXPECT_TRUE(store_->ListEpisodes(kTenant, "one", {}, 0, "")->episodes.empty());
}

TEST_F(EpisodeStoreTest, TenantsAreDisjoint) {
  CreateSpace();
  Put({Write("a", {1, 0, 0})});
  EXPECT_EQ(store_->GetSpace("other", "notes").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store_->CreateSpace("other", {"notes", 3}).ok());
  EXPECT_TRUE(store_->ListEpisodes("other", "notes", {}, 0, "")->episodes.empty());
  EXPECT_EQ(store_->GetEpisode("other", "notes", 1).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(EpisodeStoreTest, BackupRestoreAndCheckpointProduceOpenableCopies) {
  CreateSpace();
  EpisodeWrite keyed = Write("a", {1, 0, 0}, "kept");
  keyed.episode.key = "the-key";
  uint64_t id = Put({keyed})[0];
  std::string backups = dir_.Sub("backups");
  auto backup = store_->CreateBackup(backups);
  ASSERT_TRUE(backup.ok()) << backup.status();
  EXPECT_TRUE(store_->VerifyBackup(backups, backup->backup_id).ok());
  EXPECT_EQ(store_->VerifyBackup(backups, 99).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(EpisodeStore::RestoreBackup(backups, 0, dir_.Sub("restored")).ok());
  ASSERT_TRUE(store_->Checkpoint(dir_.Sub("checkpoint")).ok());
  EXPECT_EQ(store_->Checkpoint(dir_.Sub("checkpoint")).code(), absl::StatusCode::kAlreadyExists);

  for (const std::string& copy : {dir_.Sub("restored"), dir_.Sub("checkpoint")}) {
    StoreOptions options;
    options.data_dir = copy;
    auto opened = EpisodeStore::Open(options);
    ASSERT_TRUE(opened.ok()) << opened.status();
    auto episode = (*opened)->GetEpisode(kTenant, "notes", id);
    ASSERT_TRUE(episode.ok()) << copy;
    EXPECT_EQ(episode->text, "kept");
    // The key index travels with the records: the copy still upserts by key.
    auto by_key = (*opened)->ResolveKey(kTenant, "notes", "a", "the-key");
    ASSERT_TRUE(by_key.ok()) << copy << ": " << by_key.status();
    EXPECT_EQ(*by_key, id);
    auto replaced = (*opened)->PutEpisodes(kTenant, "notes", {keyed});
    ASSERT_TRUE(replaced.ok());
    EXPECT_TRUE((*replaced)[0].replaced) << copy;
  }

  // A corrupted backup file fails verification.
  for (const auto& entry : std::filesystem::recursive_directory_iterator(backups)) {
    if (entry.path().extension() == ".sst") {
      std::filesystem::resize_file(entry.path(), entry.file_size() / 2);
      break;
    }
  }
  EXPECT_FALSE(store_->VerifyBackup(backups, backup->backup_id).ok());
}

TEST_F(EpisodeStoreTest, SecondOpenOfTheSameDirectoryIsRefused) {
  StoreOptions options;
  options.data_dir = dir_.Sub("db");
  EXPECT_EQ(EpisodeStore::Open(options).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(EpisodeStoreTest, CompactReportsProgressAndHonoursCancel) {
  CreateSpace();
  Put({Write("a", {1, 0, 0})});
  std::vector<double> fractions;
  std::atomic<bool> cancel{false};
  ASSERT_TRUE(
      store_->Compact([&](double f, const std::string&) { fractions.push_back(f); }, &cancel).ok());
  ASSERT_FALSE(fractions.empty());
  EXPECT_TRUE(std::is_sorted(fractions.begin(), fractions.end()));
  EXPECT_EQ(fractions.back(), 1.0);
  cancel = true;
  EXPECT_EQ(store_->Compact([](double, const std::string&) {}, &cancel).code(),
            absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace engram::storage
