// The one mapping from absl::Status (the core's errors) to grpc::Status.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace engram::server {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace engram::server
