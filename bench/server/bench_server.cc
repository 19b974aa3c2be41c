// bench_server: load generator for engramd over loopback gRPC.
//
// Measures batched PutEpisodes with durable acknowledgement ("put": new
// episodes; "put_keyed": writes by caller key that replace existing episodes,
// the upsert path) and Search at several concurrencies, using gRPC's callback client API:
// `concurrency` calls are kept in flight, each completion starts the next call. By default it
// starts its own engramd (--engramd) on a temporary data dir; --address targets a running one
// instead.
//
// Output: a human table on stderr; with --json one JSON object per line per
// measurement on stdout (operation, concurrency, batch, ops_per_s,
// episodes_per_s, p50_ms, p99_ms, ...).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "bench/common/closed_loop.h"
#include "bench/common/engramd_target.h"
#include "clients/cpp/engram_client.h"

namespace engram::bench {
namespace {

std::vector<float> RandomVector(std::mt19937& rng, int dimension) {
  std::normal_distribution<float> normal;
  std::vector<float> v(dimension);
  for (float& x : v) x = normal(rng);
  return v;
}

// `key_prefix` non-empty: every episode carries a key unique within the
// batch (key_prefix + position), so resending the batch replaces them.
v1::PutEpisodesRequest MakeBatch(std::mt19937& rng, const std::string& space, int batch,
                                 int dimension, int agents, const std::string& key_prefix = "") {
  v1::PutEpisodesRequest request;
  request.set_space(space);
  for (int i = 0; i < batch; ++i) {
    v1::Episode* e = request.add_episodes()->mutable_episode();
    e->set_agent_id(absl::StrCat("agent-", rng() % agents));
    if (!key_prefix.empty()) e->set_key(absl::StrCat(key_prefix, i));
    e->set_text("benchmark episode with a sentence of ordinary length for an agent memory");
    std::vector<float> v = RandomVector(rng, dimension);
    e->mutable_embedding()->Add(v.begin(), v.end());
  }
  return request;
}

// Waits until engramd's indexer has caught up with every acknowledged write
// (Stats: index_health.queued is 0), so that one measurement's backlog does
// not slow or refuse the next one's writes. False after `timeout`.
bool WaitForIndex(client::Client& c, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    absl::StatusOr<v1::StatsResponse> stats = c.Stats();
    if (stats.ok() && stats->index_health().queued() == 0) return true;
    absl::SleepFor(absl::Milliseconds(200));
  }
  return false;
}

}  // namespace
}  // namespace engram::bench

