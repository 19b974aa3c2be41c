// Durability under crashes: concurrent writers put batches into a real
// engramd, which is killed with SIGKILL at a random moment; after each
// restart
//   - every acknowledged episode is present with its exact text and embedding,
//   - no episode exists that no writer sent,
//   - every batch whose outcome the writer never learned is either entirely
//     stored or entirely absent: re-sending it with the same request ids
//     must come back all-deduplicated or all-new, never mixed;
//   - the lexical index (written in the episodes' own WriteBatch) agrees
//     exactly: a text search for an episode's words finds it first, with
//     the BM25 score its agent's acknowledged episodes imply, so no posting
//     or statistic was lost or counted twice.
// ENGRAM_CRASH_CYCLES sets the number of kill -9 cycles (default 10).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "clients/cpp/engram_client.h"
#include "tests/util/daemon_process.h"
#include "tests/util/temp_dir.h"

namespace engram {
namespace {

constexpr int kDimension = 8;
constexpr int kWriters = 4;
constexpr int kBatchSize = 16;

// The embedding is a function of the text, so content can be checked.
std::vector<float> EmbeddingFor(const std::string& text) {
  std::seed_seq seed(text.begin(), text.end());
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(kDimension);
  for (float& x : v) x = normal(rng);
  return v;
}

struct Batch {
  std::vector<std::string> texts;  // also the request ids
  std::vector<uint64_t> ids;       // known once acknowledged
};

v1::PutEpisodesRequest ToRequest(const Batch& batch) {
  v1::PutEpisodesRequest request;
  request.set_space("crash");
  for (const std::string& text : batch.texts) {
    v1::EpisodeWrite* write = request.add_episodes();
    write->set_request_id(text);
    write->mutable_episode()->set_agent_id(text.substr(0, text.find('-')));
    write->mutable_episode()->set_text(text);
    std::vector<float> embedding = EmbeddingFor(text);
    write->mutable_episode()->mutable_embedding()->Add(embedding.begin(), embedding.end());
  }
  return request;
}

std::unique_ptr<client::Client> Connect(const testing::DaemonProcess& daemon) {
  client::ClientOptions options;
  options.address = daemon.address();
  options.timeout = absl::Seconds(10);
  auto c = std::make_unique<client::Client>(options);
  EXPECT_TRUE(c->WaitForConnected(absl::Seconds(10)));
  return c;
}

// The words of a text "w1-c2-b3-4" (its agent, cycle, batch, position).
std::vector<std::string> Words(const std::string& text) { return absl::StrSplit(text, '-'); }

// BM25 (storage/lexical_index.h) of `text` searched as query_text within
// its agent, every acknowledged episode of which has four distinct words.
double ExpectedScore(const std::string& text, const std::vector<std::string>& agent_texts) {
  const double documents = static_cast<double>(agent_texts.size());
  double score = 0;
  for (const std::string& word : Words(text)) {
    double df = 0;
    for (const std::string& other : agent_texts) {
      std::vector<std::string> words = Words(other);
      df += std::find(words.begin(), words.end(), word) != words.end();
    }
    const double idf = std::log(1 + (documents - df + 0.5) / (df + 0.5));
    score += idf * (1.2 + 1) / (1 + 1.2);  // tf 1, length = average length
  }
  return score;
}

// Every stored episode, by id.
std::map<uint64_t, v1::Episode> ReadAll(client::Client& c) {
  std::map<uint64_t, v1::Episode> all;
  v1::ListEpisodesRequest request;
  request.set_space("crash");
  request.set_page_size(1000);
  request.set_include_embedding(true);
  do {
    auto page = c.ListEpisodes(request);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) break;
    for (const v1::Episode& e : page->episodes()) all[e.id()] = e;
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  return all;
}

TEST(Kill9DurabilityTest, AcknowledgedWritesSurviveAndBatchesAreAtomic) {
  int cycles = 10;
  if (const char* env = std::getenv("ENGRAM_CRASH_CYCLES")) cycles = std::atoi(env);
  testing::TempDir dir;
  std::string data_dir = dir.Sub("data");
  std::mt19937 rng(std::random_device{}());

  std::vector<Batch> acknowledged;
  std::vector<Batch> unknown;  // in flight when the daemon died
  uint64_t total_acknowledged = 0;

  for (int cycle = 0; cycle <= cycles; ++cycle) {
    auto daemon = testing::DaemonProcess::Start(data_dir);
    ASSERT_TRUE(daemon.ok()) << "cycle " << cycle << ": " << daemon.status();
    std::unique_ptr<client::Client> c = Connect(**daemon);
    if (cycle == 0) {
      ASSERT_TRUE(c->CreateSpace("crash", kDimension, v1::METRIC_L2).ok());
    }

    // 1. Batches with an unknown outcome are all-or-nothing.
    for (Batch& batch : unknown) {
      auto response = c->PutEpisodes(ToRequest(batch));
      ASSERT_TRUE(response.ok()) << response.status();
      int deduplicated = 0;
      for (bool d : response->deduplicated()) deduplicated += d;
      ASSERT_TRUE(deduplicated == 0 || deduplicated == kBatchSize)
          << "cycle " << cycle << ": batch half-written: " << deduplicated << " of " << kBatchSize
          << " episodes were stored";
      batch.ids.assign(response->ids().begin(), response->ids().end());
      acknowledged.push_back(std::move(batch));
    }
    unknown.clear();

    // 2. Every acknowledged episode is intact; nothing else exists.
    std::map<uint64_t, v1::Episode> stored = ReadAll(*c);
    size_t expected = 0;
    for (const Batch& batch : acknowledged) {
      for (size_t i = 0; i < batch.ids.size(); ++i, ++expected) {
        auto it = stored.find(batch.ids[i]);
        ASSERT_NE(it, stored.end()) << "cycle " << cycle << ": acknowledged episode "
                                    << batch.ids[i] << " (" << batch.texts[i] << ") lost";
        EXPECT_EQ(it->second.text(), batch.texts[i]);
        std::vector<float> embedding(it->second.embedding().begin(), it->second.embedding().end());
        EXPECT_EQ(embedding, EmbeddingFor(batch.texts[i]));
      }
    }
    ASSERT_EQ(stored.size(), expected) << "cycle " << cycle << ": unexpected episodes stored";
    ASSERT_EQ(c->GetSpace("crash")->episode_count(), expected);
    total_acknowledged = expected;

    // 3. Text search agrees with what was acknowledged.
    std::map<std::string, std::vector<std::string>> texts_by_agent;
    std::vector<std::pair<uint64_t, std::string>> episodes;
    for (const Batch& batch : acknowledged) {
      for (size_t i = 0; i < batch.ids.size(); ++i) {
        texts_by_agent[Words(batch.texts[i])[0]].push_back(batch.texts[i]);
        episodes.emplace_back(batch.ids[i], batch.texts[i]);
      }
    }
    std::shuffle(episodes.begin(), episodes.end(), rng);
    for (size_t i = 0; i < std::min<size_t>(episodes.size(), 12); ++i) {
      const auto& [id, text] = episodes[i];
      v1::SearchRequest search;
      search.set_space("crash");
      search.set_k(1);
      search.set_query_text(text);
      search.mutable_filter()->set_agent_id(Words(text)[0]);
      search.set_route(v1::ROUTE_FAST);  // BM25 itself: its scores are checked
      auto found = c->Search(search);
      ASSERT_TRUE(found.ok()) << found.status();
      ASSERT_EQ(found->hits_size(), 1) << "cycle " << cycle << ": " << text;
      EXPECT_EQ(found->hits(0).episode().id(), id) << "cycle " << cycle << ": " << text;
      const double expected_score = ExpectedScore(text, texts_by_agent[Words(text)[0]]);
      EXPECT_NEAR(found->hits(0).score(), expected_score, 1e-4 * expected_score)
          << "cycle " << cycle << ": " << text;
    }
    if (cycle == cycles) {
      c.reset();
      EXPECT_EQ((*daemon)->Terminate(), 0);
      break;
    }

    // 4. Concurrent writers until a random kill -9.
    absl::Mutex mutex;
    std::vector<std::thread> writers;
    std::atomic<bool> stop{false};
    for (int w = 0; w < kWriters; ++w) {
      writers.emplace_back([&, w] {
        for (int n = 0; !stop; ++n) {
          Batch batch;
          for (int i = 0; i < kBatchSize; ++i) {
            batch.texts.push_back(absl::StrCat("w", w, "-c", cycle, "-b", n, "-", i));
          }
          auto response = c->PutEpisodes(ToRequest(batch));
          absl::MutexLock lock(&mutex);
          if (response.ok()) {
            batch.ids.assign(response->ids().begin(), response->ids().end());
            acknowledged.push_back(std::move(batch));
          } else {
            unknown.push_back(std::move(batch));
            return;
          }
        }
      });
    }
    absl::SleepFor(absl::Milliseconds(std::uniform_int_distribution<int>(100, 1500)(rng)));
    (*daemon)->Kill9();
    stop = true;
    for (std::thread& writer : writers) writer.join();
  }
  EXPECT_GT(total_acknowledged, 0u);
  std::cout << "kill -9 cycles: " << cycles
            << ", acknowledged episodes verified: " << total_acknowledged << "\n";
}

}  // namespace
}  // namespace engram
