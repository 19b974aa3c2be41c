// engram.v1.MemoryService: translates requests to calls of the retrieval
// engine (retrieval/engine.h) and its results back to protos. No business
// logic lives here; every handler runs on the worker pool through RpcRunner.
#pragma once

#include "engram/v1/memory.grpc.pb.h"
#include "retrieval/engine.h"
#include "server/config.h"
#include "server/rpc_runner.h"
#include "server/shard_placement.h"

namespace engram::server {

class MemoryServiceImpl final : public v1::MemoryService::CallbackService {
 public:
  MemoryServiceImpl(retrieval::Engine* engine, RpcRunner* runner, const ShardConfig& shard)
      : engine_(engine), runner_(runner), placement_(shard) {}

  grpc::ServerUnaryReactor* CreateSpace(grpc::CallbackServerContext* context,
                                        const v1::CreateSpaceRequest* request,
                                        v1::CreateSpaceResponse* response) override;
  grpc::ServerUnaryReactor* GetSpace(grpc::CallbackServerContext* context,
                                     const v1::GetSpaceRequest* request,
                                     v1::GetSpaceResponse* response) override;
  grpc::ServerUnaryReactor* ListSpaces(grpc::CallbackServerContext* context,
                                       const v1::ListSpacesRequest* request,
                                       v1::ListSpacesResponse* response) override;
  grpc::ServerUnaryReactor* DeleteSpace(grpc::CallbackServerContext* context,
                                        const v1::DeleteSpaceRequest* request,
                                        v1::DeleteSpaceResponse* response) override;
  grpc::ServerUnaryReactor* PutEpisodes(grpc::CallbackServerContext* context,
                                        const v1::PutEpisodesRequest* request,
                                        v1::PutEpisodesResponse* response) override;
  grpc::ServerUnaryReactor* GetEpisode(grpc::CallbackServerContext* context,
                                       const v1::GetEpisodeRequest* request,
                                       v1::GetEpisodeResponse* response) override;
  grpc::ServerUnaryReactor* UpdateEpisode(grpc::CallbackServerContext* context,
                                          const v1::UpdateEpisodeRequest* request,
                                          v1::UpdateEpisodeResponse* response) override;
  grpc::ServerUnaryReactor* GetHistory(grpc::CallbackServerContext* context,
                                       const v1::GetHistoryRequest* request,
                                       v1::GetHistoryResponse* response) override;
  grpc::ServerUnaryReactor* DeleteEpisodes(grpc::CallbackServerContext* context,
                                           const v1::DeleteEpisodesRequest* request,
                                           v1::DeleteEpisodesResponse* response) override;
  grpc::ServerUnaryReactor* ListEpisodes(grpc::CallbackServerContext* context,
                                         const v1::ListEpisodesRequest* request,
                                         v1::ListEpisodesResponse* response) override;
  grpc::ServerUnaryReactor* ListAgents(grpc::CallbackServerContext* context,
                                       const v1::ListAgentsRequest* request,
                                       v1::ListAgentsResponse* response) override;
  grpc::ServerUnaryReactor* ImportEpisodes(grpc::CallbackServerContext* context,
                                           const v1::ImportEpisodesRequest* request,
                                           v1::ImportEpisodesResponse* response) override;
  grpc::ServerUnaryReactor* AnalyzeText(grpc::CallbackServerContext* context,
                                        const v1::AnalyzeTextRequest* request,
                                        v1::AnalyzeTextResponse* response) override;
  grpc::ServerUnaryReactor* Search(grpc::CallbackServerContext* context,
                                   const v1::SearchRequest* request,
                                   v1::SearchResponse* response) override;

 private:
  retrieval::Engine* engine_;
  RpcRunner* runner_;
  const ShardPlacement placement_;
};

}  // namespace engram::server
