#include "server/memory_service.h"

#include "server/exact_search.h"
#include "server/proto_convert.h"
#include "server/tenant.h"

namespace engram::server {

grpc::ServerUnaryReactor* MemoryServiceImpl::CreateSpace(grpc::CallbackServerContext* context,
                                                         const v1::CreateSpaceRequest* request,
                                                         v1::CreateSpaceResponse* response) {
  return runner_->Unary(context, "CreateSpace", [=, this](absl::Time) -> absl::Status {
    absl::StatusOr<Metric> metric = MetricFromProto(request->space().metric());
    if (!metric.ok()) return metric.status();
    SpaceInfo space;
    space.name = request->space().name();
    space.dimension = request->space().dimension();
    space.metric = *metric;
    absl::StatusOr<SpaceInfo> created = store_->CreateSpace(TenantOf(context), space);
    if (!created.ok()) return created.status();
    SpaceToProto(*created, response->mutable_space());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::GetSpace(grpc::CallbackServerContext* context,
                                                      const v1::GetSpaceRequest* request,
                                                      v1::GetSpaceResponse* response) {
  return runner_->Unary(context, "GetSpace", [=, this](absl::Time) -> absl::Status {
    absl::StatusOr<SpaceInfo> space = store_->GetSpace(TenantOf(context), request->name());
    if (!space.ok()) return space.status();
    SpaceToProto(*space, response->mutable_space());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::ListSpaces(grpc::CallbackServerContext* context,
                                                        const v1::ListSpacesRequest*,
                                                        v1::ListSpacesResponse* response) {
  return runner_->Unary(context, "ListSpaces", [=, this](absl::Time) -> absl::Status {
    absl::StatusOr<std::vector<SpaceInfo>> spaces = store_->ListSpaces(TenantOf(context));
    if (!spaces.ok()) return spaces.status();
    for (const SpaceInfo& space : *spaces) SpaceToProto(space, response->add_spaces());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::DeleteSpace(grpc::CallbackServerContext* context,
                                                         const v1::DeleteSpaceRequest* request,
                                                         v1::DeleteSpaceResponse* response) {
  return runner_->Unary(context, "DeleteSpace", [=, this](absl::Time) -> absl::Status {
    absl::StatusOr<uint64_t> deleted = store_->DeleteSpace(TenantOf(context), request->name());
    if (!deleted.ok()) return deleted.status();
    index_->DropSpace(TenantOf(context), request->name());
    response->set_deleted_episodes(*deleted);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::PutEpisodes(grpc::CallbackServerContext* context,
                                                         const v1::PutEpisodesRequest* request,
                                                         v1::PutEpisodesResponse* response) {
  return runner_->Unary(context, "PutEpisodes", [=, this](absl::Time) -> absl::Status {
    std::vector<EpisodeWrite> writes;
    writes.reserve(request->episodes_size());
    for (int i = 0; i < request->episodes_size(); ++i) {
      absl::StatusOr<Episode> episode = EpisodeFromProto(request->episodes(i).episode());
      if (!episode.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("episodes[", i, "]: ", episode.status().message()));
      }
      writes.push_back({request->episodes(i).request_id(), *std::move(episode)});
    }
    std::vector<Episode> written;
    written.reserve(writes.size());
    for (const EpisodeWrite& write : writes) written.push_back(write.episode);
    const std::string& tenant = TenantOf(context);
    absl::StatusOr<std::vector<PutResult>> results =
        store_->PutEpisodes(tenant, request->space(), std::move(writes));
    if (!results.ok()) return results.status();
    std::vector<Episode> indexed;
    for (size_t i = 0; i < results->size(); ++i) {
      const PutResult& result = (*results)[i];
      response->add_ids(result.id);
      response->add_deduplicated(result.deduplicated);
      if (!result.deduplicated) {
        written[i].id = result.id;
        written[i].version = 1;
        indexed.push_back(std::move(written[i]));
      }
    }
    if (!indexed.empty()) {
      absl::StatusOr<SpaceInfo> space = store_->GetSpace(tenant, request->space());
      if (space.ok()) index_->Upsert(tenant, *space, indexed);
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::GetEpisode(grpc::CallbackServerContext* context,
                                                        const v1::GetEpisodeRequest* request,
                                                        v1::GetEpisodeResponse* response) {
  return runner_->Unary(context, "GetEpisode", [=, this](absl::Time) -> absl::Status {
    absl::StatusOr<Episode> episode =
        store_->GetEpisode(TenantOf(context), request->space(), request->id());
    if (!episode.ok()) return episode.status();
    EpisodeToProto(*episode, /*include_embedding=*/true, response->mutable_episode());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::UpdateEpisode(grpc::CallbackServerContext* context,
                                                           const v1::UpdateEpisodeRequest* request,
                                                           v1::UpdateEpisodeResponse* response) {
  return runner_->Unary(context, "UpdateEpisode", [=, this](absl::Time) -> absl::Status {
    const v1::Episode& values = request->episode();
    if (!values.agent_id().empty() || values.id() != 0 || values.version() != 0) {
      return absl::InvalidArgumentError(
          "an update cannot change agent_id, id or version; leave them unset");
    }
    absl::StatusOr<Episode> episode = EpisodeFromProto(values);
    if (!episode.ok()) return episode.status();
    absl::StatusOr<std::vector<UpdatableField>> fields =
        UpdateMaskFromProto(request->update_mask());
    if (!fields.ok()) return fields.status();
    EpisodeUpdate update{request->id(), request->expected_version(), *std::move(episode),
                         *std::move(fields)};
    const std::string& tenant = TenantOf(context);
    absl::StatusOr<Episode> updated = store_->UpdateEpisode(tenant, request->space(), update);
    if (!updated.ok()) return updated.status();
    absl::StatusOr<SpaceInfo> space = store_->GetSpace(tenant, request->space());
    if (space.ok()) index_->Upsert(tenant, *space, {*updated});
    EpisodeToProto(*updated, /*include_embedding=*/true, response->mutable_episode());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::GetHistory(grpc::CallbackServerContext* context,
                                                        const v1::GetHistoryRequest* request,
                                                        v1::GetHistoryResponse* response) {
  return runner_->Unary(context, "GetHistory", [=, this](absl::Time) -> absl::Status {
    absl::StatusOr<std::vector<Episode>> versions =
        store_->GetHistory(TenantOf(context), request->space(), request->id());
    if (!versions.ok()) return versions.status();
    for (const Episode& version : *versions) {
      EpisodeToProto(version, /*include_embedding=*/true, response->add_versions());
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::DeleteEpisodes(
    grpc::CallbackServerContext* context, const v1::DeleteEpisodesRequest* request,
    v1::DeleteEpisodesResponse* response) {
  return runner_->Unary(context, "DeleteEpisodes", [=, this](absl::Time) -> absl::Status {
    DeleteTarget target;
    switch (request->target_case()) {
      case v1::DeleteEpisodesRequest::kIds:
        target.ids.assign(request->ids().ids().begin(), request->ids().ids().end());
        break;
      case v1::DeleteEpisodesRequest::kAgentId:
        if (request->agent_id().empty()) return absl::InvalidArgumentError("agent_id is empty");
        target.agent_id = request->agent_id();
        break;
      case v1::DeleteEpisodesRequest::kSession:
        if (request->session().agent_id().empty() || request->session().session_id().empty()) {
          return absl::InvalidArgumentError("session delete needs agent_id and session_id");
        }
        target.agent_id = request->session().agent_id();
        target.session_id = request->session().session_id();
        break;
      case v1::DeleteEpisodesRequest::TARGET_NOT_SET:
        return absl::InvalidArgumentError("say what to delete: ids, agent_id or session");
    }
    std::vector<uint64_t> deleted_ids;
    absl::StatusOr<uint64_t> deleted =
        store_->DeleteEpisodes(TenantOf(context), request->space(), target, &deleted_ids);
    if (!deleted.ok()) return deleted.status();
    index_->Remove(TenantOf(context), request->space(), deleted_ids);
    response->set_deleted(*deleted);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::ListEpisodes(grpc::CallbackServerContext* context,
                                                          const v1::ListEpisodesRequest* request,
                                                          v1::ListEpisodesResponse* response) {
  return runner_->Unary(context, "ListEpisodes", [=, this](absl::Time) -> absl::Status {
    absl::StatusOr<EpisodeFilter> filter = FilterFromProto(request->filter());
    if (!filter.ok()) return filter.status();
    absl::StatusOr<EpisodePage> page = store_->ListEpisodes(
        TenantOf(context), request->space(), *filter, request->page_size(), request->page_token());
    if (!page.ok()) return page.status();
    for (const Episode& episode : page->episodes) {
      EpisodeToProto(episode, request->include_embedding(), response->add_episodes());
    }
    response->set_next_page_token(page->next_page_token);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::Search(grpc::CallbackServerContext* context,
                                                    const v1::SearchRequest* request,
                                                    v1::SearchResponse* response) {
  return runner_->Unary(context, "Search", [=, this](absl::Time deadline) -> absl::Status {
    absl::StatusOr<EpisodeFilter> filter = FilterFromProto(request->filter());
    if (!filter.ok()) return filter.status();
    const std::span<const float> query(request->query().data(), request->query().size());
    if (request->exact()) {
      absl::StatusOr<SearchResult> result =
          ExactSearch(*store_, TenantOf(context), request->space(), query, request->k(), max_k_,
                      *filter, deadline);
      if (!result.ok()) return result.status();
      for (const auto& [score, episode] : result->hits) {
        v1::SearchHit* hit = response->add_hits();
        hit->set_score(score);
        EpisodeToProto(episode, request->include_embedding(), hit->mutable_episode());
      }
      response->set_route("exact");
      response->set_scanned(result->scanned);
      return absl::OkStatus();
    }
    absl::StatusOr<IndexSearchResult> result = index_->Search(TenantOf(context), request->space(),
                                                              {.query = query,
                                                               .k = request->k(),
                                                               .beam_width = request->beam_width(),
                                                               .scan = request->scan(),
                                                               .filter = *std::move(filter),
                                                               .deadline = deadline});
    if (!result.ok()) return result.status();
    for (const auto& [score, episode] : result->hits) {
      v1::SearchHit* hit = response->add_hits();
      hit->set_score(score);
      EpisodeToProto(episode, request->include_embedding(), hit->mutable_episode());
    }
    response->set_route(result->route);
    response->set_scanned(result->candidates);
    return absl::OkStatus();
  });
}

}  // namespace engram::server
