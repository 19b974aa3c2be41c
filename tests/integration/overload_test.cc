// Reads stay fast while writes saturate engramd: 48 writers keep PutEpisodes
// of 64 episodes in flight against a write pool of 2 threads (each put
// waits on fsync and feeds the indexer), and a lone reader's GetSpace and
// Search calls must still answer in milliseconds, because reads run on
// their own pool (server/rpc_runner.h) and never queue behind writes.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/cpp/engram_client.h"
#include "tests/util/daemon_fixture.h"

namespace engram {
namespace {

constexpr int kDim = 256;

v1::PutEpisodesRequest Batch(std::mt19937& rng, int episodes) {
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  v1::PutEpisodesRequest put;
  put.set_space("load");
  for (int i = 0; i < episodes; ++i) {
    v1::Episode* e = put.add_episodes()->mutable_episode();
    e->set_agent_id(absl::StrCat("agent", rng() % 4));
    e->set_text("an episode written under load");
    for (int d = 0; d < kDim; ++d) e->add_embedding(gauss(rng));
  }
  return put;
}

class OverloadTest : public testing::DaemonTest {
 protected:
  // Starts engramd with a config file holding `yaml`.
  void StartDaemonWithConfig(const char* yaml) {
    const std::string config = dir_.Sub("engramd.yaml");
    FILE* file = fopen(config.c_str(), "w");
    fputs(yaml, file);
    fclose(file);
    StartDaemonWith({"--config", config});
  }
};

TEST_F(OverloadTest, ReadsAnswerInMillisecondsWhileWritersSaturate) {
  StartDaemonWith({"--worker-threads", "2"});
  ASSERT_TRUE(client_->CreateSpace("load", kDim, v1::METRIC_COSINE).ok());
  std::mt19937 seed_rng(1);
  ASSERT_TRUE(client_->PutEpisodes(Batch(seed_rng, 64)).ok());

  std::atomic<bool> stop{false};
  std::atomic<int> puts{0}, overloaded{0}, other_errors{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 48; ++w) {
    writers.emplace_back([&, w] {
      std::unique_ptr<client::Client> writer = NewClient();
      std::mt19937 rng(100 + w);
      const v1::PutEpisodesRequest put = Batch(rng, 64);
      while (!stop.load()) {
        auto result = writer->PutEpisodes(put);
        if (result.ok()) {
          puts.fetch_add(1);
        } else if (absl::IsResourceExhausted(result.status())) {
          overloaded.fetch_add(1);
        } else {
          other_errors.fetch_add(1);
        }
      }
    });
  }
  absl::SleepFor(absl::Seconds(1));  // let the write queue fill

  std::vector<double> latencies_ms;
  std::mt19937 query_rng(7);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (int i = 0; i < 40; ++i) {
    const absl::Time start = absl::Now();
    if (i % 2 == 0) {
      auto space = client_->GetSpace("load");
      EXPECT_TRUE(space.ok()) << space.status();
    } else {
      v1::SearchRequest search;
      search.set_space("load");
      search.set_k(10);
      for (int d = 0; d < kDim; ++d) search.add_query(gauss(query_rng));
      auto found = client_->Search(search);
      EXPECT_TRUE(found.ok()) << found.status();
    }
    latencies_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    absl::SleepFor(absl::Milliseconds(25));
  }
  stop = true;
  for (std::thread& writer : writers) writer.join();

  std::sort(latencies_ms.begin(), latencies_ms.end());
  const double median = latencies_ms[latencies_ms.size() / 2];
  const double p90 = latencies_ms[latencies_ms.size() * 9 / 10];
  EXPECT_GT(puts.load(), 0) << "the writers made progress";
  EXPECT_EQ(other_errors.load(), 0);
  // Generous for a loaded 2-core CI machine (11-25 ms median, under 40 ms at
  // p90 on the dev machine); queued behind the writes through one shared
  // pool, the same reads took 243 ms at the median and 5.6 s at p90.
  EXPECT_LT(median, 100.0) << "p90 " << p90 << " ms";
  EXPECT_LT(p90, 500.0) << "median " << median << " ms";
  std::cerr << "reads under write saturation: median " << median << " ms, p90 " << p90
            << " ms; puts " << puts.load() << ", refused " << overloaded.load() << "\n";
}

// Searches that fill the read pool never delay a lookup: 32 callers keep
// exact searches (each scores every episode) in flight against 2 read
// threads, and a lone caller's GetSpace and GetEpisode still answer in
// milliseconds, because lookups have a lane of their own
// (CallClass::kLookup in server/rpc_runner.h).
TEST_F(OverloadTest, LookupsAnswerInMillisecondsWhileSearchesSaturate) {
  StartDaemonWithConfig("read_threads: 2\n");
  ASSERT_TRUE(client_->CreateSpace("load", kDim, v1::METRIC_COSINE).ok());
  std::mt19937 seed_rng(1);
  uint64_t some_id = 0;
  for (int i = 0; i < 64; ++i) {
    auto put = client_->PutEpisodes(Batch(seed_rng, 64));
    ASSERT_TRUE(put.ok()) << put.status();
    some_id = put->ids(0);
  }

  std::atomic<bool> stop{false};
  std::atomic<int> searches{0}, search_errors{0};
  std::vector<std::thread> searchers;
  for (int s = 0; s < 32; ++s) {
    searchers.emplace_back([&, s] {
      std::unique_ptr<client::Client> searcher = NewClient();
      std::mt19937 rng(200 + s);
      std::normal_distribution<float> gauss(0.0f, 1.0f);
      v1::SearchRequest search;
      search.set_space("load");
      search.set_k(100);
      search.set_exact(true);
      for (int d = 0; d < kDim; ++d) search.add_query(gauss(rng));
      while (!stop.load()) {
        auto found = searcher->Search(search);
        (found.ok() ? searches : search_errors).fetch_add(1);
      }
    });
  }
  absl::SleepFor(absl::Seconds(1));  // let the read queue fill

  std::vector<double> latencies_ms;
  for (int i = 0; i < 40; ++i) {
    const absl::Time start = absl::Now();
    if (i % 2 == 0) {
      auto space = client_->GetSpace("load");
      ASSERT_TRUE(space.ok()) << space.status();
      EXPECT_EQ(space->episode_count(), 64u * 64u);
    } else {
      auto episode = client_->GetEpisode("load", some_id);
      ASSERT_TRUE(episode.ok()) << episode.status();
      EXPECT_EQ(episode->id(), some_id);
    }
    latencies_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    absl::SleepFor(absl::Milliseconds(25));
  }
  const int searches_during_lookups = searches.load();
  stop = true;
  for (std::thread& searcher : searchers) searcher.join();

  std::sort(latencies_ms.begin(), latencies_ms.end());
  const double median = latencies_ms[latencies_ms.size() / 2];
  const double p90 = latencies_ms[latencies_ms.size() * 9 / 10];
  EXPECT_GT(searches_during_lookups, 0) << "the searchers made progress";
  EXPECT_EQ(search_errors.load(), 0);
  // Generous for a loaded 2-core CI machine; see the dev machine's figures
  // and those through the read pool in docs/reliability.md.
  EXPECT_LT(median, 50.0) << "p90 " << p90 << " ms";
  EXPECT_LT(p90, 250.0) << "median " << median << " ms";
  std::cerr << "lookups under search saturation: median " << median << " ms, p90 " << p90
            << " ms; searches " << searches_during_lookups << "\n";
}

// A full write queue refuses at once with RESOURCE_EXHAUSTED naming the
// queue and a retry delay, and nothing of the refused batch is stored; reads
// are unaffected.
TEST_F(OverloadTest, AFullWriteQueueRefusesAtOnceAndNamesIt) {
  StartDaemonWithConfig("worker_threads: 1\nmax_queued_requests: 1\n");
  ASSERT_TRUE(client_->CreateSpace("load", kDim, v1::METRIC_COSINE).ok());
  std::atomic<int> stored{0}, refused{0}, other{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 16; ++w) {
    writers.emplace_back([&, w] {
      client::ClientOptions options;
      options.address = daemon_->address();
      options.write_attempts = 1;  // the server's answer, not the client's retries
      auto writer = std::make_unique<client::Client>(options);
      std::mt19937 rng(w);
      v1::PutEpisodesRequest put = Batch(rng, 64);
      for (int i = 0; i < 4; ++i) {
        auto result = writer->PutEpisodes(put);
        if (result.ok()) {
          stored.fetch_add(64);
        } else if (absl::IsResourceExhausted(result.status()) &&
                   absl::StrContains(result.status().message(), "write queue is full") &&
                   RetryAfter(result.status()).has_value()) {
          refused.fetch_add(1);
        } else {
          other.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& writer : writers) writer.join();
  EXPECT_GT(refused.load(), 0) << "16 writers against a queue of 1";
  EXPECT_EQ(other.load(), 0);
  auto space = client_->GetSpace("load");
  ASSERT_TRUE(space.ok()) << space.status();
  EXPECT_EQ(space->episode_count(), static_cast<uint64_t>(stored.load()))
      << "a refused batch stores nothing";
}

}  // namespace
}  // namespace engram
