// The dual-process router's parts: time expressions, query hints, score
// profiles, the gate's arithmetic and explanation, weighted fusion, the
// store's session neighbours, and the routes through the engine checked
// against the exact route on vectors that are not unit length, with filters
// that keep everything, half, a few and nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "retrieval/engine.h"
#include "retrieval/fusion.h"
#include "retrieval/quality_gate.h"
#include "retrieval/time_expressions.h"
#include "tests/util/temp_dir.h"

namespace engram::retrieval {
namespace {

int64_t Day(int y, int m, int d) {
  return absl::ToUnixMicros(absl::FromCivil(absl::CivilDay(y, m, d), absl::UTCTimeZone()));
}

// Reference: Wednesday 2023-05-17, 15:00 UTC.
const absl::Time kReference =
    absl::FromCivil(absl::CivilSecond(2023, 5, 17, 15, 0, 0), absl::UTCTimeZone());

TEST(TimeExpressionsTest, ResolvesAgainstTheReferenceTime) {
  struct Case {
    const char* text;
    int64_t from, to;
    const char* expression;
  };
  const Case cases[] = {
      {"what did I eat yesterday?", Day(2023, 5, 16), Day(2023, 5, 17), "yesterday"},
      {"Today I ran", Day(2023, 5, 17), Day(2023, 5, 18), "today"},
      {"the day before yesterday", Day(2023, 5, 15), Day(2023, 5, 16), "the day before yesterday"},
      {"3 days ago", Day(2023, 5, 14), Day(2023, 5, 15), "3 days ago"},
      {"two weeks ago", Day(2023, 5, 1), Day(2023, 5, 8), "two weeks ago"},
      {"a month ago", Day(2023, 4, 1), Day(2023, 5, 1), "a month ago"},
      {"last week", Day(2023, 5, 8), Day(2023, 5, 15), "last week"},
      {"this weekend", Day(2023, 5, 20), Day(2023, 5, 22), "this weekend"},
      {"last month", Day(2023, 4, 1), Day(2023, 5, 1), "last month"},
      {"LAST YEAR", Day(2022, 1, 1), Day(2023, 1, 1), "last year"},
      {"in May 2022", Day(2022, 5, 1), Day(2022, 6, 1), "in may 2022"},
      {"last May", Day(2022, 5, 1), Day(2022, 6, 1), "last may"},
      {"in June", Day(2022, 6, 1), Day(2022, 7, 1), "in june"},  // the latest June not after
      {"in March", Day(2023, 3, 1), Day(2023, 4, 1), "in march"},
      {"on May 8, 2023", Day(2023, 5, 8), Day(2023, 5, 9), "may 8 2023"},
      {"8 May, 2023", Day(2023, 5, 8), Day(2023, 5, 9), "8 may 2023"},
      {"Sept 3rd", Day(2023, 9, 3), Day(2023, 9, 4), "sept 3rd"},
      {"since 2021", Day(2021, 1, 1), Day(2200, 1, 1), "since 2021"},
      {"before 2020", Day(1900, 1, 1), Day(2020, 1, 1), "before 2020"},
      {"during 2019?", Day(2019, 1, 1), Day(2020, 1, 1), "during 2019"},
      {"on 2023-05-08 we met", Day(2023, 5, 8), Day(2023, 5, 9), "2023 05 08"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    std::optional<TimeWindow> window = FindTimeExpression(c.text, kReference);
    ASSERT_TRUE(window.has_value());
    EXPECT_EQ(window->from_us, c.from);
    EXPECT_EQ(window->to_us, c.to);
    EXPECT_EQ(window->expression, c.expression);
  }
}

TEST(TimeExpressionsTest, LeavesOtherWordsAlone) {
  for (const char* text :
       {"", "may I ask about the trip", "what is Bob's favourite food", "room 2023", "12345 days",
        "in 99", "a 32nd of May", "!!!", "\xff\xfe invalid utf8 yesterdayz"}) {
    SCOPED_TRACE(text);
    EXPECT_FALSE(FindTimeExpression(text, kReference).has_value());
  }
}

TEST(QueryHintsTest, CountsRareTokensAndAggregationWording) {
  QueryHints hints = ReadQueryHints("When did Caroline meet Melanie in May 2023?", kReference);
  EXPECT_TRUE(hints.time.has_value());
  EXPECT_EQ(hints.words, 8u);
  EXPECT_EQ(hints.rare_tokens, 4u);  // Caroline, Melanie, May, 2023; not the first word
  EXPECT_FALSE(hints.aggregation);
  hints = ReadQueryHints("what are all the books she read and liked", kReference);
  EXPECT_TRUE(hints.aggregation);
  EXPECT_EQ(hints.rare_tokens, 0u);
  EXPECT_FALSE(hints.time.has_value());
  hints = ReadQueryHints("i like user_42. I said so", kReference);
  EXPECT_EQ(hints.rare_tokens, 1u);  // user_42; "I" is no name
  EXPECT_EQ(ReadQueryHints("", kReference).words, 0u);
}

TEST(ScoreProfilesTest, ReadsAScoreAgainstTheSpacesOwnHistory) {
  ScoreProfiles profiles;
  std::mt19937 rng(1);
  std::normal_distribution<double> scores(10.0, 2.0);
  for (int i = 0; i < 19; ++i) EXPECT_EQ(profiles.Observe("s", scores(rng)).z, 0.0);  // warming
  for (int i = 0; i < 500; ++i) profiles.Observe("s", scores(rng));
  const ScoreProfiles::Reading high = profiles.Observe("s", 18.0);
  EXPECT_NEAR(high.z, 4.0, 0.6);
  EXPECT_NEAR(high.stddev, 2.0, 0.3);
  EXPECT_LT(profiles.Observe("s", 6.0).z, -1.5);
  // Another space's profile is its own, and forgetting one leaves the other.
  EXPECT_EQ(profiles.Observe("t", 1000.0).z, 0.0);
  profiles.Forget("s");
  EXPECT_EQ(profiles.Observe("s", 18.0).z, 0.0);
}

TEST(QualityGateTest, ExplainsEverySignalAndDecidesByThreshold) {
  GateModel model;
  model.bias = -1.0;
  model.weights[kHitsShort] = 4.0;
  model.weights[kLexicalMargin] = -2.0;
  model.threshold = 0.5;
  std::vector<double> values(kGateSignalCount, 0.0);
  values[kHitsShort] = 0.5;
  values[kLexicalMargin] = 0.25;
  GateDecision decision = DecideGate(model, values);
  ASSERT_EQ(decision.signals.size(), static_cast<size_t>(kGateSignalCount));
  EXPECT_EQ(decision.signals[kHitsShort].name, "hits_short");
  EXPECT_DOUBLE_EQ(decision.signals[kHitsShort].contribution, 2.0);
  EXPECT_DOUBLE_EQ(decision.signals[kLexicalMargin].contribution, -0.5);
  EXPECT_NEAR(decision.score, 1 / (1 + std::exp(-(-1.0 + 2.0 - 0.5))), 1e-12);
  EXPECT_TRUE(decision.escalated);
  EXPECT_NE(decision.reason.find("escalated"), std::string::npos) << decision.reason;
  EXPECT_NE(decision.reason.find("hits_short"), std::string::npos) << decision.reason;
  EXPECT_EQ(decision.reason.find("lexical_margin"), std::string::npos) << decision.reason;

  values[kHitsShort] = 0;
  decision = DecideGate(model, values);
  EXPECT_FALSE(decision.escalated);
  EXPECT_NE(decision.reason.find("lexical_margin"), std::string::npos) << decision.reason;
  model.threshold = 1.01;  // never
  values[kHitsShort] = 100;
  EXPECT_FALSE(DecideGate(model, values).escalated);
  model.threshold = 0;  // always
  values[kHitsShort] = -100;
  EXPECT_TRUE(DecideGate(model, values).escalated);
}

TEST(QualityGateTest, SignalsComeFromTheFastPathsWork) {
  ScoreProfiles profiles;
  FastObservation fast;
  fast.k = 10;
  fast.hits = 6;
  fast.vector_ran = fast.lexical_ran = true;
  fast.trace = {.partitions = 2,
                .exhaustive = false,
                .rerank_depth = 0.9,
                .order_disagreement = 0.3,
                .sample_recall = 0.92f};
  fast.vector_read = 40;
  fast.vector_passed = 10;
  fast.lexical_scores = {8.0f, 2.0f};
  fast.list_overlap = 0.4;
  const std::vector<double> v =
      GateSignalValues(fast, ReadQueryHints("list all of it", kReference), profiles, "t/s");
  EXPECT_DOUBLE_EQ(v[kRerankDepth], 0.9);
  EXPECT_DOUBLE_EQ(v[kOrderDisagreement], 0.3);
  EXPECT_NEAR(v[kRecallShortfall], 0.08, 1e-6);
  EXPECT_DOUBLE_EQ(v[kHitsShort], 0.4);
  EXPECT_DOUBLE_EQ(v[kFilterRejection], 0.75);
  EXPECT_DOUBLE_EQ(v[kLexicalMargin], 0.75);
  EXPECT_DOUBLE_EQ(v[kListOverlap], 0.4);
  EXPECT_DOUBLE_EQ(v[kAggregation], 1.0);
  EXPECT_DOUBLE_EQ(v[kTimeExpression], 0.0);
  // An exhaustive (exact) vector side has no quantization to doubt.
  fast.trace.exhaustive = true;
  const std::vector<double> exact = GateSignalValues(fast, {}, profiles, "t/s");
  EXPECT_EQ(exact[kRerankDepth], 0.0);
  EXPECT_EQ(exact[kRecallShortfall], 0.0);
}

TEST(FusionTest, WeightsScaleEachListsReciprocalRanks) {
  std::vector<RankedIds> lists = {{"a", {{1, 0.9f}, {2, 0.8f}}, 1.0},
                                  {"b", {{2, 5.0f}, {3, 4.0f}}, 0.5}};
  std::vector<FusedId> fused = FuseRanks(lists, 10);
  ASSERT_EQ(fused.size(), 3u);
  EXPECT_EQ(fused[0].id, 2u);  // 1/62 + 0.5/61
  EXPECT_NEAR(fused[0].score, 1.0 / 62 + 0.5 / 61, 1e-12);
  EXPECT_EQ(fused[1].id, 1u);  // 1/61
  EXPECT_EQ(fused[2].id, 3u);  // 0.5/62
  ASSERT_EQ(fused[0].sources.size(), 2u);
  EXPECT_EQ(fused[0].sources[1].source, "b");
  EXPECT_EQ(fused[0].sources[1].rank, 1u);
  EXPECT_FLOAT_EQ(fused[0].sources[1].score, 5.0f);
  EXPECT_EQ(FuseRanks(lists, 1).size(), 1u);
}

class RouterEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage::StoreOptions store_options;
    store_options.data_dir = dir_.Sub("data");
    store_options.sync_writes = false;
    auto store = storage::EpisodeStore::Open(store_options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    EngineOptions options;
    options.index.quantize_threshold = 32;
    options.index.graph_threshold = 200;
    options.index.max_degree = 16;
    options.index.build_threads = 2;
    options.index.snapshot_interval_s = 0;
    options.default_snapshot_dir = dir_.Sub("data/index");
    options.scanner.use_gpu = false;
    options.scanner.precision = index::Precision::kFp32;  // scores as exact as the exact route
    options.deliberate_below = deliberate_below_;
    auto engine = Engine::Open(store_.get(), std::move(options));
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  SearchResult Search(SearchRequest request, const std::string& space = "mem") {
    auto result = engine_->Search(kDefaultTenant, space, request);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *std::move(result) : SearchResult();
  }

  static std::vector<uint64_t> Ids(const SearchResult& result) {
    std::vector<uint64_t> ids;
    for (const SearchHit& hit : result.hits) ids.push_back(hit.episode.id);
    return ids;
  }

  // The gate itself, on every AUTO search (the spaces here are small).
  uint64_t deliberate_below_ = 0;
  testing::TempDir dir_;
  std::unique_ptr<storage::EpisodeStore> store_;
  std::unique_ptr<Engine> engine_;
};

class SmallAgentRouterTest : public RouterEngineTest {
 protected:
  void SetUp() override {
    deliberate_below_ = 100;
    RouterEngineTest::SetUp();
  }
};

TEST_F(SmallAgentRouterTest, AutoDeliberatesAtOnceBelowTheSizeAndGatesAbove) {
  SpaceInfo info;
  info.name = "mem";
  info.dimension = 3;
  info.metric = Metric::kL2;
  ASSERT_TRUE(engine_->CreateSpace(kDefaultTenant, info).ok());
  std::vector<EpisodeWrite> writes;
  for (int i = 0; i < 150; ++i) {
    EpisodeWrite write;
    write.episode.agent_id = i < 60 ? "small" : "large";
    write.episode.embedding = {float(i), float(i % 7), -3.5f * i};
    writes.push_back(std::move(write));
  }
  ASSERT_TRUE(engine_->PutEpisodes(kDefaultTenant, "mem", std::move(writes)).ok());
  // Counted once indexed (a batch the indexer is applying may be missing).
  engine_->FlushIndex();
  const std::vector<float> query = {20.0f, 1.0f, 3.0f};
  SearchRequest request;
  request.query = query;
  request.k = 5;
  request.filter.agent_id = "small";  // 60 vectors: below 100
  SearchResult result = Search(request);
  EXPECT_EQ(result.route, Route::kDeliberate);
  EXPECT_TRUE(result.gate.evaluated && result.gate.escalated);
  EXPECT_TRUE(result.gate.signals.empty());
  EXPECT_NE(result.gate.reason.find("covers 60 vectors, fewer than 100"), std::string::npos)
      << result.gate.reason;
  for (const StageReport& stage : result.stages) EXPECT_NE(stage.name, "gate");
  request.filter.agent_id = "large";  // 90 vectors: below too
  EXPECT_EQ(Search(request).route, Route::kDeliberate);
  request.filter.agent_id = "";  // the whole space, 150: the fast path and the gate
  result = Search(request);
  EXPECT_EQ(result.gate.signals.size(), static_cast<size_t>(kGateSignalCount));
  EXPECT_EQ(result.gate.escalated, result.route == Route::kDeliberate);
  request.policy = RoutePolicy::kFast;  // asked for: no rule applies
  request.filter.agent_id = "small";
  result = Search(request);
  EXPECT_EQ(result.route, Route::kIndex);
  EXPECT_FALSE(result.gate.evaluated);
}

TEST_F(RouterEngineTest, DeliberationOfAVectorQueryIsTheExactAnswer) {
  constexpr uint32_t kDim = 12;
  std::mt19937 rng(7);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::uniform_real_distribution<float> norm(0.1f, 20.0f);
  for (Metric metric : {Metric::kInnerProduct, Metric::kL2, Metric::kCosine}) {
    const std::string space = absl::StrCat("mem", static_cast<int>(metric));
    SpaceInfo info;
    info.name = space;
    info.dimension = kDim;
    info.metric = metric;
    ASSERT_TRUE(engine_->CreateSpace(kDefaultTenant, info).ok());
    // Vectors far from unit length, two agents (one with a graph), kinds
    // and event times left to their defaults on half of them.
    std::vector<EpisodeWrite> writes;
    for (int i = 0; i < 600; ++i) {
      EpisodeWrite write;
      write.episode.agent_id = i < 450 ? "big" : "small";
      write.episode.session_id = absl::StrCat("s", i % 3);
      const float scale = norm(rng);
      for (uint32_t d = 0; d < kDim; ++d) write.episode.embedding.push_back(gauss(rng) * scale);
      if (i % 2 == 0) {
        write.episode.kind = i % 4 == 0 ? "fact" : "note";
        write.episode.event_time_us = 1000 + i;
      }
      write.episode.metadata["i"] = MetadataValue{static_cast<int64_t>(i)};
      writes.push_back(std::move(write));
    }
    ASSERT_TRUE(engine_->PutEpisodes(kDefaultTenant, space, std::move(writes)).ok());
    engine_->FlushIndex();

    std::vector<std::pair<std::string, EpisodeFilter>> filters;
    filters.emplace_back("all", EpisodeFilter{});
    EpisodeFilter half;
    half.metadata.push_back({"i", MetadataPredicate::Op::kLt, MetadataValue{int64_t{300}}});
    filters.emplace_back("half", half);
    EpisodeFilter few;
    few.agent_id = "big";
    few.kinds = {"fact"};
    few.session_id = "s1";
    filters.emplace_back("few", few);
    EpisodeFilter none;
    none.kinds = {"never"};
    filters.emplace_back("none", none);
    for (int q = 0; q < 8; ++q) {
      std::vector<float> query(kDim);
      const float scale = norm(rng);
      for (float& x : query) x = gauss(rng) * scale;
      for (const auto& [name, filter] : filters) {
        SCOPED_TRACE(absl::StrCat(space, " ", name, " query ", q));
        SearchRequest request;
        request.query = query;
        request.k = 10;
        request.filter = filter;
        request.route = Route::kExact;
        const SearchResult exact = Search(request, space);
        request.route = Route::kIndex;
        request.policy = RoutePolicy::kDeliberate;
        const SearchResult deliberate = Search(request, space);
        EXPECT_EQ(deliberate.route, Route::kDeliberate);
        EXPECT_EQ(Ids(deliberate), Ids(exact));
        for (size_t i = 0; i < deliberate.hits.size() && i < exact.hits.size(); ++i) {
          EXPECT_NEAR(deliberate.hits[i].score, exact.hits[i].score,
                      1e-4 * std::max(1.0f, std::abs(exact.hits[i].score)));
        }
        // AUTO answers with the fast path or with deliberation, and says which.
        request.policy = RoutePolicy::kAuto;
        const SearchResult automatic = Search(request, space);
        ASSERT_TRUE(automatic.gate.evaluated);
        EXPECT_EQ(automatic.gate.signals.size(), static_cast<size_t>(kGateSignalCount));
        EXPECT_EQ(automatic.gate.escalated, automatic.route == Route::kDeliberate);
        EXPECT_FALSE(automatic.gate.reason.empty());
        if (automatic.gate.escalated) {
          EXPECT_EQ(Ids(automatic), Ids(exact));
        }
        EXPECT_EQ(automatic.hits.size(), exact.hits.size());
      }
    }
  }
}

TEST_F(RouterEngineTest, DeliberationAddsContextAndPromotesTheTimeWindow) {
  SpaceInfo info;
  info.name = "mem";
  info.dimension = 2;
  info.metric = Metric::kL2;
  ASSERT_TRUE(engine_->CreateSpace(kDefaultTenant, info).ok());
  // A conversation: the question's words are in one turn; the answer is the
  // turn after it, which shares none of them. Another session interleaves.
  const int64_t may = Day(2023, 5, 10), june = Day(2023, 6, 10);
  const std::vector<std::tuple<std::string, std::string, int64_t>> turns = {
      {"s1", "shall we talk about the garden", may},
      {"s2", "unrelated chatter from another session", june},
      {"s1", "what colour did you paint the fence", may},
      {"s2", "more unrelated chatter", june},
      {"s1", "bright yellow, two coats", may},
      {"s1", "lovely, the neighbours will notice", may},
      {"s2", "I painted the fence in june too", june},
  };
  std::vector<EpisodeWrite> writes;
  for (const auto& [session, text, time] : turns) {
    EpisodeWrite write;
    write.episode.agent_id = "a";
    write.episode.session_id = session;
    write.episode.text = text;
    write.episode.event_time_us = time;
    write.episode.embedding = {static_cast<float>(writes.size()), 0.0f};
    writes.push_back(std::move(write));
  }
  auto put = engine_->PutEpisodes(kDefaultTenant, "mem", std::move(writes));
  ASSERT_TRUE(put.ok()) << put.status();
  std::vector<uint64_t> ids;
  for (const PutResult& r : *put) ids.push_back(r.id);

  SearchRequest request;
  request.query_text = "paint fence";
  request.k = 3;
  request.filter.agent_id = "a";
  request.policy = RoutePolicy::kFast;
  const SearchResult fast = Search(request);
  EXPECT_EQ(fast.route, Route::kLexical);
  const std::vector<uint64_t> fast_ids = Ids(fast);
  // BM25 cannot find the answer: it shares no word with the question.
  EXPECT_EQ(std::count(fast_ids.begin(), fast_ids.end(), ids[4]), 0);

  request.policy = RoutePolicy::kDeliberate;
  request.k = 5;
  SearchResult deliberate = Search(request);
  EXPECT_EQ(deliberate.route, Route::kDeliberate);
  bool answer_found = false;
  for (const SearchHit& hit : deliberate.hits) {
    if (hit.episode.id != ids[4]) continue;
    answer_found = true;
    ASSERT_FALSE(hit.sources.empty());
    EXPECT_EQ(hit.sources[0].source, "context");
  }
  EXPECT_TRUE(answer_found);
  std::vector<std::string> stages;
  for (const StageReport& stage : deliberate.stages) stages.push_back(stage.name);
  EXPECT_EQ(stages, (std::vector<std::string>{"lexical", "context", "fuse"}));
  // Context is the two turns just before or after a hit in the hit's own
  // session: of BM25's hits 2 (session s1) and 6 (s2), turns 0, 4 and 5,
  // and 3 and 1.
  const std::set<uint64_t> adjacent = {ids[0], ids[4], ids[5], ids[3], ids[1]};
  for (const SearchHit& hit : deliberate.hits) {
    for (const SourceRank& source : hit.sources) {
      if (source.source == "context") {
        EXPECT_TRUE(adjacent.contains(hit.episode.id)) << hit.episode.text;
      }
    }
  }

  // "in June" (against a reference in 2023): the June turn about the fence
  // comes first; the May one stays, demoted rather than dropped.
  request.query_text = "painted the fence in june";
  request.reference_time = absl::FromUnixMicros(Day(2023, 8, 1));
  deliberate = Search(request);
  ASSERT_GE(deliberate.hits.size(), 2u);
  EXPECT_EQ(deliberate.hits[0].episode.id, ids[6]);
  const std::vector<uint64_t> timed_ids = Ids(deliberate);
  EXPECT_EQ(std::count(timed_ids.begin(), timed_ids.end(), ids[2]), 1);
  const auto time_stage = std::find_if(deliberate.stages.begin(), deliberate.stages.end(),
                                       [](const StageReport& s) { return s.name == "time"; });
  ASSERT_NE(time_stage, deliberate.stages.end());
  EXPECT_EQ(time_stage->note, "\"in june\"");
}

TEST_F(RouterEngineTest, SessionNeighborsSkipOtherSessionsAndTheSeeds) {
  SpaceInfo info;
  info.name = "mem";
  info.dimension = 1;
  ASSERT_TRUE(engine_->CreateSpace(kDefaultTenant, info).ok());
  std::vector<EpisodeWrite> writes;
  for (const char* session : {"x", "y", "x", "y", "y", "x", "x"}) {
    EpisodeWrite write;
    write.episode.agent_id = "a";
    write.episode.session_id = session;
    write.episode.embedding = {1.0f};
    writes.push_back(std::move(write));
  }
  auto put = engine_->PutEpisodes(kDefaultTenant, "mem", std::move(writes));
  ASSERT_TRUE(put.ok());
  std::vector<Episode> seeds;
  for (size_t i : {2, 6}) {
    auto episode = engine_->GetEpisode(kDefaultTenant, "mem", (*put)[i].id);
    ASSERT_TRUE(episode.ok());
    seeds.push_back(*episode);
  }
  std::vector<const Episode*> pointers = {&seeds[0], &seeds[1]};
  auto neighbors = store_->SessionNeighbors(kDefaultTenant, "mem", pointers, 1);
  ASSERT_TRUE(neighbors.ok()) << neighbors.status();
  ASSERT_EQ(neighbors->size(), 2u);
  auto ids = [](const std::vector<EpisodeRef>& refs) {
    std::vector<uint64_t> out;
    for (const EpisodeRef& r : refs) out.push_back(r.id);
    return out;
  };
  // Seed 2 (session x): 0 before, 5 after (3 and 4 are session y).
  EXPECT_EQ(ids((*neighbors)[0]), (std::vector<uint64_t>{(*put)[0].id, (*put)[5].id}));
  // Seed 6: 5 before, nothing after.
  EXPECT_EQ(ids((*neighbors)[1]), (std::vector<uint64_t>{(*put)[5].id}));
  auto wider = store_->SessionNeighbors(kDefaultTenant, "mem", pointers, 3);
  ASSERT_TRUE(wider.ok());
  // Seed 2's earlier turn 0; later 5 (6 is a seed, never listed).
  EXPECT_EQ(ids((*wider)[0]), (std::vector<uint64_t>{(*put)[0].id, (*put)[5].id}));
  EXPECT_EQ(store_->SessionNeighbors(kDefaultTenant, "nope", pointers, 1).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace engram::retrieval
