#include "server/config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace engram::server {
namespace {

TEST(ConfigTest, EmptyDocumentGivesTheDocumentedDefaults) {
  auto config = ParseConfig("");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listen_address, "127.0.0.1:50051");
  EXPECT_EQ(config->store.data_dir, "engram-data");
  EXPECT_TRUE(config->store.sync_writes);
}

TEST(ConfigTest, ParsesNestedKeysOverTheDefaults) {
  auto config = ParseConfig(
      "listen_address: 0.0.0.0:7000\ninsecure: true\nsync_writes: false\nlimits:\n"
      "  max_text_bytes: 17\n");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listen_address, "0.0.0.0:7000");
  EXPECT_FALSE(config->store.sync_writes);
  EXPECT_EQ(config->store.limits.max_text_bytes, 17u);
  EXPECT_EQ(config->store.limits.max_batch_size, storage::StoreLimits().max_batch_size);
}

TEST(ConfigTest, RejectsUnknownKeysBadTypesAndRanges) {
  struct Case {
    std::string yaml;
    std::string expected;
  };
  for (const Case& c : std::vector<Case>{
           {"listen_adress: x:1", "unknown config key 'listen_adress'"},
           {"limits:\n  max_txt: 1", "unknown config key 'limits.max_txt'"},
           {"worker_threads: many", "'worker_threads' has an invalid value"},
           {"worker_threads: 0", "'worker_threads' is 0; minimum is 1"},
           {"sync_writes: maybe", "'sync_writes' has an invalid value"},
           {"log_level: loud", "log_level 'loud'"},
           {"gpu: {precision: fp8}", "gpu.precision 'fp8'"},
           {"listen_address: nohostport", "must be host:port"},
           {"[1, 2]", "must be a mapping"},
           {"a: [", "not valid YAML"},
           {"? {a: b}\n: 1", "non-scalar key"},  // found by parsers_fuzz
       }) {
    auto config = ParseConfig(c.yaml);
    ASSERT_FALSE(config.ok()) << c.yaml;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(config.status().message().find(c.expected), std::string::npos)
        << c.yaml << " -> " << config.status();
  }
}

TEST(ConfigTest, RefusesToListenOpenlyWithoutAuthAndTls) {
  struct Case {
    std::string yaml;
    std::string expected;  // "" when the config is valid
  };
  const std::string auth = "auth: {tokens_file: /etc/engram/tokens}\n";
  const std::string tls = "tls: {cert_file: /c.pem, key_file: /k.pem}\n";
  for (const Case& c : std::vector<Case>{
           {"listen_address: 0.0.0.0:1\n", "neither auth (auth.tokens_file) nor TLS"},
           {"listen_address: '[::]:1'\n", "neither auth"},
           {"listen_address: 10.1.2.3:1\n" + auth, "TLS (tls.cert_file) is not"},
           {"listen_address: engram.example:1\n" + tls, "auth (auth.tokens_file) is not"},
           {"listen_address: 0.0.0.0:1\n" + auth + tls, ""},
           {"listen_address: 0.0.0.0:1\ninsecure: true\n", ""},
           {"listen_address: 127.0.0.1:1\n", ""},
           {"listen_address: 127.8.9.10:1\n", ""},
           {"listen_address: localhost:1\n", ""},
           {"listen_address: '[::1]:1'\n", ""},
           {"listen_address: unix:/run/engram.sock\n", ""},
           {"listen_address: 127.0.0.1.evil.example:1\n", "neither auth"},
           {"listen_address: 1127.0.0.1:1\n", "neither auth"},
           {"tls: {cert_file: /c.pem}\n", "go together"},
           {"tls: {client_ca_file: /ca.pem}\n", "needs the server's own"},
       }) {
    auto config = ParseConfig(c.yaml);
    if (c.expected.empty()) {
      EXPECT_TRUE(config.ok()) << c.yaml << " -> " << config.status();
      continue;
    }
    ASSERT_FALSE(config.ok()) << c.yaml;
    EXPECT_NE(config.status().message().find(c.expected), std::string::npos)
        << c.yaml << " -> " << config.status();
  }
}

// A deployment's common file and its overlay's (deploy/): later files win,
// and only the whole is validated (the common file alone listens openly).
TEST(ConfigTest, LayeredFilesOverrideInOrderAndAreValidatedTogether) {
  const std::string dir = ::testing::TempDir();
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + name) << text;
    return dir + name;
  };
  const std::string common =
      write("common.yaml", "listen_address: 0.0.0.0:50051\nshard:\n  count: 3\nmax_k: 50\n");
  const std::string overlay = write("overlay.yaml", "insecure: true\nmax_k: 70\n");
  auto layered = LoadConfigLayers({common, overlay});
  ASSERT_TRUE(layered.ok()) << layered.status();
  EXPECT_TRUE(ValidateConfig(*layered).ok());
  EXPECT_EQ(layered->max_k, 70);
  EXPECT_EQ(layered->shard.count, 3u);
  auto alone = LoadConfigLayers({common});
  ASSERT_TRUE(alone.ok());
  EXPECT_EQ(ValidateConfig(*alone).code(), absl::StatusCode::kFailedPrecondition);
  const std::string bad = write("bad.yaml", "shard:\n  cuont: 3\n");
  auto refused = LoadConfigLayers({common, bad});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("bad.yaml: unknown config key 'shard.cuont'"),
            std::string::npos)
      << refused.status();
  EXPECT_EQ(LoadConfigLayers({dir + "missing.yaml"}).status().code(), absl::StatusCode::kNotFound);
  // A shard index past the count is refused by name.
  auto past = ParseConfig("shard:\n  index: 3\n  count: 3\n");
  EXPECT_EQ(past.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConfigTest, DescribedDefaultsParseBackToTheDefaults) {
  auto config = ParseConfig(DescribeConfig());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(DescribeConfig(*config), DescribeConfig());
}

// README.md's configuration reference must list every option.
TEST(ConfigTest, ReadmeDocumentsEveryOption) {
  std::ifstream readme(ENGRAM_SOURCE_DIR "/README.md");
  ASSERT_TRUE(readme) << "README.md not found";
  std::stringstream text;
  text << readme.rdbuf();
  std::vector<std::string> sections;  // the mappings enclosing the current line
  for (absl::string_view line : absl::StrSplit(DescribeConfig(), '\n')) {
    size_t depth = 0;
    while (absl::ConsumePrefix(&line, "  ")) ++depth;
    if (line.empty() || line[0] == '#') continue;
    sections.resize(std::min(sections.size(), depth));
    if (line.back() == ':') {
      sections.emplace_back(line.substr(0, line.size() - 1));
      continue;
    }
    std::string key = absl::StrJoin(sections, ".");
    if (!key.empty()) key += ".";
    key += std::string(line.substr(0, line.find(':')));
    EXPECT_NE(text.str().find("`" + key + "`"), std::string::npos)
        << "README.md does not document config key `" << key << "`";
  }
}

}  // namespace
}  // namespace engram::server
