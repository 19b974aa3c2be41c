// Bearer tokens and the tokens file engramd authenticates calls with.
//
// A token is `engram_<id>_<secret>`: a 12-hex-digit id (public: it names the
// token in listings, logs and revocations) and a 256-bit random secret
// (64 hex digits). The tokens file keeps only SHA-256 of the secret; the
// secret is shown once, when the token is created. A fast hash is enough
// here because the secret is random, not a password: there is no dictionary
// to try.
//
// Each token is bound to one scope and one role. The scope is a tenant name
// (the token reads and writes that tenant's data and nothing else) or `*`,
// the operator: whole-server administration (backups, checkpoints,
// compaction, server-wide stats) and no tenant's data.
//
// The file also maps verified client certificates (mTLS) to a scope and role
// by their subject common name, for callers that send no token.
//
// File format (one record per line; `#` starts a comment line):
//   token <id> <scope> <role> <sha256 of secret, hex> <created unix s> [label]
//   cert <common name> <scope> <role> <created unix s> [label]
// Written by `engramctl token`; engramd reads it at start and on SIGHUP.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fileio/atomic_file.h"

namespace engram::auth {

// Roles nest: write includes read, admin includes write.
enum class Role { kRead = 0, kWrite = 1, kAdmin = 2 };
const char* RoleName(Role role);
std::optional<Role> ParseRole(absl::string_view name);

// The scope of operator tokens.
inline constexpr char kOperatorScope[] = "*";
// Tenant names: 1..64 of [A-Za-z0-9_.-], not starting with '.'. They become
// directory names (per-tenant KV export directories), hence the strictness.
inline constexpr size_t kMaxTenantBytes = 64;
bool ValidTenantName(absl::string_view tenant);
// A tenant name or the operator scope.
bool ValidScope(absl::string_view scope);

struct TokenRecord {
  std::string id;     // 12 lowercase hex digits
  std::string scope;  // tenant name or kOperatorScope
  Role role = Role::kRead;
  std::string secret_hash;  // SHA-256 of the secret, 64 lowercase hex digits
  int64_t created_s = 0;
  std::string label;  // free text for people; no newlines
};

struct CertMapping {
  std::string common_name;  // the client certificate's subject CN
  std::string scope;
  Role role = Role::kRead;
  int64_t created_s = 0;
  std::string label;
};

struct TokensFile {
  std::vector<TokenRecord> tokens;
  std::vector<CertMapping> certs;
};

// INVALID_ARGUMENT naming the line for anything malformed: an unknown record
// kind, a bad id, scope, role or hash, a duplicate id or common name.
absl::StatusOr<TokensFile> ParseTokensFile(absl::string_view text);
std::string FormatTokensFile(const TokensFile& file);
// NOT_FOUND when the file does not exist.
absl::StatusOr<TokensFile> LoadTokensFile(const std::string& path);
// Replaces `path` atomically with mode 0600 (fileio/atomic_file.h), so
// engramd never reads half a file, even after a power loss.
absl::Status SaveTokensFile(const std::string& path, const TokensFile& file,
                            fileio::FileSystem* fs = fileio::PosixFileSystem());

// A new token: the full token string (shown once) and its record.
struct NewToken {
  std::string token;
  TokenRecord record;
};
absl::StatusOr<NewToken> CreateToken(absl::string_view scope, Role role, absl::string_view label,
                                     int64_t now_s);

// The parts of a presented token; nullopt when it does not have the form
// engram_<12 hex>_<64 hex>.
struct TokenParts {
  std::string id;
  std::string secret;
};
std::optional<TokenParts> SplitToken(absl::string_view token);

// SHA-256 of `secret` as lowercase hex.
std::string HashSecret(absl::string_view secret);
// True when SHA-256(secret) equals `expected_hash`; compares in constant time.
bool SecretMatches(absl::string_view secret, absl::string_view expected_hash);

}  // namespace engram::auth
