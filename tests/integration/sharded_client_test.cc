// The C++ ShardedClient (clients/cpp/sharded_client.h) against three real
// engramd shards: writes land on their agents' shards with ids of that
// shard's range, searches (per agent and fanned out to every shard) equal
// exact search computed here over everything written, on L2 with vectors far
// from unit length, with filters that keep some, few and none; lookups and
// deletes by id find their shard. (tests/python/test_sharding.py covers the
// Python client, kill -9 and moving agents.)
#include "clients/cpp/sharded_client.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/sharding.h"
#include "tests/util/daemon_process.h"
#include "tests/util/temp_dir.h"

namespace engram::client {
namespace {

constexpr int kShards = 3;
constexpr int kDim = 8;

struct Stored {
  uint64_t id;
  std::string agent;
  std::vector<float> vector;
  int64_t bucket;  // metadata "bucket": 0..9
};

class ShardedClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < kShards; ++i) {
      auto daemon = testing::DaemonProcess::Start(
          dir_.Sub(absl::StrCat("shard-", i)),
          {"--shard-index", absl::StrCat(i), "--shard-count", absl::StrCat(kShards)});
      ASSERT_TRUE(daemon.ok()) << daemon.status();
      addresses_.push_back((*daemon)->address());
      daemons_.push_back(*std::move(daemon));
    }
  }

  // Exact L2 answer over everything written: ids nearest first.
  std::vector<uint64_t> Exact(const std::vector<float>& query, size_t k, const std::string& agent,
                              int64_t max_bucket) const {
    std::vector<std::pair<float, uint64_t>> scored;
    for (const Stored& s : stored_) {
      if (!agent.empty() && s.agent != agent) continue;
      if (s.bucket > max_bucket) continue;
      float d = 0;
      for (int j = 0; j < kDim; ++j) d += (s.vector[j] - query[j]) * (s.vector[j] - query[j]);
      scored.emplace_back(d, s.id);
    }
    std::sort(scored.begin(), scored.end());
    std::vector<uint64_t> ids;
    for (size_t i = 0; i < std::min(k, scored.size()); ++i) ids.push_back(scored[i].second);
    return ids;
  }

  testing::TempDir dir_;
  std::vector<std::unique_ptr<testing::DaemonProcess>> daemons_;
  std::vector<std::string> addresses_;
  std::vector<Stored> stored_;
};

std::vector<uint64_t> HitIds(const v1::SearchResponse& response) {
  std::vector<uint64_t> ids;
  for (const v1::SearchHit& hit : response.hits()) ids.push_back(hit.episode().id());
  return ids;
}

