// Overload and soak: a mixed workload through engramd at one concurrency
// for a fixed time, recording what a user feels and what the server costs.
//
// Each of `--concurrency` client threads loops over a mix of calls
// (PutEpisodes of 8 episodes, Search with route AUTO, GetEpisode,
// ListEpisodes) until the time is up. Once `--max-episodes` are stored,
// puts become UpdateEpisode calls (`--when-full update`: the episode count
// stays flat, but every update keeps its old version in the history), or
// each put deletes one episode and puts one (`--when-full replace`: the
// data itself stays the same size, so a growing RSS means a leak). Beside them a prober calls
// GetSpace and the health check every 50 ms, as a dashboard or a load balancer would, and a sampler
// reads engramd's RSS every second (and the data dir's size every minute). After the load, the
// prober runs 10 s more to show recovery.
//
// Prints a table per run and one `--json` line per run:
//   bench_soak --concurrency 1,16,64,256 --seconds 600
//   bench_soak --concurrency 16 --seconds 600 --when-full replace
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/common/closed_loop.h"
#include "clients/cpp/engram_client.h"
#include "tests/util/daemon_process.h"
#include "tests/util/temp_dir.h"

namespace engram::bench {
namespace {

constexpr int kDimension = 128;
constexpr int kAgents = 16;
constexpr int kBatch = 8;

// engramd's resident set in MiB.
double RssMiB(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0;
}

// Bytes under `dir` (the data dir: RocksDB's files and the index
// snapshots) in MiB. Files vanish while it walks (compactions): skipped.
double DirMiB(const std::string& dir) {
  std::error_code ec;
  uint64_t bytes = 0;
  for (std::filesystem::recursive_directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code size_error;
    const uint64_t size = it->is_regular_file(size_error) ? it->file_size(size_error) : 0;
    if (!size_error) bytes += size;
  }
  return bytes / (1024.0 * 1024.0);
}

struct ClassStats {
  std::vector<double> latencies_ms;
  std::map<std::string, uint64_t> errors;  // by status code name
};

std::string CodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

std::vector<float> RandomVector(std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> v(kDimension);
  for (float& x : v) x = normal(rng) * 3.0f;  // not unit length
  return v;
}

nlohmann::json Run(const std::string& engramd, const std::string& engramd_config, int concurrency,
                   int seconds, uint64_t max_episodes, bool replace_when_full, bool print_json) {
  testing::TempDir dir;
  std::vector<std::string> args;
  if (!engramd_config.empty()) args = {"--config", engramd_config};
  auto daemon = testing::DaemonProcess::Start(dir.Sub("data"), args, engramd);
  if (!daemon.ok()) {
    std::cerr << "engramd: " << daemon.status() << "\n";
    std::exit(1);
  }
  client::ClientOptions options;
  options.address = (*daemon)->address();
  options.timeout = absl::Seconds(10);
  client::Client c(options);
  c.WaitForConnected(absl::Seconds(10));
  if (!c.CreateSpace("soak", kDimension, v1::METRIC_COSINE).ok()) std::exit(1);

  absl::Mutex mutex;
  std::map<std::string, ClassStats> classes;  // guarded by mutex
  std::vector<uint64_t> ids;                  // guarded by mutex
  std::atomic<uint64_t> stored{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> stop_probe{false};
  const absl::Time start = absl::Now();
  const absl::Time end = start + absl::Seconds(seconds);

  auto record = [&](const std::string& name, absl::Time began, const absl::Status& status) {
    const double ms = absl::ToDoubleMilliseconds(absl::Now() - began);
    absl::MutexLock lock(&mutex);
    ClassStats& stats = classes[name];
    stats.latencies_ms.push_back(ms);
    if (!status.ok()) ++stats.errors[CodeName(status.code())];
  };

  std::vector<std::thread> workers;
  for (int t = 0; t < concurrency; ++t) {
    workers.emplace_back([&, t] {
      std::mt19937 rng(t + 1);
      for (uint64_t n = 0; absl::Now() < end; ++n) {
        const int pick = rng() % 10;
        const std::string agent = absl::StrFormat("agent-%d", rng() % kAgents);
        absl::Time began = absl::Now();
        if (pick < 4 && stored.load() >= max_episodes && replace_when_full) {
          // The store is full: delete one episode and put one in its place,
          // so that the data (history and index included) stays the same
          // size and a growing RSS means a leak.
          uint64_t id = 0;
          {
            absl::MutexLock lock(&mutex);
            if (ids.empty()) continue;
            const size_t at = rng() % ids.size();
            id = ids[at];
            ids[at] = ids.back();
            ids.pop_back();
          }
          v1::DeleteEpisodesRequest remove;
          remove.set_space("soak");
          remove.mutable_ids()->add_ids(id);
          absl::Status status = c.DeleteEpisodes(remove).status();
          v1::PutEpisodesRequest put;
          put.set_space("soak");
          v1::Episode* e = put.add_episodes()->mutable_episode();
          e->set_agent_id(agent);
          e->set_text(absl::StrFormat("thread %d call %d replaced %d", t, n, id));
          std::vector<float> v = RandomVector(rng);
          e->mutable_embedding()->Add(v.begin(), v.end());
          const bool deleted = status.ok();
          absl::StatusOr<v1::PutEpisodesResponse> response = c.PutEpisodes(put);
          if (status.ok()) status = response.status();
          record("replace", began, status);
          absl::MutexLock lock(&mutex);
          if (response.ok()) ids.push_back(response->ids(0));
          if (!deleted) ids.push_back(id);  // still stored
        } else if (pick < 4 && stored.load() >= max_episodes) {
          // The store is full: writes become updates, so the data stays the
          // same size and RSS can show a leak rather than growth.
          uint64_t id = 0;
          {
            absl::MutexLock lock(&mutex);
            id = ids[rng() % ids.size()];
          }
          v1::UpdateEpisodeRequest update;
          update.set_space("soak");
          update.set_id(id);
          update.mutable_episode()->set_text(absl::StrFormat("thread %d call %d updated", t, n));
          std::vector<float> v = RandomVector(rng);
          update.mutable_episode()->mutable_embedding()->Add(v.begin(), v.end());
          update.add_update_mask("text");
          update.add_update_mask("embedding");
          record("update", began, c.UpdateEpisode(update).status());
        } else if (pick < 4) {
          v1::PutEpisodesRequest put;
          put.set_space("soak");
          for (int i = 0; i < kBatch; ++i) {
            v1::Episode* e = put.add_episodes()->mutable_episode();
            e->set_agent_id(agent);
            e->set_text(absl::StrFormat("thread %d call %d note %d about the soak", t, n, i));
            std::vector<float> v = RandomVector(rng);
            e->mutable_embedding()->Add(v.begin(), v.end());
          }
          auto response = c.PutEpisodes(put);
          record("put", began, response.status());
          if (response.ok()) {
            stored += response->ids_size();
            absl::MutexLock lock(&mutex);
            ids.insert(ids.end(), response->ids().begin(), response->ids().end());
          }
        } else if (pick < 8) {
          v1::SearchRequest search;
          search.set_space("soak");
          search.set_k(10);
          std::vector<float> v = RandomVector(rng);
          search.mutable_query()->Add(v.begin(), v.end());
          if (pick % 2) search.mutable_filter()->set_agent_id(agent);
          record("search", began, c.Search(search).status());
        } else if (pick == 8) {
          uint64_t id = 0;
          {
            absl::MutexLock lock(&mutex);
            if (!ids.empty()) id = ids[rng() % ids.size()];
          }
          if (id == 0) continue;
          record("get", began, c.GetEpisode("soak", id).status());
        } else {
          v1::ListEpisodesRequest list;
          list.set_space("soak");
          list.mutable_filter()->set_agent_id(agent);
          list.set_page_size(20);
          record("list", began, c.ListEpisodes(list).status());
        }
      }
    });
  }
  // The prober: GetSpace and health every 50 ms, during the load and 10 s after.
  std::vector<double> probe_load_ms, probe_after_ms;
  std::map<std::string, uint64_t> probe_errors;
  std::thread prober([&] {
    while (!stop_probe) {
      absl::Time began = absl::Now();
      absl::Status space = c.GetSpace("soak").status();
      absl::Status health = c.CheckHealth();
      const double ms = absl::ToDoubleMilliseconds(absl::Now() - began) / 2;
      {
        absl::MutexLock lock(&mutex);
        (stop ? probe_after_ms : probe_load_ms).push_back(ms);
        if (!space.ok()) ++probe_errors[CodeName(space.code())];
        if (!health.ok()) ++probe_errors[CodeName(health.code())];
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  });
  std::vector<std::pair<double, double>> rss;  // (seconds, MiB)
  std::vector<double> disk_by_minute;          // the data dir's MiB at each whole minute
  while (absl::Now() < end) {
    const double at = absl::ToDoubleSeconds(absl::Now() - start);
    rss.emplace_back(at, RssMiB((*daemon)->pid()));
    if (at >= 60.0 * (disk_by_minute.size() + 1)) disk_by_minute.push_back(DirMiB(dir.Sub("data")));
    absl::SleepFor(absl::Seconds(1));
  }
  for (std::thread& w : workers) w.join();
  stop = true;
  const double load_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (int i = 0; i < 10; ++i) {
    rss.emplace_back(absl::ToDoubleSeconds(absl::Now() - start), RssMiB((*daemon)->pid()));
    absl::SleepFor(absl::Seconds(1));
  }
  stop_probe = true;
  prober.join();
  auto space = c.GetSpace("soak");
  const int exit_code = (*daemon)->Terminate();

  // RSS growth over the second half of the load, in MiB per minute.
  std::vector<std::pair<double, double>> half;
  for (const auto& sample : rss) {
    if (sample.first >= load_seconds / 2 && sample.first <= load_seconds) half.push_back(sample);
  }
  double slope = 0;
  if (half.size() >= 2) {
    double mx = 0, my = 0;
    for (const auto& [x, y] : half) mx += x, my += y;
    mx /= half.size();
    my /= half.size();
    double sxy = 0, sxx = 0;
    for (const auto& [x, y] : half) sxy += (x - mx) * (y - my), sxx += (x - mx) * (x - mx);
    slope = sxx > 0 ? sxy / sxx * 60 : 0;
  }
  double rss_max = 0;
  for (const auto& sample : rss) rss_max = std::max(rss_max, sample.second);

  nlohmann::json out = {{"bench", "soak"},
                        {"concurrency", concurrency},
                        {"when_full", replace_when_full ? "replace" : "update"},
                        {"seconds", load_seconds},
                        {"episodes_stored", space.ok() ? space->episode_count() : 0},
                        {"clean_exit", exit_code == 0}};
  std::cout << absl::StrFormat("\nconcurrency %d, %.0f s, %d episodes stored, clean exit: %s\n",
                               concurrency, load_seconds, space.ok() ? space->episode_count() : 0,
                               exit_code == 0 ? "yes" : "NO");
  std::cout << absl::StrFormat("%-8s %10s %10s %10s %10s  %s\n", "call", "calls/s", "p50 ms",
                               "p99 ms", "max ms", "errors");
  for (auto& [name, stats] : classes) {
    std::string errors;
    for (const auto& [code, count] : stats.errors) {
      errors += absl::StrFormat("%s%s=%d", errors.empty() ? "" : " ", code, count);
    }
    const double qps = stats.latencies_ms.size() / load_seconds;
    const double p50 = Percentile(stats.latencies_ms, 0.50);
    const double p99 = Percentile(stats.latencies_ms, 0.99);
    const double max = Percentile(stats.latencies_ms, 1.0);
    std::cout << absl::StrFormat("%-8s %10.1f %10.2f %10.2f %10.1f  %s\n", name, qps, p50, p99, max,
                                 errors.empty() ? "-" : errors);
    out["calls"][name] = {{"per_s", qps},           {"p50_ms", p50},
                          {"p99_ms", p99},          {"max_ms", max},
                          {"errors", stats.errors}, {"count", stats.latencies_ms.size()}};
  }
  const double probe_p50 = Percentile(probe_load_ms, 0.5),
               probe_p99 = Percentile(probe_load_ms, 0.99);
  const double after_p99 = Percentile(probe_after_ms, 0.99);
  std::cout << absl::StrFormat(
      "probe (GetSpace, health) under load: p50 %.2f ms, p99 %.2f ms, max %.1f ms; after the "
      "load: p99 %.2f ms; probe errors: %d\n",
      probe_p50, probe_p99, Percentile(probe_load_ms, 1.0), after_p99, probe_errors.size());
  std::cout << absl::StrFormat(
      "engramd RSS: %.0f MiB at start, %.0f MiB max, %.0f MiB at the end of the load, %.0f MiB "
      "10 s later; second half of the load: %+.1f MiB/min\n",
      rss.empty() ? 0 : rss.front().second, rss_max, half.empty() ? 0 : half.back().second,
      rss.empty() ? 0 : rss.back().second, slope);
  out["probe"] = {{"p50_ms", probe_p50},
                  {"p99_ms", probe_p99},
                  {"max_ms", Percentile(probe_load_ms, 1.0)},
                  {"after_load_p99_ms", after_p99},
                  {"errors", probe_errors}};
  // RSS at each whole minute of the load, to tell a plateau from growth.
  std::vector<double> by_minute;
  for (const auto& [at, mib] : rss) {
    if (at <= load_seconds && at >= 60.0 * (by_minute.size() + 1)) by_minute.push_back(mib);
  }
  std::string minutes;
  for (double mib : by_minute)
    minutes += absl::StrFormat("%s%.0f", minutes.empty() ? "" : " ", mib);
  std::cout << "engramd RSS at each minute (MiB): " << minutes << "\n";
  out["rss_mib_by_minute"] = by_minute;
  std::string disk;
  for (double mib : disk_by_minute) disk += absl::StrFormat("%s%.0f", disk.empty() ? "" : " ", mib);
  std::cout << "data dir at each minute (MiB): " << disk << "\n";
  out["data_dir_mib_by_minute"] = disk_by_minute;
  out["rss_mib"] = {{"start", rss.empty() ? 0 : rss.front().second},
                    {"max", rss_max},
                    {"end_of_load", half.empty() ? 0 : half.back().second},
                    {"after", rss.empty() ? 0 : rss.back().second},
                    {"second_half_mib_per_min", slope}};
  if (print_json) std::cout << out.dump() << "\n";
  std::cout.flush();  // each run's lines as soon as it ends, also into a file
  return out;
}

}  // namespace
}  // namespace engram::bench

int main(int argc, char** argv) {
  CLI::App app{"bench_soak: a mixed workload through engramd per concurrency, with RSS"};
  std::string levels = "1,16,64,256";
  int seconds = 600;
  bool json = false;
  std::string engramd = ENGRAMD_PATH;
  app.add_option("--concurrency", levels, "comma-separated client thread counts")
      ->capture_default_str();
  app.add_option("--seconds", seconds, "load duration per concurrency")->capture_default_str();
  app.add_option("--engramd", engramd, "engramd binary")->capture_default_str();
  std::string engramd_config;
  app.add_option("--engramd-config", engramd_config,
                 "a config file for engramd (e.g. a smaller block_cache_mb)");
  uint64_t max_episodes = 100000;
  app.add_option("--max-episodes", max_episodes,
                 "once this many are stored, writes become updates (data size stays flat)")
      ->capture_default_str();
  std::string when_full = "update";
  app.add_option("--when-full", when_full,
                 "update: writes update episodes (history grows); replace: each write deletes "
                 "one episode and puts one (the data stays the same size)")
      ->check(CLI::IsMember({"update", "replace"}))
      ->capture_default_str();
  app.add_flag("--json", json, "print one JSON line per run");
  CLI11_PARSE(app, argc, argv);
  for (const std::string& level : std::vector<std::string>(absl::StrSplit(levels, ','))) {
    engram::bench::Run(engramd, engramd_config, std::stoi(level), seconds, max_episodes,
                       when_full == "replace", json);
  }
  return 0;
}
