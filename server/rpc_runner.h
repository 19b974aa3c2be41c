// RpcRunner: how every handler runs. The gRPC callback thread admits the
// call (server/auth/authenticator.h: who it acts for, and whether that
// caller may make it), checks the deadline and queues the work; a pool
// thread runs it, records metrics and finishes the reactor. A full queue is
// RESOURCE_EXHAUSTED at once. Streaming handlers, which run their own
// reactors, admit themselves through Admit() before their first read or
// write.
//
// Calls are queued by class, each with its own pool and queue: writers that
// wait on fsync or on the indexer's backpressure can fill the write pool,
// never the threads that answer reads, searches and admin calls; and
// searches that fill the read pool never delay a lookup (a space's
// metadata, one episode by id, stats), which has a lane of its own.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/auth/authenticator.h"
#include "server/metrics.h"
#include "server/tenant_limits.h"
#include "server/thread_pool.h"

namespace engram::server {

// Which pool runs a call.
enum class CallClass {
  kLookup,  // bounded point reads: GetSpace, ListSpaces, GetEpisode, Stats, KvStats,
            // ListBackups. They never scan or rank, so they must never queue
            // behind a search.
  kRead,    // searches, lists, histories, KV loads: never wait behind writers
  kWrite,   // puts, updates, deletes, space changes, KV saves: may block on fsync
  kAdmin,   // compaction, checkpoints, backups, index rebuilds, KV export/import
};

// The call's deadline as absl::Time (InfiniteFuture when the client set none).
absl::Time CallDeadline(const grpc::CallbackServerContext* context);

// What a handler's work gets: who the call acts for, and its deadline.
struct Call {
  const auth::Caller& caller;
  absl::Time deadline;
  // The tenant whose data the call touches (never empty for RPCs whose rule
  // is RpcScope::kTenant).
  const std::string& tenant() const { return caller.tenant; }
};

// Bytes of write requests being applied, against max_inflight_write_mb.
// Acquire() returns a lease that gives the bytes back when destroyed.
class WriteBudget {
 public:
  explicit WriteBudget(uint64_t max_bytes) : max_bytes_(max_bytes) {}
  class Lease {
   public:
    Lease(WriteBudget* budget, uint64_t bytes) : budget_(budget), bytes_(bytes) {}
    Lease(Lease&& other) noexcept : budget_(other.budget_), bytes_(other.bytes_) {
      other.budget_ = nullptr;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (budget_ != nullptr) budget_->in_flight_.fetch_sub(bytes_);
    }

   private:
    WriteBudget* budget_;
    uint64_t bytes_;
  };
  // RESOURCE_EXHAUSTED naming the budget when `bytes` do not fit now. A
  // single request larger than the whole budget is admitted when nothing
  // else is in flight, so that max_message_bytes alone decides what fits.
  absl::StatusOr<Lease> Acquire(uint64_t bytes);

 private:
  const uint64_t max_bytes_;
  std::atomic<uint64_t> in_flight_{0};
};

class RpcRunner {
 public:
  struct Pools {
    ThreadPool* lookup;
    ThreadPool* read;
    ThreadPool* write;
    ThreadPool* admin;
  };
  RpcRunner(Pools pools, Metrics* metrics, const auth::Authenticator* authenticator,
            TenantLimits* limits, uint64_t max_inflight_write_bytes)
      : pools_(pools),
        metrics_(metrics),
        authenticator_(authenticator),
        limits_(limits),
        write_budget_(max_inflight_write_bytes) {}

  // `work` runs on the pool of `call_class` once the call is admitted; it
  // fills the response before returning OK. `rpc` names the call in metrics
  // and in the authenticator's table of rules.
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context, std::string_view rpc,
                                  CallClass call_class,
                                  std::function<absl::Status(const Call& call)> work);

  // For streaming handlers: who the call acts for, or UNAUTHENTICATED /
  // PERMISSION_DENIED / RESOURCE_EXHAUSTED (the tenant's request rate) for
  // the handler to finish with.
  absl::StatusOr<auth::Caller> Admit(const grpc::CallbackServerContext* context,
                                     std::string_view rpc);

  ThreadPool* pool(CallClass call_class);
  // What a handler finishes with: `status` as gRPC's, with the retry delay
  // of an overload refusal (common/retry_after.h) sent as the
  // grpc-retry-pushback-ms trailer. Unary and streaming calls alike.
  static grpc::Status FinishStatus(grpc::ServerContextBase* context, const absl::Status& status);
  // RESOURCE_EXHAUSTED naming the class whose queue is full, e.g.
  // "server overloaded: the write queue is full (max_queued_requests)".
  static absl::Status Overloaded(CallClass call_class);
  Metrics* metrics() { return metrics_; }
  TenantLimits* limits() { return limits_; }
  WriteBudget* write_budget() { return &write_budget_; }

 private:
  const Pools pools_;
  Metrics* metrics_;
  const auth::Authenticator* authenticator_;
  TenantLimits* limits_;
  WriteBudget write_budget_;
};

}  // namespace engram::server
