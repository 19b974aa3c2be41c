#include "server/rpc_runner.h"

#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/retry_after.h"
#include "server/status_convert.h"

namespace engram::server {
namespace {

// What a client refused by a full queue or the write budget waits before
// retrying: long enough for a few calls ahead of it to finish.
constexpr absl::Duration kOverloadRetryAfter = absl::Milliseconds(100);

}  // namespace

absl::Time CallDeadline(const grpc::CallbackServerContext* context) {
  auto deadline = context->deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

absl::StatusOr<WriteBudget::Lease> WriteBudget::Acquire(uint64_t bytes) {
  uint64_t current = in_flight_.load();
  do {
    if (current > 0 && current + bytes > max_bytes_) {
      constexpr double kMiB = 1 << 20;
      return WithRetryAfter(
          absl::ResourceExhaustedError(absl::StrFormat(
              "server overloaded: writes being applied hold %.1f MiB and this one's %.1f MiB "
              "would pass max_inflight_write_mb (%d); retry later",
              current / kMiB, bytes / kMiB, max_bytes_ >> 20)),
          kOverloadRetryAfter);
    }
  } while (!in_flight_.compare_exchange_weak(current, current + bytes));
  return Lease(this, bytes);
}

ThreadPool* RpcRunner::pool(CallClass call_class) {
  switch (call_class) {
    case CallClass::kLookup:
      return pools_.lookup;
    case CallClass::kRead:
      return pools_.read;
    case CallClass::kWrite:
      return pools_.write;
    case CallClass::kAdmin:
      return pools_.admin;
  }
  return pools_.read;
}

absl::Status RpcRunner::Overloaded(CallClass call_class) {
  const char* name = call_class == CallClass::kLookup  ? "lookup"
                     : call_class == CallClass::kRead  ? "read"
                     : call_class == CallClass::kWrite ? "write"
                                                       : "admin";
  return WithRetryAfter(
      absl::ResourceExhaustedError(absl::StrCat(
          "server overloaded: the ", name, " queue is full (max_queued_requests); retry later")),
      kOverloadRetryAfter);
}

absl::StatusOr<auth::Caller> RpcRunner::Admit(const grpc::CallbackServerContext* context,
                                              std::string_view rpc) {
  const absl::string_view name(rpc.data(), rpc.size());
  absl::StatusOr<auth::Caller> caller = authenticator_->Admit(*context, name);
  if (!caller.ok()) return caller;
  // Tenant calls count against the tenant's rate; whole-server calls do not.
  const auth::RpcRule* rule = auth::FindRpcRule(name);
  if (!caller->tenant.empty() && rule != nullptr && rule->scope != auth::RpcScope::kServer) {
    if (absl::Status admitted = limits_->AdmitCall(caller->tenant); !admitted.ok()) {
      return admitted;
    }
  }
  return caller;
}

grpc::Status RpcRunner::FinishStatus(grpc::ServerContextBase* context, const absl::Status& status) {
  if (std::optional<absl::Duration> retry_after = RetryAfter(status)) {
    context->AddTrailingMetadata(kRetryPushbackTrailer,
                                 std::to_string(absl::ToInt64Milliseconds(*retry_after)));
  }
  return ToGrpcStatus(status);
}

grpc::ServerUnaryReactor* RpcRunner::Unary(grpc::CallbackServerContext* context,
                                           std::string_view rpc, CallClass call_class,
                                           std::function<absl::Status(const Call&)> work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Time start = absl::Now();
  absl::Time deadline = CallDeadline(context);
  auto finish = [this, context, reactor, rpc, start](const absl::Status& status) {
    metrics_->RecordRpc(rpc, status.code(), absl::Now() - start);
    reactor->Finish(FinishStatus(context, status));
  };
  absl::StatusOr<auth::Caller> caller = Admit(context, rpc);
  if (!caller.ok()) {
    finish(caller.status());
    return reactor;
  }
  if (deadline <= start) {
    finish(absl::DeadlineExceededError("the call's deadline passed before it started"));
    return reactor;
  }
  bool queued =
      pool(call_class)
          ->TrySubmit([work = std::move(work), finish, deadline, context,
                       caller = *std::move(caller)] {
            if (context->IsCancelled()) {
              finish(absl::CancelledError("the client cancelled the call"));
              return;
            }
            if (absl::Now() >= deadline) {
              finish(absl::DeadlineExceededError("the call's deadline passed while it was queued"));
              return;
            }
            finish(work(Call{caller, deadline}));
          });
  if (!queued) {
    finish(Overloaded(call_class));
  }
  return reactor;
}

}  // namespace engram::server
