// The vector index behind Search, end to end: a real engramd with small
// index thresholds so a few thousand episodes get a graph. Index results are
// compared with the exact route, filters and deletes are checked on every
// hit, the index is rebuilt through engramctl, and it comes back after a
// restart.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "clients/cpp/engram_client.h"
#include "tests/util/daemon_fixture.h"
#include "tests/util/daemon_process.h"
#include "tests/util/engramctl.h"
#include "tests/util/temp_dir.h"

namespace engram {
namespace {

using client::Client;
using testing::RunCtl;

constexpr int kDim = 32;
constexpr int kAgentA = 1500;  // gets a graph (threshold 400)
constexpr int kAgentB = 300;   // INT8 code scan (quantized from 64)

// Points around 12 fixed centres; queries come from the same centres.
std::vector<float> Vector(std::mt19937& rng) {
  static const std::vector<std::vector<float>> centres = [] {
    std::mt19937 centre_rng(99);
    std::normal_distribution<float> gauss(0.0f, 1.0f);
    std::vector<std::vector<float>> c(12, std::vector<float>(kDim));
    for (auto& centre : c) {
      for (float& v : centre) v = gauss(centre_rng);
    }
    return c;
  }();
  std::normal_distribution<float> gauss(0.0f, 0.4f);
  const auto& centre = centres[rng() % centres.size()];
  std::vector<float> v(kDim);
  for (int i = 0; i < kDim; ++i) v[i] = centre[i] + gauss(rng);
  return v;
}

class IndexTest : public testing::DaemonTest {
 protected:
  void SetUp() override {
    config_ = dir_.Sub("engramd.yaml");
    FILE* file = fopen(config_.c_str(), "w");
    fprintf(file,
            "index:\n  quantize_threshold: 64\n  graph_threshold: 400\n  max_degree: 24\n"
            "  build_threads: 2\n");
    fclose(file);
    StartDaemon();
  }
  void StartDaemon() { StartDaemonWith({"--config", config_}); }

  // Agent "a": sessions s0..s4, kinds k0/k1, event time = i, metadata n = i % 10.
  void Populate() {
    ASSERT_TRUE(client_->CreateSpace("mem", kDim, v1::METRIC_COSINE).ok());
    std::mt19937 rng(1);
    for (int start = 0; start < kAgentA + kAgentB; start += 250) {
      v1::PutEpisodesRequest put;
      put.set_space("mem");
      for (int i = start; i < std::min(start + 250, kAgentA + kAgentB); ++i) {
        v1::Episode* e = put.add_episodes()->mutable_episode();
        e->set_agent_id(i < kAgentA ? "a" : "b");
        e->set_session_id(absl::StrCat("s", i % 5));
        e->set_kind(absl::StrCat("k", i % 2));
        e->set_text(absl::StrCat("episode ", i));
        e->set_event_time_us(i);
        (*e->mutable_metadata())["n"].set_int_value(i % 10);
        std::vector<float> v = Vector(rng);
        e->mutable_embedding()->Add(v.begin(), v.end());
      }
      auto put_result = client_->PutEpisodes(put);
      ASSERT_TRUE(put_result.ok()) << put_result.status();
    }
  }

  v1::SearchRequest Query(std::mt19937& rng, uint32_t k = 10) {
    v1::SearchRequest search;
    search.set_space("mem");
    search.set_k(k);
    std::vector<float> q = Vector(rng);
    search.mutable_query()->Add(q.begin(), q.end());
    search.set_route(v1::ROUTE_FAST);  // the index itself, not the router's choice
    return search;
  }

  // Mean overlap of the index route's ids with the exact route's.
  double RecallAgainstExact(const std::function<void(v1::SearchRequest&)>& shape) {
    std::mt19937 rng(7);
    size_t hits = 0, total = 0;
    for (int q = 0; q < 20; ++q) {
      v1::SearchRequest search = Query(rng);
      shape(search);
      auto indexed = client_->Search(search);
      search.set_exact(true);
      auto exact = client_->Search(search);
      EXPECT_TRUE(indexed.ok() && exact.ok());
      if (!indexed.ok() || !exact.ok()) return 0;
      EXPECT_EQ(exact->route(), "exact");
      std::set<uint64_t> truth;
      for (const auto& hit : exact->hits()) truth.insert(hit.episode().id());
      for (const auto& hit : indexed->hits()) hits += truth.count(hit.episode().id());
      total += truth.size();
    }
    return total == 0 ? 1.0 : static_cast<double>(hits) / total;
  }

