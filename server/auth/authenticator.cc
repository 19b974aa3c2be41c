#include "server/auth/authenticator.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "storage/episode.h"

namespace engram::auth {
namespace {

// The one table of what each RPC needs. An RPC missing here is refused
// (FindRpcRule returns nullptr); tests/unit/server/auth_test.cc checks that
// every RPC in the protos has a row.
struct NamedRule {
  absl::string_view rpc;
  RpcRule rule;
};
constexpr NamedRule kRules[] = {
    // MemoryService
    {"CreateSpace", {RpcScope::kTenant, Role::kWrite}},
    {"GetSpace", {RpcScope::kTenant, Role::kRead}},
    {"ListSpaces", {RpcScope::kTenant, Role::kRead}},
    {"DeleteSpace", {RpcScope::kTenant, Role::kWrite}},
    {"PutEpisodes", {RpcScope::kTenant, Role::kWrite}},
    {"GetEpisode", {RpcScope::kTenant, Role::kRead}},
    {"UpdateEpisode", {RpcScope::kTenant, Role::kWrite}},
    {"GetHistory", {RpcScope::kTenant, Role::kRead}},
    {"DeleteEpisodes", {RpcScope::kTenant, Role::kWrite}},
    {"ListEpisodes", {RpcScope::kTenant, Role::kRead}},
    {"ListAgents", {RpcScope::kTenant, Role::kRead}},
    {"ImportEpisodes", {RpcScope::kTenant, Role::kAdmin}},
    {"Search", {RpcScope::kTenant, Role::kRead}},
    {"AnalyzeText", {RpcScope::kTenant, Role::kRead}},
    // KVCacheService
    {"SaveCache", {RpcScope::kTenant, Role::kWrite}},
    {"LoadCache", {RpcScope::kTenant, Role::kRead}},
    {"MatchPrefix", {RpcScope::kTenant, Role::kRead}},
    {"ListCaches", {RpcScope::kTenant, Role::kRead}},
    {"DeleteCache", {RpcScope::kTenant, Role::kWrite}},
    {"KvStats", {RpcScope::kServer, Role::kRead}},
    {"ExportCache", {RpcScope::kTenant, Role::kAdmin}},
    {"ImportCache", {RpcScope::kTenant, Role::kAdmin}},
    // AdminService
    {"Stats", {RpcScope::kTenantOrOperator, Role::kAdmin}},
    {"RebuildIndex", {RpcScope::kTenant, Role::kAdmin}},
    {"Compact", {RpcScope::kServer, Role::kAdmin}},
    {"Checkpoint", {RpcScope::kServer, Role::kAdmin}},
    {"Backup", {RpcScope::kServer, Role::kAdmin}},
    {"ListBackups", {RpcScope::kServer, Role::kRead}},
    {"RestoreBackup", {RpcScope::kServer, Role::kAdmin}},
    {"VerifyBackup", {RpcScope::kServer, Role::kAdmin}},
    {"ServerInfo", {RpcScope::kTenantOrOperator, Role::kRead}},
};

std::string CredentialName(const TokenRecord& token) { return absl::StrCat("token ", token.id); }

absl::Status Unauthenticated(absl::string_view why) {
  return absl::UnauthenticatedError(
      absl::StrCat(why, "; send 'authorization: Bearer <token>' (the clients read ENGRAM_TOKEN)"));
}

}  // namespace

const RpcRule* FindRpcRule(absl::string_view rpc) {
  for (const NamedRule& named : kRules) {
    if (named.rpc == rpc) return &named.rule;
  }
  return nullptr;
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(
    const std::string& tokens_file) {
  std::unique_ptr<Authenticator> authenticator(new Authenticator(tokens_file));
  if (absl::Status loaded = authenticator->Reload(); !loaded.ok()) return loaded;
  return authenticator;
}

absl::Status Authenticator::Reload() {
  if (!enabled()) return absl::OkStatus();
  absl::StatusOr<TokensFile> file = LoadTokensFile(tokens_file_);
  if (!file.ok()) return file.status();
  auto table = std::make_shared<Table>();
  for (TokenRecord& token : file->tokens) {
    std::string id = token.id;
    table->tokens.emplace(std::move(id), std::move(token));
  }
  for (CertMapping& cert : file->certs) {
    std::string name = cert.common_name;
    table->certs.emplace(std::move(name), std::move(cert));
  }
  absl::MutexLock lock(&mutex_);
  table_ = std::move(table);
  return absl::OkStatus();
}

std::shared_ptr<const Authenticator::Table> Authenticator::table() const {
  absl::MutexLock lock(&mutex_);
  return table_;
}

Authenticator::Counts Authenticator::counts() const {
  std::shared_ptr<const Table> current = table();
  if (current == nullptr) return {};
  return {current->tokens.size(), current->certs.size()};
}

absl::StatusOr<Caller> Authenticator::Authenticate(absl::string_view authorization,
                                                   absl::string_view certificate_cn) const {
  if (!enabled()) {
    return Caller{std::string(kDefaultTenant), Role::kAdmin, true, "auth off"};
  }
  std::shared_ptr<const Table> current = table();
  auto caller_of = [](const std::string& scope, Role role, std::string credential) {
    Caller caller;
    caller.operator_scope = scope == kOperatorScope;
    if (!caller.operator_scope) caller.tenant = scope;
    caller.role = role;
    caller.credential = std::move(credential);
    return caller;
  };
  if (!authorization.empty()) {
    absl::string_view value = absl::StripAsciiWhitespace(authorization);
    if (!absl::StartsWithIgnoreCase(value, "bearer ")) {
      return Unauthenticated("the authorization header is not a bearer token");
    }
    value = absl::StripLeadingAsciiWhitespace(value.substr(7));
    std::optional<TokenParts> parts = SplitToken(value);
    if (!parts) return Unauthenticated("the token is malformed");
    auto found = current->tokens.find(parts->id);
    // The id is public; only the secret needs a constant-time comparison.
    if (found == current->tokens.end() ||
        !SecretMatches(parts->secret, found->second.secret_hash)) {
      return Unauthenticated("the token is unknown or revoked");
    }
    return caller_of(found->second.scope, found->second.role, CredentialName(found->second));
  }
  if (!certificate_cn.empty()) {
    auto found = current->certs.find(certificate_cn);
    if (found != current->certs.end()) {
      return caller_of(found->second.scope, found->second.role,
                       absl::StrCat("cert ", found->second.common_name));
    }
    return Unauthenticated(
        "the client certificate is not mapped to a tenant and no token was sent");
  }
  return Unauthenticated("this engramd requires a token");
}

absl::Status Authenticator::Authorize(const Caller& caller, absl::string_view rpc) {
  const RpcRule* rule = FindRpcRule(rpc);
  if (rule == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat(rpc, " is not allowed to anyone"));
  }
  const bool role_ok = static_cast<int>(caller.role) >= static_cast<int>(rule->role);
  const bool tenant_ok = !caller.tenant.empty() && role_ok;
  const bool server_ok = caller.operator_scope && role_ok;
  switch (rule->scope) {
    case RpcScope::kTenant:
      if (tenant_ok) return absl::OkStatus();
      if (caller.tenant.empty()) {
        return absl::PermissionDeniedError(absl::StrCat(
            rpc, " acts on a tenant's data; operator tokens (scope '*') hold no data"));
      }
      break;
    case RpcScope::kTenantOrOperator:
      if (tenant_ok || caller.operator_scope) return absl::OkStatus();
      break;
    case RpcScope::kServer:
      if (server_ok) return absl::OkStatus();
      if (!caller.operator_scope) {
        return absl::PermissionDeniedError(absl::StrCat(
            rpc, " is a whole-server operation: it needs an operator token (scope '*')"));
      }
      break;
  }
  return absl::PermissionDeniedError(absl::StrCat(rpc, " needs the ", RoleName(rule->role),
                                                  " role; this ", caller.credential, " has ",
                                                  RoleName(caller.role)));
}

absl::StatusOr<Caller> Authenticator::Admit(const grpc::ServerContextBase& context,
                                            absl::string_view rpc) const {
  absl::string_view authorization;
  const auto& metadata = context.client_metadata();
  if (auto found = metadata.find("authorization"); found != metadata.end()) {
    authorization = absl::string_view(found->second.data(), found->second.size());
  }
  std::string certificate_cn;
  if (enabled() && authorization.empty()) {
    std::shared_ptr<const grpc::AuthContext> auth_context = context.auth_context();
    if (auth_context != nullptr && auth_context->IsPeerAuthenticated()) {
      for (const grpc::string_ref& cn : auth_context->FindPropertyValues("x509_common_name")) {
        certificate_cn.assign(cn.data(), cn.size());
      }
    }
  }
  absl::StatusOr<Caller> caller = Authenticate(authorization, certificate_cn);
  if (!caller.ok()) return caller.status();
  if (absl::Status allowed = Authorize(*caller, rpc); !allowed.ok()) return allowed;
  return caller;
}

}  // namespace engram::auth
