// The C++ client's write retries against a fake MemoryService that refuses
// a given number of times (unreachable, UNAVAILABLE; or overloaded,
// RESOURCE_EXHAUSTED with or without a retry delay), then answers as engramd
// does for a batch its first attempt already applied.
#include "clients/cpp/engram_client.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/sharding.h"

namespace engram::client {
namespace {

// How the fake refuses its first `failures` calls.
enum class Refusal { kUnavailable, kOverloaded, kDiskFull };

class FlakyMemoryService final : public v1::MemoryService::Service {
 public:
  FlakyMemoryService(int failures, Refusal refusal) : failures_(failures), refusal_(refusal) {}

  grpc::Status PutEpisodes(grpc::ServerContext* context, const v1::PutEpisodesRequest* request,
                           v1::PutEpisodesResponse* response) override {
    absl::MutexLock lock(&mutex_);
    requests_.push_back(*request);
    auto header = context->client_metadata().find(sharding::kAgentHeader);
    agent_headers_.push_back(header == context->client_metadata().end()
                                 ? "(none)"
                                 : std::string(header->second.data(), header->second.size()));
    if (static_cast<int>(requests_.size()) <= failures_) {
      switch (refusal_) {
        case Refusal::kUnavailable:
          return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset");
        case Refusal::kOverloaded:
          context->AddTrailingMetadata(kRetryPushbackTrailer, "150");
          return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "the write queue is full");
        case Refusal::kDiskFull:
          return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "disk full");
      }
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
  std::vector<std::string> agent_headers() {
    absl::MutexLock lock(&mutex_);
    return agent_headers_;
  }

 private:
  const int failures_;
  const Refusal refusal_;
  absl::Mutex mutex_;
  std::vector<v1::PutEpisodesRequest> requests_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::string> agent_headers_ ABSL_GUARDED_BY(mutex_);
};

struct FakeServer {
  explicit FakeServer(int failures, Refusal refusal = Refusal::kUnavailable)
      : service(failures, refusal) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
  }
  ~FakeServer() { server->Shutdown(); }
  // Options of a client of this server.
  ClientOptions Options() const {
    ClientOptions options;
    options.address = "127.0.0.1:" + std::to_string(port);
    return options;
  }
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
  ClientOptions options = fake.Options();
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

// A batch of one agent names it in the x-engram-agent header, percent-encoded
// (common/sharding.h); a batch of several, or an id too long to be valid,
// sends none.
TEST(EngramClientTest, CallsAboutOneAgentNameItInAHeader) {
  FakeServer fake(0);
  Client client(fake.Options());
  v1::PutEpisodesRequest one = Batch();
  for (v1::EpisodeWrite& write : *one.mutable_episodes()) {
    write.mutable_episode()->set_agent_id(std::string("ä/b c\0~x", 9));
  }
  ASSERT_TRUE(client.PutEpisodes(one).ok());
  v1::PutEpisodesRequest two = one;
  two.mutable_episodes(1)->mutable_episode()->set_agent_id("other");
  ASSERT_TRUE(client.PutEpisodes(two).ok());
  v1::PutEpisodesRequest huge = one;
  for (v1::EpisodeWrite& write : *huge.mutable_episodes()) {
    write.mutable_episode()->set_agent_id(std::string(2000, '/'));
  }
  ASSERT_TRUE(client.PutEpisodes(huge).ok());
  EXPECT_EQ(fake.service.agent_headers(),
            (std::vector<std::string>{"%C3%A4%2Fb%20c%00~x", "(none)", "(none)"}));
}

TEST(EngramClientTest, RetriesStopAtWriteAttempts) {
  FakeServer fake(10);
  ClientOptions options = fake.Options();
  options.write_attempts = 2;
  Client client(options);
  auto response = client.PutEpisodes(Batch());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(fake.service.requests().size(), 2u);
}

// An overload refusal names a delay: the client waits at least that long
// and sends the same batch again, generated ids included.
TEST(EngramClientTest, OverloadRefusalsAreRetriedAfterTheServersDelay) {
  FakeServer fake(2, Refusal::kOverloaded);
  ClientOptions options = fake.Options();
  Client client(options);
  const absl::Time start = absl::Now();
  auto response = client.PutEpisodes(Batch());
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(2 * 150));
  std::vector<v1::PutEpisodesRequest> sent = fake.service.requests();
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[2].episodes(0).request_id(), sent[0].episodes(0).request_id());

  // Out of attempts, the caller gets the refusal with its delay.
  FakeServer busy(10, Refusal::kOverloaded);
  options.address = busy.Options().address;
  options.write_attempts = 2;
  Client impatient(options);
  auto refused = impatient.PutEpisodes(Batch());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RetryAfter(refused.status()), absl::Milliseconds(150));
  EXPECT_EQ(busy.service.requests().size(), 2u);
}

// RESOURCE_EXHAUSTED without a delay (a full disk, a tenant limit) is not
// cured by retrying soon: one attempt.
TEST(EngramClientTest, ResourceExhaustedWithoutADelayIsNotRetried) {
  FakeServer fake(10, Refusal::kDiskFull);
  ClientOptions options = fake.Options();
  Client client(options);
  auto response = client.PutEpisodes(Batch());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(RetryAfter(response.status()).has_value());
  EXPECT_EQ(fake.service.requests().size(), 1u);
}

}  // namespace
}  // namespace engram::client
