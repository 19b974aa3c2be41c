#include "server/auth/tokens.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace engram::auth {
namespace {

constexpr size_t kIdHexDigits = 12;
constexpr size_t kSecretHexDigits = 64;
constexpr size_t kHashHexDigits = 64;
constexpr absl::string_view kTokenPrefix = "engram_";

bool IsLowerHex(absl::string_view text, size_t digits) {
  if (text.size() != digits) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

absl::StatusOr<std::string> RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    return absl::InternalError("the system's random number generator failed");
  }
  return absl::BytesToHexString(raw);
}

// A label is free text on one line; tabs and newlines become spaces.
std::string CleanLabel(absl::string_view label) {
  std::string clean(label);
  for (char& c : clean) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return std::string(absl::StripAsciiWhitespace(clean));
}

absl::Status LineError(int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokens file line ", line, ": ", what));
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kRead:
      return "read";
    case Role::kWrite:
      return "write";
    case Role::kAdmin:
      return "admin";
  }
  return "read";
}

std::optional<Role> ParseRole(absl::string_view name) {
  if (name == "read") return Role::kRead;
  if (name == "write") return Role::kWrite;
  if (name == "admin") return Role::kAdmin;
  return std::nullopt;
}

bool ValidTenantName(absl::string_view tenant) {
  if (tenant.empty() || tenant.size() > kMaxTenantBytes || tenant.front() == '.') return false;
  for (char c : tenant) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
      return false;
    }
  }
  return true;
}

bool ValidScope(absl::string_view scope) {
  return scope == kOperatorScope || ValidTenantName(scope);
}

absl::StatusOr<TokensFile> ParseTokensFile(absl::string_view text) {
  TokensFile file;
  std::unordered_set<std::string> ids;
  std::unordered_set<std::string> common_names;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    // Fields are separated by single spaces; the label is the rest of the line.
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::MaxSplits(' ', 6));
    const absl::string_view kind = fields[0];
    if (kind == "token") {
      if (fields.size() < 6) return LineError(line_number, "a token record has 6 or 7 fields");
      TokenRecord record;
      record.id = std::string(fields[1]);
      record.scope = std::string(fields[2]);
      std::optional<Role> role = ParseRole(fields[3]);
      record.secret_hash = std::string(fields[4]);
      if (!IsLowerHex(record.id, kIdHexDigits)) return LineError(line_number, "bad token id");
      if (!ValidScope(record.scope)) return LineError(line_number, "bad scope");
      if (!role) return LineError(line_number, "role must be read, write or admin");
      record.role = *role;
      if (!IsLowerHex(record.secret_hash, kHashHexDigits)) {
        return LineError(line_number, "bad secret hash (64 lowercase hex digits)");
      }
      if (!absl::SimpleAtoi(fields[5], &record.created_s)) {
        return LineError(line_number, "bad creation time");
      }
      if (fields.size() > 6) record.label = CleanLabel(fields[6]);
      if (!ids.insert(record.id).second) return LineError(line_number, "duplicate token id");
      file.tokens.push_back(std::move(record));
    } else if (kind == "cert") {
      fields = absl::StrSplit(line, absl::MaxSplits(' ', 5));
      if (fields.size() < 5) return LineError(line_number, "a cert record has 5 or 6 fields");
      CertMapping mapping;
      mapping.common_name = std::string(fields[1]);
      mapping.scope = std::string(fields[2]);
      std::optional<Role> role = ParseRole(fields[3]);
      if (mapping.common_name.empty()) return LineError(line_number, "empty common name");
      if (!ValidScope(mapping.scope)) return LineError(line_number, "bad scope");
      if (!role) return LineError(line_number, "role must be read, write or admin");
      mapping.role = *role;
      if (!absl::SimpleAtoi(fields[4], &mapping.created_s)) {
        return LineError(line_number, "bad creation time");
      }
      if (fields.size() > 5) mapping.label = CleanLabel(fields[5]);
      if (!common_names.insert(mapping.common_name).second) {
        return LineError(line_number, "duplicate common name");
      }
      file.certs.push_back(std::move(mapping));
    } else {
      return LineError(line_number, "records start with 'token' or 'cert'");
    }
  }
  return file;
}

