// Tokens, the tokens file and the authenticator's rules, without a server
// (tests/python/test_auth.py tries them through engramd).
#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engram/v1/admin.grpc.pb.h"
#include "engram/v1/kvcache.grpc.pb.h"
#include "engram/v1/memory.grpc.pb.h"
#include "server/auth/authenticator.h"
#include "server/auth/tokens.h"

namespace engram::auth {
namespace {

namespace fs = std::filesystem;

TEST(TokensTest, CreatedTokensSplitAndMatchOnlyTheirOwnHash) {
  absl::StatusOr<NewToken> a = CreateToken("acme", Role::kWrite, "ci", 1700000000);
  absl::StatusOr<NewToken> b = CreateToken("acme", Role::kWrite, "ci", 1700000000);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->token, b->token);
  EXPECT_NE(a->record.id, b->record.id);
  std::optional<TokenParts> parts = SplitToken(a->token);
  ASSERT_TRUE(parts.has_value()) << a->token;
  EXPECT_EQ(parts->id, a->record.id);
  EXPECT_EQ(parts->secret.size(), 64u);  // 256 bits
  EXPECT_TRUE(SecretMatches(parts->secret, a->record.secret_hash));
  EXPECT_FALSE(SecretMatches(parts->secret, b->record.secret_hash));
  // The file never holds the secret.
  EXPECT_EQ(FormatTokensFile({{a->record}, {}}).find(parts->secret), std::string::npos);
  EXPECT_FALSE(CreateToken("../etc", Role::kRead, "", 0).ok());
}

TEST(TokensTest, SplitTokenRefusesEverythingButTheExactForm) {
  const std::string good = "engram_0123456789ab_" + std::string(64, 'f');
  EXPECT_TRUE(SplitToken(good).has_value());
  for (const std::string& bad : {
           std::string(""),
           std::string("engram_"),
           good.substr(0, good.size() - 1),
           good + "0",
           "ENGRAM_0123456789ab_" + std::string(64, 'f'),
           "engram_0123456789AB_" + std::string(64, 'f'),
           "engram_0123456789ab-" + std::string(64, 'f'),
           "engram_0123456789ab_" + std::string(63, 'f') + "g",
           "engram_0123456789ab_" + std::string(63, 'f') + std::string(1, '\0'),
       }) {
    EXPECT_FALSE(SplitToken(bad).has_value()) << bad;
  }
}

TEST(TokensTest, TenantNamesAreSafeDirectoryNames) {
  for (const char* good : {"acme", "a", "Team_7.prod-eu", "default"}) {
    EXPECT_TRUE(ValidTenantName(good)) << good;
  }
  for (const std::string& bad :
       {std::string(""), std::string("."), std::string(".."), std::string(".hidden"),
        std::string("a/b"), std::string("a b"), std::string("*"), std::string(65, 'a'),
        std::string("a\nb"), std::string("caf\xc3\xa9")}) {
    EXPECT_FALSE(ValidTenantName(bad)) << bad;
  }
  EXPECT_TRUE(ValidScope("*"));
}

TEST(TokensTest, FileRoundTripsAndNamesTheLineOfEveryDefect) {
  TokensFile file;
  file.tokens.push_back(CreateToken("acme", Role::kAdmin, "ops  laptop", 17)->record);
  file.tokens.push_back(CreateToken("*", Role::kRead, "", 18)->record);
  file.certs.push_back({"agent-7.acme.internal", "acme", Role::kWrite, 19, "mesh"});
  absl::StatusOr<TokensFile> parsed = ParseTokensFile(FormatTokensFile(file));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->tokens.size(), 2u);
  EXPECT_EQ(parsed->tokens[0].id, file.tokens[0].id);
  EXPECT_EQ(parsed->tokens[0].label, "ops  laptop");
  EXPECT_EQ(parsed->tokens[1].scope, "*");
  EXPECT_EQ(parsed->tokens[1].role, Role::kRead);
  ASSERT_EQ(parsed->certs.size(), 1u);
  EXPECT_EQ(parsed->certs[0].common_name, "agent-7.acme.internal");

