#include "server/memory_service.h"

#include "server/proto_convert.h"

namespace engram::server {

grpc::ServerUnaryReactor* MemoryServiceImpl::CreateSpace(grpc::CallbackServerContext* context,
                                                         const v1::CreateSpaceRequest* request,
                                                         v1::CreateSpaceResponse* response) {
  return runner_->Unary(
      context, "CreateSpace", CallClass::kWrite, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<Metric> metric = MetricFromProto(request->space().metric());
        if (!metric.ok()) return metric.status();
        SpaceInfo space;
        space.name = request->space().name();
        space.dimension = request->space().dimension();
        space.metric = *metric;
        space.text = TextSettingsFromProto(request->space().text());
        space.embedder = request->space().embedder();
        absl::StatusOr<SpaceInfo> created = engine_->CreateSpace(call.tenant(), space);
        if (!created.ok()) return created.status();
        SpaceToProto(*created, response->mutable_space());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::GetSpace(grpc::CallbackServerContext* context,
                                                      const v1::GetSpaceRequest* request,
                                                      v1::GetSpaceResponse* response) {
  return runner_->Unary(
      context, "GetSpace", CallClass::kLookup, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<SpaceInfo> space = engine_->GetSpace(call.tenant(), request->name());
        if (!space.ok()) return space.status();
        SpaceToProto(*space, response->mutable_space());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::ListSpaces(grpc::CallbackServerContext* context,
                                                        const v1::ListSpacesRequest*,
                                                        v1::ListSpacesResponse* response) {
  return runner_->Unary(
      context, "ListSpaces", CallClass::kLookup, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<std::vector<SpaceInfo>> spaces = engine_->ListSpaces(call.tenant());
        if (!spaces.ok()) return spaces.status();
        for (const SpaceInfo& space : *spaces) SpaceToProto(space, response->add_spaces());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::DeleteSpace(grpc::CallbackServerContext* context,
                                                         const v1::DeleteSpaceRequest* request,
                                                         v1::DeleteSpaceResponse* response) {
  return runner_->Unary(
      context, "DeleteSpace", CallClass::kWrite, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<uint64_t> deleted = engine_->DeleteSpace(call.tenant(), request->name());
        if (!deleted.ok()) return deleted.status();
        response->set_deleted_episodes(*deleted);
        return absl::OkStatus();
      });
}

namespace {

// The episode a request names: its `id`, or the one its agent stored under
// `key` (when the request sets key).
absl::StatusOr<uint64_t> NamedEpisode(retrieval::Engine& engine, const std::string& tenant,
                                      const std::string& space, uint64_t id, bool has_key,
                                      const v1::EpisodeKey& key) {
  if (!has_key) return id;
  if (id != 0) return absl::InvalidArgumentError("name the episode by id or by key, not both");
  if (key.agent_id().empty() || key.key().empty()) {
    return absl::InvalidArgumentError("an episode key needs agent_id and key");
  }
  return engine.ResolveKey(tenant, space, key.agent_id(), key.key());
}

}  // namespace

grpc::ServerUnaryReactor* MemoryServiceImpl::PutEpisodes(grpc::CallbackServerContext* context,
                                                         const v1::PutEpisodesRequest* request,
                                                         v1::PutEpisodesResponse* response) {
  return runner_->Unary(
      context, "PutEpisodes", CallClass::kWrite, [=, this](const Call& call) -> absl::Status {
        std::vector<EpisodeWrite> writes;
        writes.reserve(request->episodes_size());
        for (int i = 0; i < request->episodes_size(); ++i) {
          absl::StatusOr<Episode> episode = EpisodeFromProto(request->episodes(i).episode());
          if (!episode.ok()) {
            return absl::InvalidArgumentError(
                absl::StrCat("episodes[", i, "]: ", episode.status().message()));
          }
          if (absl::Status owned = placement_.CheckOwner(call.tenant(), episode->agent_id);
              !owned.ok()) {
            return absl::FailedPreconditionError(
                absl::StrCat("episodes[", i, "]: ", owned.message()));
          }
          writes.push_back({request->episodes(i).request_id(), *std::move(episode)});
        }
        const uint64_t request_bytes = request->ByteSizeLong();
        if (absl::Status admitted =
                runner_->limits()->AdmitEpisodes(call.tenant(), writes.size(), request_bytes);
            !admitted.ok()) {
          return admitted;
        }
        absl::StatusOr<WriteBudget::Lease> lease = runner_->write_budget()->Acquire(request_bytes);
        if (!lease.ok()) return lease.status();
        absl::StatusOr<std::vector<PutResult>> results =
            engine_->PutEpisodes(call.tenant(), request->space(), std::move(writes), call.deadline);
        if (!results.ok()) return results.status();
        for (const PutResult& result : *results) {
          response->add_ids(result.id);
          response->add_deduplicated(result.deduplicated);
          response->add_replaced(result.replaced);
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::GetEpisode(grpc::CallbackServerContext* context,
                                                        const v1::GetEpisodeRequest* request,
                                                        v1::GetEpisodeResponse* response) {
  return runner_->Unary(
      context, "GetEpisode", CallClass::kLookup, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<uint64_t> id =
            NamedEpisode(*engine_, call.tenant(), request->space(), request->id(),
                         request->has_key(), request->key());
        if (!id.ok()) return id.status();
        absl::StatusOr<Episode> episode = engine_->GetEpisode(call.tenant(), request->space(), *id);
        if (!episode.ok()) return episode.status();
        EpisodeToProto(*episode, /*include_embedding=*/true, response->mutable_episode());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::UpdateEpisode(grpc::CallbackServerContext* context,
                                                           const v1::UpdateEpisodeRequest* request,
                                                           v1::UpdateEpisodeResponse* response) {
  return runner_->Unary(
      context, "UpdateEpisode", CallClass::kWrite, [=, this](const Call& call) -> absl::Status {
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
        const uint64_t request_bytes = request->ByteSizeLong();
        if (absl::Status admitted =
                runner_->limits()->AdmitEpisodes(call.tenant(), 0, request_bytes);
            !admitted.ok()) {
          return admitted;
        }
        absl::StatusOr<WriteBudget::Lease> lease = runner_->write_budget()->Acquire(request_bytes);
        if (!lease.ok()) return lease.status();
        // Resolved once admitted, so a refused update reads nothing.
        absl::StatusOr<uint64_t> id =
            NamedEpisode(*engine_, call.tenant(), request->space(), request->id(),
                         request->has_key(), request->key());
        if (!id.ok()) return id.status();
        if (placement_.count() > 1) {
          // An agent is fixed for an episode's life, so reading it before the
          // update cannot race with one that changes it.
          std::string agent = request->key().agent_id();
          if (!request->has_key()) {
            absl::StatusOr<std::string> owner =
                engine_->AgentOf(call.tenant(), request->space(), *id);
            if (!owner.ok()) return owner.status();
            agent = *std::move(owner);
          }
          if (absl::Status owned = placement_.CheckOwner(call.tenant(), agent); !owned.ok()) {
            return owned;
          }
        }
        EpisodeUpdate update{*id, request->expected_version(), *std::move(episode),
                             *std::move(fields)};
        absl::StatusOr<Episode> updated =
            engine_->UpdateEpisode(call.tenant(), request->space(), update, call.deadline);
        if (!updated.ok()) return updated.status();
        EpisodeToProto(*updated, /*include_embedding=*/true, response->mutable_episode());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::GetHistory(grpc::CallbackServerContext* context,
                                                        const v1::GetHistoryRequest* request,
                                                        v1::GetHistoryResponse* response) {
  return runner_->Unary(
      context, "GetHistory", CallClass::kRead, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<uint64_t> id =
            NamedEpisode(*engine_, call.tenant(), request->space(), request->id(),
                         request->has_key(), request->key());
        if (!id.ok()) return id.status();
        absl::StatusOr<HistoryPage> page = engine_->GetHistory(
            call.tenant(), request->space(), *id, request->page_size(), request->page_token());
        if (!page.ok()) return page.status();
        for (const Episode& version : page->versions) {
          EpisodeToProto(version, /*include_embedding=*/true, response->add_versions());
        }
        response->set_next_page_token(page->next_page_token);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::DeleteEpisodes(
    grpc::CallbackServerContext* context, const v1::DeleteEpisodesRequest* request,
    v1::DeleteEpisodesResponse* response) {
  return runner_->Unary(
      context, "DeleteEpisodes", CallClass::kWrite, [=, this](const Call& call) -> absl::Status {
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
          case v1::DeleteEpisodesRequest::kKeys:
            if (request->keys().agent_id().empty() || request->keys().keys().empty()) {
              return absl::InvalidArgumentError("a delete by keys needs agent_id and keys");
            }
            target.agent_id = request->keys().agent_id();
            target.keys.assign(request->keys().keys().begin(), request->keys().keys().end());
            break;
          case v1::DeleteEpisodesRequest::TARGET_NOT_SET:
            return absl::InvalidArgumentError("say what to delete: ids, agent_id, session or keys");
        }
        absl::StatusOr<uint64_t> deleted =
            engine_->DeleteEpisodes(call.tenant(), request->space(), target);
        if (!deleted.ok()) return deleted.status();
        response->set_deleted(*deleted);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::ListEpisodes(grpc::CallbackServerContext* context,
                                                          const v1::ListEpisodesRequest* request,
                                                          v1::ListEpisodesResponse* response) {
  return runner_->Unary(
      context, "ListEpisodes", CallClass::kRead, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<EpisodeFilter> filter = FilterFromProto(request->filter());
        if (!filter.ok()) return filter.status();
        absl::StatusOr<EpisodePage> page = engine_->ListEpisodes(
            call.tenant(), request->space(), *filter, request->page_size(), request->page_token());
        if (!page.ok()) return page.status();
        for (const Episode& episode : page->episodes) {
          EpisodeToProto(episode, request->include_embedding(), response->add_episodes());
        }
        response->set_next_page_token(page->next_page_token);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::ListAgents(grpc::CallbackServerContext* context,
                                                        const v1::ListAgentsRequest* request,
                                                        v1::ListAgentsResponse* response) {
  return runner_->Unary(
      context, "ListAgents", CallClass::kRead, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<storage::EpisodeStore::AgentPage> page = engine_->ListAgents(
            call.tenant(), request->space(), request->page_size(), request->page_token());
        if (!page.ok()) return page.status();
        for (std::string& agent : page->agent_ids) response->add_agent_ids(std::move(agent));
        response->set_next_page_token(page->next_page_token);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::ImportEpisodes(
    grpc::CallbackServerContext* context, const v1::ImportEpisodesRequest* request,
    v1::ImportEpisodesResponse* response) {
  return runner_->Unary(
      context, "ImportEpisodes", CallClass::kWrite, [=, this](const Call& call) -> absl::Status {
        std::vector<ImportedEpisode> episodes;
        episodes.reserve(request->episodes_size());
        for (int i = 0; i < request->episodes_size(); ++i) {
          const v1::ImportedEpisode& imported = request->episodes(i);
          const std::string where = absl::StrCat("episodes[", i, "]: ");
          absl::StatusOr<Episode> current = EpisodeFromProto(imported.episode());
          if (!current.ok()) {
            return absl::InvalidArgumentError(absl::StrCat(where, current.status().message()));
          }
          if (absl::Status owned = placement_.CheckOwner(call.tenant(), current->agent_id);
              !owned.ok()) {
            return absl::FailedPreconditionError(absl::StrCat(where, owned.message()));
          }
          ImportedEpisode episode{*std::move(current), {}};
          for (int v = 0; v < imported.history_size(); ++v) {
            absl::StatusOr<Episode> old = EpisodeFromProto(imported.history(v));
            if (!old.ok()) {
              return absl::InvalidArgumentError(
                  absl::StrCat(where, "history[", v, "]: ", old.status().message()));
            }
            episode.history.push_back(*std::move(old));
          }
          episodes.push_back(std::move(episode));
        }
        const uint64_t request_bytes = request->ByteSizeLong();
        if (absl::Status admitted =
                runner_->limits()->AdmitEpisodes(call.tenant(), episodes.size(), request_bytes);
            !admitted.ok()) {
          return admitted;
        }
        absl::StatusOr<WriteBudget::Lease> lease = runner_->write_budget()->Acquire(request_bytes);
        if (!lease.ok()) return lease.status();
        absl::StatusOr<ImportResult> result = engine_->ImportEpisodes(
            call.tenant(), request->space(), std::move(episodes), call.deadline);
        if (!result.ok()) return result.status();
        response->set_imported(result->imported);
        response->set_already_present(result->already_present);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::AnalyzeText(grpc::CallbackServerContext* context,
                                                         const v1::AnalyzeTextRequest* request,
                                                         v1::AnalyzeTextResponse* response) {
  return runner_->Unary(
      context, "AnalyzeText", CallClass::kRead, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<retrieval::AnalyzedText> analyzed = engine_->AnalyzeText(
            call.tenant(), request->space(), request->text(), request->embed(), call.deadline);
        if (!analyzed.ok()) return analyzed.status();
        for (std::string& term : analyzed->terms) response->add_terms(std::move(term));
        response->set_tokenizer(analyzed->tokenizer);
        response->mutable_embedding()->Add(analyzed->embedding.begin(), analyzed->embedding.end());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* MemoryServiceImpl::Search(grpc::CallbackServerContext* context,
                                                    const v1::SearchRequest* request,
                                                    v1::SearchResponse* response) {
  return runner_->Unary(
      context, "Search", CallClass::kRead, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<EpisodeFilter> filter = FilterFromProto(request->filter());
        if (!filter.ok()) return filter.status();
        retrieval::SearchRequest search;
        search.query = std::span<const float>(request->query().data(), request->query().size());
        search.query_text = request->query_text();
        search.k = request->k();
        search.beam_width = request->beam_width();
        search.route = request->exact()  ? retrieval::Route::kExact
                       : request->scan() ? retrieval::Route::kScan
                                         : retrieval::Route::kIndex;
        switch (request->route()) {
          case v1::ROUTE_AUTO:
            search.policy = retrieval::RoutePolicy::kAuto;
            break;
          case v1::ROUTE_FAST:
            search.policy = retrieval::RoutePolicy::kFast;
            break;
          case v1::ROUTE_DELIBERATE:
            search.policy = retrieval::RoutePolicy::kDeliberate;
            break;
          default:
            return absl::InvalidArgumentError(
                absl::StrCat("route ", static_cast<int>(request->route()),
                             " is not one of ROUTE_AUTO, ROUTE_FAST, ROUTE_DELIBERATE"));
        }
        if (request->reference_time_us() != 0) {
          search.reference_time = absl::FromUnixMicros(request->reference_time_us());
        }
        search.filter = *std::move(filter);
        search.deadline = call.deadline;
        const absl::Time start = absl::Now();
        absl::StatusOr<retrieval::SearchResult> result =
            engine_->Search(call.tenant(), request->space(), search);
        if (!result.ok()) return result.status();
        if (Metrics* metrics = runner_->metrics(); metrics != nullptr) {
          std::vector<Metrics::StageTime> stages;
          for (const retrieval::StageReport& stage : result->stages) {
            stages.push_back({stage.name, stage.time});
          }
          const bool escalated = result->gate.escalated;
          metrics->RecordSearch(
              retrieval::RoutePolicyName(result->policy), retrieval::RouteName(result->route),
              result->gate.evaluated ? &escalated : nullptr, absl::Now() - start, stages);
        }
        SearchResultToProto(*result, request->include_embedding(), response);
        return absl::OkStatus();
      });
}

}  // namespace engram::server
