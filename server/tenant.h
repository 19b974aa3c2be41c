// The tenant a call acts for. Authentication is not implemented yet: every
// caller is the default tenant. One place to change when auth lands.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "storage/episode.h"

namespace engram::server {

inline const std::string& TenantOf(grpc::CallbackServerContext*) {
  static const std::string tenant = kDefaultTenant;
  return tenant;
}

}  // namespace engram::server