  const std::string hash(64, 'a');
  const std::string id = "0123456789ab";
  struct Case {
    std::string text;
    std::string expected;
  };
  for (const Case& c : std::vector<Case>{
           {"tokn " + id, "line 1: records start with"},
           {"# c\n\ntoken " + id + " acme read " + hash, "line 3: a token record has"},
           {"token 0123 acme read " + hash + " 1", "bad token id"},
           {"token " + id + " ../x read " + hash + " 1", "bad scope"},
           {"token " + id + " acme root " + hash + " 1", "role must be"},
           {"token " + id + " acme read " + std::string(64, 'A') + " 1", "bad secret hash"},
           {"token " + id + " acme read " + hash + " yesterday", "bad creation time"},
           {"token " + id + " acme read " + hash + " 1\ntoken " + id + " b read " + hash + " 1",
            "line 2: duplicate token id"},
           {"cert cn acme read 1\ncert cn b read 1", "line 2: duplicate common name"},
           {"cert cn acme", "a cert record has"},
       }) {
    absl::StatusOr<TokensFile> bad = ParseTokensFile(c.text);
    ASSERT_FALSE(bad.ok()) << c.text;
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find(c.expected), std::string::npos)
        << c.text << " -> " << bad.status();
  }
}

// Every RPC the protos declare has a rule; the names are the ones RpcRunner
// and the metrics use (the KV service's Stats is "KvStats").
TEST(AuthRulesTest, EveryRpcInTheProtosHasARule) {
  int methods = 0;
  for (const google::protobuf::FileDescriptor* file :
       {v1::SearchRequest::descriptor()->file(), v1::StatsRequest::descriptor()->file(),
        v1::KvStatsRequest::descriptor()->file()}) {
    ASSERT_EQ(file->service_count(), 1) << file->name();
    const google::protobuf::ServiceDescriptor* service = file->service(0);
    const std::string& service_name = service->full_name();
    for (int i = 0; i < service->method_count(); ++i) {
      std::string rpc = service->method(i)->name();
      if (service->name() == "KVCacheService" && rpc == "Stats") rpc = "KvStats";
      EXPECT_NE(FindRpcRule(rpc), nullptr) << service_name << "." << rpc;
      ++methods;
    }
  }
  EXPECT_GE(methods, 28);
  EXPECT_EQ(FindRpcRule("NoSuchRpc"), nullptr);
  EXPECT_EQ(Authenticator::Authorize({"acme", Role::kAdmin, true, "t"}, "NoSuchRpc").code(),
            absl::StatusCode::kPermissionDenied);
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat("engram-auth-test-", ::testing::UnitTest::GetInstance()->random_seed(), "-",
                        getpid());
    fs::create_directories(dir_);
    path_ = (dir_ / "tokens").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Add(const std::string& scope, Role role) {
    NewToken token = *CreateToken(scope, role, "", 1);
    file_.tokens.push_back(token.record);
    EXPECT_TRUE(SaveTokensFile(path_, file_).ok());
    return "Bearer " + token.token;
  }

  fs::path dir_;
  std::string path_;
  TokensFile file_;
};

