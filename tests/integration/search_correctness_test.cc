// Search through engramd against the exact route, on the data that once
// broke it: episodes that rely on defaults (kind, event time) filtered by
// the attributes the index checks during traversal; inner product on
// vectors that are not unit length, at every partition stage; and index
// snapshots written before the index took its attributes from the store,
// which startup must not trust.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/cpp/engram_client.h"
#include "index/vector_partition.h"
#include "tests/util/daemon_fixture.h"

namespace engram {
namespace {

std::vector<float> RandomVector(std::mt19937& rng, int dim, float norm_low = 1,
                                float norm_high = 1) {
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(norm_low, norm_high);
  std::vector<float> v(dim);
  double norm = 0;
  for (float& x : v) {
    x = gauss(rng);
    norm += double{x} * x;
  }
  const float factor = scale(rng) * std::sqrt(static_cast<float>(dim) / norm);
  for (float& x : v) x *= factor;
  return v;
}

class SearchCorrectnessTest : public testing::DaemonTest {
 protected:
  void StartWith(const std::string& index_yaml) {
    config_ = dir_.Sub("engramd.yaml");
    FILE* file = fopen(config_.c_str(), "w");
    fprintf(file, "index:\n%s  build_threads: 2\n", index_yaml.c_str());
    fclose(file);
    StartDaemonWith({"--config", config_});
  }

  // Puts the episodes in batches of 250; returns their ids in order.
  std::vector<uint64_t> Put(const std::string& space, std::vector<v1::Episode> episodes) {
    std::vector<uint64_t> ids;
    for (size_t start = 0; start < episodes.size(); start += 250) {
      v1::PutEpisodesRequest put;
      put.set_space(space);
      for (size_t i = start; i < std::min(start + 250, episodes.size()); ++i) {
        *put.add_episodes()->mutable_episode() = episodes[i];
      }
      auto result = client_->PutEpisodes(put);
      EXPECT_TRUE(result.ok()) << result.status();
      if (!result.ok()) return ids;
      ids.insert(ids.end(), result->ids().begin(), result->ids().end());
    }
    return ids;
  }

  // Recall@k of `route` against the exact route for one request, and the
  // exact route's hit count.
  std::pair<double, size_t> Compare(v1::SearchRequest search, bool scan) {
    search.set_scan(scan);
    auto found = client_->Search(search);
    search.set_scan(false);
    search.set_exact(true);
    auto exact = client_->Search(search);
    EXPECT_TRUE(found.ok()) << found.status();
    EXPECT_TRUE(exact.ok()) << exact.status();
    if (!found.ok() || !exact.ok()) return {0, 0};
    std::set<uint64_t> truth;
    for (const auto& hit : exact->hits()) truth.insert(hit.episode().id());
    size_t hits = 0;
    for (const auto& hit : found->hits()) hits += truth.count(hit.episode().id());
    EXPECT_EQ(found->hits_size(), exact->hits_size());
    return {truth.empty() ? 1.0 : static_cast<double>(hits) / truth.size(), truth.size()};
  }

  // Searching with an episode's own vector and kinds = ["message"] (the
  // store's default kind) must find that episode first, from the index.
  void ExpectFoundFirstAsDefaultKind(const std::vector<float>& vector, uint64_t id) {
    v1::SearchRequest search;
    search.set_space("mem");
    search.set_k(5);
    search.mutable_query()->Add(vector.begin(), vector.end());
    search.mutable_filter()->add_kinds("message");
    search.set_route(v1::ROUTE_FAST);
    auto found = client_->Search(search);
    ASSERT_TRUE(found.ok()) << found.status();
    ASSERT_EQ(found->hits_size(), 5);
    EXPECT_EQ(found->route(), "index");
    EXPECT_EQ(found->hits(0).episode().id(), id);
    EXPECT_EQ(found->hits(0).episode().kind(), "message");
  }