int main(int argc, char** argv) {
  using namespace engram;
  using namespace engram::bench;
  CLI::App app{"bench_server: PutEpisodes and Search load against engramd"};
  std::string address, engramd_path = ENGRAMD_PATH;
  bool json = false, sync_writes = true;
  double duration_s = 3;
  int dimension = 768, search_episodes = 20000, agents = 16;
  std::vector<int> put_concurrency = {1, 4, 16, 64}, batches = {1, 16, 64},
                   search_concurrency = {1, 4, 16};
  app.add_option("--address", address, "use a running engramd instead of starting one");
  app.add_option("--engramd", engramd_path, "engramd binary to start")->capture_default_str();
  app.add_flag("--json", json, "print one JSON object per measurement on stdout");
  app.add_option("--sync-writes", sync_writes, "start engramd with sync_writes")
      ->capture_default_str();
  app.add_option("--duration-s", duration_s, "seconds per measurement")->capture_default_str();
  app.add_option("--dim", dimension, "embedding dimension")->capture_default_str();
  app.add_option("--agents", agents, "distinct agents written to")->capture_default_str();
  app.add_option("--put-concurrency", put_concurrency)->delimiter(',')->capture_default_str();
  app.add_option("--batch", batches)->delimiter(',')->capture_default_str();
  app.add_option("--search-concurrency", search_concurrency)->delimiter(',')->capture_default_str();
  app.add_option("--search-episodes", search_episodes, "episodes in the searched space")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  absl::StatusOr<EngramdTarget> target =
      ConnectOrStart(address, engramd_path, {"--sync-writes", sync_writes ? "true" : "false"});
  if (!target.ok()) {
    std::cerr << "bench_server: " << target.status() << "\n";
    return 1;
  }
  client::Client& c = *target->client;
  std::string run_id = absl::StrCat(absl::ToUnixMicros(absl::Now()));
  std::string put_space = "bench_put_" + run_id, search_space = "bench_search_" + run_id;
  for (const std::string& space : {put_space, search_space}) {
    if (auto s = c.CreateSpace(space, dimension, v1::METRIC_COSINE); !s.ok()) {
      std::cerr << "bench_server: " << s.status() << "\n";
      return 1;
    }
  }

  std::vector<Measurement> results;
  std::mt19937 rng(42);
  absl::Duration duration = absl::Seconds(duration_s);

  // Batched durable writes. Requests are prebuilt so the client measures the
  // server, not its own vector generation. The keyed requests are written
  // once before they are timed, so every timed write replaces an episode.
  for (int batch : batches) {
    for (const bool keyed : {false, true}) {
      if (!WaitForIndex(c, absl::Minutes(5))) {
        std::cerr << "bench_server: the index did not catch up within 5 minutes\n";
        return 1;
      }
      std::vector<v1::PutEpisodesRequest> requests;
      for (int i = 0; i < 64; ++i) {
        requests.push_back(MakeBatch(rng, put_space, batch, dimension, agents,
                                     keyed ? absl::StrCat("b", batch, "-", i, "-") : ""));
        if (keyed) {
          if (auto written = c.PutEpisodes(requests.back()); !written.ok()) {
            std::cerr << "bench_server: " << written.status() << "\n";
            return 1;
          }
        }
      }
      for (int concurrency : put_concurrency) {
        if (!WaitForIndex(c, absl::Minutes(5))) {
          std::cerr << "bench_server: the index did not catch up within 5 minutes\n";
          return 1;
        }
        std::atomic<uint64_t> next{0};
        results.push_back(RunClosedLoop(
            keyed ? "put_keyed" : "put", concurrency, batch, duration, [&](auto done) {
              auto* context = new grpc::ClientContext();
              auto* response = new v1::PutEpisodesResponse();
              const auto& request = requests[next++ % requests.size()];
              c.memory().async()->PutEpisodes(context, &request, response,
                                              [context, response, done](grpc::Status status) {
                                                delete response;
                                                delete context;
                                                done(status.ok());
                                              });
            }));
      }
    }
  }

  // Search over a fixed number of episodes: through the index ("search"),
  // the full-deliberation scan of the in-memory vectors ("search_scan", GPU
  // when engramd has one, else the CPU twin) and by the exact route
  // ("search_exact", every episode read from the store and scored).
  for (int loaded = 0; loaded < search_episodes;) {
    int batch = std::min(256, search_episodes - loaded);
    if (auto s = c.PutEpisodes(MakeBatch(rng, search_space, batch, dimension, agents)); !s.ok()) {
      std::cerr << "bench_server: " << s.status() << "\n";
      return 1;
    }
    loaded += batch;
  }
  std::vector<v1::SearchRequest> queries;
  for (int i = 0; i < 64; ++i) {
    v1::SearchRequest query;
    query.set_space(search_space);
    query.set_k(10);
    std::vector<float> v = RandomVector(rng, dimension);
    query.mutable_query()->Add(v.begin(), v.end());
    queries.push_back(query);
  }
  for (const char* route : {"search", "search_scan", "search_exact"}) {
    for (v1::SearchRequest& query : queries) {
      query.set_exact(std::string(route) == "search_exact");
      query.set_scan(std::string(route) == "search_scan");
    }
    for (int concurrency : search_concurrency) {
      std::atomic<uint64_t> next{0};
      results.push_back(RunClosedLoop(route, concurrency, 1, duration, [&](auto done) {
        auto* context = new grpc::ClientContext();
        auto* response = new v1::SearchResponse();
        c.memory().async()->Search(context, &queries[next++ % queries.size()], response,
                                   [context, response, done](grpc::Status status) {
                                     delete response;
                                     delete context;
                                     done(status.ok());
                                   });
      }));
    }
  }

  std::cerr << absl::StrFormat("%-13s %11s %6s %12s %14s %9s %9s %7s\n", "operation", "concurrency",
                               "batch", "calls/s", "episodes/s", "p50 ms", "p99 ms", "errors");
  for (Measurement& m : results) {
    double ops = m.calls / m.seconds;
    double p50 = Percentile(m.latencies_ms, 0.50), p99 = Percentile(m.latencies_ms, 0.99);
    std::cerr << absl::StrFormat("%-13s %11d %6d %12.0f %14.0f %9.2f %9.2f %7d\n", m.operation,
                                 m.concurrency, m.batch, ops, ops * m.batch, p50, p99, m.errors);
    if (json) {
      nlohmann::json line = {
          {"operation", m.operation},
          {"concurrency", m.concurrency},
          {"batch", m.batch},
          {"ops_per_s", ops},
          {"episodes_per_s", ops * m.batch},
          {"p50_ms", p50},
          {"p99_ms", p99},
          {"calls", m.calls},
          {"errors", m.errors},
          {"seconds", m.seconds},
          {"dimension", dimension},
          {"sync_writes", sync_writes},
          {"search_episodes", m.operation.starts_with("put") ? 0 : search_episodes}};
      std::cout << line.dump() << "\n";
    }
  }
  for (const std::string& space : {put_space, search_space}) (void)c.DeleteSpace(space);
  return 0;
}
