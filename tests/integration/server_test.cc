// engramd end to end: a real daemon on a free loopback port, driven by the
// C++ client library and by engramctl.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "clients/cpp/engram_client.h"
#include "tests/util/daemon_process.h"
#include "tests/util/engramctl.h"
#include "tests/util/temp_dir.h"

namespace engram {
namespace {

using client::Client;
using testing::RunCtl;

v1::EpisodeWrite MakeWrite(const std::string& agent, std::vector<float> embedding,
                           const std::string& text = "", const std::string& session = "") {
  v1::EpisodeWrite write;
  write.mutable_episode()->set_agent_id(agent);
  write.mutable_episode()->set_session_id(session);
  write.mutable_episode()->set_text(text);
  write.mutable_episode()->mutable_embedding()->Add(embedding.begin(), embedding.end());
  return write;
}

std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)write(fd, request.data(), request.size());
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
  close(fd);
  return response;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    // The metrics endpoint on a port the OS picks, read back from the file
    // engramd writes before its gRPC port file.
    const std::string metrics_port_file = dir_->Sub("metrics.port");
    auto daemon = testing::DaemonProcess::Start(
        dir_->Sub("data"), {"--metrics-address", "127.0.0.1:0", "--metrics-port-file",
                            metrics_port_file, "--config", WriteConfig()});
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    std::ifstream(metrics_port_file) >> metrics_port_;
    ASSERT_GT(metrics_port_, 0);
    daemon_ = daemon->release();
    client::ClientOptions options;
    options.address = daemon_->address();
    client_ = new Client(options);
    ASSERT_TRUE(client_->WaitForConnected(absl::Seconds(10)));
  }
  static void TearDownTestSuite() {
    delete client_;
    delete daemon_;
    delete dir_;
  }

  // Output directories inside the test's temp dir; a small text limit.
  static std::string WriteConfig() {
    std::string path = dir_->Sub("engramd.yaml");
    FILE* file = fopen(path.c_str(), "w");
    fprintf(file,
            "checkpoint_dir: %s\nbackup_dir: %s\nrestore_dir: %s\nlimits:\n"
            "  max_text_bytes: 1000\n",
            dir_->Sub("checkpoints").c_str(), dir_->Sub("backups").c_str(),
            dir_->Sub("restores").c_str());
    fclose(file);
    return path;
  }

  static testing::TempDir* dir_;
  static testing::DaemonProcess* daemon_;
  static Client* client_;
  static int metrics_port_;
};

testing::TempDir* ServerTest::dir_ = nullptr;
testing::DaemonProcess* ServerTest::daemon_ = nullptr;
Client* ServerTest::client_ = nullptr;
int ServerTest::metrics_port_ = 0;

TEST_F(ServerTest, HealthIsServing) { EXPECT_TRUE(client_->CheckHealth().ok()); }