  // Stats once the background indexer has every acknowledged write in a
  // partition (Stats itself never waits for it).
  absl::StatusOr<v1::StatsResponse> IndexedStats() {
    for (;;) {
      auto stats = client_->Stats();
      if (!stats.ok() || stats->index_health().queued() == 0) return stats;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  std::string config_;
};

TEST_F(IndexTest, GraphSearchAgreesWithExactSearchUnderFilters) {
  Populate();
  auto stats = IndexedStats();
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(stats->partitions_size(), 2);
  const v1::PartitionStats& a = stats->partitions(0);
  const v1::PartitionStats& b = stats->partitions(1);
  EXPECT_EQ(a.agent_id(), "a");
  EXPECT_TRUE(a.has_graph());
  EXPECT_NE(a.first_stage(), "exact");
  EXPECT_EQ(a.vectors(), static_cast<uint64_t>(kAgentA));
  EXPECT_GE(a.sample_recall(), 0.9);
  EXPECT_GT(a.graph_bytes(), 0u);
  EXPECT_FALSE(b.has_graph());
  EXPECT_EQ(b.first_stage(), "int8");

  std::mt19937 rng(3);
  auto plain = client_->Search(Query(rng));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->route(), "index");
  EXPECT_EQ(plain->hits_size(), 10);
  EXPECT_GE(RecallAgainstExact([](v1::SearchRequest&) {}), 0.9);

  // Filters checked during traversal; every hit must match, and the hits must
  // be (nearly) the exact route's.
  auto session = [](v1::SearchRequest& s) {
    s.mutable_filter()->set_agent_id("a");
    s.mutable_filter()->set_session_id("s3");
  };
  auto kinds_and_time = [](v1::SearchRequest& s) {
    s.mutable_filter()->add_kinds("k1");
    s.mutable_filter()->set_event_time_from_us(200);
    s.mutable_filter()->set_event_time_to_us(900);
  };
  auto metadata = [](v1::SearchRequest& s) {
    v1::MetadataPredicate* p = s.mutable_filter()->add_metadata();
    p->set_key("n");
    p->set_op(v1::MetadataPredicate::EQ);
    p->mutable_value()->set_int_value(7);
  };
  for (const auto& shape : {std::function<void(v1::SearchRequest&)>(session),
                            std::function<void(v1::SearchRequest&)>(kinds_and_time),
                            std::function<void(v1::SearchRequest&)>(metadata)}) {
    EXPECT_GE(RecallAgainstExact(shape), 0.9);
    v1::SearchRequest search = Query(rng);
    shape(search);
    auto found = client_->Search(search);
    ASSERT_TRUE(found.ok()) << found.status();
    ASSERT_EQ(found->hits_size(), 10);
    for (const auto& hit : found->hits()) {
      const v1::Episode& e = hit.episode();
      if (search.filter().has_event_time_from_us()) {
        EXPECT_EQ(e.kind(), "k1");
        EXPECT_GE(e.event_time_us(), 200);
        EXPECT_LT(e.event_time_us(), 900);
      }
      if (!search.filter().session_id().empty()) {
        EXPECT_EQ(e.session_id(), "s3");
      }
      if (search.filter().metadata_size() > 0) {
        EXPECT_EQ(e.metadata().at("n").int_value(), 7);
      }
    }
  }

  // A metadata filter matching nothing falls back to the exact route.
  v1::SearchRequest none = Query(rng);
  v1::MetadataPredicate* p = none.mutable_filter()->add_metadata();
  p->set_key("n");
  p->set_op(v1::MetadataPredicate::EQ);
  p->mutable_value()->set_int_value(1000);
  auto empty = client_->Search(none);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->hits_size(), 0);
}

TEST_F(IndexTest, ScanRouteAgreesWithExactSearch) {
  Populate();
  auto scan = [](v1::SearchRequest& s) { s.set_scan(true); };
  auto scan_session = [](v1::SearchRequest& s) {
    s.set_scan(true);
    s.mutable_filter()->set_agent_id("a");
    s.mutable_filter()->set_session_id("s3");
  };
  auto scan_metadata = [](v1::SearchRequest& s) {
    s.set_scan(true);
    v1::MetadataPredicate* p = s.mutable_filter()->add_metadata();
    p->set_key("n");
    p->set_op(v1::MetadataPredicate::EQ);
    p->mutable_value()->set_int_value(7);
  };
  // Every vector is scored (on fp16 copies): only fp16 near-ties may differ.
  for (const auto& shape : {std::function<void(v1::SearchRequest&)>(scan),
                            std::function<void(v1::SearchRequest&)>(scan_session),
                            std::function<void(v1::SearchRequest&)>(scan_metadata)}) {
    EXPECT_GE(RecallAgainstExact(shape), 0.98);
  }
  std::mt19937 rng(5);
  v1::SearchRequest search = Query(rng);
  search.set_scan(true);
  auto found = client_->Search(search);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->route(), "scan");
  ASSERT_EQ(found->hits_size(), 10);
  // A deleted episode is not returned by the scan (the device copy masks it).
  const uint64_t first = found->hits(0).episode().id();
  v1::DeleteEpisodesRequest remove;
  remove.set_space("mem");
  remove.mutable_ids()->add_ids(first);
  ASSERT_TRUE(client_->DeleteEpisodes(remove).ok());
  found = client_->Search(search);
  ASSERT_TRUE(found.ok());
  for (const auto& hit : found->hits()) EXPECT_NE(hit.episode().id(), first);

