// The one mapping from absl::Status (the core's errors) to grpc::Status.
#pragma once

#include <grpcpp/support/status.h>

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace engram::server {

// Longest message a client gets: a longer one (an error echoing a huge
// request value) is cut, so that no answer outgrows gRPC's metadata limit
// and turns into RESOURCE_EXHAUSTED, and none carries unbounded input back.
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// Every occurrence of a server directory's absolute path in a message is
// replaced by the name of its config key, e.g. "<data_dir>/000123.log":
// errors from RocksDB and the filesystem name the files they failed on, and
// a client has no business learning the server's layout. Set once at start
// (EngramServer::Start); a later call replaces the list.
struct ScrubbedPath {
  std::string absolute;  // e.g. /var/lib/engram/data
  std::string shown;     // e.g. <data_dir>
};
void SetScrubbedPaths(std::vector<ScrubbedPath> paths);

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace engram::server