TEST_F(ServerTest, EpisodeLifecycleThroughTheClient) {
  ASSERT_TRUE(client_->CreateSpace("life", 3, v1::METRIC_COSINE).ok());
  v1::PutEpisodesRequest put;
  put.set_space("life");
  *put.add_episodes() = MakeWrite("alice", {1, 0, 0}, "tea", "s1");
  *put.add_episodes() = MakeWrite("alice", {0, 1, 0}, "coffee", "s2");
  *put.add_episodes() = MakeWrite("bob", {1, 0.1f, 0}, "water");
  auto ids = client_->PutEpisodes(put);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->ids_size(), 3);

  v1::SearchRequest search;
  search.set_space("life");
  search.set_k(2);
  search.add_query(1);
  search.add_query(0);
  search.add_query(0);
  search.set_route(v1::ROUTE_FAST);
  auto all = client_->Search(search);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->hits_size(), 2);
  EXPECT_EQ(all->hits(0).episode().text(), "tea");
  EXPECT_EQ(all->hits(1).episode().text(), "water");
  EXPECT_EQ(all->route(), "index");
  EXPECT_EQ(all->hits(0).episode().embedding_size(), 0);  // not asked for

  search.mutable_filter()->set_agent_id("alice");
  search.mutable_filter()->set_session_id("s2");
  auto scoped = client_->Search(search);
  ASSERT_TRUE(scoped.ok());
  ASSERT_EQ(scoped->hits_size(), 1);
  EXPECT_EQ(scoped->hits(0).episode().text(), "coffee");

  v1::UpdateEpisodeRequest update;
  update.set_space("life");
  update.set_id(ids->ids(0));
  update.mutable_episode()->set_text("green tea");
  update.add_update_mask("text");
  auto updated = client_->UpdateEpisode(update);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->version(), 2u);
  EXPECT_EQ(updated->embedding_size(), 3);
  auto history = client_->GetHistory("life", ids->ids(0));
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->versions_size(), 2);
  EXPECT_TRUE(history->next_page_token().empty());
  // One version a page: the first page hands a token to the current one.
  auto first_page = client_->GetHistory("life", ids->ids(0), 1);
  ASSERT_TRUE(first_page.ok());
  ASSERT_EQ(first_page->versions_size(), 1);
  EXPECT_EQ(first_page->versions(0).version(), 1u);
  auto second_page = client_->GetHistory("life", ids->ids(0), 1, first_page->next_page_token());
  ASSERT_TRUE(second_page.ok()) << second_page.status();
  ASSERT_EQ(second_page->versions_size(), 1);
  EXPECT_EQ(second_page->versions(0).version(), 2u);
  EXPECT_TRUE(second_page->next_page_token().empty());
  EXPECT_EQ(history->versions(0).text(), "tea");

  v1::DeleteEpisodesRequest remove;
  remove.set_space("life");
  remove.set_agent_id("alice");
  EXPECT_EQ(*client_->DeleteEpisodes(remove), 2u);
  EXPECT_EQ(client_->GetSpace("life")->episode_count(), 1u);
  EXPECT_EQ(client_->GetEpisode("life", ids->ids(0)).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ServerTest, BadInputGetsPreciseStatusesAndChangesNothing) {
  ASSERT_TRUE(client_->CreateSpace("strict", 3, v1::METRIC_L2).ok());
  struct Case {
    std::string name;
    std::function<absl::Status()> call;
    absl::StatusCode code;
    std::string message;
  };
  auto put = [](std::vector<v1::EpisodeWrite> writes, std::string space = "strict") {
    v1::PutEpisodesRequest request;
    request.set_space(space);
    for (auto& w : writes) *request.add_episodes() = w;
    return client_->PutEpisodes(request).status();
  };
  auto search = [](std::vector<float> query, uint32_t k) {
    v1::SearchRequest request;
    request.set_space("strict");
    request.set_k(k);
    request.mutable_query()->Add(query.begin(), query.end());
    return client_->Search(request).status();
  };
  v1::EpisodeWrite no_value = MakeWrite("a", {1, 2, 3});
  (*no_value.mutable_episode()->mutable_metadata())["k"];  // oneof unset
  std::vector<Case> cases = {
      {"wrong dimension",
       [&] {
         return put({MakeWrite("a", {1, 2})});
       },
       absl::StatusCode::kInvalidArgument, "embedding has 2 dimensions; space 'strict' expects 3"},
      {"NaN",
       [&] {
         return put({MakeWrite("a", {1, NAN, 3})});
       },
       absl::StatusCode::kInvalidArgument, "embedding[1] is nan"},
      {"empty agent",
       [&] {
         return put({MakeWrite("", {1, 2, 3})});
       },
       absl::StatusCode::kInvalidArgument, "agent_id is empty"},
      {"long text",
       [&] {
         return put({MakeWrite("a", {1, 2, 3}, std::string(2000, 'x'))});
       },
       absl::StatusCode::kInvalidArgument, "text is 2000 bytes; the limit is 1000"},
      {"untyped metadata",
       [&] {
         return put({MakeWrite("a", {1, 2, 3}), no_value});
       },
       absl::StatusCode::kInvalidArgument, "episodes[1]: metadata 'k' has no value set"},
      {"unknown space",
       [&] {
         return put({MakeWrite("a", {1, 2, 3})}, "nope");
       },
       absl::StatusCode::kNotFound, "space 'nope' does not exist"},
      {"query dimension",
       [&] {
         return search({1, 2}, 5);
       },
       absl::StatusCode::kInvalidArgument, "query has 2 dimensions"},
      {"k zero",
       [&] {
         return search({1, 2, 3}, 0);
       },
       absl::StatusCode::kInvalidArgument, "k is 0; must be in 1..1000"},
      {"k huge",
       [&] {
         return search({1, 2, 3}, 5000);
       },
       absl::StatusCode::kInvalidArgument, "k is 5000"},
      {"unknown id", [&] { return client_->GetEpisode("strict", 424242).status(); },
       absl::StatusCode::kNotFound, "episode 424242 not found"},
      {"bad metric", [&] { return client_->CreateSpace("m", 3, v1::METRIC_UNSPECIFIED).status(); },
       absl::StatusCode::kInvalidArgument, "metric 0 is not one of"},
      {"bad filter",
       [&] {
         v1::ListEpisodesRequest request;
         request.set_space("strict");
         request.mutable_filter()->set_session_id("s");
         return client_->ListEpisodes(request).status();
       },
       absl::StatusCode::kInvalidArgument, "requires filter.agent_id"},
      {"bad update mask",
       [&] {
         v1::UpdateEpisodeRequest request;
         request.set_space("strict");
         request.set_id(1);
         request.add_update_mask("agent_id");
         return client_->UpdateEpisode(request).status();
       },
       absl::StatusCode::kInvalidArgument, "update_mask path 'agent_id' is not updatable"},
      {"escaping checkpoint name", [&] { return client_->Checkpoint("../evil").status(); },
       absl::StatusCode::kInvalidArgument, "checkpoint name '../evil'"},
      {"empty delete",
       [&] {
         v1::DeleteEpisodesRequest request;
         request.set_space("strict");
         return client_->DeleteEpisodes(request).status();
       },
       absl::StatusCode::kInvalidArgument, "say what to delete"},
  };
  for (const Case& c : cases) {
    absl::Status status = c.call();
    EXPECT_EQ(status.code(), c.code) << c.name << ": " << status;
    EXPECT_NE(status.message().find(c.message), std::string::npos) << c.name << ": " << status;
  }
  EXPECT_EQ(client_->GetSpace("strict")->episode_count(), 0u);
}

