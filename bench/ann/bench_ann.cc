// bench_ann: Engram's quantized Vamana partition next to the FAISS indexes a
// user would otherwise pick, built in the same process, on the same data,
// searched with the same thread counts. One query per call everywhere (the
// latency-bound case of an agent's recall), so QPS with t threads is t
// concurrent callers.
//
// Datasets: the formats of ../shared/data/README.md (f16bin / fbin / ibin),
// or --synthetic N (clustered, anisotropic, normalised; see MakeSynthetic),
// whose ground truth is computed exactly here.
//
// With --json, one JSON object per line per measured configuration.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/common/synthetic.h"
#include "bench/common/vector_files.h"
#include "faiss/IndexBinaryFlat.h"
#include "faiss/IndexBinaryHNSW.h"
#include "faiss/IndexFlat.h"
#include "faiss/IndexHNSW.h"
#include "faiss/IndexScalarQuantizer.h"
#include "index/exact_batch.h"
#include "index/float_distance.h"
#include "index/vector_partition.h"

namespace {

using engram::Metric;
using engram::bench::MakeSynthetic;
using engram::bench::Matrix;
using engram::bench::Normalise;
using engram::bench::ReadIds;
using engram::bench::ReadVectors;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Exact top-k ids by brute force with FAISS's flat index (BLAS).
std::vector<std::vector<int32_t>> ExactGroundTruth(const Matrix& base, const Matrix& query,
                                                   Metric metric, int k) {
  std::unique_ptr<faiss::IndexFlat> flat;
  if (metric == Metric::kL2) {
    flat = std::make_unique<faiss::IndexFlatL2>(base.cols);
  } else {
    flat = std::make_unique<faiss::IndexFlatIP>(base.cols);
  }
  flat->add(base.rows, base.values.data());
  std::vector<float> distances(query.rows * k);
  std::vector<faiss::Index::idx_t> labels(query.rows * k);
  flat->search(query.rows, query.values.data(), k, distances.data(), labels.data());
  std::vector<std::vector<int32_t>> truth(query.rows, std::vector<int32_t>(k));
  for (size_t q = 0; q < query.rows; ++q) {
    for (int i = 0; i < k; ++i) truth[q][i] = static_cast<int32_t>(labels[q * k + i]);
  }
  return truth;
}

// A system under test: Search(query index, k) returns the k best base ids.
using SearchFn = std::function<std::vector<int64_t>(size_t query, int k)>;

struct Measurement {
  double recall = 0, qps = 0, p50_ms = 0, p99_ms = 0;
};

Measurement Measure(const SearchFn& search, const Matrix& query,
                    const std::vector<std::vector<int32_t>>& truth, int threads,
                    double min_seconds) {
  const size_t nq = query.rows;
  std::vector<double> latencies;
  std::vector<std::vector<int64_t>> results(nq);
  double wall = 0;
  size_t rounds = 0;
  // Whole passes over the query set until min_seconds have passed.
  do {
    std::vector<std::vector<double>> per_thread(threads);
    std::atomic<size_t> next{0};
    auto start = Clock::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        omp_set_num_threads(1);  // FAISS must not start OpenMP teams per query
        for (;;) {
          size_t q = next.fetch_add(1);
          if (q >= nq) return;
          auto begin = Clock::now();
          results[q] = search(q, 10);
          per_thread[t].push_back(Seconds(begin) * 1e3);
        }
      });
    }
    for (auto& worker : workers) worker.join();
    wall += Seconds(start);
    for (auto& list : per_thread) latencies.insert(latencies.end(), list.begin(), list.end());
    ++rounds;
  } while (wall < min_seconds && rounds < 50);

  Measurement m;
  size_t hits = 0;
  for (size_t q = 0; q < nq; ++q) {
    for (size_t i = 0; i < results[q].size() && i < 10; ++i) {
      if (std::find(truth[q].begin(), truth[q].begin() + 10, results[q][i]) !=
          truth[q].begin() + 10) {
        ++hits;
      }
    }
  }
  m.recall = static_cast<double>(hits) / (nq * 10.0);
  m.qps = static_cast<double>(nq * rounds) / wall;
  std::sort(latencies.begin(), latencies.end());
  m.p50_ms = latencies[latencies.size() / 2];
  m.p99_ms = latencies[std::min(latencies.size() - 1, latencies.size() * 99 / 100)];
  return m;
}

