// The gRPC listener's credentials: plaintext, TLS, or mTLS (server/config.h
// TlsConfig). The files are checked at start so that a wrong path or a key
// that does not match its certificate stops engramd with a clear message
// rather than failing every handshake later; after that gRPC's file watcher
// re-reads them every tls.reload_interval_s.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>

#include "absl/status/statusor.h"
#include "server/config.h"

namespace engram::server {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ListenerCredentials(const TlsConfig& tls);

}  // namespace engram::server