std::string FormatTokensFile(const TokensFile& file) {
  std::string text =
      "# Engram tokens file: written by `engramctl token`, read by engramd at start and on\n"
      "# SIGHUP. Secrets are stored as SHA-256 hashes only.\n";
  for (const TokenRecord& t : file.tokens) {
    absl::StrAppend(&text, "token ", t.id, " ", t.scope, " ", RoleName(t.role), " ", t.secret_hash,
                    " ", t.created_s);
    if (!t.label.empty()) absl::StrAppend(&text, " ", CleanLabel(t.label));
    text += "\n";
  }
  for (const CertMapping& c : file.certs) {
    absl::StrAppend(&text, "cert ", c.common_name, " ", c.scope, " ", RoleName(c.role), " ",
                    c.created_s);
    if (!c.label.empty()) absl::StrAppend(&text, " ", CleanLabel(c.label));
    text += "\n";
  }
  return text;
}

absl::StatusOr<TokensFile> LoadTokensFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("no tokens file at ", path));
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read tokens file ", path, ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<TokensFile> file = ParseTokensFile(text.str());
  if (!file.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", file.status().message()));
  }
  return file;
}

absl::Status SaveTokensFile(const std::string& path, const TokensFile& file,
                            fileio::FileSystem* fs) {
  // 0600: the file holds no secrets, but who may act for whom is the
  // operator's business.
  return fileio::WriteFileAtomically(path, FormatTokensFile(file), 0600, fs);
}

absl::StatusOr<NewToken> CreateToken(absl::string_view scope, Role role, absl::string_view label,
                                     int64_t now_s) {
  if (!ValidScope(scope)) {
    return absl::InvalidArgumentError(
        absl::StrCat("scope '", scope,
                     "' is neither '*' (operator) nor a tenant name (1..64 of A-Z a-z 0-9 _ . -, "
                     "not starting with '.')"));
  }
  absl::StatusOr<std::string> id = RandomHex(kIdHexDigits / 2);
  if (!id.ok()) return id.status();
  absl::StatusOr<std::string> secret = RandomHex(kSecretHexDigits / 2);
  if (!secret.ok()) return secret.status();
  NewToken created;
  created.token = absl::StrCat(kTokenPrefix, *id, "_", *secret);
  created.record.id = *id;
  created.record.scope = std::string(scope);
  created.record.role = role;
  created.record.secret_hash = HashSecret(*secret);
  created.record.created_s = now_s;
  created.record.label = CleanLabel(label);
  return created;
}

std::optional<TokenParts> SplitToken(absl::string_view token) {
  if (!absl::ConsumePrefix(&token, kTokenPrefix)) return std::nullopt;
  if (token.size() != kIdHexDigits + 1 + kSecretHexDigits || token[kIdHexDigits] != '_') {
    return std::nullopt;
  }
  TokenParts parts{std::string(token.substr(0, kIdHexDigits)),
                   std::string(token.substr(kIdHexDigits + 1))};
  if (!IsLowerHex(parts.id, kIdHexDigits) || !IsLowerHex(parts.secret, kSecretHexDigits)) {
    return std::nullopt;
  }
  return parts;
}

std::string HashSecret(absl::string_view secret) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(secret.data(), secret.size(), digest, &length, EVP_sha256(), nullptr);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), static_cast<size_t>(length)));
}

bool SecretMatches(absl::string_view secret, absl::string_view expected_hash) {
  const std::string actual = HashSecret(secret);
  if (actual.size() != expected_hash.size()) return false;
  return CRYPTO_memcmp(actual.data(), expected_hash.data(), actual.size()) == 0;
}

}  // namespace engram::auth
