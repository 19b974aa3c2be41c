// Sharding by agent: which engramd shard owns an agent, and how episode ids
// stay unique across shards. docs/sharding.md is the user's guide; this is
// the specification, which the C++ client (clients/cpp/sharded_client.h),
// the Python client (clients/python/engram/sharding.py) and engramd all
// implement, checked against one set of test vectors
// (tests/data/placement_vectors.json).
//
// Placement: rendezvous (highest-random-weight) hashing. Shard i of a
// deployment is named "shard-<i>" (decimal). The weight of a shard for an
// agent is
//     PlacementHash(tenant + '\0' + agent_id + '\0' + "shard-<i>")
// where PlacementHash is 64-bit FNV-1a followed by MurmurHash3's fmix64
// finalizer (FNV alone mixes its last bytes poorly, and only the shard name
// differs between an agent's weights). The owner is the shard of highest
// weight; a tie goes to the lower index. Going from n to n+1 shards moves
// only the agents the new shard now wins, about 1/(n+1) of them, all to it.
// Names, not addresses, are hashed, so shards can move between hosts.
//
// Ids: shard i assigns episode ids (i << 40) | serial, serial in
// [1, 2^40). Ids stay below 2^53 (exact as a JSON number) for up to 8192
// shards, and an id names the shard that created it, which is where a
// lookup by id tries first (an agent moved since then lives elsewhere).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace engram::sharding {

inline constexpr int kShardIdShift = 40;
inline constexpr uint64_t kSerialsPerShard = uint64_t{1} << kShardIdShift;
inline constexpr uint32_t kMaxShards = 8192;

// The shard that assigned an id.
inline uint32_t ShardOfId(uint64_t id) { return static_cast<uint32_t>(id >> kShardIdShift); }
// The ids shard `index` assigns: [FirstId, EndId).
inline uint64_t FirstId(uint32_t index) { return (uint64_t{index} << kShardIdShift) | 1; }
inline uint64_t EndId(uint32_t index) { return uint64_t{index + 1} << kShardIdShift; }

inline std::string ShardName(uint32_t index) { return "shard-" + std::to_string(index); }

inline uint64_t PlacementHash(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64: offset basis
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;  // FNV prime
  }
  h ^= h >> 33;  // fmix64
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

inline uint64_t PlacementWeight(std::string_view tenant, std::string_view agent_id,
                                uint32_t shard) {
  std::string key;
  key.reserve(tenant.size() + agent_id.size() + 16);
  key.append(tenant).push_back('\0');
  key.append(agent_id).push_back('\0');
  key.append(ShardName(shard));
  return PlacementHash(key);
}

// The request header naming the one agent a call is about, so that a proxy
// can route by agent. Its value is the agent id's bytes percent-encoded
// (all but A-Z a-z 0-9 - . _ ~ as %XX, upper-case hex), since header values
// must be printable ASCII and agent ids may hold any bytes. Clients leave it
// out for ids longer than kMaxAgentHeaderBytes encoded (engramd refuses
// those with its own message).
inline constexpr char kAgentHeader[] = "x-engram-agent";
inline constexpr size_t kMaxAgentHeaderBytes = 1024;

inline std::string EncodeAgentHeader(std::string_view agent_id) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(agent_id.size());
  for (unsigned char c : agent_id) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

// The shard of `shard_count` (at least 1) that owns the agent.
inline uint32_t OwnerShard(std::string_view tenant, std::string_view agent_id,
                           uint32_t shard_count) {
  uint32_t owner = 0;
  uint64_t best = 0;
  for (uint32_t i = 0; i < shard_count; ++i) {
    const uint64_t weight = PlacementWeight(tenant, agent_id, i);
    if (i == 0 || weight > best) {
      best = weight;
      owner = i;
    }
  }
  return owner;
}

}  // namespace engram::sharding
