// bench_scanner: the full-deliberation scan through the entry point the
// server uses (index::PartitionScanner::Scan, the route of Search with
// scan=true), on the GPU and on the CPU twin, same partition, same run.
//
// A VectorPartition of --rows x --dim random vectors (no graph) is scanned
//   - one query at a time (latency, median of --reps after a warm-up that
//     also makes the device copy), and
//   - by --threads concurrent callers (throughput; the scanner micro-batches
//     them; the mean batch is scans / launches).
// Output: a table on stderr, JSON lines on stdout with --json.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "absl/strings/str_format.h"
#include "index/partition_scanner.h"

namespace {

using namespace engram::index;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_scanner: PartitionScanner (Search scan route) on the GPU and the CPU twin"};
  size_t rows = 1000000, dim = 768;
  int reps = 20, threads = 64, per_thread = 8, k = 10;
  bool json = false, skip_cpu = false;
  app.add_option("--rows", rows)->capture_default_str();
  app.add_option("--dim", dim)->capture_default_str();
  app.add_option("--reps", reps)->capture_default_str();
  app.add_option("--threads", threads, "concurrent callers")->capture_default_str();
  app.add_option("--per-thread", per_thread, "scans per caller")->capture_default_str();
  app.add_option("-k", k)->capture_default_str();
  app.add_flag("--json", json);
  app.add_flag("--skip-cpu", skip_cpu, "GPU only");
  std::string precision = "fp16";
  app.add_option("--precision", precision, "how the scanner's copies hold vectors")
      ->check(CLI::IsMember({"fp16", "fp32"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  PartitionOptions options;
  options.metric = engram::Metric::kCosine;
  options.dimension = static_cast<uint32_t>(dim);
  options.graph_threshold = 1u << 31;  // a scan target only
  auto partition = std::shared_ptr<VectorPartition>(*VectorPartition::Create(options));
  uint64_t next_id = rows;  // ids of rows added later
  {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    std::vector<float> batch(size_t{4096} * dim);
    std::vector<uint64_t> ids(4096);
    auto start = Clock::now();
    for (size_t first = 0; first < rows; first += 4096) {
      size_t count = std::min<size_t>(4096, rows - first);
      for (size_t i = 0; i < count * dim; ++i) batch[i] = normal(rng);
      for (size_t i = 0; i < count; ++i) ids[i] = first + i;
      if (!partition->AddBatch({ids.data(), count}, {batch.data(), count * dim}).ok()) return 1;
    }
    std::cerr << absl::StrFormat("partition: %d x %d built in %.1f s\n", rows, dim, Seconds(start));
  }
  std::vector<float> queries(size_t(threads) * per_thread * dim);
  {
    std::mt19937 rng(2);
    std::normal_distribution<float> normal;
    for (float& v : queries) v = normal(rng);
  }

  for (bool gpu : {true, false}) {
    if (!gpu && skip_cpu) continue;
    ScannerOptions scanner_options;
    scanner_options.use_gpu = gpu;
    scanner_options.budget_bytes = size_t{16} << 30;
    scanner_options.precision =
        precision == "fp32" ? engram::index::Precision::kFp32 : engram::index::Precision::kFp16;
    PartitionScanner scanner(std::move(scanner_options));
    ScannerStats initial = scanner.Stats();
    if (gpu && initial.backend != "cuda") {
      std::cerr << "no GPU: " << initial.reason << "\n";
      continue;
    }
    std::span<const float> first(queries.data(), dim);
    auto warm = Clock::now();
    if (!scanner.Scan(partition, first, k).ok()) return 1;
    double first_s = Seconds(warm);
    std::vector<double> lone;
    for (int r = 0; r < reps; ++r) {
      std::span<const float> query(&queries[(r % (threads * per_thread)) * dim], dim);
      auto start = Clock::now();
      if (!scanner.Scan(partition, query, k).ok()) return 1;
      lone.push_back(Seconds(start));
    }
    std::sort(lone.begin(), lone.end());
    ScannerStats before = scanner.Stats();
    std::atomic<int> errors{0};
    auto start = Clock::now();
    std::vector<std::thread> callers;
    for (int t = 0; t < threads; ++t) {
      callers.emplace_back([&, t] {
        for (int i = 0; i < per_thread; ++i) {
          std::span<const float> query(&queries[(size_t(t) * per_thread + i) * dim], dim);
          if (!scanner.Scan(partition, query, k).ok()) ++errors;
        }
      });
    }
    for (auto& caller : callers) caller.join();
    double concurrent_s = Seconds(start);
    ScannerStats after = scanner.Stats();
    // Grow the partition past the host tail's limit (1/32 of the copy): the
    // next scan appends the new rows to the copy.
    {
      std::mt19937 rng(3);
      std::normal_distribution<float> normal;
      const size_t added = rows / 32 + 4096;
      std::vector<float> batch(added * dim);
      for (float& v : batch) v = normal(rng);
      std::vector<uint64_t> ids(added);
      for (size_t i = 0; i < added; ++i) ids[i] = next_id++;
      if (!partition->AddBatch(ids, batch).ok()) return 1;
    }
    auto grow_start = Clock::now();
    if (!scanner.Scan(partition, first, k).ok()) return 1;
    const double grow_s = Seconds(grow_start);
    const uint64_t appends = scanner.Stats().appends;
    const double scans = static_cast<double>(after.scans - before.scans);
    const double launches = static_cast<double>(after.launches - before.launches);
    nlohmann::json line = {{"backend", after.backend},
                           {"reason", after.reason},
                           {"precision", precision},
                           {"rows", rows},
                           {"dim", dim},
                           {"k", k},
                           {"first_scan_s", first_s},
                           {"lone_scan_ms", lone[lone.size() / 2] * 1e3},
                           {"threads", threads},
                           {"concurrent_scans", scans},
                           {"concurrent_s", concurrent_s},
                           {"concurrent_scans_per_s", scans / concurrent_s},
                           {"mean_batch", launches > 0 ? scans / launches : 0.0},
                           {"grow_scan_ms", grow_s * 1e3},
                           {"appends", appends},
                           {"errors", errors.load()}};
    std::cerr << absl::StrFormat(
        "%-4s %s  first scan (with upload) %8.1f ms  lone scan %8.3f ms  %d callers: %8.0f scans/s "
        "(mean batch %.1f)  scan after growing by 1/32: %.1f ms (%d appends)\n",
        after.backend, precision, first_s * 1e3, lone[lone.size() / 2] * 1e3, threads,
        scans / concurrent_s, launches > 0 ? scans / launches : 0.0, grow_s * 1e3, appends);
    if (json) std::cout << line.dump() << std::endl;
  }
  return 0;
}