  std::string config_;
};

// Half the episodes leave kind, session and event time to their defaults;
// every attribute the index filters on during traversal is queried with
// and without those defaults, and the index must agree with the exact route.
TEST_F(SearchCorrectnessTest, EveryIndexedAttributeAgreesWithExactWithAndWithoutDefaults) {
  StartWith("  quantize_threshold: 64\n  graph_threshold: 600\n  max_degree: 24\n");
  constexpr int kDim = 16;
  ASSERT_TRUE(client_->CreateSpace("mem", kDim, v1::METRIC_COSINE).ok());
  const int64_t before = absl::ToUnixMicros(absl::Now());
  std::mt19937 rng(5);
  std::vector<v1::Episode> episodes;
  std::vector<std::vector<float>> vectors;
  for (int i = 0; i < 1200; ++i) {
    v1::Episode e;
    e.set_agent_id("a");
    if (i % 2 == 1) {  // explicit attributes; the even ones use the defaults
      e.set_kind(i % 4 == 1 ? "message" : "fact");
      e.set_session_id(absl::StrCat("s", i % 3));
      e.set_event_time_us(1000 + i);
    }
    (*e.mutable_metadata())["n"].set_int_value(i % 100);  // checked only on read-back
    // A quarter expire in the far future, a few within a second.
    if (i % 4 == 2) e.set_expires_at_us(before + 3'600'000'000LL);
    if (i % 50 == 3) e.set_expires_at_us(before + 1'000'000);
    vectors.push_back(RandomVector(rng, kDim));
    e.mutable_embedding()->Add(vectors.back().begin(), vectors.back().end());
    episodes.push_back(e);
  }
  std::vector<uint64_t> ids = Put("mem", episodes);
  ASSERT_EQ(ids.size(), episodes.size());
  const int64_t after = absl::ToUnixMicros(absl::Now());

  // The reproduction from the bug report: an episode of the default kind,
  // found by its own vector with kinds = ["message"].
  for (int i : {0, 4, 6, 100}) {
    SCOPED_TRACE(absl::StrCat("episode ", i));
    ExpectFoundFirstAsDefaultKind(vectors[i], ids[i]);
  }

  absl::SleepFor(absl::Seconds(1.2));  // the short-lived ones expire
  struct Shape {
    std::string name;
    std::function<void(v1::EpisodeFilter&)> apply;
    bool matches_none = false;
  };
  const std::vector<Shape> shapes = {
      {"no filter", [](v1::EpisodeFilter&) {}},
      {"default kind", [](v1::EpisodeFilter& f) { f.add_kinds("message"); }},
      {"explicit kind", [](v1::EpisodeFilter& f) { f.add_kinds("fact"); }},
      {"both kinds",
       [](v1::EpisodeFilter& f) {
         f.add_kinds("fact");
         f.add_kinds("message");
       }},
      {"default session",
       [](v1::EpisodeFilter& f) {
         f.set_agent_id("a");
         f.set_session_id("");
       }},
      {"explicit session",
       [](v1::EpisodeFilter& f) {
         f.set_agent_id("a");
         f.set_session_id("s1");
       }},
      {"default event time",
       [&](v1::EpisodeFilter& f) {
         f.set_event_time_from_us(before);
         f.set_event_time_to_us(after + 1);
       }},
      {"explicit event time",
       [](v1::EpisodeFilter& f) {
         f.set_event_time_from_us(1000);
         f.set_event_time_to_us(1600);
       }},
      // About 25 episodes: every traversal check at once.
      {"few: session, kind and event time",
       [](v1::EpisodeFilter& f) {
         f.set_agent_id("a");
         f.set_session_id("s1");
         f.add_kinds("fact");
         f.set_event_time_from_us(1000);
         f.set_event_time_to_us(1300);
       }},
      // 12 episodes, and a predicate the index cannot see: the read-back
      // rejects most candidates, so the search widens and falls back.
      {"few: metadata",
       [](v1::EpisodeFilter& f) {
         v1::MetadataPredicate* p = f.add_metadata();
         p->set_key("n");
         p->set_op(v1::MetadataPredicate::EQ);
         p->mutable_value()->set_int_value(7);
       }},
      {"none", [](v1::EpisodeFilter& f) { f.add_kinds("never-written"); }, true},
  };
  for (const Shape& shape : shapes) {
    for (bool scan : {false, true}) {
      SCOPED_TRACE(absl::StrCat(shape.name, scan ? " (scan)" : " (index)"));
      std::mt19937 query_rng(11);
      double recall = 0;
      size_t total = 0;
      for (int q = 0; q < 10; ++q) {
        v1::SearchRequest search;
        search.set_space("mem");
        search.set_k(10);
        std::vector<float> query = RandomVector(query_rng, kDim);
        search.mutable_query()->Add(query.begin(), query.end());
        shape.apply(*search.mutable_filter());
        auto [r, n] = Compare(search, scan);
        recall += r;
        total += n;
      }
      if (shape.matches_none) {
        EXPECT_EQ(total, 0u);
      } else {
        EXPECT_GT(total, 0u);
        EXPECT_GE(recall / 10, 0.95);
      }
    }
  }
}

// Every metric at every partition stage (exact float scan below 64 vectors,
// INT8 code scan below 600, graph from 600), on vectors whose norms vary
// between 0.5x and 2x: the index and scan routes against the exact route,
// with stored vectors and fresh ones as queries.
TEST_F(SearchCorrectnessTest, EveryMetricAndStageAgreesWithExactOnVectorsOfAnyNorm) {
  // Graphs calibrate their beam to reach target_recall on a sample of their
  // own vectors; 0.98 leaves room for these 16 other queries to reach 0.95.
  StartWith(
      "  quantize_threshold: 64\n  graph_threshold: 600\n  max_degree: 24\n"
      "  target_recall: 0.98\n");
  constexpr int kDim = 32;
  const std::vector<std::pair<std::string, int>> agents = {
      {"small", 40}, {"codes", 400}, {"graph", 1500}};
  for (v1::Metric metric : {v1::METRIC_INNER_PRODUCT, v1::METRIC_L2, v1::METRIC_COSINE}) {
    const std::string space = absl::StrCat("m", static_cast<int>(metric));
    ASSERT_TRUE(client_->CreateSpace(space, kDim, metric).ok());
    std::mt19937 rng(static_cast<uint32_t>(metric));
    std::map<std::string, std::vector<std::vector<float>>> stored;
    std::vector<v1::Episode> episodes;
    for (const auto& [agent, count] : agents) {
      for (int i = 0; i < count; ++i) {
        v1::Episode e;
        e.set_agent_id(agent);
        stored[agent].push_back(RandomVector(rng, kDim, 0.5f, 2.0f));
        e.mutable_embedding()->Add(stored[agent].back().begin(), stored[agent].back().end());
        episodes.push_back(e);
      }
    }
    ASSERT_EQ(Put(space, episodes).size(), episodes.size());
    for (const auto& [agent, count] : agents) {
      for (bool scan : {false, true}) {
        SCOPED_TRACE(absl::StrCat(space, " agent ", agent, scan ? " scan" : " index"));
        double recall = 0;
        int queries = 0;
        std::mt19937 query_rng(3);
        for (int q = 0; q < 16; ++q, ++queries) {
          v1::SearchRequest search;
          search.set_space(space);
          search.set_k(10);
          search.mutable_filter()->set_agent_id(agent);
          std::vector<float> query =
              q % 2 == 0 ? stored[agent][q] : RandomVector(query_rng, kDim, 0.5f, 2.0f);
          search.mutable_query()->Add(query.begin(), query.end());
          recall += Compare(search, scan).first;
        }
        EXPECT_GE(recall / queries, 0.95);
      }
    }
  }
}

// A snapshot of the layout written before the LAYOUT file existed holds
// attributes the store never wrote (here: all zero, as the old write path
// produced for defaults). Startup must not trust it: the space is rebuilt
// from the store and filters on the defaults find the episodes again.
TEST_F(SearchCorrectnessTest, SnapshotsOfAnOlderLayoutAreRebuiltFromTheStore) {
  StartWith("  quantize_threshold: 64\n  graph_threshold: 600\n  max_degree: 24\n");
  constexpr int kDim = 16;
  ASSERT_TRUE(client_->CreateSpace("mem", kDim, v1::METRIC_COSINE).ok());
  std::mt19937 rng(8);
  std::vector<v1::Episode> episodes;
  std::vector<std::vector<float>> vectors;
  for (int i = 0; i < 300; ++i) {
    v1::Episode e;
    e.set_agent_id("a");  // kind and event time left to their defaults
    vectors.push_back(RandomVector(rng, kDim));
    e.mutable_embedding()->Add(vectors.back().begin(), vectors.back().end());
    episodes.push_back(e);
  }
  std::vector<uint64_t> ids = Put("mem", episodes);
  ASSERT_EQ(ids.size(), episodes.size());
  StopDaemon();

  // Rewrite the agent's snapshot with zeroed attributes and remove LAYOUT.
  const std::filesystem::path root = dir_.Sub("data/index");
  ASSERT_TRUE(std::filesystem::exists(root / "LAYOUT"));
  std::filesystem::path snapshot;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    if (entry.path().extension() == ".eix") snapshot = entry.path();
  }
  ASSERT_FALSE(snapshot.empty());
  index::PartitionOptions options;
  options.metric = Metric::kCosine;
  options.dimension = kDim;
  options.quantize_threshold = 64;
  options.graph_threshold = 600;
  options.graph.max_degree = 24;
  options.attribute_bytes = 40;
  auto stale = index::VectorPartition::Create(options);
  ASSERT_TRUE(stale.ok());
  std::vector<float> flat;
  for (const auto& v : vectors) flat.insert(flat.end(), v.begin(), v.end());
  std::vector<uint8_t> zero_attributes(ids.size() * options.attribute_bytes, 0);
  ASSERT_TRUE((*stale)->AddBatch(ids, flat, zero_attributes).ok());
  ASSERT_TRUE((*stale)->Save(snapshot.string()).ok());
  std::filesystem::remove(root / "LAYOUT");

  StartWith("  quantize_threshold: 64\n  graph_threshold: 600\n  max_degree: 24\n");
  auto stats = client_->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->index_load().spaces_rebuilt(), 1u);
  EXPECT_EQ(stats->index_load().partitions_from_snapshots(), 0u);
  for (int i : {0, 7, 150}) {
    SCOPED_TRACE(absl::StrCat("episode ", i));
    ExpectFoundFirstAsDefaultKind(vectors[i], ids[i]);
  }
  // The next shutdown writes the new layout, and the start after trusts it.
  StopDaemon();
  EXPECT_TRUE(std::filesystem::exists(root / "LAYOUT"));
  StartWith("  quantize_threshold: 64\n  graph_threshold: 600\n  max_degree: 24\n");
  stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->index_load().spaces_rebuilt(), 0u);
  EXPECT_EQ(stats->index_load().partitions_from_snapshots(), 1u);
}

}  // namespace
}  // namespace engram