TEST_F(ShardedClientTest, RoutesByAgentAndMergesSearchesToTheExactAnswer) {
  std::vector<std::string> shuffled = {addresses_[2], addresses_[0], addresses_[1]};
  EXPECT_EQ(ShardedClient::Connect(shuffled).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto connected = ShardedClient::Connect(addresses_);
  ASSERT_TRUE(connected.ok()) << connected.status();
  ShardedClient& client = **connected;
  EXPECT_EQ(client.tenant(), "default");  // auth off

  v1::Space space;
  space.set_name("mem");
  space.set_dimension(kDim);
  space.set_metric(v1::METRIC_L2);
  ASSERT_TRUE(client.CreateSpace(space).ok());
  EXPECT_EQ(client.CreateSpace(space).status().code(), absl::StatusCode::kAlreadyExists);

  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> length(0.05f, 30.0f);
  std::set<uint32_t> shards_used;
  for (int batch = 0; batch < 8; ++batch) {
    v1::PutEpisodesRequest request;
    request.set_space("mem");
    for (int j = 0; j < 30; ++j) {
      const int n = batch * 30 + j;
      v1::Episode* e = request.add_episodes()->mutable_episode();
      e->set_agent_id(absl::StrCat("agent-", (n * 7) % 60));
      std::vector<float> v(kDim);
      float norm = 0;
      for (float& x : v) norm += (x = normal(rng)) * x;
      const float scale = length(rng) / std::sqrt(norm);
      for (float& x : v) x *= scale;
      e->mutable_embedding()->Add(v.begin(), v.end());
      (*e->mutable_metadata())["bucket"].set_int_value(n % 10);
      stored_.push_back({0, e->agent_id(), v, n % 10});
    }
    auto response = client.PutEpisodes(request);
    ASSERT_TRUE(response.ok()) << response.status();
    ASSERT_EQ(response->ids_size(), 30);
    for (int j = 0; j < 30; ++j) {
      Stored& s = stored_[batch * 30 + j];
      s.id = response->ids(j);
      EXPECT_EQ(sharding::ShardOfId(s.id), client.OwnerOf(s.agent)) << s.agent;
      shards_used.insert(sharding::ShardOfId(s.id));
    }
  }
  EXPECT_EQ(shards_used.size(), static_cast<size_t>(kShards));
  // Each shard holds exactly its own agents.
  for (uint32_t i = 0; i < kShards; ++i) {
    v1::ListAgentsRequest list;
    list.set_space("mem");
    list.set_page_size(1000);
    auto agents = client.shard(i).ListAgents(list);
    ASSERT_TRUE(agents.ok());
    EXPECT_FALSE(agents->agent_ids().empty());
    for (const std::string& agent : agents->agent_ids()) EXPECT_EQ(client.OwnerOf(agent), i);
  }

  // Fan-out and per-agent searches, exact and by the default route, with
  // filters keeping all, a tenth and none.
  for (int q = 0; q < 12; ++q) {
    std::vector<float> query(kDim);
    for (float& x : query) x = normal(rng) * 10;
    const std::string agent = q % 2 == 0 ? "" : absl::StrCat("agent-", q * 5);
    for (int64_t max_bucket : {9, 0, -1}) {
      for (bool exact : {true, false}) {
        v1::SearchRequest search;
        search.set_space("mem");
        search.mutable_query()->Add(query.begin(), query.end());
        search.set_k(10);
        search.set_exact(exact);
        search.mutable_filter()->set_agent_id(agent);
        v1::MetadataPredicate* p = search.mutable_filter()->add_metadata();
        p->set_key("bucket");
        p->set_op(v1::MetadataPredicate::LE);
        p->mutable_value()->set_int_value(max_bucket);
        auto response = client.Search(search);
        ASSERT_TRUE(response.ok()) << response.status();
        EXPECT_EQ(HitIds(*response), Exact(query, 10, agent, max_bucket))
            << "query " << q << " agent '" << agent << "' bucket <= " << max_bucket << " exact "
            << exact;
      }
    }
  }

  // By id: found on its shard; a delete of ids of every shard.
  std::vector<uint64_t> doomed = {stored_[0].id, stored_[1].id, stored_[2].id, stored_[3].id};
  for (uint64_t id : doomed) {
    auto episode = client.GetEpisode("mem", id);
    ASSERT_TRUE(episode.ok()) << episode.status();
    EXPECT_EQ(episode->id(), id);
  }
  v1::DeleteEpisodesRequest remove;
  remove.set_space("mem");
  for (uint64_t id : doomed) remove.mutable_ids()->add_ids(id);
  remove.mutable_ids()->add_ids(sharding::FirstId(1) + 100000);  // on no shard
  EXPECT_EQ(client.DeleteEpisodes(remove).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(client.GetEpisode("mem", doomed[0]).ok()) << "nothing deleted";
  remove.mutable_ids()->mutable_ids()->RemoveLast();
  auto deleted = client.DeleteEpisodes(remove);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, doomed.size());
  for (uint64_t id : doomed) {
    EXPECT_EQ(client.GetEpisode("mem", id).status().code(), absl::StatusCode::kNotFound);
  }
  // Another shard refuses a write for an agent it does not own, naming the owner.
  const uint32_t owner = client.OwnerOf("agent-1");
  v1::PutEpisodesRequest misrouted;
  misrouted.set_space("mem");
  v1::Episode* e = misrouted.add_episodes()->mutable_episode();
  e->set_agent_id("agent-1");
  for (int j = 0; j < kDim; ++j) e->add_embedding(1.0f);
  auto refused = client.shard((owner + 1) % kShards).PutEpisodes(misrouted);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find(absl::StrCat("belongs to shard ", owner, " of 3")),
            std::string::npos)
      << refused.status();
}

}  // namespace
}  // namespace engram::client
