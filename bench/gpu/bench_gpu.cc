// bench_gpu: the batched exact searcher on the GPU next to its CPU twin, on
// the same data in the same run, and next to the bytes-moved floor given by
// the measured device-to-device copy bandwidth.
//
// Every time is the library entry point the server uses (host preparation,
// uploads of queries and candidate lists, kernels, download), median of
// --reps runs after a warm-up. Queries and candidate lists are handed over in
// the searcher's staging memory (QueryStaging / CandidateStaging, filled
// before the timing; --no-staging passes ordinary vectors). "floor_gb" counts
// the bytes that must cross device memory at least once: the candidates'
// rows (rerank) or the whole partition (scan), in fp16 (fp32 with --precision
// fp32). achieved_gb_per_s = floor_gb / time.
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "absl/strings/str_format.h"
#include "index/exact_batch.h"
#include "index/gpu/cuda_exact_batch.h"

namespace {

using engram::Metric;
using engram::index::ExactBatchSearcher;
using engram::index::Precision;

template <typename Fn>
double MedianSeconds(int reps, Fn&& fn) {
  fn();  // warm-up
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    auto start = std::chrono::steady_clock::now();
    fn();
    times.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double CopyBandwidthGbPerS() {
  size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  cudaMalloc(&a, bytes);
  cudaMalloc(&b, bytes);
  cudaMemset(a, 1, bytes);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> ms;
  for (int i = 0; i < 11; ++i) {
    cudaEventRecord(start);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (ms[ms.size() / 2] * 1e-3) / 1e9;  // read + write
}

std::vector<float> Gaussian(std::mt19937& rng, size_t count) {
  std::normal_distribution<float> normal;
  std::vector<float> v(count);
  for (float& x : v) x = normal(rng);
  return v;
}

// The searcher's staging memory holding a copy of `values` (queries or
// candidate rows), or `values` itself without staging. Filled before the
// timing starts: a caller builds its batch in one place or the other.
const float* Stage(ExactBatchSearcher* s, const std::vector<float>& values, bool staging) {
  float* buffer = staging ? s->QueryStaging(values.size()) : nullptr;
  if (buffer == nullptr) return values.data();
  std::copy(values.begin(), values.end(), buffer);
  return buffer;
}
const uint32_t* Stage(ExactBatchSearcher* s, const std::vector<uint32_t>& values, bool staging) {
  uint32_t* buffer = staging ? s->CandidateStaging(values.size()) : nullptr;
  if (buffer == nullptr) return values.data();
  std::copy(values.begin(), values.end(), buffer);
  return buffer;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_gpu: GPU rerank and exhaustive scan vs the CPU twin"};
  bool json = false, quick = false;
  int reps = 20;
  app.add_flag("--json", json, "one JSON object per measurement on stdout");
  app.add_flag("--quick", quick, "fewer sizes (a smoke run)");
  app.add_option("--reps", reps, "timed repetitions per GPU measurement")->capture_default_str();
  std::string only;
  std::vector<size_t> scan_rows_option, scan_batches_option, rerank_dims_option,
      rerank_batches_option, rerank_candidates_option;
  app.add_option("--rerank-dims", rerank_dims_option, "rerank dimensions (default 384, 768, 1536)");
  app.add_option("--rerank-batches", rerank_batches_option, "rerank batches (default 1..1024)");
  app.add_option("--rerank-candidates", rerank_candidates_option,
                 "candidates per query (default 64, 256, 1024)");
  bool no_cpu = false;
  size_t score_tile_mb = 1024;
  app.add_option("--score-tile-mb", score_tile_mb, "the scan's score tile (GEMM output) size")
      ->capture_default_str();
  app.add_option("--only", only, "run only 'rerank' or 'scan'");
  app.add_option("--scan-rows", scan_rows_option, "scan partition sizes (default 100k, 1M)");
  app.add_option("--scan-batches", scan_batches_option,
                 "scan batch sizes (default 1, 16, 64, 256)");
  app.add_flag("--no-cpu", no_cpu, "skip the CPU twin (profiling runs)");
  std::string precision_name = "fp16";
  app.add_option("--precision", precision_name, "how partitions are held: fp16 or fp32")
      ->check(CLI::IsMember({"fp16", "fp32"}))
      ->capture_default_str();
  bool no_staging = false;
  app.add_flag("--no-staging", no_staging,
               "pass the caller's own (pageable) buffers instead of the searcher's staging memory");
  CLI11_PARSE(app, argc, argv);
  const bool staging = !no_staging;
  const Precision precision = precision_name == "fp32" ? Precision::kFp32 : Precision::kFp16;
  const double value_bytes = precision == Precision::kFp32 ? 4.0 : 2.0;  // per vector element

  std::string why;
  std::unique_ptr<ExactBatchSearcher> gpu =
      engram::index::MakeCudaExactBatchSearcher(size_t{40} << 30, &why, score_tile_mb << 20);
  if (gpu == nullptr) {
    std::cerr << "bench_gpu: " << why << "\n";
    return 1;
  }
  std::unique_ptr<ExactBatchSearcher> cpu = engram::index::MakeCpuExactBatchSearcher();
  double copy_gbps = CopyBandwidthGbPerS();
  std::cerr << "device: " << why << "; device-to-device copy " << absl::StrFormat("%.0f", copy_gbps)
            << " GB/s (read+write)\n";
  std::cerr << absl::StrFormat("%-6s %7s %5s %6s %6s %10s %10s %9s %8s %10s %8s\n", "op", "rows",
                               "dim", "batch", "cands", "gpu ms", "cpu ms", "gpu GB/s", "% copy",
                               "gpu q/s", "cpu/gpu");
  std::mt19937 rng(42);
  auto report = [&](const std::string& op, size_t rows, size_t dim, size_t batch, size_t candidates,
                    double gpu_s, double cpu_s, double floor_bytes) {
    double gbps = floor_bytes / gpu_s / 1e9;
    std::cerr << absl::StrFormat("%-6s %7d %5d %6d %6d %10.3f %10s %9.0f %7.0f%% %10.0f %8s\n", op,
                                 rows, dim, batch, candidates, gpu_s * 1e3,
                                 cpu_s > 0 ? absl::StrFormat("%.2f", cpu_s * 1e3) : "-", gbps,
                                 100 * gbps / copy_gbps, batch / gpu_s,
                                 cpu_s > 0 ? absl::StrFormat("%.1fx", cpu_s / gpu_s) : "-");
    if (json) {
      nlohmann::json line = {{"operation", op},
                             {"rows", rows},
                             {"dim", dim},
                             {"batch", batch},
                             {"candidates", candidates},
                             {"gpu_ms", gpu_s * 1e3},
                             {"cpu_ms", cpu_s * 1e3},
                             {"floor_gb", floor_bytes / 1e9},
                             {"achieved_gb_per_s", gbps},
                             {"copy_gb_per_s", copy_gbps},
                             {"fraction_of_copy", gbps / copy_gbps},
                             {"gpu_queries_per_s", batch / gpu_s},
                             {"staging", staging},
                             {"precision", precision_name},
                             {"device", why}};
      std::cout << line.dump() << std::endl;
    }
  };

  // Rerank: candidate lists of a 200k-row partition.
  std::vector<size_t> dims = quick ? std::vector<size_t>{768} : std::vector<size_t>{384, 768, 1536};
  std::vector<size_t> batches =
      quick ? std::vector<size_t>{1, 64} : std::vector<size_t>{1, 64, 256, 1024};
  std::vector<size_t> candidate_counts =
      quick ? std::vector<size_t>{256} : std::vector<size_t>{64, 256, 1024};
  const size_t rerank_rows = 200000;
  if (!rerank_dims_option.empty()) dims = rerank_dims_option;
  if (!rerank_batches_option.empty()) batches = rerank_batches_option;
  if (!rerank_candidates_option.empty()) candidate_counts = rerank_candidates_option;
  if (only == "scan") dims.clear();
  for (size_t dim : dims) {
    std::vector<float> rows = Gaussian(rng, rerank_rows * dim);
    if (!gpu->SetPartition(1, Metric::kInnerProduct, precision, rows.data(), rerank_rows, dim)
             .ok() ||
        !cpu->SetPartition(1, Metric::kInnerProduct, precision, rows.data(), rerank_rows, dim)
             .ok()) {
      std::cerr << "bench_gpu: cannot load the rerank partition\n";
      return 1;
    }
    for (size_t batch : batches) {
      std::vector<float> queries = Gaussian(rng, batch * dim);
      for (size_t count : candidate_counts) {
        std::vector<uint32_t> offsets(batch + 1), candidates(batch * count);
        for (size_t q = 0; q <= batch; ++q) offsets[q] = static_cast<uint32_t>(q * count);
        for (uint32_t& c : candidates) c = rng() % rerank_rows;
        auto time_on = [&](ExactBatchSearcher* s, int n) {
          const float* q = Stage(s, queries, staging);
          const uint32_t* c = Stage(s, candidates, staging);
          return MedianSeconds(n, [&] {
            auto r = s->Rerank(1, q, batch, offsets.data(), c, 10);
            if (!r.ok()) std::cerr << r.status() << "\n";
          });
        };
        double gpu_s = time_on(gpu.get(), reps);
        double cpu_s = no_cpu ? 0 : time_on(cpu.get(), 1);
        report("rerank", rerank_rows, dim, batch, count, gpu_s, cpu_s,
               value_bytes * batch * count * dim);
      }
    }
    gpu->DropPartition(1);
    cpu->DropPartition(1);
  }

  // Exhaustive scan, k = 10, 768-d.
  std::vector<size_t> scan_rows =
      quick ? std::vector<size_t>{100000} : std::vector<size_t>{100000, 1000000};
  if (!scan_rows_option.empty()) scan_rows = scan_rows_option;
  if (only == "rerank") scan_rows.clear();
  std::vector<size_t> scan_batches =
      quick ? std::vector<size_t>{1, 64} : std::vector<size_t>{1, 16, 64, 256};
  if (!scan_batches_option.empty()) scan_batches = scan_batches_option;
  const size_t dim = 768;
  for (size_t n : scan_rows) {
    std::vector<float> rows = Gaussian(rng, n * dim);
    if (!gpu->SetPartition(2, Metric::kCosine, precision, rows.data(), n, dim).ok() ||
        (!no_cpu && !cpu->SetPartition(2, Metric::kCosine, precision, rows.data(), n, dim).ok())) {
      std::cerr << "bench_gpu: cannot load the scan partition\n";
      return 1;
    }
    for (size_t batch : scan_batches) {
      std::vector<float> queries = Gaussian(rng, batch * dim);
      auto time_on = [&](ExactBatchSearcher* s, int n) {
        const float* q = Stage(s, queries, staging);
        return MedianSeconds(n, [&] {
          auto r = s->Scan(2, q, batch, 10, nullptr);
          if (!r.ok()) std::cerr << r.status() << "\n";
        });
      };
      double gpu_s = time_on(gpu.get(), reps);
      // The CPU twin at 1M rows is timed where it stays within seconds.
      bool time_cpu = !no_cpu && (n <= 100000 || batch == 1 || batch == 64);
      double cpu_s = time_cpu ? time_on(cpu.get(), 1) : 0;
      report("scan", n, dim, batch, n, gpu_s, cpu_s, value_bytes * n * dim);
    }
    gpu->DropPartition(2);
    cpu->DropPartition(2);
  }
  return 0;
}
