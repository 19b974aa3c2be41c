// EngramServer: owns everything a running engramd has (store, worker pool,
// metrics, gRPC server with health checking and reflection) and shuts it
// down in order: NOT_SERVING, drain in-flight calls, sync the WAL, close.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>

#include "absl/status/statusor.h"
#include "server/config.h"

namespace engram::embed {
class Embedders;
}  // namespace engram::embed
namespace engram::storage {
class EpisodeStore;
}
namespace engram::kvcache {
class KvCacheStore;
}
namespace engram::retrieval {
class Engine;
}

namespace engram::auth {
class Authenticator;
}

namespace engram::server {

class AdminServiceImpl;
class KvCacheServiceImpl;
class MemoryServiceImpl;
class Metrics;
class RpcRunner;
class TenantLimits;
class ThreadPool;

class EngramServer {
 public:
  // Opens the store and starts serving. Fails when the data dir is in use or
  // an address cannot be bound.
  static absl::StatusOr<std::unique_ptr<EngramServer>> Start(const ServerConfig& config);
  ~EngramServer();

  // The bound gRPC port (resolves port 0).
  int port() const { return port_; }
  // A channel to this server that bypasses the network but not gRPC: calls
  // pass the same interceptors, authentication and handlers (the request
  // fuzzer's way in).
  std::shared_ptr<grpc::Channel> InProcessChannel();
  // The metrics endpoint's port; 0 when metrics are off.
  int metrics_port() const;

  // Re-reads what SIGHUP re-reads: the tokens file. On failure the previous
  // tokens stay in force.
  absl::Status Reload();

  // Graceful shutdown; safe to call more than once.
  absl::Status Shutdown();

 private:
  EngramServer() = default;

  ServerConfig config_;
  int port_ = 0;
  bool shut_down_ = false;
  std::unique_ptr<storage::EpisodeStore> store_;
  std::unique_ptr<embed::Embedders> embedders_;  // outlives engine_, which uses it
  std::unique_ptr<retrieval::Engine> engine_;
  std::unique_ptr<kvcache::KvCacheStore> kv_store_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<auth::Authenticator> authenticator_;
  std::unique_ptr<TenantLimits> limits_;
  // One pool per call class (server/rpc_runner.h).
  std::unique_ptr<ThreadPool> lookup_pool_;
  std::unique_ptr<ThreadPool> read_pool_;
  std::unique_ptr<ThreadPool> write_pool_;
  std::unique_ptr<ThreadPool> admin_pool_;
  std::unique_ptr<RpcRunner> runner_;
  std::unique_ptr<MemoryServiceImpl> memory_service_;
  std::unique_ptr<AdminServiceImpl> admin_service_;
  std::unique_ptr<KvCacheServiceImpl> kv_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  // The plaintext health-only listener (health_address); stopped last.
  std::unique_ptr<grpc::Server> health_server_;
  int health_port_ = 0;
};

}  // namespace engram::server
