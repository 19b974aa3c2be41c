// The one mapping from absl::Status (the core's errors) to grpc::Status.
#pragma once

#include <grpcpp/support/status.h>

#include <cstddef>

#include "absl/status/status.h"

namespace engram::server {

// Longest message a client gets: a longer one (an error echoing a huge
// request value) is cut, so that no answer outgrows gRPC's metadata limit
// and turns into RESOURCE_EXHAUSTED, and none carries unbounded input back.
inline constexpr size_t kMaxStatusMessageBytes = 1024;

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace engram::server
