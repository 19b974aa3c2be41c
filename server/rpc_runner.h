// RpcRunner: how every unary handler runs. The gRPC callback thread only
// checks the deadline and queues the work; a pool thread runs it, records
// metrics and finishes the reactor. A full queue is RESOURCE_EXHAUSTED.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/metrics.h"
#include "server/thread_pool.h"

namespace engram::server {

// The call's deadline as absl::Time (InfiniteFuture when the client set none).
absl::Time CallDeadline(const grpc::CallbackServerContext* context);

class RpcRunner {
 public:
  RpcRunner(ThreadPool* pool, Metrics* metrics) : pool_(pool), metrics_(metrics) {}

  // `work` gets the call's deadline and fills the response before returning OK.
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context, std::string_view rpc,
                                  std::function<absl::Status(absl::Time deadline)> work);

  ThreadPool* pool() { return pool_; }
  Metrics* metrics() { return metrics_; }

 private:
  ThreadPool* pool_;
  Metrics* metrics_;
};

}  // namespace engram::server
