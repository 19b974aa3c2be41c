// The retrieval engine without gRPC: the write path indexes what the store
// wrote, the index agrees with the store under concurrent puts, updates,
// deletes and searches, across a restart and a rebuild that races writes,
// and the read-back drops what the store no longer has.
#include "retrieval/engine.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "tests/util/temp_dir.h"

namespace engram::retrieval {
namespace {

constexpr uint32_t kDim = 16;

std::vector<float> RandomVector(std::mt19937& rng) {
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> v(kDim);
  for (float& x : v) x = gauss(rng);
  return v;
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void TearDown() override { Close(); }

  void Open() {
    storage::StoreOptions store_options;
    store_options.data_dir = dir_.Sub("data");
    store_options.sync_writes = false;  // durability is not under test here
    auto store = storage::EpisodeStore::Open(store_options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    EngineOptions options;
    options.index.quantize_threshold = 32;
    options.index.graph_threshold = 300;
    options.index.max_degree = 16;
    options.index.build_threads = 2;
    options.index.snapshot_interval_s = 0;
    options.default_snapshot_dir = dir_.Sub("data/index");
    options.scanner.use_gpu = false;
    auto engine = Engine::Open(store_.get(), std::move(options));
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  void Close() {
    if (engine_ == nullptr) return;
    engine_->FlushIndex();
    ASSERT_TRUE(engine_->SaveSnapshots().ok());
    engine_.reset();
    store_.reset();
  }

  uint64_t PutOne(const std::string& agent, const std::vector<float>& vector,
                  const std::string& kind = "") {
    Episode episode;
    episode.agent_id = agent;
    episode.kind = kind;
    episode.embedding = vector;
    auto results = engine_->PutEpisodes(kDefaultTenant, "mem", {{"", episode}});
    EXPECT_TRUE(results.ok()) << results.status();
    return results.ok() ? (*results)[0].id : 0;
  }

  // The ids of the best k for the query on `route`.
  std::vector<uint64_t> SearchIds(const std::vector<float>& query, uint32_t k, Route route,
                                  EpisodeFilter filter = {}) {
    SearchRequest request;
    request.query = query;
    request.k = k;
    request.route = route;
    request.policy = RoutePolicy::kFast;  // the route itself, not the router's choice
    request.filter = std::move(filter);
    auto result = engine_->Search(kDefaultTenant, "mem", request);
    EXPECT_TRUE(result.ok()) << result.status();
    std::vector<uint64_t> ids;
    if (result.ok()) {
      for (const SearchHit& hit : result->hits) ids.push_back(hit.episode.id);
    }
    return ids;
  }

  testing::TempDir dir_;
  std::unique_ptr<storage::EpisodeStore> store_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, TheIndexHoldsWhatTheStoreWroteNotTheRequest) {
  ASSERT_TRUE(engine_->CreateSpace(kDefaultTenant, {.name = "mem", .dimension = kDim}).ok());
  std::mt19937 rng(1);
  std::vector<std::vector<float>> vectors;
  std::vector<uint64_t> ids;
  for (int i = 0; i < 400; ++i) {  // past the graph threshold
    vectors.push_back(RandomVector(rng));
    ids.push_back(PutOne("a", vectors.back(), i % 2 == 0 ? "" : "fact"));
  }
  EpisodeFilter messages;
  messages.kinds = {"message"};  // the store's default kind
  for (Route route : {Route::kIndex, Route::kScan}) {
    EXPECT_EQ(SearchIds(vectors[0], 1, route, messages), std::vector<uint64_t>{ids[0]});
  }
  // An update that changes the kind moves the episode between filters.
  EpisodeUpdate update;
  update.id = ids[0];
  update.values.kind = "fact";
  update.fields = {UpdatableField::kKind};
  ASSERT_TRUE(engine_->UpdateEpisode(kDefaultTenant, "mem", update).ok());
  EpisodeFilter facts;
  facts.kinds = {"fact"};
  EXPECT_EQ(SearchIds(vectors[0], 1, Route::kIndex, facts), std::vector<uint64_t>{ids[0]});
  EXPECT_NE(SearchIds(vectors[0], 1, Route::kIndex, messages), std::vector<uint64_t>{ids[0]});
  // The search result names its route and stages.
  SearchRequest request;
  request.query = vectors[1];
  request.k = 5;
  request.policy = RoutePolicy::kFast;
  auto result = engine_->Search(kDefaultTenant, "mem", request);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->route, Route::kIndex);
  ASSERT_EQ(result->stages.size(), 2u);
  EXPECT_EQ(result->stages[0].name, "index");
  EXPECT_EQ(result->stages[1].name, "hydrate");
  EXPECT_EQ(result->stages[1].candidates, 5u);
  EXPECT_EQ(engine_->Health().add_failures, 0u);
}

// Updates and deletes leave removed vectors in their partition (slots are
// never reused); once they are a quarter of its rows, the indexer replaces
// the partition with a copy of its live vectors. Searches before and after
// agree with the exact route, and the copy keeps every live vector bit for
// bit (each is its own nearest neighbour at score 1 on cosine).
TEST_F(EngineTest, PartitionsOfRemovedVectorsAreCompacted) {
  ASSERT_TRUE(engine_->CreateSpace(kDefaultTenant, {.name = "mem", .dimension = kDim}).ok());
  std::mt19937 rng(5);
  std::map<uint64_t, std::vector<float>> live;
  for (int i = 0; i < 400; ++i) {  // past the graph threshold (300)
    std::vector<float> v = RandomVector(rng);
    for (float& x : v) x *= 0.5f + static_cast<float>(i % 7);  // not unit length
    live[PutOne("a", v)] = v;
  }
  auto partition_stats = [&] {
    engine_->FlushIndex();
    std::vector<PartitionReport> reports = engine_->IndexStats(kDefaultTenant);
    EXPECT_EQ(reports.size(), 1u);
    return reports.empty() ? index::PartitionStats{} : reports[0].stats;
  };
  auto expect_agreement = [&] {
    for (const auto& [id, vector] : live) {
      if (id % 16 != 0) continue;
      SearchRequest request;
      request.query = vector;
      request.k = 1;
      request.route = Route::kIndex;
      request.policy = RoutePolicy::kFast;
      auto found = engine_->Search(kDefaultTenant, "mem", request);
      ASSERT_TRUE(found.ok()) << found.status();
      ASSERT_EQ(found->hits.size(), 1u);
      EXPECT_EQ(found->hits[0].episode.id, id);
      EXPECT_FLOAT_EQ(found->hits[0].score, 1.0f);
    }
    // The graph is approximate: recall against the exact route, not equality.
    std::mt19937 query_rng(11);
    size_t index_hits = 0, scan_hits = 0, total = 0;
    for (int q = 0; q < 40; ++q) {
      const std::vector<float> query = RandomVector(query_rng);
      const std::vector<uint64_t> exact = SearchIds(query, 10, Route::kExact);
      const std::set<uint64_t> truth(exact.begin(), exact.end());
      for (uint64_t id : SearchIds(query, 10, Route::kIndex)) index_hits += truth.count(id);
      for (uint64_t id : SearchIds(query, 10, Route::kScan)) scan_hits += truth.count(id);
      total += truth.size();
    }
    // 16 dimensions, R = 16: 0.94 with 120 removed vectors still linked,
    // 0.95-0.985 once compacted (5 runs on the dev machine).
    EXPECT_GE(static_cast<double>(index_hits) / total, 0.9);
    EXPECT_GE(static_cast<double>(scan_hits) / total, 0.99);
  };
  index::PartitionStats before = partition_stats();
  EXPECT_EQ(before.vectors, 400u);
  EXPECT_TRUE(before.has_graph);

  // 120 updates of the vector: 120 removed of 520 rows, not yet a quarter.
  auto update_some = [&](int count) {
    int done = 0;
    for (auto& [id, vector] : live) {
      if (done++ == count) break;
      vector = RandomVector(rng);
      EpisodeUpdate update;
      update.id = id;
      update.values.embedding = vector;
      update.fields = {UpdatableField::kEmbedding};
      ASSERT_TRUE(engine_->UpdateEpisode(kDefaultTenant, "mem", update).ok());
    }
  };
  update_some(120);
  index::PartitionStats stats = partition_stats();
  EXPECT_EQ(stats.vectors, 400u);
  EXPECT_EQ(stats.deleted, 120u) << "below a quarter: left alone";
  expect_agreement();

  // 60 more: 180 of 580 rows, past a quarter: compacted to the 400 live.
  // A slow machine's indexer may drain the updates in several batches and
  // compact before the last ones land, which then stay removed: fewer than
  // before (removed rows only grow without a compaction) and below the
  // trigger.
  update_some(60);
  stats = partition_stats();
  EXPECT_EQ(stats.vectors, 400u);
  EXPECT_LT(stats.deleted, 120u) << "no compaction";
  EXPECT_LT(stats.deleted * 4, stats.vectors + stats.deleted);
  EXPECT_TRUE(stats.has_graph);
  expect_agreement();

  // Deletes too, down below the graph threshold: the copy is scanned.
  DeleteTarget target;
  for (const auto& [id, vector] : live) {
    if (target.ids.size() == 150) break;
    target.ids.push_back(id);
  }
  for (uint64_t id : target.ids) live.erase(id);
  ASSERT_TRUE(engine_->DeleteEpisodes(kDefaultTenant, "mem", target).ok());
  stats = partition_stats();
  EXPECT_EQ(stats.vectors, 250u);
  EXPECT_EQ(stats.deleted, 0u);
  EXPECT_FALSE(stats.has_graph);
  expect_agreement();

  // A restart loads the compacted snapshot.
  Close();
  Open();
  stats = partition_stats();
  EXPECT_EQ(stats.vectors, 250u);
  EXPECT_EQ(stats.deleted, 0u);
  EXPECT_EQ(engine_->IndexLoadReport().vectors_read_from_store, 0u);
  expect_agreement();
}

TEST_F(EngineTest, BadSearchesAreRejectedOnce) {
  ASSERT_TRUE(engine_->CreateSpace(kDefaultTenant, {.name = "mem", .dimension = kDim}).ok());
  std::vector<float> query(kDim, 1.0f);
  SearchRequest request;
  request.query = query;
  request.k = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(engine_->Search(kDefaultTenant, "mem", request).status()));
  request.k = engine_->max_k() + 1;
  EXPECT_TRUE(absl::IsInvalidArgument(engine_->Search(kDefaultTenant, "mem", request).status()));
  request.k = 5;
  std::vector<float> short_query(kDim - 1, 1.0f);
  request.query = short_query;
  EXPECT_TRUE(absl::IsInvalidArgument(engine_->Search(kDefaultTenant, "mem", request).status()));
  query[3] = std::nanf("");
  request.query = query;
  EXPECT_TRUE(absl::IsInvalidArgument(engine_->Search(kDefaultTenant, "mem", request).status()));
  query[3] = 0;
  request.beam_width = 1 << 20;
  EXPECT_TRUE(absl::IsInvalidArgument(engine_->Search(kDefaultTenant, "mem", request).status()));
  request.beam_width = 0;
  EXPECT_TRUE(absl::IsNotFound(engine_->Search(kDefaultTenant, "nope", request).status()));
  EXPECT_TRUE(absl::IsNotFound(engine_->Search("other-tenant", "mem", request).status()));
  auto empty = engine_->Search(kDefaultTenant, "mem", request);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->hits.empty());
}

// A write the index receives after the delete of the same id (a put whose
// indexing was overtaken by the delete) is recognised and dropped: ids are
// never reused, so it can only be stale.
TEST_F(EngineTest, AnUpsertArrivingAfterItsDeleteIsDropped) {
  ASSERT_TRUE(engine_->CreateSpace(kDefaultTenant, {.name = "mem", .dimension = kDim}).ok());
  std::mt19937 rng(9);
  std::vector<float> vector = RandomVector(rng);
  Episode episode;
  episode.agent_id = "a";
  episode.embedding = vector;
  std::vector<Episode> written;
  ASSERT_TRUE(store_->PutEpisodes(kDefaultTenant, "mem", {{"", episode}}, &written).ok());
  ASSERT_EQ(written.size(), 1u);
  const Episode record = written[0];
  auto space = store_->LookupSpace(kDefaultTenant, "mem");
  ASSERT_TRUE(space.ok());
  // A second index over the same store, driven by hand in the racing order.
  EpisodeIndex index(IndexOptions{}, store_.get(), dir_.Sub("other-index"));
  ASSERT_TRUE(index.Load().ok());
  index.Remove(kDefaultTenant, "mem", {record.id});
  index.Upsert(kDefaultTenant, *space, {record});
  index.Flush();
  const EpisodeFilter no_filter;
  const SearchContext context{kDefaultTenant, *space, vector, no_filter};
  for (bool scan : {false, true}) {
    auto candidates = index.Propose(context, 10, scan);
    ASSERT_TRUE(candidates.ok());
    for (const Candidate& candidate : *candidates) EXPECT_NE(candidate.id, record.id);
  }
}

// Writers put, update and delete while searchers run. A search never
// returns an episode whose delete was acknowledged before it started; at
// the end (and after a restart, and after a rebuild that races more writes)
// every live episode is its own nearest neighbour on the index route, and
// the index and scan routes reach the exact route's top 10.
TEST_F(EngineTest, IndexAgreesWithTheStoreUnderConcurrentWritesRestartAndRebuild) {
  ASSERT_TRUE(engine_->CreateSpace(kDefaultTenant, {.name = "mem", .dimension = kDim}).ok());
  absl::Mutex mutex;
  std::map<uint64_t, std::vector<float>> live;  // guarded by mutex
  std::set<uint64_t> deleted;                   // guarded by mutex
  std::atomic<bool> stop{false};
  std::atomic<int> violations{0};
  auto writer = [&](int seed, int count) {
    std::mt19937 rng(seed);
    for (int i = 0; i < count; ++i) {
      std::vector<float> vector = RandomVector(rng);
      const std::string agent = absl::StrCat("agent", rng() % 2);
      const uint64_t id = PutOne(agent, vector);
      {
        absl::MutexLock lock(&mutex);
        live[id] = vector;
      }
      if (i % 7 == 3) {  // update the vector of an earlier one
        uint64_t target = 0;
        std::vector<float> replacement = RandomVector(rng);
        {
          absl::MutexLock lock(&mutex);
          target = live.begin()->first;
        }
        EpisodeUpdate update;
        update.id = target;
        update.values.embedding = replacement;
        update.fields = {UpdatableField::kEmbedding};
        if (engine_->UpdateEpisode(kDefaultTenant, "mem", update).ok()) {
          absl::MutexLock lock(&mutex);
          if (live.contains(target)) live[target] = replacement;
        }
      }
      if (i % 5 == 4) {  // delete one
        uint64_t target = 0;
        {
          absl::MutexLock lock(&mutex);
          auto it = live.begin();
          std::advance(it, rng() % live.size());
          target = it->first;
          live.erase(it);  // no longer expected before the delete is acknowledged
        }
        DeleteTarget what;
        what.ids = {target};
        auto removed = engine_->DeleteEpisodes(kDefaultTenant, "mem", what);
        absl::MutexLock lock(&mutex);
        if (removed.ok()) deleted.insert(target);
      }
    }
  };
  auto searcher = [&](int seed) {
    std::mt19937 rng(seed);
    while (!stop.load()) {
      std::set<uint64_t> gone;
      {
        absl::MutexLock lock(&mutex);
        gone = deleted;
      }
      const Route route = rng() % 2 == 0 ? Route::kIndex : Route::kScan;
      for (uint64_t id : SearchIds(RandomVector(rng), 20, route)) {
        if (gone.contains(id)) violations.fetch_add(1);
      }
    }
  };
  auto check_all_live = [&](const char* when) {
    SCOPED_TRACE(when);
    engine_->FlushIndex();
    absl::MutexLock lock(&mutex);
    for (const auto& [id, vector] : live) {
      ASSERT_EQ(SearchIds(vector, 1, Route::kIndex), std::vector<uint64_t>{id});
    }
    // The graph is approximate: recall against the exact route, not equality.
    std::mt19937 rng(77);
    size_t index_hits = 0, scan_hits = 0, total = 0;
    for (int q = 0; q < 40; ++q) {
      std::vector<float> query = RandomVector(rng);
      std::vector<uint64_t> exact = SearchIds(query, 10, Route::kExact);
      std::set<uint64_t> truth(exact.begin(), exact.end());
      for (uint64_t id : SearchIds(query, 10, Route::kIndex)) index_hits += truth.count(id);
      for (uint64_t id : SearchIds(query, 10, Route::kScan)) scan_hits += truth.count(id);
      total += truth.size();
    }
    EXPECT_GE(static_cast<double>(index_hits) / total, 0.95);
    EXPECT_GE(static_cast<double>(scan_hits) / total, 0.99);
    EXPECT_EQ(engine_->Health().add_failures, 0u);
  };

  {
    std::vector<std::thread> threads;
    threads.emplace_back(writer, 1, 500);
    threads.emplace_back(writer, 2, 500);
    std::thread search_thread(searcher, 3);
    for (std::thread& thread : threads) thread.join();
    stop = true;
    search_thread.join();
  }
  EXPECT_EQ(violations.load(), 0);
  check_all_live("after concurrent writes");

  Close();
  Open();
  check_all_live("after a restart");

  std::thread rebuild([&] { EXPECT_TRUE(engine_->RebuildIndex(kDefaultTenant, "mem").ok()); });
  writer(4, 200);
  rebuild.join();
  check_all_live("after a rebuild that raced writes");
}

}  // namespace
}  // namespace engram::retrieval
