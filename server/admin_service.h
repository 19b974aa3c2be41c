// engram.v1.AdminService: statistics (store and index), compaction and index
// rebuilds with streamed progress, checkpoints and backups. Output locations come from the server
// config; requests only name entries inside them.
#pragma once

#include "absl/time/time.h"
#include "engram/v1/admin.grpc.pb.h"
#include "retrieval/engine.h"
#include "server/config.h"
#include "server/rpc_runner.h"
#include "storage/episode_store.h"

namespace engram::server {

class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  AdminServiceImpl(retrieval::Engine* engine, RpcRunner* runner, const ServerConfig& config)
      : engine_(engine),
        store_(&engine->store()),
        runner_(runner),
        config_(config),
        started_(absl::Now()) {}

  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* context,
                                  const v1::StatsRequest* request,
                                  v1::StatsResponse* response) override;
  grpc::ServerWriteReactor<v1::CompactProgress>* Compact(
      grpc::CallbackServerContext* context, const v1::CompactRequest* request) override;
  grpc::ServerUnaryReactor* Checkpoint(grpc::CallbackServerContext* context,
                                       const v1::CheckpointRequest* request,
                                       v1::CheckpointResponse* response) override;
  grpc::ServerUnaryReactor* Backup(grpc::CallbackServerContext* context,
                                   const v1::BackupRequest* request,
                                   v1::BackupResponse* response) override;
  grpc::ServerUnaryReactor* ListBackups(grpc::CallbackServerContext* context,
                                        const v1::ListBackupsRequest* request,
                                        v1::ListBackupsResponse* response) override;
  grpc::ServerUnaryReactor* RestoreBackup(grpc::CallbackServerContext* context,
                                          const v1::RestoreBackupRequest* request,
                                          v1::RestoreBackupResponse* response) override;
  grpc::ServerUnaryReactor* VerifyBackup(grpc::CallbackServerContext* context,
                                         const v1::VerifyBackupRequest* request,
                                         v1::VerifyBackupResponse* response) override;
  grpc::ServerWriteReactor<v1::RebuildIndexProgress>* RebuildIndex(
      grpc::CallbackServerContext* context, const v1::RebuildIndexRequest* request) override;
  grpc::ServerUnaryReactor* ServerInfo(grpc::CallbackServerContext* context,
                                       const v1::ServerInfoRequest* request,
                                       v1::ServerInfoResponse* response) override;

 private:
  retrieval::Engine* engine_;
  storage::EpisodeStore* store_;  // the engine's: compaction, checkpoints, backups
  RpcRunner* runner_;
  const ServerConfig config_;
  const absl::Time started_;
};

}  // namespace engram::server