TEST_F(AuthenticatorTest, AMissingOrBrokenTokensFileStopsTheStart) {
  EXPECT_EQ(Authenticator::Create(path_).status().code(), absl::StatusCode::kNotFound);
  std::ofstream(path_) << "token nonsense\n";
  EXPECT_EQ(Authenticator::Create(path_).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(AuthenticatorTest, AuthOffMakesEveryCallTheDefaultTenantWithEveryRight) {
  auto authenticator = Authenticator::Create("");
  ASSERT_TRUE(authenticator.ok());
  EXPECT_FALSE((*authenticator)->enabled());
  absl::StatusOr<Caller> caller = (*authenticator)->Authenticate("", "");
  ASSERT_TRUE(caller.ok());
  EXPECT_EQ(caller->tenant, "default");
  EXPECT_TRUE(caller->operator_scope);
  for (const char* rpc : {"PutEpisodes", "Backup", "ExportCache", "Stats"}) {
    EXPECT_TRUE(Authenticator::Authorize(*caller, rpc).ok()) << rpc;
  }
}

TEST_F(AuthenticatorTest, CredentialsAreCheckedAndTheTenantComesFromTheToken) {
  const std::string acme_write = Add("acme", Role::kWrite);
  auto authenticator = Authenticator::Create(path_);
  ASSERT_TRUE(authenticator.ok()) << authenticator.status();
  const Authenticator& auth = **authenticator;

  absl::StatusOr<Caller> caller = auth.Authenticate(acme_write, "");
  ASSERT_TRUE(caller.ok()) << caller.status();
  EXPECT_EQ(caller->tenant, "acme");
  EXPECT_EQ(caller->role, Role::kWrite);
  EXPECT_FALSE(caller->operator_scope);
  // Case of the scheme and surrounding spaces do not matter.
  EXPECT_TRUE(auth.Authenticate("bearer  " + acme_write.substr(7) + " ", "").ok());

  std::string wrong_secret = acme_write;
  wrong_secret.back() = wrong_secret.back() == '0' ? '1' : '0';
  for (const std::string& bad :
       {std::string(""), wrong_secret, std::string("Bearer"), "Basic " + acme_write.substr(7),
        std::string("Bearer engram_x"), "Bearer " + std::string(100000, 'a')}) {
    absl::StatusOr<Caller> refused = auth.Authenticate(bad, "");
    ASSERT_FALSE(refused.ok()) << bad.substr(0, 40);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
    // The message never echoes what was sent.
    EXPECT_LT(refused.status().message().size(), 200u);
  }
  // An unmapped client certificate alone is not enough.
  EXPECT_EQ(auth.Authenticate("", "someone").status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthenticatorTest, RolesNestAndScopesSeparateTenantsFromTheOperator) {
  struct Case {
    std::string scope;
    Role role;
    std::string rpc;
    bool allowed;
  };
  auto authenticator = Authenticator::Create("");
  for (const Case& c : std::vector<Case>{
           {"acme", Role::kRead, "Search", true},
           {"acme", Role::kRead, "LoadCache", true},
           {"acme", Role::kRead, "PutEpisodes", false},
           {"acme", Role::kRead, "SaveCache", false},
           {"acme", Role::kWrite, "PutEpisodes", true},
           {"acme", Role::kWrite, "DeleteSpace", true},
           {"acme", Role::kWrite, "ExportCache", false},
           {"acme", Role::kWrite, "Stats", false},
           {"acme", Role::kAdmin, "ExportCache", true},
           {"acme", Role::kAdmin, "RebuildIndex", true},
           {"acme", Role::kAdmin, "Stats", true},
           // A tenant's admin cannot touch the whole server.
           {"acme", Role::kAdmin, "Backup", false},
           {"acme", Role::kAdmin, "RestoreBackup", false},
           {"acme", Role::kAdmin, "Compact", false},
           {"acme", Role::kAdmin, "ListBackups", false},
           {"acme", Role::kAdmin, "KvStats", false},
           // The operator administers the server and holds no data.
           {"*", Role::kAdmin, "Backup", true},
           {"*", Role::kAdmin, "Compact", true},
           {"*", Role::kAdmin, "Search", false},
           {"*", Role::kAdmin, "PutEpisodes", false},
           {"*", Role::kAdmin, "RebuildIndex", false},
           {"*", Role::kRead, "ListBackups", true},
           {"*", Role::kRead, "Stats", true},
           {"*", Role::kRead, "KvStats", true},
           {"*", Role::kRead, "Backup", false},
       }) {
    Caller caller;
    caller.operator_scope = c.scope == "*";
    if (!caller.operator_scope) caller.tenant = c.scope;
    caller.role = c.role;
    caller.credential = "token x";
    absl::Status status = Authenticator::Authorize(caller, c.rpc);
    EXPECT_EQ(status.ok(), c.allowed)
        << c.scope << " " << RoleName(c.role) << " " << c.rpc << " -> " << status;
    if (!c.allowed) {
      EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
      EXPECT_EQ(status.message().find("acme"), std::string::npos) << status;
    }
  }
}

TEST_F(AuthenticatorTest, ReloadRevokesAndAFailedReloadKeepsThePreviousTokens) {
  const std::string first = Add("acme", Role::kRead);
  auto authenticator = Authenticator::Create(path_);
  ASSERT_TRUE(authenticator.ok());
  Authenticator& auth = **authenticator;
  ASSERT_TRUE(auth.Authenticate(first, "").ok());

  file_.tokens.clear();
  const std::string second = Add("acme", Role::kRead);
  ASSERT_TRUE(auth.Reload().ok());
  EXPECT_EQ(auth.Authenticate(first, "").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(auth.Authenticate(second, "").ok());

  std::ofstream(path_) << "garbage\n";
  EXPECT_EQ(auth.Reload().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(auth.Authenticate(second, "").ok()) << "a broken file must not lock everyone out";
  EXPECT_EQ(auth.counts().tokens, 1u);
}

TEST_F(AuthenticatorTest, MappedClientCertificatesActForTheirTenant) {
  file_.certs.push_back({"agent-7", "acme", Role::kWrite, 1, ""});
  const std::string token = Add("other", Role::kRead);
  auto authenticator = Authenticator::Create(path_);
  ASSERT_TRUE(authenticator.ok());
  absl::StatusOr<Caller> caller = (*authenticator)->Authenticate("", "agent-7");
  ASSERT_TRUE(caller.ok()) << caller.status();
  EXPECT_EQ(caller->tenant, "acme");
  EXPECT_EQ(caller->role, Role::kWrite);
  // A token, when sent, decides over the certificate.
  EXPECT_EQ((*authenticator)->Authenticate(token, "agent-7")->tenant, "other");
}

}  // namespace
}  // namespace engram::auth
