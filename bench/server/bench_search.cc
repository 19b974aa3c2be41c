// bench_search: Search through engramd over loopback gRPC on a real dataset,
// beside the same index searched in-process, so the service's own cost is a
// measured ratio rather than a guess.
//
// Loads --base (f16bin/fbin, ../shared/data/README.md) through PutEpisodes
// into one agent of one space, waits until the background indexer has every
// vector in the partition, then for each beam width (0: the partition's
// calibrated default) and concurrency (after a compaction, so RocksDB's
// background work does not share the cores) keeps that many Search calls in flight
// (gRPC callback API, closed loop) over the --query vectors and scores each
// answer's recall@10 against --gt (ibin of exact neighbour row numbers).
// The baseline: a VectorPartition with engramd's default index options
// built in this process over the same vectors, searched single-threaded at
// the same beam widths (the "index alone" QPS).
//
// Output: a human table on stderr; with --json one JSON object per line on
// stdout (system, beam_width, concurrency, recall_at_10, qps, p50_ms,
// p99_ms, ...).
#include <CLI/CLI.hpp>
#include <atomic>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/common/closed_loop.h"
#include "bench/common/engramd_target.h"
#include "bench/common/vector_files.h"
#include "clients/cpp/engram_client.h"
#include "index/vector_partition.h"