  auto stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->scan().backend(), "cpu");  // CI has no GPU
  EXPECT_FALSE(stats->scan().reason().empty());
  EXPECT_GE(stats->scan().scans(), 60u);
  EXPECT_EQ(stats->scan().resident_partitions(), 2u);
  EXPECT_EQ(stats->scan().fallbacks(), 0u);
}

TEST_F(IndexTest, DeletesAndUpdatesReachTheIndex) {
  Populate();
  std::mt19937 rng(4);
  v1::SearchRequest search = Query(rng, 5);
  auto before = client_->Search(search);
  ASSERT_TRUE(before.ok());
  const uint64_t top = before->hits(0).episode().id();

  v1::DeleteEpisodesRequest remove;
  remove.set_space("mem");
  remove.mutable_ids()->add_ids(top);
  ASSERT_TRUE(client_->DeleteEpisodes(remove).ok());
  v1::DeleteEpisodesRequest session;
  session.set_space("mem");
  session.mutable_session()->set_agent_id("a");
  session.mutable_session()->set_session_id("s0");
  ASSERT_TRUE(client_->DeleteEpisodes(session).ok());
  auto after = client_->Search(search);
  ASSERT_TRUE(after.ok());
  for (const auto& hit : after->hits()) {
    EXPECT_NE(hit.episode().id(), top);
    EXPECT_NE(hit.episode().session_id(), "s0") << "deleted session returned";
  }

  // Moving an episode onto the query makes it the best hit.
  const uint64_t moved = after->hits(4).episode().id();
  v1::UpdateEpisodeRequest update;
  update.set_space("mem");
  update.set_id(moved);
  update.mutable_episode()->mutable_embedding()->CopyFrom(search.query());
  update.add_update_mask("embedding");
  ASSERT_TRUE(client_->UpdateEpisode(update).ok());
  auto moved_result = client_->Search(search);
  ASSERT_TRUE(moved_result.ok());
  EXPECT_EQ(moved_result->hits(0).episode().id(), moved);
  EXPECT_NEAR(moved_result->hits(0).score(), 1.0f, 1e-4);
}

TEST_F(IndexTest, BadSearchesAreRejected) {
  Populate();
  std::mt19937 rng(5);
  v1::SearchRequest wide = Query(rng);
  wide.set_beam_width(5000);
  auto status = client_->Search(wide).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("beam_width"), std::string::npos) << status;
  v1::SearchRequest zero = Query(rng, 0);
  EXPECT_EQ(client_->Search(zero).status().code(), absl::StatusCode::kInvalidArgument);
  v1::SearchRequest short_query = Query(rng);
  short_query.mutable_query()->RemoveLast();
  EXPECT_EQ(client_->Search(short_query).status().code(), absl::StatusCode::kInvalidArgument);
  v1::SearchRequest unknown = Query(rng);
  unknown.set_space("nope");
  EXPECT_EQ(client_->Search(unknown).status().code(), absl::StatusCode::kNotFound);
  auto [code, output] = RunCtl(daemon_->address(), "index rebuild -s nope");
  EXPECT_NE(code, 0);
  EXPECT_NE(output.find("NOT_FOUND"), std::string::npos) << output;
}

