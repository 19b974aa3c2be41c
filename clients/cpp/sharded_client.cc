#include "clients/cpp/sharded_client.h"

#include <algorithm>
#include <future>
#include <map>
#include <set>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/sharding.h"

namespace engram::client {

absl::StatusOr<std::unique_ptr<ShardedClient>> ShardedClient::Connect(
    const std::vector<std::string>& addresses, const ClientOptions& options) {
  if (addresses.empty()) return absl::InvalidArgumentError("list the address of every shard");
  std::vector<std::unique_ptr<Client>> shards;
  std::string tenant;
  for (size_t i = 0; i < addresses.size(); ++i) {
    ClientOptions shard_options = options;
    shard_options.address = addresses[i];
    auto shard = std::make_unique<Client>(shard_options);
    absl::StatusOr<v1::ServerInfoResponse> info = shard->ServerInfo();
    if (!info.ok()) return info.status();
    const uint32_t count = std::max<uint32_t>(1, info->shard_count());
    if (count != addresses.size() || info->shard_index() != i) {
      return absl::FailedPreconditionError(
          absl::StrCat(addresses[i], " is shard ", info->shard_index(), " of ", count,
                       ", but was given as shard ", i, " of ", addresses.size(),
                       ": list every shard's address, in shard order"));
    }
    if (i > 0 && info->tenant() != tenant) {
      return absl::FailedPreconditionError(
          absl::StrCat(addresses[i], " knows the caller as tenant '", info->tenant(),
                       "', shard 0 as '", tenant, "'"));
    }
    tenant = info->tenant();
    shards.push_back(std::move(shard));
  }
  return std::unique_ptr<ShardedClient>(new ShardedClient(std::move(shards), std::move(tenant)));
}

uint32_t ShardedClient::OwnerOf(const std::string& agent_id) const {
  return sharding::OwnerShard(tenant_, agent_id, shard_count());
}

absl::StatusOr<v1::Space> ShardedClient::CreateSpace(const v1::Space& space) {
  std::optional<v1::Space> created;
  absl::Status exists;
  for (auto& shard : shards_) {
    absl::StatusOr<v1::Space> result = shard->CreateSpace(space);
    if (result.ok()) {
      if (!created) created = *std::move(result);
    } else if (absl::IsAlreadyExists(result.status())) {
      exists = result.status();
    } else {
      return result.status();
    }
  }
  if (!created) return exists;
  return *created;
}

absl::StatusOr<v1::PutEpisodesResponse> ShardedClient::PutEpisodes(
    const v1::PutEpisodesRequest& original, std::vector<std::string>* request_ids) {
  v1::PutEpisodesRequest request = original;
  std::vector<bool> generated(request.episodes_size(), false);
  absl::BitGen random;
  std::map<uint32_t, std::vector<int>> positions;  // shard -> episodes, in input order
  for (int i = 0; i < request.episodes_size(); ++i) {
    v1::EpisodeWrite* write = request.mutable_episodes(i);
    if (write->request_id().empty()) {
      write->set_request_id(absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(random),
                                            absl::Uniform<uint64_t>(random)));
      generated[i] = true;
    }
    positions[OwnerOf(write->episode().agent_id())].push_back(i);
  }
  if (request_ids != nullptr) {
    request_ids->clear();
    for (const v1::EpisodeWrite& write : request.episodes()) {
      request_ids->push_back(write.request_id());
    }
  }
  std::vector<std::pair<uint32_t, std::future<absl::StatusOr<v1::PutEpisodesResponse>>>> parts;
  for (const auto& [shard, indices] : positions) {
    v1::PutEpisodesRequest part;
    part.set_space(request.space());
    for (int i : indices) *part.add_episodes() = request.episodes(i);
    Client* client = shards_[shard].get();  // (clang cannot capture a structured binding)
    parts.emplace_back(shard, std::async(std::launch::async,
                                         [client, part] { return client->PutEpisodes(part); }));
  }
  v1::PutEpisodesResponse merged;
  std::vector<uint64_t> ids(request.episodes_size());
  std::vector<bool> deduplicated(request.episodes_size()), replaced(request.episodes_size());
  absl::Status failure;
  for (auto& [shard, future] : parts) {
    absl::StatusOr<v1::PutEpisodesResponse> response = future.get();
    if (!response.ok()) {
      if (failure.ok()) failure = response.status();
      continue;
    }
    const std::vector<int>& indices = positions[shard];
    for (size_t j = 0; j < indices.size(); ++j) {
      const int i = indices[j];
      ids[i] = response->ids(j);
      // A generated id found applied was this call's own earlier attempt.
      deduplicated[i] = response->deduplicated(j) && !generated[i];
      replaced[i] = j < static_cast<size_t>(response->replaced_size()) && response->replaced(j);
    }
  }
  if (!failure.ok()) return failure;
  for (int i = 0; i < request.episodes_size(); ++i) {
    merged.add_ids(ids[i]);
    merged.add_deduplicated(deduplicated[i]);
    merged.add_replaced(replaced[i]);
  }
  return merged;
}