TEST_F(ServerTest, CompactStreamsMonotoneProgress) {
  std::vector<double> fractions;
  bool done = false;
  absl::Status status = client_->Compact([&](const v1::CompactProgress& p) {
    fractions.push_back(p.fraction());
    done = p.done();
    return true;
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_TRUE(done);
  EXPECT_TRUE(std::is_sorted(fractions.begin(), fractions.end()));
  EXPECT_EQ(fractions.back(), 1.0);
}

TEST_F(ServerTest, BackupRestoresIntoAnOpenableDirectory) {
  ASSERT_TRUE(client_->CreateSpace("saved", 2, v1::METRIC_INNER_PRODUCT).ok());
  v1::PutEpisodesRequest put;
  put.set_space("saved");
  *put.add_episodes() = MakeWrite("a", {1, 2}, "remember me");
  *put.add_episodes() = MakeWrite("a", {2, 1}, "remember the green tea");
  *put.add_episodes() = MakeWrite("b", {0, 1}, "tea for me");
  uint64_t id = client_->PutEpisodes(put)->ids(0);
  v1::SearchRequest text_search;
  text_search.set_space("saved");
  text_search.set_k(10);
  text_search.set_query_text("remember tea");
  auto before = client_->Search(text_search);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_EQ(before->hits_size(), 3);
  auto backup = client_->Backup();
  ASSERT_TRUE(backup.ok()) << backup.status();
  auto verified = client_->VerifyBackup(backup->backup_id());
  ASSERT_TRUE(verified.ok());
  EXPECT_TRUE(verified->ok()) << verified->message();
  EXPECT_EQ(client_->VerifyBackup(9999).status().code(), absl::StatusCode::kNotFound);
  EXPECT_GE(client_->ListBackups()->backups_size(), 1);
  auto restored = client_->RestoreBackup(0, "r1");
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(client_->RestoreBackup(0, "r1").status().code(), absl::StatusCode::kAlreadyExists);

  // A second daemon serves the restored copy.
  auto copy = testing::DaemonProcess::Start(*restored);
  ASSERT_TRUE(copy.ok()) << copy.status();
  client::ClientOptions options;
  options.address = (*copy)->address();
  {
    Client copy_client(options);
    auto episode = copy_client.GetEpisode("saved", id);
    ASSERT_TRUE(episode.ok()) << episode.status();
    EXPECT_EQ(episode->text(), "remember me");
    // The postings came along: the same BM25 hits and scores.
    auto after = copy_client.Search(text_search);
    ASSERT_TRUE(after.ok()) << after.status();
    ASSERT_EQ(after->hits_size(), before->hits_size());
    for (int i = 0; i < after->hits_size(); ++i) {
      EXPECT_EQ(after->hits(i).episode().id(), before->hits(i).episode().id());
      EXPECT_FLOAT_EQ(after->hits(i).score(), before->hits(i).score());
    }
  }  // the client hangs up first: shutdown waits for open connections
  EXPECT_EQ((*copy)->Terminate(), 0);
}

TEST_F(ServerTest, MetricsCountCallsByMethodAndCode) {
  (void)client_->GetSpace("definitely-missing");
  std::string metrics = HttpGet(metrics_port_, "/metrics");
  EXPECT_NE(metrics.find("engram_rpc_requests_total{code=\"NOT_FOUND\",rpc=\"GetSpace\"}"),
            std::string::npos)
      << metrics.substr(0, 2000);
  EXPECT_NE(metrics.find("engram_rpc_latency_seconds_bucket"), std::string::npos);
  EXPECT_NE(metrics.find("engram_kv_pool_budget_bytes 2147483648"), std::string::npos)
      << "KV cache gauges (default kv.pool_mb 2048)";
  EXPECT_NE(metrics.find("engram_kv_pool_misses_total 0"), std::string::npos);
  EXPECT_NE(metrics.find("engram_index_add_failures_total 0"), std::string::npos) << "index health";
  EXPECT_NE(metrics.find("engram_index_queued_writes "), std::string::npos);
}

TEST_F(ServerTest, EngramctlRoundTripAndErrors) {
  std::string address = daemon_->address();
  auto [code, out] = RunCtl(address, "space create ctl --dim 2 --metric l2");
  ASSERT_EQ(code, 0) << out;
  std::tie(code, out) = RunCtl(address, "put -s ctl --agent a --text hi --vector 3,4");
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("\"ids\""), std::string::npos) << out;
  std::tie(code, out) = RunCtl(address, "search -s ctl --vector 3,4 -k 1");
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("\"text\":\"hi\""), std::string::npos) << out;
  std::tie(code, out) = RunCtl(address, "search -s ctl --text HI -k 1 --route fast");
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("\"route\":\"lexical\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"text\":\"hi\""), std::string::npos) << out;
  // AUTO deliberates a space this small at once, and --explain says so.
  std::tie(code, out) = RunCtl(address, "search -s ctl --text HI -k 1 --explain");
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("route deliberate (asked: auto), 1 hits"), std::string::npos) << out;
  EXPECT_NE(out.find("gate: deliberated at once"), std::string::npos) << out;
  EXPECT_NE(out.find("lexical#1"), std::string::npos) << out;
  std::tie(code, out) = RunCtl(address, "search -s ctl --text HI --route slow");
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("--route: slow not in"), std::string::npos) << out;
  std::tie(code, out) = RunCtl(address, "space create ctl_stem --dim 2 --stem english");
  ASSERT_EQ(code, 0) << out;
  std::tie(code, out) = RunCtl(address, "analyze -s ctl_stem 'Running, MEETINGS'");
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("\"terms\":[\"run\",\"meet\"]"), std::string::npos) << out;
  std::tie(code, out) = RunCtl(address, "space create ctl_bad --dim 2 --stem klingon");
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("unknown stemming language 'klingon'"), std::string::npos) << out;
  // Text alone needs an embedder: this server offers none.
  std::tie(code, out) = RunCtl(address, "put -s ctl --agent a --text 'no vector'");
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("space 'ctl' has no embedder"), std::string::npos) << out;
  std::tie(code, out) = RunCtl(address, "space create ctl_embed --embedder static");
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("embedder 'static' is not offered by this server"), std::string::npos) << out;
  std::tie(code, out) = RunCtl(address, "put -s ctl --agent a --vector 1,2,3");
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("INVALID_ARGUMENT: episodes[0]: embedding has 3 dimensions"),
            std::string::npos)
      << out;
  std::tie(code, out) = RunCtl(address, "compact");
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("\"done\":true"), std::string::npos) << out;
  std::tie(code, out) = RunCtl(address, "--help");
  EXPECT_EQ(code, 0);
  EXPECT_NE(out.find("backup"), std::string::npos);
}

// Runs last (gtest keeps declaration order): the daemon exits cleanly on SIGTERM.
TEST_F(ServerTest, ZzSigtermShutsDownCleanly) {
  delete client_;  // hang up first: shutdown waits for open connections
  client_ = nullptr;
  EXPECT_EQ(daemon_->Terminate(), 0);
}

}  // namespace
}  // namespace engram
