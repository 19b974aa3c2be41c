// The lexical index through the store: postings follow every write path
// (put, update, delete by id, agent and session, delete space), statistics
// stay exact, scores equal BM25 computed here by hand, and a space whose
// postings predate the index (or another tokenizer) is rebuilt at Open.
#include "storage/lexical_index.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "storage/episode_store.h"
#include "storage/key_encoding.h"
#include "storage/record_codec.h"
#include "tests/util/temp_dir.h"

namespace engram::storage {
namespace {

constexpr char kTenant[] = "t1";

class LexicalIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Reopen();
    SpaceInfo space{.name = "notes", .dimension = 2};
    ASSERT_TRUE(store_->CreateSpace(kTenant, space).ok());
  }

  void Reopen() {
    store_.reset();
    StoreOptions options;
    options.data_dir = dir_.Sub("db");
    auto opened = EpisodeStore::Open(options);
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = *std::move(opened);
  }

  uint64_t Put(const std::string& agent, const std::string& text, const std::string& session = "") {
    EpisodeWrite write;
    write.episode.agent_id = agent;
    write.episode.session_id = session;
    write.episode.text = text;
    write.episode.embedding = {1, 0};
    auto results = store_->PutEpisodes(kTenant, "notes", {write});
    EXPECT_TRUE(results.ok()) << results.status();
    return results.ok() ? (*results)[0].id : 0;
  }

  // (id -> score) of a search for `query`.
  std::map<uint64_t, float> Search(const std::string& query, const std::string& agent = "",
                                   uint32_t limit = 100) {
    LexicalQuery q;
    auto tokenizer = store_->SpaceTokenizer(kTenant, "notes");
    EXPECT_TRUE(tokenizer.ok());
    q.terms = (*tokenizer)->Tokenize(query);
    std::sort(q.terms.begin(), q.terms.end());
    q.terms.erase(std::unique(q.terms.begin(), q.terms.end()), q.terms.end());
    q.agent_id = agent;
    q.limit = limit;
    auto result = store_->SearchText(kTenant, "notes", q);
    EXPECT_TRUE(result.ok()) << result.status();
    std::map<uint64_t, float> scores;
    if (result.ok()) {
      for (const LexicalHit& hit : result->hits) scores[hit.id] = hit.score;
    }
    return scores;
  }

  static double Bm25(double tf, double df, double docs, double length, double average) {
    const double k1 = 1.2, b = 0.75;
    const double idf = std::log(1 + (docs - df + 0.5) / (df + 0.5));
    return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average));
  }

  engram::testing::TempDir dir_;
  std::unique_ptr<EpisodeStore> store_;
};

TEST_F(LexicalIndexTest, ScoresAreBm25OverTheSearchedScope) {
  const uint64_t a = Put("ann", "green tea with green leaves");  // 5 terms
  const uint64_t b = Put("ann", "black coffee");                 // 2 terms
  const uint64_t c = Put("bob", "Green TEA!");                   // 2 terms
  // Space-wide: 3 documents, 9 terms; "green" in a (tf 2) and c; "tea" in a and c.
  std::map<uint64_t, float> space = Search("green tea");
  ASSERT_EQ(space.size(), 2u);
  EXPECT_NEAR(space[a], Bm25(2, 2, 3, 5, 3) + Bm25(1, 2, 3, 5, 3), 1e-5);
  EXPECT_NEAR(space[c], Bm25(1, 2, 3, 2, 3) + Bm25(1, 2, 3, 2, 3), 1e-5);
  EXPECT_FALSE(space.contains(b));
  // Ann's scope: 2 documents, 7 terms; only a has "green".
  std::map<uint64_t, float> ann = Search("green tea", "ann");
  ASSERT_EQ(ann.size(), 1u);
  EXPECT_NEAR(ann[a], Bm25(2, 1, 2, 5, 3.5) + Bm25(1, 1, 2, 5, 3.5), 1e-5);
  // A repeated query term counts once; an unknown term adds nothing.
  EXPECT_EQ(Search("green green zebra"), Search("green"));
}