absl::StatusOr<uint32_t> ShardedClient::Locate(const std::string& space, uint64_t id) {
  const uint32_t home = sharding::ShardOfId(id);
  std::vector<uint32_t> order;
  if (home < shard_count()) order.push_back(home);
  for (uint32_t i = 0; i < shard_count(); ++i) {
    if (i != home) order.push_back(i);
  }
  absl::Status not_found, unavailable;
  for (uint32_t i : order) {
    absl::StatusOr<v1::Episode> episode = shards_[i]->GetEpisode(space, id);
    if (episode.ok()) return i;
    if (absl::IsNotFound(episode.status())) {
      if (not_found.ok()) not_found = episode.status();
    } else if (absl::IsUnavailable(episode.status())) {
      // A shard that is down may hold it: say so if no other does.
      if (unavailable.ok()) unavailable = episode.status();
    } else {
      return episode.status();
    }
  }
  return unavailable.ok() ? not_found : unavailable;
}

absl::StatusOr<v1::Episode> ShardedClient::GetEpisode(const std::string& space, uint64_t id) {
  absl::StatusOr<uint32_t> holder = Locate(space, id);
  if (!holder.ok()) return holder.status();
  return shards_[*holder]->GetEpisode(space, id);
}

absl::StatusOr<v1::Episode> ShardedClient::GetEpisodeByKey(const std::string& space,
                                                           const std::string& agent_id,
                                                           const std::string& key) {
  return shards_[OwnerOf(agent_id)]->GetEpisodeByKey(space, agent_id, key);
}

absl::StatusOr<v1::SearchResponse> ShardedClient::Search(const v1::SearchRequest& request) {
  if (!request.filter().agent_id().empty()) {
    return shards_[OwnerOf(request.filter().agent_id())]->Search(request);
  }
  std::vector<std::future<absl::StatusOr<v1::SearchResponse>>> answers;
  for (auto& shard : shards_) {
    answers.push_back(
        std::async(std::launch::async, [&shard, &request] { return shard->Search(request); }));
  }
  v1::SearchResponse merged;
  std::vector<v1::SearchHit> hits;
  std::set<std::string> routes;
  absl::Status failure;
  for (uint32_t i = 0; i < answers.size(); ++i) {
    absl::StatusOr<v1::SearchResponse> answer = answers[i].get();
    if (!answer.ok()) {
      if (failure.ok()) failure = answer.status();
      continue;
    }
    for (v1::SearchHit& hit : *answer->mutable_hits()) hits.push_back(std::move(hit));
    routes.insert(answer->route());
    merged.set_scanned(merged.scanned() + answer->scanned());
    for (const v1::SearchStage& stage : answer->stages()) {
      v1::SearchStage* named = merged.add_stages();
      *named = stage;
      named->set_name(absl::StrCat(sharding::ShardName(i), "/", stage.name()));
    }
    if (i == 0) {
      merged.mutable_query_terms()->CopyFrom(answer->query_terms());
      merged.set_policy(answer->policy());
    }
  }
  if (!failure.ok()) return failure;
  std::sort(hits.begin(), hits.end(), [](const v1::SearchHit& a, const v1::SearchHit& b) {
    if (a.score() != b.score()) return a.score() > b.score();
    return a.episode().id() < b.episode().id();
  });
  const size_t k = std::min<size_t>(hits.size(), request.k());
  for (size_t i = 0; i < k; ++i) *merged.add_hits() = std::move(hits[i]);
  std::string route;
  for (const std::string& r : routes) absl::StrAppend(&route, route.empty() ? "" : ",", r);
  merged.set_route(route);
  return merged;
}

absl::StatusOr<uint64_t> ShardedClient::DeleteEpisodes(const v1::DeleteEpisodesRequest& request) {
  switch (request.target_case()) {
    case v1::DeleteEpisodesRequest::kAgentId:
      return shards_[OwnerOf(request.agent_id())]->DeleteEpisodes(request);
    case v1::DeleteEpisodesRequest::kSession:
      return shards_[OwnerOf(request.session().agent_id())]->DeleteEpisodes(request);
    case v1::DeleteEpisodesRequest::kKeys:
      return shards_[OwnerOf(request.keys().agent_id())]->DeleteEpisodes(request);
    case v1::DeleteEpisodesRequest::kIds:
      break;
    default:
      return shards_[0]->DeleteEpisodes(request);  // its own INVALID_ARGUMENT
  }
  std::map<uint32_t, v1::DeleteEpisodesRequest> parts;
  for (uint64_t id : request.ids().ids()) {
    absl::StatusOr<uint32_t> holder = Locate(request.space(), id);
    if (!holder.ok()) return holder.status();
    v1::DeleteEpisodesRequest& part = parts[*holder];
    part.set_space(request.space());
    part.mutable_ids()->add_ids(id);
  }
  uint64_t deleted = 0;
  for (const auto& [shard, part] : parts) {
    absl::StatusOr<uint64_t> count = shards_[shard]->DeleteEpisodes(part);
    if (!count.ok()) return count.status();
    deleted += *count;
  }
  return deleted;
}

}  // namespace engram::client
