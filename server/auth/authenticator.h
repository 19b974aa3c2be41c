// Authenticator: who a call acts for, and whether it may make the call.
//
// Every call passes through Admit() (RpcRunner calls it for unary calls and
// the streaming reactors call it before their first read or write), so the
// check lives in one place and the role each RPC needs in one table
// (authenticator.cc). A gRPC interceptor or AuthMetadataProcessor cannot be
// that place in gRPC 1.51: server interceptors cannot fail a call, and an
// auth processor is refused on insecure (loopback) listeners.
//
// Without a tokens file, auth is off: every call is the tenant `default`
// with the admin role and operator rights, as before auth existed; engramd
// then listens on loopback only unless `insecure` says otherwise
// (server/config.h).
//
// With one, a call presents `authorization: Bearer engram_<id>_<secret>`
// or, on an mTLS listener, a verified client certificate whose common name
// the file maps. The tenant comes from the token or certificate and from
// nothing the request says. UNAUTHENTICATED: no credential, or one that is
// unknown, revoked or malformed. PERMISSION_DENIED: a role or scope that does
// not allow the call. Messages never name another tenant.
//
// Thread-safe. Reload() swaps the whole table at once; calls admitted before
// keep the identity they were admitted with.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/auth/tokens.h"

namespace engram::auth {

// Who a call acts for.
struct Caller {
  // The tenant whose data the call reads and writes; empty for operator
  // tokens, which hold no data.
  std::string tenant;
  Role role = Role::kRead;
  // Whole-server operations (backups, checkpoints, compaction) are allowed
  // up to `role`.
  bool operator_scope = false;
  // For logs: "token 1a2b3c4d5e6f", "cert <common name>" or "auth off".
  std::string credential;
};

// What an RPC needs, by the name RpcRunner and the metrics know it by
// ("Search", "KvStats", ...).
enum class RpcScope {
  kTenant,            // a tenant's data: tenant tokens with at least `role`
  kTenantOrOperator,  // Stats: a tenant's tokens with `role`, or any operator token
  kServer,            // whole-server operations: operator tokens only
};
struct RpcRule {
  RpcScope scope;
  Role role;
};
// nullptr for an RPC the table does not know: such calls are refused.
const RpcRule* FindRpcRule(absl::string_view rpc);

class Authenticator {
 public:
  // `tokens_file` empty: auth off. Otherwise the file must load (a missing
  // file is an error, so a typo cannot silently turn auth off).
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(const std::string& tokens_file);

  bool enabled() const { return !tokens_file_.empty(); }

  // Re-reads the tokens file. On failure the previous table stays in force
  // and the error says why. OK and a no-op when auth is off.
  absl::Status Reload();
  struct Counts {
    size_t tokens = 0;
    size_t certs = 0;
  };
  Counts counts() const;

  // Authenticates the call and checks it against `rpc`'s rule.
  absl::StatusOr<Caller> Admit(const grpc::ServerContextBase& context, absl::string_view rpc) const;

  // The parts of Admit, for tests: who presents `authorization` (the header's
  // value, or empty when absent) with `certificate_cn` (the verified client
  // certificate's common name, or empty); then whether they may call `rpc`.
  absl::StatusOr<Caller> Authenticate(absl::string_view authorization,
                                      absl::string_view certificate_cn) const;
  static absl::Status Authorize(const Caller& caller, absl::string_view rpc);

 private:
  struct Table {
    absl::flat_hash_map<std::string, TokenRecord> tokens;  // by id
    absl::flat_hash_map<std::string, CertMapping> certs;   // by common name
  };
  explicit Authenticator(std::string tokens_file) : tokens_file_(std::move(tokens_file)) {}
  std::shared_ptr<const Table> table() const;

  const std::string tokens_file_;
  mutable absl::Mutex mutex_;
  std::shared_ptr<const Table> table_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace engram::auth