TEST_F(LexicalIndexTest, UpdatesReplaceAndDeletesRemovePostings) {
  const uint64_t a = Put("ann", "green tea");
  const uint64_t b = Put("ann", "green apples");
  EpisodeUpdate update;
  update.id = a;
  update.values.text = "black coffee";
  update.fields = {UpdatableField::kText};
  ASSERT_TRUE(store_->UpdateEpisode(kTenant, "notes", update).ok());
  EXPECT_TRUE(Search("tea").empty());
  EXPECT_EQ(Search("coffee").size(), 1u);
  // An update that leaves the text alone keeps its postings.
  update.values.session_id = "s2";
  update.fields = {UpdatableField::kSessionId};
  ASSERT_TRUE(store_->UpdateEpisode(kTenant, "notes", update).ok());
  EXPECT_EQ(Search("coffee").size(), 1u);

  DeleteTarget by_id;
  by_id.ids = {b};
  ASSERT_TRUE(store_->DeleteEpisodes(kTenant, "notes", by_id).ok());
  EXPECT_TRUE(Search("green").empty());
  // Statistics follow: one document of two terms is left, so "coffee"
  // scores as in a one-document corpus.
  EXPECT_NEAR(Search("coffee")[a], Bm25(1, 1, 1, 2, 2), 1e-5);
  // Compaction folds the blocks' merge operands (removals included) into
  // one value each and changes no result.
  std::atomic<bool> cancel{false};
  ASSERT_TRUE(store_->Compact([](double, const std::string&) {}, &cancel).ok());
  EXPECT_TRUE(Search("tea").empty());
  EXPECT_TRUE(Search("green").empty());
  EXPECT_NEAR(Search("coffee")[a], Bm25(1, 1, 1, 2, 2), 1e-5);
}

TEST_F(LexicalIndexTest, AgentAndSessionDeletesRemoveOnlyTheirPostings) {
  Put("ann", "tea one", "s1");
  const uint64_t kept = Put("ann", "tea two", "s2");
  Put("bob", "tea three");
  DeleteTarget session;
  session.agent_id = "ann";
  session.session_id = "s1";
  ASSERT_TRUE(store_->DeleteEpisodes(kTenant, "notes", session).ok());
  EXPECT_EQ(Search("tea", "ann").size(), 1u);
  EXPECT_TRUE(Search("tea", "ann").contains(kept));
  DeleteTarget agent;
  agent.agent_id = "bob";
  ASSERT_TRUE(store_->DeleteEpisodes(kTenant, "notes", agent).ok());
  EXPECT_EQ(Search("tea").size(), 1u);
  EXPECT_TRUE(Search("three").empty());
}

TEST_F(LexicalIndexTest, DeletingASpaceDropsItsPostingsAndStatistics) {
  Put("ann", "tea");
  ASSERT_TRUE(store_->DeleteSpace(kTenant, "notes").ok());
  ASSERT_TRUE(store_->CreateSpace(kTenant, {.name = "notes", .dimension = 2}).ok());
  EXPECT_TRUE(Search("tea").empty());
  const uint64_t fresh = Put("ann", "tea");
  // One document again, not two: the old statistics went with the space.
  EXPECT_NEAR(Search("tea")[fresh], Bm25(1, 1, 1, 1, 1), 1e-5);
}

TEST_F(LexicalIndexTest, ConcurrentWritersKeepStatisticsExact) {
  constexpr int kThreads = 4, kPerThread = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) Put(absl::StrCat("agent", t), "tea and cake");
    });
  }
  for (std::thread& thread : threads) thread.join();
  const uint64_t lone = Put("solo", "tea");
  // 201 documents of 3 terms plus one of 1: "tea" is in all of them.
  const double docs = kThreads * kPerThread + 1;
  const double average = (3 * (docs - 1) + 1) / docs;
  EXPECT_NEAR(Search("tea", "", 1000)[lone], Bm25(1, docs, docs, 1, average), 1e-5);
  EXPECT_EQ(Search("cake", "", 1000).size(), static_cast<size_t>(kThreads * kPerThread));
}

TEST_F(LexicalIndexTest, TiesAndLimitsAreDeterministic) {
  std::vector<uint64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Put("ann", "same words"));
  LexicalQuery q;
  q.terms = {"same"};
  q.limit = 3;
  auto result = store_->SearchText(kTenant, "notes", q);
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(result->hits.size(), 3u);
  EXPECT_EQ(result->matched, 5u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(result->hits[i].id, ids[i]);
  EXPECT_EQ(result->hits[0].agent_id, "ann");
}