TEST_F(IndexTest, RebuildAndRestartKeepTheIndex) {
  Populate();
  std::mt19937 rng(6);
  v1::SearchRequest search = Query(rng);
  auto before = client_->Search(search);
  ASSERT_TRUE(before.ok());

  auto [code, output] = RunCtl(daemon_->address(), "index rebuild -s mem");
  EXPECT_EQ(code, 0) << output;
  EXPECT_NE(output.find("\"done\":true"), std::string::npos) << output;
  auto [stats_code, stats_output] = RunCtl(daemon_->address(), "index stats");
  EXPECT_EQ(stats_code, 0);
  EXPECT_NE(stats_output.find("\"agent_id\":\"a\""), std::string::npos) << stats_output;
  auto rebuilt = client_->Search(search);
  ASSERT_TRUE(rebuilt.ok());
  EXPECT_EQ(rebuilt->hits(0).episode().id(), before->hits(0).episode().id());

  // A clean restart loads the snapshots written at shutdown: nothing rebuilt.
  StopDaemon();
  StartDaemon();
  auto stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(stats->partitions_size(), 2);
  EXPECT_TRUE(stats->partitions(0).has_graph());
  EXPECT_EQ(stats->index_load().partitions_from_snapshots(), 2u);
  EXPECT_EQ(stats->index_load().vectors_from_snapshots(), static_cast<uint64_t>(kAgentA + kAgentB));
  EXPECT_EQ(stats->index_load().vectors_read_from_store(), 0u);
  EXPECT_EQ(stats->index_load().spaces_rebuilt(), 0u);
  auto restarted = client_->Search(search);
  ASSERT_TRUE(restarted.ok());
  EXPECT_EQ(restarted->route(), "index");
  EXPECT_EQ(restarted->hits(0).episode().id(), before->hits(0).episode().id());
}

TEST_F(IndexTest, SnapshotsAreCheckedAgainstTheStore) {
  Populate();
  StopDaemon();  // snapshots written
  StartDaemon();
  // Changes after the snapshot, then a crash: no new snapshot.
  std::mt19937 rng(8);
  v1::SearchRequest search = Query(rng, 3);
  auto before = client_->Search(search);
  ASSERT_TRUE(before.ok());
  const uint64_t deleted = before->hits(0).episode().id();
  v1::DeleteEpisodesRequest remove;
  remove.set_space("mem");
  remove.mutable_ids()->add_ids(deleted);
  ASSERT_TRUE(client_->DeleteEpisodes(remove).ok());
  const uint64_t updated = before->hits(1).episode().id();
  v1::UpdateEpisodeRequest update;
  update.set_space("mem");
  update.set_id(updated);
  std::vector<float> far(kDim, 0.0f);
  far[0] = -1;
  update.mutable_episode()->mutable_embedding()->Add(far.begin(), far.end());
  update.add_update_mask("embedding");
  ASSERT_TRUE(client_->UpdateEpisode(update).ok());
  v1::PutEpisodesRequest put;
  put.set_space("mem");
  v1::Episode* added = put.add_episodes()->mutable_episode();
  added->set_agent_id("a");
  added->mutable_embedding()->CopyFrom(search.query());
  auto put_result = client_->PutEpisodes(put);
  ASSERT_TRUE(put_result.ok());
  client_.reset();
  daemon_->Kill9();
  daemon_.reset();

  // Corrupt agent b's snapshot too: it must be detected and not trusted.
  for (const auto& tenant : std::filesystem::directory_iterator(dir_.Sub("data/index"))) {
    if (!tenant.is_directory()) continue;  // the LAYOUT file
    for (const auto& space : std::filesystem::directory_iterator(tenant.path())) {
      const auto file = space.path() / "62.eix";  // hex of "b"
      ASSERT_TRUE(std::filesystem::exists(file));
      // Flip the byte's bits: writing a fixed value would change nothing
      // whenever the byte already held it.
      std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(1000);
      const char original = static_cast<char>(f.get());
      f.seekp(1000);
      f.put(static_cast<char>(~original));
    }
  }
  StartDaemon();
  auto stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->index_load().partitions_from_snapshots(), 1u) << "b's snapshot is corrupt";
  EXPECT_EQ(stats->index_load().vectors_read_from_store(), static_cast<uint64_t>(kAgentB + 2))
      << "b's episodes, the updated one and the new one";
  auto after = client_->Search(search);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->hits(0).episode().id(), put_result->ids(0)) << "added after the snapshot";
  for (const auto& hit : after->hits()) {
    EXPECT_NE(hit.episode().id(), deleted);
    EXPECT_NE(hit.episode().id(), updated) << "moved away after the snapshot";
  }
  EXPECT_GE(RecallAgainstExact([](v1::SearchRequest&) {}), 0.9);
}

}  // namespace
}  // namespace engram
