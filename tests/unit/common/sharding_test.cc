// Placement and id ranges (common/sharding.h) against the shared test
// vectors the Python client also passes, plus the properties rendezvous
// hashing promises; and a shard's owner check (server/shard_placement.h).
#include "common/sharding.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/shard_placement.h"

namespace engram::sharding {
namespace {

nlohmann::json Vectors() {
  std::ifstream file(ENGRAM_SOURCE_DIR "/tests/data/placement_vectors.json");
  EXPECT_TRUE(file.good());
  return nlohmann::json::parse(file);
}

uint64_t Hex(const std::string& hex) { return std::stoull(hex, nullptr, 16); }

TEST(ShardingTest, PlacementHashMatchesTheSharedVectors) {
  const nlohmann::json vectors = Vectors();
  ASSERT_FALSE(vectors["hash"].empty());
  for (const auto& entry : vectors["hash"]) {
    const std::string bytes = absl::HexStringToBytes(entry["bytes_hex"].get<std::string>());
    EXPECT_EQ(PlacementHash(bytes), Hex(entry["hash"])) << entry["bytes_hex"];
  }
}

TEST(ShardingTest, WeightsAndOwnersMatchTheSharedVectors) {
  const nlohmann::json vectors = Vectors();
  ASSERT_GE(vectors["placement"].size(), 8u);
  for (const auto& entry : vectors["placement"]) {
    const std::string tenant = entry["tenant"], agent = entry["agent"];
    const auto& weights = entry["weights"];
    for (uint32_t shard = 0; shard < weights.size(); ++shard) {
      EXPECT_EQ(PlacementWeight(tenant, agent, shard), Hex(weights[shard]))
          << tenant << "/" << agent << " shard " << shard;
    }
    const auto& owners = entry["owner_by_count"];
    for (uint32_t count = 1; count <= owners.size(); ++count) {
      EXPECT_EQ(OwnerShard(tenant, agent, count), owners[count - 1].get<uint32_t>())
          << tenant << "/" << agent << " of " << count;
    }
  }
}

TEST(ShardingTest, AgentHeaderEncodingMatchesTheSharedVectors) {
  const nlohmann::json vectors = Vectors();
  ASSERT_FALSE(vectors["agent_header"].empty());
  for (const auto& entry : vectors["agent_header"]) {
    const std::string agent = absl::HexStringToBytes(entry["agent_hex"].get<std::string>());
    EXPECT_EQ(EncodeAgentHeader(agent), entry["encoded"].get<std::string>()) << entry["agent_hex"];
  }
}

TEST(ShardingTest, AgentsSpreadEvenlyAndAddingAShardMovesOnlyItsShare) {
  constexpr int kAgents = 20000;
  std::vector<int> per_shard(3);
  int moved = 0;
  for (int i = 0; i < kAgents; ++i) {
    const std::string agent = absl::StrCat("agent-", i);
    const uint32_t before = OwnerShard("default", agent, 3);
    const uint32_t after = OwnerShard("default", agent, 4);
    ++per_shard[before];
    if (after != before) {
      // Only to the new shard: no agent moves between the old ones.
      EXPECT_EQ(after, 3u) << agent;
      ++moved;
    }
  }
  for (int count : per_shard) {
    EXPECT_NEAR(count, kAgents / 3.0, kAgents * 0.02) << "shard sizes";
  }
  EXPECT_NEAR(moved, kAgents / 4.0, kAgents * 0.02);
  // The tenant is part of the key: another tenant's agent of the same name
  // lands independently.
  int same = 0;
  for (int i = 0; i < 3000; ++i) {
    const std::string agent = absl::StrCat("agent-", i);
    same += OwnerShard("default", agent, 3) == OwnerShard("acme", agent, 3);
  }
  EXPECT_NEAR(same, 1000, 120);
}

TEST(ShardingTest, IdRangesNameTheirShardAndStayExactInJson) {
  EXPECT_EQ(FirstId(0), 1u);
  EXPECT_EQ(ShardOfId(FirstId(5)), 5u);
  EXPECT_EQ(ShardOfId(EndId(5) - 1), 5u);
  EXPECT_EQ(ShardOfId(EndId(5)), 6u);
  EXPECT_LE(EndId(kMaxShards - 1), uint64_t{1} << 53);
}

TEST(ShardPlacementTest, OwnersAcceptAndOthersNameTheOwner) {
  server::ShardConfig unsharded;
  EXPECT_TRUE(server::ShardPlacement(unsharded).CheckOwner("default", "anyone").ok());
  int refused = 0;
  for (int i = 0; i < 50; ++i) {
    const std::string agent = absl::StrCat("a", i);
    const uint32_t owner = OwnerShard("default", agent, 3);
    for (uint32_t index = 0; index < 3; ++index) {
      absl::Status status = server::ShardPlacement({index, 3}).CheckOwner("default", agent);
      if (index == owner) {
        EXPECT_TRUE(status.ok()) << status;
      } else {
        ++refused;
        EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
        EXPECT_NE(status.message().find(absl::StrCat("belongs to shard ", owner, " of 3")),
                  std::string::npos)
            << status;
      }
    }
  }
  EXPECT_EQ(refused, 100);
}

}  // namespace
}  // namespace engram::sharding
