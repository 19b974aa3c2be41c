// engram.v1.MemoryService: translates requests to EpisodeStore and
// EpisodeIndex calls and results back to protos; writes reach the index after
// the store acknowledged them. No business logic lives here; every handler
// runs on the worker pool through RpcRunner.
#pragma once

#include "engram/v1/memory.grpc.pb.h"
#include "server/config.h"
#include "server/episode_index.h"
#include "server/rpc_runner.h"
#include "storage/episode_store.h"

namespace engram::server {

class MemoryServiceImpl final : public v1::MemoryService::CallbackService {
 public:
  MemoryServiceImpl(storage::EpisodeStore* store, EpisodeIndex* index, RpcRunner* runner,
                    const ServerConfig& config)
      : store_(store),
        index_(index),
        runner_(runner),
        max_k_(static_cast<uint32_t>(config.max_k)) {}

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
  grpc::ServerUnaryReactor* Search(grpc::CallbackServerContext* context,
                                   const v1::SearchRequest* request,
                                   v1::SearchResponse* response) override;

 private:
  storage::EpisodeStore* store_;
  EpisodeIndex* index_;
  RpcRunner* runner_;
  uint32_t max_k_;
};

}  // namespace engram::server
