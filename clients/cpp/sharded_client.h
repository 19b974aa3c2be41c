// ShardedClient: the C++ client over every shard of a deployment, routing
// by agent (common/sharding.h has the placement; docs/sharding.md the
// guide). The Python twin is engram.sharding.ShardedMemory.
//
// - Calls that name one agent go to its shard. PutEpisodes splits a batch
//   by shard: each shard's part is all-or-nothing, the batch is not; every
//   episode gets a request id first, so a retried batch is applied once.
// - A search without an agent runs on every shard at once; the top k are
//   merged by score (ties: lower id first). Vector scores compare across
//   shards, so the merge equals one engramd's answer; BM25 uses each
//   shard's own statistics, so lexical and hybrid fan-outs may rank
//   differently.
// - By id: first the shard whose range holds the id (where it was created),
//   then the others (its agent has moved since).
// - Spaces are created on every shard.
//
// Thread-safe, like Client.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "clients/cpp/engram_client.h"

namespace engram::client {

class ShardedClient {
 public:
  // Connects to every shard (addresses[i] is shard i) and checks with
  // ServerInfo that each is the shard it is listed as, of as many shards as
  // listed, and knows the caller as one tenant (placement hashes it).
  // FAILED_PRECONDITION when not; the status of the call when a shard
  // cannot be reached.
  static absl::StatusOr<std::unique_ptr<ShardedClient>> Connect(
      const std::vector<std::string>& addresses, const ClientOptions& options = ClientOptions());

  uint32_t shard_count() const { return static_cast<uint32_t>(shards_.size()); }
  const std::string& tenant() const { return tenant_; }
  // The index of the agent's shard, and its client.
  uint32_t OwnerOf(const std::string& agent_id) const;
  Client& shard(uint32_t index) { return *shards_[index]; }

  // On every shard. A shard that has the space already counts as done, so a
  // call that failed part way can be repeated; ALREADY_EXISTS only when
  // every shard had it.
  absl::StatusOr<v1::Space> CreateSpace(const v1::Space& space);
  // Split by the episodes' agents; ids (and the other per-episode fields) in
  // input order. On failure nothing of the failed shards' parts is applied,
  // the others' parts are: retry with the same request (ids are set here
  // when missing, so pass back `*request_ids` to retry by hand).
  absl::StatusOr<v1::PutEpisodesResponse> PutEpisodes(
      const v1::PutEpisodesRequest& request, std::vector<std::string>* request_ids = nullptr);
  absl::StatusOr<v1::Episode> GetEpisode(const std::string& space, uint64_t id);
  absl::StatusOr<v1::Episode> GetEpisodeByKey(const std::string& space, const std::string& agent_id,
                                              const std::string& key);
  // filter.agent_id set: its shard; empty: every shard, merged.
  absl::StatusOr<v1::SearchResponse> Search(const v1::SearchRequest& request);
  // By agent, session or keys: the agent's shard. By ids: each id's shard
  // (NOT_FOUND, nothing deleted, when one is on no shard).
  absl::StatusOr<uint64_t> DeleteEpisodes(const v1::DeleteEpisodesRequest& request);

 private:
  ShardedClient(std::vector<std::unique_ptr<Client>> shards, std::string tenant)
      : shards_(std::move(shards)), tenant_(std::move(tenant)) {}
  // The shard holding episode `id` of `space` (home shard first).
  absl::StatusOr<uint32_t> Locate(const std::string& space, uint64_t id);

  std::vector<std::unique_ptr<Client>> shards_;
  std::string tenant_;
};

}  // namespace engram::client