TEST_F(LexicalIndexTest, SparseIdsScoreTheSameAsDenseOnes) {
  // Matches far apart in id (other writes between them) take the search's
  // hash-map path instead of its dense array; the scores must not change.
  const uint64_t first = Put("ann", "alpha beta");
  std::vector<EpisodeWrite> filler(1000);
  for (EpisodeWrite& write : filler) {
    write.episode.agent_id = "bob";
    write.episode.text = "gamma";
    write.episode.embedding = {1, 0};
  }
  for (int round = 0; round < 20; ++round) {
    ASSERT_TRUE(store_->PutEpisodes(kTenant, "notes", filler).ok());
  }
  const uint64_t last = Put("ann", "alpha");
  ASSERT_GT(last - first, 20000u);
  const double docs = 20002, average = (2 + 20000 + 1) / docs;
  std::map<uint64_t, float> scores = Search("alpha");
  ASSERT_EQ(scores.size(), 2u);
  EXPECT_NEAR(scores[first], Bm25(1, 2, docs, 2, average), 1e-5);
  EXPECT_NEAR(scores[last], Bm25(1, 2, docs, 1, average), 1e-5);
  EXPECT_GT(scores[last], scores[first]);  // the shorter document
}

TEST_F(LexicalIndexTest, PostingsSurviveReopen) {
  Put("ann", "green tea");
  Put("bob", "tea");
  const std::map<uint64_t, float> before = Search("green tea");
  Reopen();
  EXPECT_EQ(Search("green tea"), before);
  EXPECT_EQ(store_->text_index_report().spaces_rebuilt, 0u);
}

TEST_F(LexicalIndexTest, SpacesFromBeforeTheIndexAreRebuiltAtOpen) {
  Put("ann", "green tea");
  Put("bob", "tea");
  const std::map<uint64_t, float> before = Search("green tea");
  store_.reset();
  {
    // Make the space look as it did before the lexical index existed: no
    // tokenizer version in its record and no postings or statistics.
    rocksdb::DBOptions db_options;
    std::vector<std::string> families;
    ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(db_options, dir_.Sub("db"), &families).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const std::string& name : families) {
      rocksdb::ColumnFamilyOptions cf_options;
      descriptors.emplace_back(name, cf_options);
    }
    // The counters family has a merge operator; plain deletes need none.
    rocksdb::DB* raw = nullptr;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    ASSERT_TRUE(rocksdb::DB::Open(db_options, dir_.Sub("db"), descriptors, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    auto handle = [&](const std::string& name) {
      return handles[std::find(families.begin(), families.end(), name) - families.begin()];
    };
    const std::string space_key = KeyBuilder().AddString(kTenant).AddString("notes").Release();
    std::string record;
    ASSERT_TRUE(db->Get({}, handle("spaces"), space_key, &record).ok());
    SpaceInfo space = *DecodeSpace(record);
    space.text.tokenizer_version.clear();
    ASSERT_TRUE(db->Put({}, handle("spaces"), space_key, EncodeSpace(space)).ok());
    ASSERT_TRUE(
        db->DeleteRange({}, handle("postings"), space_key, PrefixSuccessor(space_key)).ok());
    const std::string stats = KeyBuilder(space_key).AddString("lexical").Release();
    ASSERT_TRUE(db->DeleteRange({}, handle("counters"), stats, PrefixSuccessor(stats)).ok());
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  }
  Reopen();
  EXPECT_EQ(store_->text_index_report().spaces_rebuilt, 1u);
  EXPECT_EQ(store_->text_index_report().episodes_indexed, 2u);
  EXPECT_EQ(Search("green tea"), before);
  EXPECT_FALSE(store_->GetSpace(kTenant, "notes")->text.tokenizer_version.empty());
}

TEST_F(LexicalIndexTest, TextSettingsAreValidated) {
  SpaceInfo bad{.name = "x", .dimension = 2};
  bad.text.stem_language = "klingon";
  EXPECT_EQ(store_->CreateSpace(kTenant, bad).status().code(), absl::StatusCode::kInvalidArgument);
  for (auto [k1, b] : {std::pair{-1.0f, 0.75f}, {1.2f, 1.5f}, {NAN, 0.75f}, {1.2f, -0.1f}}) {
    bad.text = TextSettings();
    bad.text.bm25_k1 = k1;
    bad.text.bm25_b = b;
    EXPECT_EQ(store_->CreateSpace(kTenant, bad).status().code(), absl::StatusCode::kInvalidArgument)
        << k1 << " " << b;
  }
  EXPECT_FALSE(store_->GetSpace(kTenant, "x").ok());
  SpaceInfo good{.name = "stemmed", .dimension = 2};
  good.text.stem_language = "english";
  auto created = store_->CreateSpace(kTenant, good);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_NE(created->text.tokenizer_version,
            store_->GetSpace(kTenant, "notes")->text.tokenizer_version);
}

}  // namespace
}  // namespace engram::storage
