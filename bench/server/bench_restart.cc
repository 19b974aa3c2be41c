// bench_restart: how long engramd takes to come back with a large indexed
// space. Fills one space (one agent, so one partition and one graph) through
// gRPC, stops engramd with SIGTERM (which writes the index snapshot), starts
// it again and measures until it serves; then checks through Stats that the
// index came from its snapshot (nothing rebuilt or re-read) and that a search
// answers from the index.
//
// Vectors come from bench_ann's synthetic generator (bench/common/synthetic.h,
// modelled on LaBSE), 768-d, cosine.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/common/synthetic.h"
#include "clients/cpp/engram_client.h"
#include "tests/util/daemon_process.h"
#include "tests/util/temp_dir.h"

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace engram;
  CLI::App app{"bench_restart: engramd restart time with a large indexed space"};
  int episodes = 1000000, dim = 768, writers = 4, batch = 512;
  std::string dir;
  bool json = false;
  app.add_option("--episodes", episodes, "episodes in the space")->capture_default_str();
  app.add_option("--dim", dim)->capture_default_str();
  app.add_option("--writers", writers, "concurrent PutEpisodes callers")->capture_default_str();
  app.add_option("--batch", batch, "episodes per PutEpisodes")->capture_default_str();
  app.add_option("--dir", dir, "work directory (default: a temporary one, removed after)");
  app.add_flag("--json", json, "one JSON object on stdout");
  CLI11_PARSE(app, argc, argv);

  std::unique_ptr<testing::TempDir> temporary;
  if (dir.empty()) {
    temporary = std::make_unique<testing::TempDir>();
    dir = temporary->path();
  }
  const std::string data_dir = dir + "/data";
  const std::vector<std::string> args = {"--worker-threads", "8"};
  auto start = [&]() -> std::unique_ptr<testing::DaemonProcess> {
    auto daemon = testing::DaemonProcess::Start(data_dir, args);
    if (!daemon.ok()) {
      std::cerr << "bench_restart: " << daemon.status() << "\n";
      std::exit(1);
    }
    return *std::move(daemon);
  };
  auto connect = [](const testing::DaemonProcess& daemon) {
    client::ClientOptions options;
    options.address = daemon.address();
    options.timeout = absl::Seconds(600);
    auto c = std::make_unique<client::Client>(options);
    c->WaitForConnected(absl::Seconds(30));
    return c;
  };

  std::unique_ptr<testing::DaemonProcess> daemon = start();
  std::unique_ptr<client::Client> c = connect(*daemon);
  if (auto s = c->CreateSpace("restart", dim, v1::METRIC_COSINE); !s.ok()) {
    std::cerr << "bench_restart: " << s.status() << "\n";
    return 1;
  }
  bench::Matrix vectors, queries;
  bench::MakeSynthetic(episodes, 1, dim, std::max(1, episodes / 1000), 42, &vectors, &queries);
  auto fill_start = Clock::now();
  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&] {
      for (;;) {
        int first = next.fetch_add(batch);
        if (first >= episodes || failed) return;
        v1::PutEpisodesRequest put;
        put.set_space("restart");
        for (int i = first; i < std::min(first + batch, episodes); ++i) {
          v1::Episode* e = put.add_episodes()->mutable_episode();
          e->set_agent_id("agent");
          e->set_text("restart benchmark episode");
          e->mutable_embedding()->Add(vectors.Row(i), vectors.Row(i) + dim);
        }
        if (auto s = c->PutEpisodes(put); !s.ok()) {
          std::cerr << "bench_restart: " << s.status() << "\n";
          failed = true;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  if (failed) return 1;
  const double fill_s = Seconds(fill_start);
  auto indexed_start = Clock::now();
  auto stats = c->Stats();  // returns once every write is in the index
  const double index_drain_s = Seconds(indexed_start);
  if (!stats.ok() || stats->partitions_size() != 1) {
    std::cerr << "bench_restart: no partition after the fill\n";
    return 1;
  }
  const v1::PartitionStats before = stats->partitions(0);

  c.reset();
  auto stop_start = Clock::now();
  const int exit_code = daemon->Terminate();
  const double stop_s = Seconds(stop_start);
  auto restart_start = Clock::now();
  daemon = start();
  const double restart_s = Seconds(restart_start);
  c = connect(*daemon);
  auto after = c->Stats();
  v1::SearchRequest search;
  search.set_space("restart");
  search.set_k(10);
  search.mutable_query()->Add(queries.Row(0), queries.Row(0) + dim);
  auto found = c->Search(search);
  if (!after.ok() || !found.ok() || exit_code != 0) {
    std::cerr << "bench_restart: restart check failed\n";
    return 1;
  }
  const v1::IndexLoadStats& load = after->index_load();
  nlohmann::json line = {{"episodes", episodes},
                         {"dim", dim},
                         {"fill_s", fill_s},
                         {"fill_episodes_per_s", episodes / fill_s},
                         {"index_drain_s", index_drain_s},
                         {"first_stage", before.first_stage()},
                         {"beam_width", before.beam_width()},
                         {"sample_recall", before.sample_recall()},
                         {"stop_s", stop_s},
                         {"restart_s", restart_s},
                         {"vectors_from_snapshots", load.vectors_from_snapshots()},
                         {"vectors_read_from_store", load.vectors_read_from_store()},
                         {"spaces_rebuilt", load.spaces_rebuilt()},
                         {"search_route", found->route()}};
  if (json) {
    std::cout << line.dump() << std::endl;
  } else {
    std::cout << line.dump(2) << std::endl;
  }
  return 0;
}
