// ShardPlacement: which agents this engramd owns (common/sharding.h). A
// shard refuses writes for agents placed elsewhere, so that an agent's
// episodes and caches live on exactly one shard and a client with a stale
// shard list learns where to go; reads and deletes of any agent are served
// (a moved agent's leftovers can be read back and removed).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/sharding.h"
#include "server/config.h"

namespace engram::server {

class ShardPlacement {
 public:
  explicit ShardPlacement(const ShardConfig& config) : config_(config) {}

  uint32_t count() const { return config_.count; }

  // OK when this shard owns the agent (always, unsharded); otherwise
  // FAILED_PRECONDITION naming the owner.
  absl::Status CheckOwner(const std::string& tenant, const std::string& agent_id) const {
    if (config_.count <= 1) return absl::OkStatus();
    const uint32_t owner = sharding::OwnerShard(tenant, agent_id, config_.count);
    if (owner == config_.index) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("agent '", agent_id, "' belongs to shard ", owner, " of ", config_.count,
                     ", not to this one (shard ", config_.index,
                     "); send its writes there (placement by agent: docs/sharding.md)"));
  }

 private:
  const ShardConfig config_;
};

}  // namespace engram::server