namespace engram::bench {
namespace {

struct Row {
  std::string system;  // "engramd" or "in-process"
  std::string route;   // engramd: "fast" (the index itself) or "auto" (the router's default)
  uint32_t beam_width = 0;
  int concurrency = 1;
  double recall = 0, qps = 0, p50_ms = 0, p99_ms = 0;
  // engramd: the median of the engine's own time per call (the sum of the
  // response's stage times): the rest of p50_ms is transport and queueing.
  double engine_p50_ms = 0;
  std::map<std::string, double> stage_p50_ms;  // per stage name
  uint64_t calls = 0, errors = 0;
};

double RecallAt10(const std::vector<int32_t>& truth, const std::vector<int64_t>& found_rows) {
  std::set<int32_t> expected(truth.begin(), truth.begin() + std::min<size_t>(10, truth.size()));
  size_t hits = 0;
  for (int64_t row : found_rows) hits += expected.count(static_cast<int32_t>(row));
  return static_cast<double>(hits) / expected.size();
}

v1::Metric MetricFromName(const std::string& name) {
  if (name == "ip") return v1::METRIC_INNER_PRODUCT;
  if (name == "l2") return v1::METRIC_L2;
  return v1::METRIC_COSINE;
}

// Loads every base row into agent "bench"; returns the episode id of each row.
absl::StatusOr<std::vector<uint64_t>> Load(client::Client& c, const std::string& space,
                                           const Matrix& base, int batch) {
  std::vector<uint64_t> ids;
  for (size_t start = 0; start < base.rows; start += batch) {
    v1::PutEpisodesRequest put;
    put.set_space(space);
    for (size_t row = start; row < std::min(base.rows, start + batch); ++row) {
      v1::Episode* e = put.add_episodes()->mutable_episode();
      e->set_agent_id("bench");
      e->mutable_embedding()->Add(base.Row(row), base.Row(row) + base.cols);
    }
    absl::StatusOr<v1::PutEpisodesResponse> put_result = c.PutEpisodes(put);
    if (!put_result.ok()) return put_result.status();
    ids.insert(ids.end(), put_result->ids().begin(), put_result->ids().end());
  }
  return ids;
}

// Waits until no acknowledged write is queued for the index.
absl::StatusOr<v1::PartitionStats> WaitForIndex(client::Client& c) {
  for (;;) {
    absl::StatusOr<v1::StatsResponse> stats = c.Stats();
    if (!stats.ok()) return stats.status();
    if (stats->index_health().queued() == 0 && stats->partitions_size() == 1) {
      return stats->partitions(0);
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
}

std::vector<Row> MeasureService(client::Client& c, const std::string& space, const Matrix& queries,
                                const std::vector<std::vector<int32_t>>& truth,
                                const std::vector<uint64_t>& ids,
                                const std::vector<uint32_t>& beam_widths,
                                const std::vector<int>& concurrencies,
                                const std::vector<std::string>& routes, absl::Duration duration) {
  absl::flat_hash_map<uint64_t, int64_t> row_of_id;
  for (size_t row = 0; row < ids.size(); ++row) row_of_id[ids[row]] = static_cast<int64_t>(row);
  std::vector<Row> rows;
  for (const std::string& route : routes)
    for (uint32_t beam_width : beam_widths) {
      std::vector<v1::SearchRequest> requests(queries.rows);
      for (size_t q = 0; q < queries.rows; ++q) {
        requests[q].set_space(space);
        requests[q].set_k(10);
        requests[q].set_beam_width(beam_width);
        requests[q].set_route(route == "auto" ? v1::ROUTE_AUTO : v1::ROUTE_FAST);
        requests[q].mutable_query()->Add(queries.Row(q), queries.Row(q) + queries.cols);
      }
      for (int concurrency : concurrencies) {
        std::atomic<uint64_t> next{0};
        absl::Mutex recall_mutex;
        double recall_sum = 0;
        uint64_t scored = 0;
        std::vector<double> engine_ms;
        std::map<std::string, std::vector<double>> stage_ms;
        Measurement m = RunClosedLoop("search", concurrency, 1, duration, [&](auto done) {
          const size_t q = next++ % requests.size();
          auto* context = new grpc::ClientContext();
          auto* response = new v1::SearchResponse();
          c.memory().async()->Search(
              context, &requests[q], response,
              [&, q, context, response, done](grpc::Status status) {
                if (status.ok()) {
                  std::vector<int64_t> found;
                  for (const auto& hit : response->hits())
                    found.push_back(row_of_id[hit.episode().id()]);
                  int64_t micros = 0;
                  absl::MutexLock lock(&recall_mutex);
                  for (const auto& stage : response->stages()) {
                    micros += stage.micros();
                    stage_ms[stage.name()].push_back(stage.micros() / 1000.0);
                  }
                  recall_sum += RecallAt10(truth[q], found);
                  engine_ms.push_back(micros / 1000.0);
                  ++scored;
                }
                delete response;
                delete context;
                done(status.ok());
              });
        });
        Row row;
        row.system = "engramd";
        row.route = route;
        row.beam_width = beam_width;
        row.concurrency = concurrency;
        row.recall = scored == 0 ? 0 : recall_sum / scored;
        row.qps = m.calls / m.seconds;
        row.p50_ms = Percentile(m.latencies_ms, 0.50);
        row.p99_ms = Percentile(m.latencies_ms, 0.99);
        row.engine_p50_ms = Percentile(engine_ms, 0.50);
        for (auto& [name, times] : stage_ms) row.stage_p50_ms[name] = Percentile(times, 0.50);
        row.calls = m.calls;
        row.errors = m.errors;
        rows.push_back(row);
      }
    }
  return rows;
}

// engramd's default index options, built here over the same vectors.
std::vector<Row> MeasureInProcess(const Matrix& base, int batch, const Matrix& queries,
                                  const std::vector<std::vector<int32_t>>& truth, Metric metric,
                                  const std::vector<uint32_t>& beam_widths,
                                  absl::Duration duration) {
  index::PartitionOptions options;
  options.metric = metric;
  options.dimension = static_cast<uint32_t>(base.cols);
  auto partition = index::VectorPartition::Create(options);
  if (!partition.ok()) return {};
  // Built as engramd builds it: batch after batch as the puts arrive.
  for (size_t start = 0; start < base.rows; start += batch) {
    const size_t count = std::min<size_t>(batch, base.rows - start);
    std::vector<uint64_t> ids(count);
    for (size_t i = 0; i < count; ++i) ids[i] = start + i;
    if (!(*partition)->AddBatch(ids, {base.Row(start), count * base.cols}).ok()) return {};
  }
  std::vector<Row> rows;
  for (uint32_t beam_width : beam_widths) {
    std::vector<double> latencies;
    double recall_sum = 0;
    const absl::Time start = absl::Now();
    size_t calls = 0;
    while (absl::Now() - start < duration) {
      const size_t q = calls++ % queries.rows;
      const absl::Time call_start = absl::Now();
      auto found =
          (*partition)
              ->Search(
                  {.query = {queries.Row(q), queries.cols}, .k = 10, .beam_width = beam_width});
      latencies.push_back(absl::ToDoubleMilliseconds(absl::Now() - call_start));
      std::vector<int64_t> rows_found;
      if (found.ok()) {
        for (const index::ScoredId& hit : *found)
          rows_found.push_back(static_cast<int64_t>(hit.id));
      }
      recall_sum += RecallAt10(truth[q], rows_found);
    }
    Row row;
    row.system = "in-process";
    row.beam_width = beam_width;
    row.recall = recall_sum / calls;
    row.qps = calls / absl::ToDoubleSeconds(absl::Now() - start);
    row.p50_ms = Percentile(latencies, 0.50);
    row.p99_ms = Percentile(latencies, 0.99);
    row.calls = calls;
    rows.push_back(row);
  }
  return rows;
}

}  // namespace
}  // namespace engram::bench

int main(int argc, char** argv) {
  using namespace engram;
  using namespace engram::bench;
  CLI::App app{"bench_search: Search through engramd vs the index in-process, on a dataset"};
  std::string address, engramd_path = ENGRAMD_PATH, base_path, query_path, gt_path;
  std::string metric_name = "cosine";
  bool json = false, in_process = true, sync_writes = true, rebuild = false;
  double duration_s = 5;
  int batch = 512;
  std::vector<uint32_t> beam_widths = {0};
  std::vector<int> concurrencies = {1, 4, 16};
  app.add_option("--base", base_path, "base vectors (.f16bin or .fbin)")->required();
  app.add_option("--query", query_path, "query vectors (.f16bin or .fbin)")->required();
  app.add_option("--gt", gt_path, "exact neighbour rows of each query (.ibin)")->required();
  app.add_option("--metric", metric_name, "cosine, ip or l2")->capture_default_str();
  app.add_option("--address", address, "use a running engramd instead of starting one");
  app.add_option("--engramd", engramd_path, "engramd binary to start")->capture_default_str();
  app.add_option("--sync-writes", sync_writes, "start engramd with sync_writes")
      ->capture_default_str();
  app.add_option("--beam-widths", beam_widths, "0: calibrated")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--concurrency", concurrencies)->delimiter(',')->capture_default_str();
  std::vector<std::string> routes = {"fast"};
  app.add_option("--routes", routes,
                 "fast (the index itself) and/or auto (the router's default: the fast path "
                 "and the quality gate)")
      ->delimiter(',')
      ->check(CLI::IsMember({"fast", "auto"}))
      ->capture_default_str();
  app.add_option("--duration-s", duration_s, "seconds per measurement")->capture_default_str();
  app.add_option("--batch", batch, "episodes per PutEpisodes while loading")->capture_default_str();
  app.add_option("--in-process", in_process, "also measure the index in this process")
      ->capture_default_str();
  app.add_flag("--rebuild", rebuild,
               "rebuild the index after loading (one batch build instead of the "
               "incremental one the puts made); the in-process baseline likewise");
  app.add_flag("--json", json, "print one JSON object per measurement on stdout");
  CLI11_PARSE(app, argc, argv);

  Matrix base, queries;
  std::vector<std::vector<int32_t>> truth;
  try {
    base = ReadVectors(base_path);
    queries = ReadVectors(query_path);
    truth = ReadIds(gt_path);
  } catch (const std::exception& error) {
    std::cerr << "bench_search: " << error.what() << "\n";
    return 1;
  }
  if (truth.size() != queries.rows) {
    std::cerr << "bench_search: " << truth.size() << " ground-truth rows for " << queries.rows
              << " queries\n";
    return 1;
  }
  absl::StatusOr<EngramdTarget> target =
      ConnectOrStart(address, engramd_path, {"--sync-writes", sync_writes ? "true" : "false"});
  if (!target.ok()) {
    std::cerr << "bench_search: " << target.status() << "\n";
    return 1;
  }
  client::Client& c = *target->client;
  const std::string space = absl::StrCat("bench_search_", absl::ToUnixMicros(absl::Now()));
  if (auto s = c.CreateSpace(space, static_cast<uint32_t>(base.cols), MetricFromName(metric_name));
      !s.ok()) {
    std::cerr << "bench_search: " << s.status() << "\n";
    return 1;
  }
  const absl::Time load_start = absl::Now();
  absl::StatusOr<std::vector<uint64_t>> ids = Load(c, space, base, batch);
  if (!ids.ok()) {
    std::cerr << "bench_search: loading: " << ids.status() << "\n";
    return 1;
  }
  absl::StatusOr<v1::PartitionStats> partition = WaitForIndex(c);
  if (!partition.ok()) {
    std::cerr << "bench_search: " << partition.status() << "\n";
    return 1;
  }
  const double load_s = absl::ToDoubleSeconds(absl::Now() - load_start);
  if (rebuild) {
    if (absl::Status rebuilt =
            c.RebuildIndex(space, [](const v1::RebuildIndexProgress&) { return true; });
        !rebuilt.ok()) {
      std::cerr << "bench_search: rebuilding: " << rebuilt << "\n";
      return 1;
    }
    partition = WaitForIndex(c);
    if (!partition.ok()) {
      std::cerr << "bench_search: " << partition.status() << "\n";
      return 1;
    }
  }
  // Settle the store first: RocksDB's flushes and compactions after a bulk
  // load would otherwise share the cores with the searches being measured.
  if (absl::Status compacted = c.Compact([](const v1::CompactProgress&) { return true; });
      !compacted.ok()) {
    std::cerr << "bench_search: compacting: " << compacted << "\n";
    return 1;
  }
  std::cerr << absl::StrFormat(
      "loaded %d x %d in %.1f s (indexed): first stage %s, calibrated L %d, sample recall %.3f\n",
      base.rows, base.cols, load_s, partition->first_stage(), partition->beam_width(),
      partition->sample_recall());

  const absl::Duration duration = absl::Seconds(duration_s);
  std::vector<Row> rows =
      MeasureService(c, space, queries, truth, *ids, beam_widths, concurrencies, routes, duration);
  (void)c.DeleteSpace(space);
  if (in_process) {
    const Metric metric = metric_name == "ip"   ? Metric::kInnerProduct
                          : metric_name == "l2" ? Metric::kL2
                                                : Metric::kCosine;
    std::vector<Row> local = MeasureInProcess(base, rebuild ? static_cast<int>(base.rows) : batch,
                                              queries, truth, metric, beam_widths, duration);
    rows.insert(rows.end(), local.begin(), local.end());
  }

  std::cerr << absl::StrFormat("%-11s %-5s %5s %11s %9s %9s %8s %8s %10s\n", "system", "route", "L",
                               "concurrency", "recall@10", "QPS", "p50 ms", "p99 ms", "engine ms");
  for (const Row& row : rows) {
    std::cerr << absl::StrFormat("%-11s %-5s %5d %11d %9.4f %9.0f %8.3f %8.3f %10.3f\n", row.system,
                                 row.route, row.beam_width, row.concurrency, row.recall, row.qps,
                                 row.p50_ms, row.p99_ms, row.engine_p50_ms);
    if (json) {
      nlohmann::json line = {{"bench", "search"},
                             {"system", row.system},
                             {"route", row.route},
                             {"base", base_path},
                             {"rows", base.rows},
                             {"dimension", base.cols},
                             {"metric", metric_name},
                             {"beam_width", row.beam_width},
                             {"calibrated_beam_width", partition->beam_width()},
                             {"concurrency", row.concurrency},
                             {"recall_at_10", row.recall},
                             {"qps", row.qps},
                             {"p50_ms", row.p50_ms},
                             {"p99_ms", row.p99_ms},
                             {"engine_p50_ms", row.engine_p50_ms},
                             {"stage_p50_ms", row.stage_p50_ms},
                             {"calls", row.calls},
                             {"errors", row.errors},
                             {"load_s", load_s},
                             {"rebuilt", rebuild},
                             {"address", address.empty() ? "tcp loopback" : address}};
      std::cout << line.dump() << "\n";
    }
  }
  return 0;
}
