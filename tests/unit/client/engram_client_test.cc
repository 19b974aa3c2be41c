// The C++ client's write retries against a fake MemoryService that is
// unreachable (UNAVAILABLE) a given number of times, then answers as
// engramd does for a batch its first attempt already applied.
#include "clients/cpp/engram_client.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace engram::client {
namespace {

class FlakyMemoryService final : public v1::MemoryService::Service {
 public:
  explicit FlakyMemoryService(int failures) : failures_(failures) {}

  grpc::Status PutEpisodes(grpc::ServerContext*, const v1::PutEpisodesRequest* request,
                           v1::PutEpisodesResponse* response) override {
    absl::MutexLock lock(&mutex_);
    requests_.push_back(*request);
    if (static_cast<int>(requests_.size()) <= failures_) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset");
    }
    for (int i = 0; i < request->episodes_size(); ++i) {
      response->add_ids(i + 1);
      response->add_deduplicated(true);
    }
    return grpc::Status::OK;
  }

  std::vector<v1::PutEpisodesRequest> requests() {
    absl::MutexLock lock(&mutex_);
    return requests_;
  }

 private:
  const int failures_;
  absl::Mutex mutex_;
  std::vector<v1::PutEpisodesRequest> requests_ ABSL_GUARDED_BY(mutex_);
};

struct FakeServer {
  explicit FakeServer(int failures) : service(failures) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
  }
  ~FakeServer() { server->Shutdown(); }
  FlakyMemoryService service;
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

v1::PutEpisodesRequest Batch() {
  v1::PutEpisodesRequest request;
  request.set_space("s");
  request.add_episodes()->mutable_episode()->set_text("generated id");
  v1::EpisodeWrite* mine = request.add_episodes();
  mine->set_request_id("mine");
  mine->mutable_episode()->set_text("caller's id");
  request.add_episodes()->mutable_episode()->set_text("another generated id");
  return request;
}

TEST(EngramClientTest, UnavailableWritesAreRetriedWithTheSameGeneratedIds) {
  FakeServer fake(2);
  ClientOptions options;
  options.address = "127.0.0.1:" + std::to_string(fake.port);
  Client client(options);
  auto response = client.PutEpisodes(Batch());
  ASSERT_TRUE(response.ok()) << response.status();
  std::vector<v1::PutEpisodesRequest> sent = fake.service.requests();
  ASSERT_EQ(sent.size(), 3u);
  for (const v1::PutEpisodesRequest& attempt : sent) {
    ASSERT_EQ(attempt.episodes_size(), 3);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(attempt.episodes(i).request_id(), sent[0].episodes(i).request_id());
    }
  }
  EXPECT_EQ(sent[0].episodes(1).request_id(), "mine");
  EXPECT_EQ(sent[0].episodes(0).request_id().size(), 32u);
  EXPECT_NE(sent[0].episodes(0).request_id(), sent[0].episodes(2).request_id());
  // Generated ids: the dedup was this call's own first attempt.
  EXPECT_FALSE(response->deduplicated(0));
  EXPECT_TRUE(response->deduplicated(1));
  EXPECT_FALSE(response->deduplicated(2));
}

TEST(EngramClientTest, RetriesStopAtWriteAttempts) {
  FakeServer fake(10);
  ClientOptions options;
  options.address = "127.0.0.1:" + std::to_string(fake.port);
  options.write_attempts = 2;
  Client client(options);
  auto response = client.PutEpisodes(Batch());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(fake.service.requests().size(), 2u);
}

}  // namespace
}  // namespace engram::client