struct Options {
  std::string dataset = "custom";
  std::string base_path, query_path, gt_path, metric_name = "cosine";
  size_t synthetic = 0, synthetic_queries = 1000, synthetic_dim = 768, synthetic_clusters = 1000;
  std::string systems = "engram,faiss-flat,faiss-hnswflat,faiss-hnswsq,faiss-binaryhnsw";
  // Scale each base vector by a random factor in [low, high] (after cosine
  // normalisation): vectors of varied norm for inner product (MIPS). The
  // ground truth is then computed here, not read from --gt.
  std::vector<float> scale_norms;
  std::string threads_list = "1,2";
  std::string beams = "16,24,32,48,64,96,128,192";
  std::string efs = "16,24,32,48,64,96,128,192,256";
  std::string stage = "auto";
  uint32_t max_degree = 64, build_beam = 128, rerank = 0;
  float alpha = 1.2f;
  size_t max_queries = 0;
  int build_threads = 0;
  double min_seconds = 1.0;
  std::string snapshot_path;
  bool json = false;
};

std::vector<int> ParseInts(const std::string& list) {
  std::vector<int> values;
  for (absl::string_view part : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    values.push_back(std::stoi(std::string(part)));
  }
  return values;
}

class Reporter {
 public:
  Reporter(const Options& options, size_t rows, size_t dim)
      : options_(options), rows_(rows), dim_(dim) {
    if (!options.json) {
      std::cout << absl::StrFormat("%-18s %-34s %3s %8s %10s %8s %8s %8s %12s %12s\n", "system",
                                   "params", "thr", "recall", "qps", "p50_ms", "p99_ms", "build_s",
                                   "hot_MiB", "float_MiB");
    }
  }
  void Report(const std::string& system, const nlohmann::json& params, int threads,
              const Measurement& m, double build_s, size_t hot_bytes, size_t float_bytes) {
    if (options_.json) {
      nlohmann::json line = {{"dataset", options_.dataset},
                             {"rows", rows_},
                             {"dim", dim_},
                             {"metric", options_.metric_name},
                             {"system", system},
                             {"params", params},
                             {"threads", threads},
                             {"recall_at_10", m.recall},
                             {"qps", m.qps},
                             {"p50_ms", m.p50_ms},
                             {"p99_ms", m.p99_ms},
                             {"build_s", build_s},
                             {"hot_bytes", hot_bytes},
                             {"float_bytes", float_bytes}};
      std::cout << line.dump() << std::endl;
    } else {
      std::cout << absl::StrFormat("%-18s %-34s %3d %8.4f %10.0f %8.3f %8.3f %8.2f %12.1f %12.1f\n",
                                   system, params.dump(), threads, m.recall, m.qps, m.p50_ms,
                                   m.p99_ms, build_s, hot_bytes / 1048576.0,
                                   float_bytes / 1048576.0)
                << std::flush;
    }
  }

 private:
  const Options& options_;
  size_t rows_, dim_;
};

