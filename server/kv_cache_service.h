// engram.v1.KVCacheService: translates the KV cache protocol
// (proto/engram/v1/kvcache.proto) to KvCacheStore calls. Streams are
// reactors whose blocking work (quantization, RocksDB) runs on the worker
// pool, one step at a time per call; unary calls go through RpcRunner.
#pragma once

#include "engram/v1/kvcache.grpc.pb.h"
#include "server/config.h"
#include "server/rpc_runner.h"
#include "server/shard_placement.h"
#include "storage/kvcache/kv_cache_store.h"

namespace engram::server {

class KvCacheServiceImpl final : public v1::KVCacheService::CallbackService {
 public:
  KvCacheServiceImpl(kvcache::KvCacheStore* store, RpcRunner* runner, const ServerConfig& config)
      : store_(store),
        runner_(runner),
        export_dir_(config.kv.export_dir),
        per_tenant_exports_(!config.auth.tokens_file.empty()),
        max_message_bytes_(static_cast<size_t>(config.max_message_bytes)),
        placement_(config.shard) {}

  grpc::ServerReadReactor<v1::SaveCacheRequest>* SaveCache(
      grpc::CallbackServerContext* context, v1::SaveCacheResponse* response) override;
  grpc::ServerWriteReactor<v1::LoadCacheResponse>* LoadCache(
      grpc::CallbackServerContext* context, const v1::LoadCacheRequest* request) override;
  grpc::ServerUnaryReactor* MatchPrefix(grpc::CallbackServerContext* context,
                                        const v1::MatchPrefixRequest* request,
                                        v1::MatchPrefixResponse* response) override;
  grpc::ServerUnaryReactor* ListCaches(grpc::CallbackServerContext* context,
                                       const v1::ListCachesRequest* request,
                                       v1::ListCachesResponse* response) override;
  grpc::ServerUnaryReactor* DeleteCache(grpc::CallbackServerContext* context,
                                        const v1::DeleteCacheRequest* request,
                                        v1::DeleteCacheResponse* response) override;
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* context,
                                  const v1::KvStatsRequest* request,
                                  v1::KvStatsResponse* response) override;
  grpc::ServerUnaryReactor* ExportCache(grpc::CallbackServerContext* context,
                                        const v1::ExportCacheRequest* request,
                                        v1::ExportCacheResponse* response) override;
  grpc::ServerUnaryReactor* ImportCache(grpc::CallbackServerContext* context,
                                        const v1::ImportCacheRequest* request,
                                        v1::ImportCacheResponse* response) override;

  // A model from the wire: dtype required, bits 0 -> 4, group 0 -> 64, and
  // one layer-block (K + V as floats) must fit one message.
  absl::StatusOr<kvcache::ModelSpec> ModelFromProto(const v1::KvModel& model) const;

  kvcache::KvCacheStore* store() { return store_; }
  RpcRunner* runner() { return runner_; }
  const ShardPlacement& placement() const { return placement_; }

 private:
  kvcache::KvCacheStore* store_;
  RpcRunner* runner_;
  // Where `tenant`'s export files live: kv.export_dir itself while auth is
  // off (one tenant), kv.export_dir/<tenant> once it is on, so that no
  // tenant can name another's files.
  std::string ExportRoot(const std::string& tenant) const;

  const std::string export_dir_;
  const bool per_tenant_exports_;
  const size_t max_message_bytes_;
  const ShardPlacement placement_;
};

}  // namespace engram::server
