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
// A second test runs a mixed load (puts, upserts by key, updates, deletes,
// KV saves, searches, a compaction and index snapshots every second) through the
// kill, and after each restart also checks that every outcome is one the
// client could have caused and that the vector index agrees with the store.
// ENGRAM_CRASH_CYCLES sets the number of kill -9 cycles (default 10).
// ENGRAM_CRASH_MAX_EPISODES (default 20,000) caps the data: past it, each
// cycle starts by deleting the oldest episodes (acknowledged deletes, checked
// like the rest), so that cycles stay as long as the first ones and a
// 100-cycle campaign takes minutes, not hours.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <set>
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

int CyclesToRun() {
  const char* env = std::getenv("ENGRAM_CRASH_CYCLES");
  return env != nullptr ? std::atoi(env) : 10;
}

size_t MaxEpisodes() {
  const char* env = std::getenv("ENGRAM_CRASH_MAX_EPISODES");
  return env != nullptr ? std::strtoull(env, nullptr, 10) : 20000;
}

// Deletes `ids` through engramd, in calls of 1,000.
void DeleteIds(client::Client& c, const std::vector<uint64_t>& ids) {
  for (size_t begin = 0; begin < ids.size(); begin += 1000) {
    v1::DeleteEpisodesRequest request;
    request.set_space("crash");
    for (size_t i = begin; i < std::min(ids.size(), begin + 1000); ++i) {
      request.mutable_ids()->add_ids(ids[i]);
    }
    auto deleted = c.DeleteEpisodes(request);
    ASSERT_TRUE(deleted.ok()) << deleted.status();
    ASSERT_EQ(*deleted, static_cast<uint64_t>(request.ids().ids_size()));
  }
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
  const int cycles = CyclesToRun();
  testing::TempDir dir;
  std::string data_dir = dir.Sub("data");
  std::mt19937 rng(std::random_device{}());

  std::vector<Batch> acknowledged;
  std::vector<Batch> unknown;  // in flight when the daemon died
  uint64_t total_acknowledged = 0;
  uint64_t deleted_by_cap = 0;

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

    // 3b. Past the cap, the oldest batches are deleted (and must stay so:
    //     the next cycle finds only what `acknowledged` holds).
    if (total_acknowledged > MaxEpisodes()) {
      std::vector<uint64_t> ids;
      size_t batches = 0;
      for (size_t kept = total_acknowledged; kept > MaxEpisodes() * 3 / 4; ++batches) {
        const Batch& batch = acknowledged[batches];
        ids.insert(ids.end(), batch.ids.begin(), batch.ids.end());
        kept -= batch.ids.size();
      }
      ASSERT_NO_FATAL_FAILURE(DeleteIds(*c, ids));
      acknowledged.erase(acknowledged.begin(), acknowledged.begin() + batches);
      deleted_by_cap += ids.size();
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
            << ", acknowledged episodes verified after the last restart: " << total_acknowledged
            << ", deleted to stay under the cap: " << deleted_by_cap << "\n";
}

// ---- Mixed load -------------------------------------------------------------

// What the client knows of one episode: the text it last saw acknowledged,
// texts whose update was in flight at the kill, and its deletion.
struct EpisodeModel {
  std::string agent;
  std::string text;
  std::set<std::string> maybe_texts;
  bool deleted = false;
  bool maybe_deleted = false;
  bool keyed = false;  // written by key: left to the upsert thread
};

// What the client knows of one key of the upserting agent: the episode it
// names once a write of it was acknowledged (0 before), and the texts of
// first writes in flight at the kill.
struct KeyModel {
  uint64_t id = 0;
  std::set<std::string> maybe_texts;
};
constexpr char kKeyedAgent[] = "k0";

// What the client knows of one agent's KV cache: the token ids of the last
// acknowledged save, and those of saves in flight at the kill.
struct CacheModel {
  std::vector<uint32_t> tokens;
  std::set<std::vector<uint32_t>> maybe_tokens;
};

v1::KvModel TinyModel() {
  v1::KvModel model;
  model.set_model_id("tiny");
  model.set_n_layers(1);
  model.set_n_kv_heads(1);
  model.set_head_dim(64);
  model.set_dtype(v1::KV_DTYPE_FLOAT16);
  return model;
}

absl::Status SaveTinyCache(client::Client& c, const std::string& agent,
                           const std::vector<uint32_t>& tokens) {
  v1::SaveCacheHeader header;
  header.set_agent_id(agent);
  *header.mutable_model() = TinyModel();
  header.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  header.set_encoding(v1::KV_ENCODING_FLOAT);
  bool sent = false;
  return c
      .SaveCache(header,
                 [&](v1::KvBlock* block) {
                   if (sent) return false;
                   sent = true;
                   block->set_layer(0);
                   block->set_block(0);
                   // fp16 values 0..63 cycling: any finite content will do.
                   std::string bytes(tokens.size() * 64 * 2, '\0');
                   for (size_t i = 0; i < bytes.size(); i += 2) bytes[i + 1] = 0x3c;  // 1.0
                   block->set_keys(bytes);
                   block->set_values(bytes);
                   return true;
                 })
      .status();
}

TEST(Kill9DurabilityTest, MixedLoadOutcomesAreOnesTheClientCouldCauseAndTheIndexAgrees) {
  const int cycles = CyclesToRun();
  testing::TempDir dir;
  const std::string data_dir = dir.Sub("data");
  const std::string config = dir.Sub("engramd.yaml");
  // Snapshots every second, so that kills land during them; small graph
  // thresholds, so that agents' partitions get quantized codes and graphs.
  std::ofstream(config) << "index:\n  snapshot_interval_s: 1\n  quantize_threshold: 64\n"
                        << "  graph_threshold: 256\n";
  std::mt19937 rng(std::random_device{}());
  std::map<uint64_t, EpisodeModel> episodes;
  std::map<std::string, CacheModel> caches;
  std::map<std::string, KeyModel> keys;
  std::vector<Batch> unknown;
  uint64_t checked_searches = 0;
  // Acknowledged operations of each kind, over all cycles.
  uint64_t updates = 0, upserts = 0, deletes = 0, saves = 0, searches = 0;
  uint64_t deleted_by_cap = 0;

  for (int cycle = 0; cycle <= cycles; ++cycle) {
    auto daemon = testing::DaemonProcess::Start(data_dir, {"--config", config});
    ASSERT_TRUE(daemon.ok()) << "cycle " << cycle << ": " << daemon.status();
    std::unique_ptr<client::Client> c = Connect(**daemon);
    if (cycle == 0) ASSERT_TRUE(c->CreateSpace("crash", kDimension, v1::METRIC_L2).ok());

    // 1. Puts of unknown outcome are all-or-nothing.
    for (Batch& batch : unknown) {
      auto response = c->PutEpisodes(ToRequest(batch));
      ASSERT_TRUE(response.ok()) << response.status();
      int deduplicated = 0;
      for (bool d : response->deduplicated()) deduplicated += d;
      ASSERT_TRUE(deduplicated == 0 || deduplicated == static_cast<int>(batch.texts.size()))
          << "cycle " << cycle << ": batch half-written";
      for (size_t i = 0; i < batch.texts.size(); ++i) {
        episodes[response->ids(i)] = {batch.texts[i].substr(0, batch.texts[i].find('-')),
                                      batch.texts[i]};
      }
    }
    unknown.clear();

    // 1b. Every key names the episode its first acknowledged write made, or,
    //     if none was acknowledged, nothing or a first write in flight.
    for (auto& [key, model] : keys) {
      auto got = c->GetEpisodeByKey("crash", kKeyedAgent, key);
      if (absl::IsNotFound(got.status())) {
        ASSERT_EQ(model.id, 0u) << "cycle " << cycle << ": key " << key << " lost";
        model.maybe_texts.clear();
        continue;
      }
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->key(), key);
      if (model.id != 0) {
        ASSERT_EQ(got->id(), model.id) << "cycle " << cycle << ": key " << key << " moved";
        continue;
      }
      ASSERT_TRUE(model.maybe_texts.count(got->text()))
          << "cycle " << cycle << ": key " << key << " holds '" << got->text()
          << "', which no write sent";
      model.id = got->id();
      model.maybe_texts.clear();
      EpisodeModel& episode = episodes[got->id()];
      episode.agent = kKeyedAgent;
      episode.text = got->text();
      episode.keyed = true;
    }

    // 2. Every episode is in a state the client could have caused; what was
    //    uncertain is settled by what is stored.
    std::map<uint64_t, v1::Episode> stored = ReadAll(*c);
    for (auto it = episodes.begin(); it != episodes.end();) {
      EpisodeModel& model = it->second;
      auto found = stored.find(it->first);
      if (model.deleted || (model.maybe_deleted && found == stored.end())) {
        ASSERT_EQ(found, stored.end())
            << "cycle " << cycle << ": deleted " << it->first << " is back";
        it = episodes.erase(it);
        continue;
      }
      ASSERT_NE(found, stored.end()) << "cycle " << cycle << ": " << it->first << " lost";
      const std::string& text = found->second.text();
      ASSERT_TRUE(text == model.text || model.maybe_texts.count(text))
          << "cycle " << cycle << ": " << it->first << " holds '" << text << "', expected '"
          << model.text << "'";
      std::vector<float> embedding(found->second.embedding().begin(),
                                   found->second.embedding().end());
      ASSERT_EQ(embedding, EmbeddingFor(text)) << "cycle " << cycle << ": " << it->first;
      model.text = text;
      model.maybe_texts.clear();
      model.maybe_deleted = false;
      ++it;
    }
    ASSERT_EQ(stored.size(), episodes.size()) << "cycle " << cycle << ": unexpected episodes";

    // 3. The index agrees with the store: every sampled episode is found by
    //    its own (current) vector through the index route, at distance 0,
    //    and no search returns an episode the store does not hold.
    std::vector<uint64_t> live;
    for (const auto& [id, model] : episodes) live.push_back(id);
    std::shuffle(live.begin(), live.end(), rng);
    for (size_t i = 0; i < std::min<size_t>(live.size(), 24); ++i) {
      const EpisodeModel& model = episodes[live[i]];
      for (bool exact : {false, true}) {
        v1::SearchRequest search;
        search.set_space("crash");
        search.set_k(5);
        search.set_route(v1::ROUTE_FAST);
        search.set_exact(exact);
        if (i % 2 == 0) search.mutable_filter()->set_agent_id(model.agent);
        std::vector<float> query = EmbeddingFor(model.text);
        search.mutable_query()->Add(query.begin(), query.end());
        auto found = c->Search(search);
        ASSERT_TRUE(found.ok()) << found.status();
        ASSERT_GE(found->hits_size(), 1);
        EXPECT_EQ(found->hits(0).episode().id(), live[i])
            << "cycle " << cycle << (exact ? " exact" : " index") << ": '" << model.text
            << "' not found by its own vector";
        EXPECT_NEAR(found->hits(0).score(), 0.0f, 1e-3f);
        for (const v1::SearchHit& hit : found->hits()) {
          EXPECT_TRUE(episodes.count(hit.episode().id()))
              << "cycle " << cycle << ": search returned " << hit.episode().id()
              << ", which the store does not hold";
        }
        ++checked_searches;
      }
    }

    // 4. KV caches: the last acknowledged save, or one in flight at the kill.
    for (auto& [agent, model] : caches) {
      v1::LoadCacheRequest request;
      request.set_agent_id(agent);
      request.set_model_id("tiny");
      std::vector<uint32_t> loaded;
      absl::Status status = c->LoadCache(
          request,
          [&](const v1::LoadCacheHeader& header) {
            loaded.assign(header.token_ids().begin(), header.token_ids().end());
          },
          [](v1::KvBlock&) { return true; });
      if (model.tokens.empty() && absl::IsNotFound(status)) continue;  // first save never landed
      ASSERT_TRUE(status.ok()) << "cycle " << cycle << ": " << agent << ": " << status;
      ASSERT_TRUE(loaded == model.tokens || model.maybe_tokens.count(loaded))
          << "cycle " << cycle << ": " << agent << " holds a cache no save sent";
      model.tokens = loaded;
      model.maybe_tokens.clear();
    }
    if (cycle == cycles) {
      c.reset();
      EXPECT_EQ((*daemon)->Terminate(), 0);
      break;
    }

    // 4b. Past the cap, the oldest unkeyed episodes are deleted; gone from
    //     the model, they fail step 2 if they ever come back.
    if (episodes.size() > MaxEpisodes()) {
      std::vector<uint64_t> ids;
      for (const auto& [id, model] : episodes) {
        if (episodes.size() - ids.size() <= MaxEpisodes() * 3 / 4) break;
        if (!model.keyed) ids.push_back(id);
      }
      ASSERT_NO_FATAL_FAILURE(DeleteIds(*c, ids));
      for (uint64_t id : ids) episodes.erase(id);
      deleted_by_cap += ids.size();
    }

    // 5. The mixed load until a random kill -9.
    absl::Mutex mutex;
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    auto pick = [&](int parity) -> std::optional<std::pair<uint64_t, EpisodeModel>> {
      absl::MutexLock lock(&mutex);
      std::vector<uint64_t> ids;
      for (const auto& [id, model] : episodes) {
        if (id % 2 == static_cast<uint64_t>(parity) && !model.deleted && !model.keyed) {
          ids.push_back(id);
        }
      }
      if (ids.empty()) return std::nullopt;
      uint64_t id = ids[rng() % ids.size()];
      return std::make_pair(id, episodes[id]);
    };
    for (int w = 0; w < 2; ++w) {  // puts
      threads.emplace_back([&, w] {
        for (int n = 0; !stop; ++n) {
          Batch batch;
          for (int i = 0; i < 8; ++i) {
            batch.texts.push_back(absl::StrCat("m", w, "-c", cycle, "-b", n, "-", i));
          }
          auto response = c->PutEpisodes(ToRequest(batch));
          absl::MutexLock lock(&mutex);
          if (!response.ok()) {
            unknown.push_back(std::move(batch));
            return;
          }
          for (size_t i = 0; i < batch.texts.size(); ++i) {
            episodes[response->ids(i)] = {absl::StrCat("m", w), batch.texts[i]};
          }
        }
      });
    }
    threads.emplace_back([&] {  // upserts by key: one agent rewriting 8 keys
      for (int n = 0; !stop; ++n) {
        const std::string key = absl::StrCat("key", n % 8);
        const std::string text = absl::StrCat(kKeyedAgent, "-c", cycle, "-k", n);
        v1::PutEpisodesRequest request;
        request.set_space("crash");
        v1::Episode* episode = request.add_episodes()->mutable_episode();
        episode->set_agent_id(kKeyedAgent);
        episode->set_key(key);
        episode->set_text(text);
        std::vector<float> embedding = EmbeddingFor(text);
        episode->mutable_embedding()->Add(embedding.begin(), embedding.end());
        auto response = c->PutEpisodes(request);
        absl::MutexLock lock(&mutex);
        KeyModel& model = keys[key];
        if (!response.ok()) {
          if (model.id != 0) {
            episodes[model.id].maybe_texts.insert(text);
          } else {
            model.maybe_texts.insert(text);
          }
          return;
        }
        if (model.id != 0) {
          EXPECT_EQ(response->ids(0), model.id) << "an upsert of " << key << " made a new episode";
          EXPECT_TRUE(response->replaced(0));
        }
        model.id = response->ids(0);
        model.maybe_texts.clear();
        EpisodeModel& stored = episodes[model.id];
        stored.agent = kKeyedAgent;
        stored.text = text;
        stored.keyed = true;
        ++upserts;
      }
    });
    threads.emplace_back([&] {  // updates of even ids
      for (int n = 0; !stop; ++n) {
        auto target = pick(0);
        if (!target) {
          absl::SleepFor(absl::Milliseconds(5));
          continue;
        }
        const std::string text = absl::StrCat(target->second.agent, "-c", cycle, "-u", n);
        v1::UpdateEpisodeRequest update;
        update.set_space("crash");
        update.set_id(target->first);
        update.mutable_episode()->set_text(text);
        std::vector<float> embedding = EmbeddingFor(text);
        update.mutable_episode()->mutable_embedding()->Add(embedding.begin(), embedding.end());
        update.add_update_mask("text");
        update.add_update_mask("embedding");
        auto response = c->UpdateEpisode(update);
        absl::MutexLock lock(&mutex);
        if (!response.ok()) {
          episodes[target->first].maybe_texts.insert(text);
          return;
        }
        episodes[target->first].text = text;
        ++updates;
      }
    });
    threads.emplace_back([&] {  // deletes of odd ids, one in four
      while (!stop) {
        absl::SleepFor(absl::Milliseconds(20));
        auto target = pick(1);
        if (!target) continue;
        v1::DeleteEpisodesRequest request;
        request.set_space("crash");
        request.mutable_ids()->add_ids(target->first);
        auto deleted = c->DeleteEpisodes(request);
        absl::MutexLock lock(&mutex);
        if (!deleted.ok()) {
          episodes[target->first].maybe_deleted = true;
          return;
        }
        episodes[target->first].deleted = true;
        ++deletes;
      }
    });
    threads.emplace_back([&] {  // KV saves
      for (int n = 0; !stop; ++n) {
        const std::string agent = absl::StrCat("kv", n % 3);
        std::vector<uint32_t> tokens(50 + n % 40);
        for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = cycle * 100000 + n * 100 + i;
        absl::Status saved = SaveTinyCache(*c, agent, tokens);
        absl::MutexLock lock(&mutex);
        if (!saved.ok()) {
          caches[agent].maybe_tokens.insert(tokens);
          return;
        }
        caches[agent].tokens = tokens;
        ++saves;
      }
    });
    threads.emplace_back([&] {  // searches, every route
      for (int n = 0; !stop; ++n) {
        v1::SearchRequest search;
        search.set_space("crash");
        search.set_k(10);
        search.set_query_text(absl::StrCat("c", cycle));
        std::vector<float> query = EmbeddingFor(absl::StrCat("q", n));
        search.mutable_query()->Add(query.begin(), query.end());
        search.set_route(n % 3 == 0 ? v1::ROUTE_DELIBERATE : v1::ROUTE_AUTO);
        if (!c->Search(search).ok()) return;
        absl::MutexLock lock(&mutex);
        ++searches;
      }
    });
    threads.emplace_back([&] {  // a compaction, cancelled by the kill or done before
      c->Compact([&](const v1::CompactProgress&) { return !stop; }).IgnoreError();
    });
    absl::SleepFor(absl::Milliseconds(std::uniform_int_distribution<int>(300, 2000)(rng)));
    (*daemon)->Kill9();
    stop = true;
    for (std::thread& thread : threads) thread.join();
  }
  EXPECT_GT(episodes.size(), 0u);
  EXPECT_GT(checked_searches, 0u);
  EXPECT_GT(updates, 0u);
  EXPECT_GT(upserts, 0u);
  EXPECT_GT(deletes, 0u);
  EXPECT_GT(saves, 0u);
  std::cout << "mixed-load kill -9 cycles: " << cycles << "; acknowledged: " << updates
            << " updates, " << upserts << " upserts by key, " << deletes << " deletes, " << saves
            << " KV saves, " << searches
            << " searches; verified after the last restart: " << episodes.size() << " episodes, "
            << caches.size() << " KV caches; index-vs-store searches: " << checked_searches
            << "; deleted to stay under the cap: " << deleted_by_cap << "\n";
}

}  // namespace
}  // namespace engram