size_t HnswGraphBytes(const faiss::HNSW& hnsw) {
  return hnsw.neighbors.size() * sizeof(hnsw.neighbors[0]) +
         hnsw.offsets.size() * sizeof(hnsw.offsets[0]) +
         hnsw.levels.size() * sizeof(hnsw.levels[0]) + hnsw.assign_probas.size() * sizeof(double);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"bench_ann: Engram's quantized Vamana index vs FAISS on the same data"};
  app.add_option("--dataset", o.dataset, "name printed with the results");
  app.add_option("--base", o.base_path, "base vectors (.f16bin or .fbin)");
  app.add_option("--query", o.query_path, "query vectors (.f16bin or .fbin)");
  app.add_option("--gt", o.gt_path, "ground-truth ids (.ibin); computed exactly when absent");
  app.add_option("--metric", o.metric_name, "cosine, ip or l2")
      ->check(CLI::IsMember({"cosine", "ip", "l2"}));
  app.add_option("--synthetic", o.synthetic, "generate this many base vectors instead");
  app.add_option("--synthetic-queries", o.synthetic_queries);
  app.add_option("--synthetic-dim", o.synthetic_dim);
  app.add_option("--synthetic-clusters", o.synthetic_clusters);
  app.add_option("--systems", o.systems,
                 "comma list of engram, faiss-flat, faiss-hnswflat, faiss-hnswsq, "
                 "faiss-binaryhnsw");
  app.add_option("--threads", o.threads_list, "search thread counts, comma list");
  app.add_option("--beams", o.beams, "Engram search beam widths L");
  app.add_option("--efs", o.efs, "FAISS efSearch values");
  app.add_option("--stage", o.stage, "Engram first stage: auto, binary or int8")
      ->check(CLI::IsMember({"auto", "binary", "int8"}));
  app.add_option("--R", o.max_degree, "Engram max degree");
  app.add_option("--L", o.build_beam, "Engram build beam width");
  app.add_option("--alpha", o.alpha, "Engram RobustPrune alpha");
  app.add_option("--rerank", o.rerank, "Engram candidates reranked exactly (0: default)");
  app.add_option("--max-queries", o.max_queries, "use only the first N queries");
  app.add_option("--scale-norms", o.scale_norms,
                 "LOW,HIGH: scale each base vector by a random factor in [LOW, HIGH] "
                 "(vectors of varied norm; ground truth recomputed)")
      ->delimiter(',')
      ->expected(2);
  app.add_option("--build-threads", o.build_threads, "0: all hardware threads");
  app.add_option("--min-seconds", o.min_seconds, "time each configuration at least this long");
  app.add_option("--snapshot", o.snapshot_path,
                 "also time saving the Engram partition here and loading it back");
  app.add_flag("--json", o.json, "one JSON object per line");
  CLI11_PARSE(app, argc, argv);

  const Metric metric = o.metric_name == "l2"   ? Metric::kL2
                        : o.metric_name == "ip" ? Metric::kInnerProduct
                                                : Metric::kCosine;
  const int build_threads =
      o.build_threads > 0 ? o.build_threads : static_cast<int>(std::thread::hardware_concurrency());
  Matrix base, query;
  std::vector<std::vector<int32_t>> truth;
  try {
    if (o.synthetic > 0) {
      MakeSynthetic(o.synthetic, o.synthetic_queries, o.synthetic_dim, o.synthetic_clusters, 42,
                    &base, &query);
    } else {
      base = ReadVectors(o.base_path);
      query = ReadVectors(o.query_path);
    }
    if (o.max_queries > 0 && query.rows > o.max_queries) {
      query.rows = o.max_queries;
      query.values.resize(query.rows * query.cols);
    }
    if (metric == Metric::kCosine) {
      Normalise(base);
      Normalise(query);
    }
    if (!o.scale_norms.empty()) {
      std::mt19937 rng(17);
      std::uniform_real_distribution<float> factor(o.scale_norms[0], o.scale_norms[1]);
      for (size_t r = 0; r < base.rows; ++r) {
        const float f = factor(rng);
        for (size_t i = 0; i < base.cols; ++i) base.values[r * base.cols + i] *= f;
      }
    }
    if (!o.gt_path.empty() && o.scale_norms.empty()) {
      truth = ReadIds(o.gt_path);
      truth.resize(query.rows);
    } else {
      omp_set_num_threads(build_threads);
      auto start = Clock::now();
      truth = ExactGroundTruth(base, query, metric, 10);
      std::cerr << absl::StrFormat("ground truth: %.1f s\n", Seconds(start));
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_ann: " << e.what() << "\n";
    return 2;
  }
  const size_t dim = base.cols;
  const std::vector<int> thread_counts = ParseInts(o.threads_list);
  Reporter reporter(o, base.rows, dim);
  const faiss::MetricType faiss_metric =
      metric == Metric::kL2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT;
  const size_t float_bytes = base.rows * dim * sizeof(float);
  auto faiss_ids = [](const std::vector<faiss::Index::idx_t>& labels) {
    return std::vector<int64_t>(labels.begin(), labels.end());
  };

  for (absl::string_view system : absl::StrSplit(o.systems, ',', absl::SkipEmpty())) {
    if (system == "engram") {
      engram::index::PartitionOptions options;
      options.metric = metric;
      options.dimension = static_cast<uint32_t>(dim);
      options.graph.max_degree = o.max_degree;
      options.graph.build_beam_width = o.build_beam;
      options.graph.alpha = o.alpha;
      options.build_threads = build_threads;
      if (o.stage == "binary") options.force_first_stage = engram::index::FirstStage::kBinary;
      if (o.stage == "int8") options.force_first_stage = engram::index::FirstStage::kInt8;
      auto partition = engram::index::VectorPartition::Create(options);
      if (!partition.ok()) {
        std::cerr << partition.status() << "\n";
        return 2;
      }
      std::vector<uint64_t> ids(base.rows);
      for (size_t i = 0; i < ids.size(); ++i) ids[i] = i;
      auto start = Clock::now();
      absl::Status added = (*partition)->AddBatch(ids, base.values);
      double build_s = Seconds(start);
      if (!added.ok()) {
        std::cerr << added << "\n";
        return 2;
      }
      engram::index::PartitionStats stats = (*partition)->Stats();
      std::cerr << absl::StrFormat(
          "engram: first stage %s, calibrated L %u, sample recall %.3f (binary: %.3f), "
          "build %.1f s\n",
          engram::index::FirstStageName(stats.first_stage), stats.default_beam_width,
          stats.sample_recall, stats.binary_sample_recall, build_s);
      // Hot: what graph traversal touches (graph with its navigation layer
      // and edge slack, first-stage codes), as the partition accounts it.
      // The INT8 codes of the binary mode are read only for the beam, like
      // the floats, and are reported with them.
      const bool binary = stats.first_stage == engram::index::FirstStage::kBinary;
      const size_t hot =
          stats.graph_bytes + (binary ? stats.binary_code_bytes : stats.int8_code_bytes);
      const size_t warm = stats.float_bytes + (binary ? stats.int8_code_bytes : 0);
      if (!o.snapshot_path.empty()) {
        auto save_start = Clock::now();
        absl::Status saved = (*partition)->Save(o.snapshot_path);
        double save_s = Seconds(save_start);
        auto load_start = Clock::now();
        auto loaded = engram::index::VectorPartition::Load(o.snapshot_path, options);
        double load_s = Seconds(load_start);
        if (!saved.ok() || !loaded.ok()) {
          std::cerr << "snapshot: " << saved << " / " << loaded.status() << "\n";
          return 2;
        }
        const size_t bytes = std::filesystem::file_size(o.snapshot_path);
        if (o.json) {
          std::cout << nlohmann::json({{"dataset", o.dataset},
                                       {"rows", base.rows},
                                       {"system", "engram-snapshot"},
                                       {"save_s", save_s},
                                       {"load_s", load_s},
                                       {"bytes", bytes}})
                           .dump()
                    << std::endl;
        } else {
          std::cout << absl::StrFormat("snapshot: %.1f MiB, save %.2f s, load %.2f s\n",
                                       bytes / 1048576.0, save_s, load_s);
        }
        partition = std::move(loaded);  // search the loaded copy from here on
      }
      for (int beam : ParseInts(o.beams)) {
        SearchFn search = [&](size_t q, int k) {
          engram::index::PartitionSearch request;
          request.query = {query.Row(q), dim};
          request.k = k;
          request.beam_width = beam;
          request.rerank = o.rerank;
          auto found = (*partition)->Search(request);
          std::vector<int64_t> out;
          for (const auto& hit : *found) out.push_back(static_cast<int64_t>(hit.id));
          return out;
        };
        for (int threads : thread_counts) {
          Measurement m = Measure(search, query, truth, threads, o.min_seconds);
          reporter.Report("engram",
                          {{"L", beam},
                           {"R", o.max_degree},
                           {"stage", engram::index::FirstStageName(stats.first_stage)},
                           {"rerank", o.rerank}},
                          threads, m, build_s, hot, warm);
        }
      }
    } else if (system == "faiss-flat") {
      std::unique_ptr<faiss::IndexFlat> flat;
      if (metric == Metric::kL2) {
        flat = std::make_unique<faiss::IndexFlatL2>(dim);
      } else {
        flat = std::make_unique<faiss::IndexFlatIP>(dim);
      }
      auto start = Clock::now();
      flat->add(base.rows, base.values.data());
      double build_s = Seconds(start);
      omp_set_num_threads(1);
      SearchFn search = [&](size_t q, int k) {
        std::vector<float> distances(k);
        std::vector<faiss::Index::idx_t> labels(k);
        flat->search(1, query.Row(q), k, distances.data(), labels.data());
        return faiss_ids(labels);
      };
      for (int threads : thread_counts) {
        Measurement m = Measure(search, query, truth, threads, o.min_seconds);
        reporter.Report("faiss-flat", nlohmann::json::object(), threads, m, build_s, float_bytes,
                        0);
      }
    } else if (system == "faiss-hnswflat" || system == "faiss-hnswsq") {
      std::unique_ptr<faiss::IndexHNSW> hnsw;
      if (system == "faiss-hnswflat") {
        hnsw = std::make_unique<faiss::IndexHNSWFlat>(dim, 32, faiss_metric);
      } else {
        hnsw = std::make_unique<faiss::IndexHNSWSQ>(dim, faiss::ScalarQuantizer::QT_8bit, 32,
                                                    faiss_metric);
      }
      hnsw->hnsw.efConstruction = 128;
      omp_set_num_threads(build_threads);
      auto start = Clock::now();
      hnsw->train(base.rows, base.values.data());
      hnsw->add(base.rows, base.values.data());
      double build_s = Seconds(start);
      omp_set_num_threads(1);
      const size_t storage_bytes =
          system == "faiss-hnswflat" ? float_bytes : base.rows * dim;  // SQ8: a byte per value
      const size_t hot = storage_bytes + HnswGraphBytes(hnsw->hnsw);
      for (int ef : ParseInts(o.efs)) {
        hnsw->hnsw.efSearch = ef;
        SearchFn search = [&](size_t q, int k) {
          std::vector<float> distances(k);
          std::vector<faiss::Index::idx_t> labels(k);
          hnsw->search(1, query.Row(q), k, distances.data(), labels.data());
          return faiss_ids(labels);
        };
        for (int threads : thread_counts) {
          Measurement m = Measure(search, query, truth, threads, o.min_seconds);
          reporter.Report(std::string(system), {{"M", 32}, {"efConstruction", 128}, {"ef", ef}},
                          threads, m, build_s, hot, system == "faiss-hnswsq" ? float_bytes : 0);
        }
      }
    } else if (system == "faiss-binaryhnsw") {
      // Sign bits in a binary HNSW, its ef best rescored with exact floats.
      const size_t code_bytes = (dim + 7) / 8;
      auto sign_bits = [&](const float* v, uint8_t* code) {
        std::fill(code, code + code_bytes, 0);
        for (size_t i = 0; i < dim; ++i) {
          if (v[i] > 0) code[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
        }
      };
      std::vector<uint8_t> codes(base.rows * code_bytes);
      for (size_t r = 0; r < base.rows; ++r) sign_bits(base.Row(r), &codes[r * code_bytes]);
      faiss::IndexBinaryHNSW index(static_cast<int>(code_bytes * 8), 32);
      index.hnsw.efConstruction = 128;
      omp_set_num_threads(build_threads);
      auto start = Clock::now();
      index.add(base.rows, codes.data());
      double build_s = Seconds(start);
      omp_set_num_threads(1);
      const auto& kernels = engram::index::SelectFloatKernels();
      const size_t hot = codes.size() + HnswGraphBytes(index.hnsw);
      for (int ef : ParseInts(o.efs)) {
        index.hnsw.efSearch = ef;
        SearchFn search = [&](size_t q, int k) {
          std::vector<uint8_t> code(code_bytes);
          sign_bits(query.Row(q), code.data());
          const int candidates = std::max(ef, k);
          std::vector<int32_t> distances(candidates);
          std::vector<faiss::Index::idx_t> labels(candidates);
          index.search(1, code.data(), candidates, distances.data(), labels.data());
          std::vector<std::pair<float, int64_t>> scored;
          for (faiss::Index::idx_t label : labels) {
            if (label < 0) continue;
            float score = metric == Metric::kL2
                              ? -kernels.l2_squared(query.Row(q), base.Row(label), dim)
                              : kernels.inner_product(query.Row(q), base.Row(label), dim);
            scored.emplace_back(score, label);
          }
          std::sort(scored.begin(), scored.end(), std::greater<>());
          std::vector<int64_t> out;
          for (int i = 0; i < k && i < static_cast<int>(scored.size()); ++i) {
            out.push_back(scored[i].second);
          }
          return out;
        };
        for (int threads : thread_counts) {
          Measurement m = Measure(search, query, truth, threads, o.min_seconds);
          reporter.Report("faiss-binaryhnsw",
                          {{"M", 32}, {"efConstruction", 128}, {"ef", ef}, {"rerank", ef}}, threads,
                          m, build_s, hot, float_bytes);
        }
      }
    } else {
      std::cerr << "bench_ann: unknown system '" << system << "'\n";
      return 2;
    }
  }
  return 0;
}
