// bench_kv: the KV cache store over loopback gRPC, Llama-3.1-8B geometry
// (32 layers x 8 KV heads x 128 head dim, fp16) at several context lengths.
//
// Per context length: save (fp16 in, quantized by the server), restore Q4
// and restore fp16 (dequantized by the server) from the RAM pool and from
// disk (daemon restarted so the pool is empty, and the data files' pages
// dropped from the page cache with posix_fadvise(DONTNEED)), and the bytes on
// disk against fp16. In the same run, the obvious alternative: the fp16
// cache written to and read from one plain safetensors file (write + fsync;
// read from the page cache and after dropping it). Also the codec alone, one
// core: quantize (fp16 -> Q4) and dequantize (Q4 -> fp16) GB/s of fp16.
//
// Output: a human table on stderr; with --json one JSON object per line per
// measurement on stdout (operation, tokens, source, seconds, bytes, gb_per_s,
// and ratio_vs_fp16 for storage).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <tuple>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "clients/cpp/engram_client.h"
#include "storage/kvcache/kv_codec.h"
#include "storage/kvcache/kv_model.h"
#include "storage/kvcache/safetensors.h"
#include "tests/util/daemon_process.h"
#include "tests/util/temp_dir.h"

namespace engram::bench {
namespace {

namespace fs = std::filesystem;
using kvcache::FloatType;

constexpr uint32_t kLayers = 32, kHeads = 8, kHeadDim = 128;

bool json_output = false;

void Report(nlohmann::json row) {
  double seconds = row["seconds"].get<double>();
  uint64_t bytes = row["bytes"].get<uint64_t>();
  if (!row.contains("gb_per_s")) row["gb_per_s"] = seconds > 0 ? bytes / seconds / 1e9 : 0.0;
  if (json_output) std::cout << row.dump() << std::endl;
  std::cerr << absl::StrFormat(
      "%-24s %6d tokens  %-5s %9.1f ms  %10.1f MiB  %7.2f GB/s%s\n",
      row["operation"].get<std::string>(), row["tokens"].get<int>(),
      row["source"].get<std::string>(), seconds * 1e3, bytes / 1048576.0,
      row["gb_per_s"].get<double>(),
      row.contains("ratio_vs_fp16")
          ? absl::StrFormat("  %.4fx fp16", row["ratio_vs_fp16"].get<double>())
          : "");
}

// A pool of fp16 N(0,1) values; tensors are windows into it.
class FloatSource {
 public:
  FloatSource() : values_(size_t{32} << 20) {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    for (uint16_t& v : values_) v = kvcache::FromFloat(normal(rng), FloatType::kFloat16);
  }
  std::string_view Window(size_t seed, size_t bytes) const {
    size_t max_offset = values_.size() * 2 - bytes;
    size_t offset = (seed * 7919 * 64) % max_offset & ~size_t{1};
    return std::string_view(reinterpret_cast<const char*>(values_.data()) + offset, bytes);
  }

 private:
  std::vector<uint16_t> values_;
};

v1::KvModel Llama8B() {
  v1::KvModel model;
  model.set_model_id("llama-3.1-8b");
  model.set_n_layers(kLayers);
  model.set_n_kv_heads(kHeads);
  model.set_head_dim(kHeadDim);
  model.set_dtype(v1::KV_DTYPE_FLOAT16);
  return model;
}

// Drops the page-cache pages of every file under `dir` (clean pages only;
// the daemon fsyncs what it writes).
void DropPageCache(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::recursive_directory_iterator(dir, ec)) {
    if (!entry.is_regular_file()) continue;
    int fd = ::open(entry.path().c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// Bytes of RocksDB's data files (blob files, SSTs, WAL) under `dir`; the
// LOG, OPTIONS and MANIFEST files are left out.
uint64_t DataFileBytes(const std::string& dir) {
  uint64_t bytes = 0;
  std::error_code ec;
  for (const auto& entry : fs::recursive_directory_iterator(dir, ec)) {
    std::string ext = entry.path().extension().string();
    if (entry.is_regular_file() && (ext == ".blob" || ext == ".sst" || ext == ".log")) {
      bytes += entry.file_size();
    }
  }
  return bytes;
}

double MedianSeconds(int repeats, const std::function<void()>& run) {
  std::vector<double> seconds;
  for (int i = 0; i < repeats; ++i) {
    absl::Time start = absl::Now();
    run();
    seconds.push_back(absl::ToDoubleSeconds(absl::Now() - start));
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

class Bench {
 public:
  Bench(std::string engramd, int pool_mb) : engramd_(std::move(engramd)), pool_mb_(pool_mb) {}

  void StartDaemon() {
    client_.reset();
    std::string config = dir_.Sub("engramd.yaml");
    FILE* file = fopen(config.c_str(), "w");
    fprintf(file, "kv:\n  pool_mb: %d\n  max_tokens: 1048576\nlog_level: warn\n", pool_mb_);
    fclose(file);
    auto daemon = testing::DaemonProcess::Start(data_dir_, {"--config", config}, engramd_);
    if (!daemon.ok()) {
      std::cerr << "engramd: " << daemon.status() << "\n";
      std::exit(1);
    }
    daemon_ = *std::move(daemon);
    client::ClientOptions options;
    options.address = daemon_->address();
    options.timeout = absl::Minutes(10);
    client_ = std::make_unique<client::Client>(options);
    client_->WaitForConnected(absl::Seconds(10));
  }

  void StopDaemon() {
    client_.reset();
    daemon_->Terminate();
    daemon_.reset();
  }

  // Each context length gets a fresh database, so its bytes on disk are its own.
  void RunContext(uint32_t tokens, int repeats) {
    data_dir_ = dir_.Sub(absl::StrFormat("data-%d", tokens));
    StartDaemon();
    const std::string agent = absl::StrFormat("agent-%d", tokens);
    const uint64_t fp16_bytes = uint64_t{2} * kLayers * kHeads * tokens * kHeadDim * 2;
    const uint32_t blocks = static_cast<uint32_t>(kvcache::BlockCount(tokens));
    std::vector<uint32_t> token_ids(tokens);
    for (uint32_t i = 0; i < tokens; ++i) token_ids[i] = tokens * 10 + i;  // no sharing across runs

    // Save: fp16 in.
    v1::SaveCacheHeader header;
    header.set_agent_id(agent);
    *header.mutable_model() = Llama8B();
    header.mutable_token_ids()->Add(token_ids.begin(), token_ids.end());
    header.set_encoding(v1::KV_ENCODING_FLOAT);
    absl::Time start = absl::Now();
    uint32_t next = 0;
    auto saved = client_->SaveCache(header, [&](v1::KvBlock* block) {
      if (next == kLayers * blocks) return false;
      uint32_t layer = next / blocks, index = next % blocks;
      size_t bytes = size_t{kHeads} * kvcache::BlockTokenCount(tokens, index) * kHeadDim * 2;
      block->set_layer(layer);
      block->set_block(index);
      std::string_view keys = floats_.Window(2 * next, bytes);
      std::string_view values = floats_.Window(2 * next + 1, bytes);
      block->set_keys(keys.data(), keys.size());
      block->set_values(values.data(), values.size());
      ++next;
      return true;
    });
    double save_s = absl::ToDoubleSeconds(absl::Now() - start);
    if (!saved.ok()) {
      std::cerr << "save: " << saved.status() << "\n";
      std::exit(1);
    }
    Report({{"operation", "save_fp16_in"},
            {"tokens", tokens},
            {"source", "-"},
            {"seconds", save_s},
            {"bytes", fp16_bytes}});

    uint64_t q4_bytes = 0;
    auto restore = [&](v1::KvEncoding encoding) {
      v1::LoadCacheRequest request;
      request.set_agent_id(agent);
      request.set_model_id("llama-3.1-8b");
      request.set_encoding(encoding);
      uint64_t received = 0;
      absl::Status status = client_->LoadCache(
          request, [](const v1::LoadCacheHeader&) {},
          [&](v1::KvBlock& block) {
            received +=
                block.keys().size() + block.values().size() +
                block.quantized_keys().weights().size() + block.quantized_keys().scales().size() +
                block.quantized_keys().biases().size() + block.quantized_values().weights().size() +
                block.quantized_values().scales().size() + block.quantized_values().biases().size();
            return true;
          });
      if (!status.ok()) {
        std::cerr << "restore: " << status << "\n";
        std::exit(1);
      }
      return received;
    };
    restore(v1::KV_ENCODING_QUANTIZED);  // warm the pool and the connection
    double q4_s = MedianSeconds(repeats, [&] { q4_bytes = restore(v1::KV_ENCODING_QUANTIZED); });
    Report({{"operation", "restore_q4"},
            {"tokens", tokens},
            {"source", "ram"},
            {"seconds", q4_s},
            {"bytes", q4_bytes}});
    uint64_t fp16_out = 0;
    double fp16_s = MedianSeconds(repeats, [&] { fp16_out = restore(v1::KV_ENCODING_FLOAT); });
    Report({{"operation", "restore_fp16_out"},
            {"tokens", tokens},
            {"source", "ram"},
            {"seconds", fp16_s},
            {"bytes", fp16_out}});

    // From disk: a restarted daemon (empty pool), page cache dropped.
    StopDaemon();  // a clean shutdown flushes the memtables: the WAL is empty
    uint64_t disk_bytes = DataFileBytes(data_dir_);

    // Each from a fresh daemon (empty pool) with the data files' pages dropped.
    for (auto [encoding, operation, bytes] :
         {std::tuple{v1::KV_ENCODING_QUANTIZED, "restore_q4", q4_bytes},
          std::tuple{v1::KV_ENCODING_FLOAT, "restore_fp16_out", fp16_out}}) {
      StartDaemon();
      DropPageCache(data_dir_);
      start = absl::Now();
      restore(encoding);
      Report({{"operation", operation},
              {"tokens", tokens},
              {"source", "disk"},
              {"seconds", absl::ToDoubleSeconds(absl::Now() - start)},
              {"bytes", bytes}});
      StopDaemon();
    }
    Report({{"operation", "storage"},
            {"tokens", tokens},
            {"source", "disk"},
            {"seconds", 0.0},
            {"bytes", disk_bytes},
            {"gb_per_s", 0.0},
            {"ratio_vs_fp16", static_cast<double>(disk_bytes) / fp16_bytes},
            {"q4_bytes", q4_bytes},
            {"q4_ratio_vs_fp16", static_cast<double>(q4_bytes) / fp16_bytes}});
    fs::remove_all(data_dir_);

    // The alternative: the fp16 cache as one plain safetensors file.
    std::string path = dir_.Sub(absl::StrFormat("fp16-%d.safetensors", tokens));
    std::vector<kvcache::TensorToWrite> tensors;
    for (uint32_t layer = 0; layer < kLayers; ++layer) {
      for (char kv : {'k', 'v'}) {
        size_t bytes = size_t{kHeads} * tokens * kHeadDim * 2;
        tensors.push_back({absl::StrFormat("layer%d_%c", layer, kv),
                           kvcache::TensorDtype::kF16,
                           {1, kHeads, tokens, kHeadDim},
                           floats_.Window(layer * 2 + (kv == 'v'), bytes)});
      }
    }
    start = absl::Now();
    if (!kvcache::WriteSafetensors(path, tensors, {}).ok()) std::exit(1);
    Report({{"operation", "safetensors_fp16_write"},
            {"tokens", tokens},
            {"source", "disk"},
            {"seconds", absl::ToDoubleSeconds(absl::Now() - start)},
            {"bytes", fp16_bytes}});
    auto read_file = [&] {
      auto reader = kvcache::SafetensorsReader::Open(::open(path.c_str(), O_RDONLY));
      uint64_t read = 0;
      for (const kvcache::TensorInfo& tensor : reader->header().tensors) {
        read += reader->Read(tensor)->size();
      }
      return read;
    };
    read_file();
    double cached_s = MedianSeconds(repeats, [&] { read_file(); });
    Report({{"operation", "safetensors_fp16_read"},
            {"tokens", tokens},
            {"source", "ram"},
            {"seconds", cached_s},
            {"bytes", fp16_bytes}});
    DropPageCache(dir_.path());
    start = absl::Now();
    read_file();
    Report({{"operation", "safetensors_fp16_read"},
            {"tokens", tokens},
            {"source", "disk"},
            {"seconds", absl::ToDoubleSeconds(absl::Now() - start)},
            {"bytes", fp16_bytes}});
    fs::remove(path);
  }

  void RunCodec(uint32_t tokens) {
    const size_t rows = size_t{kHeads} * tokens;
    std::string_view input = floats_.Window(3, rows * kHeadDim * 2);
    std::vector<uint16_t> aligned(rows * kHeadDim);
    std::memcpy(aligned.data(), input.data(), input.size());
    kvcache::CodecParams params{4, 64};
    std::vector<uint32_t> words(rows * params.WordsPerRow(kHeadDim));
    std::vector<uint16_t> scales(rows * params.GroupsPerRow(kHeadDim)), biases(scales.size());
    std::vector<uint16_t> output(aligned.size());
    for (auto [name, binding] : {std::pair{"avx2", kvcache::CodecKernel::kAuto},
                                 std::pair{"scalar", kvcache::CodecKernel::kScalar}}) {
      const kvcache::CodecKernel kernel = binding;  // clang 14 cannot capture a binding
      double q = MedianSeconds(5, [&] {
        kvcache::Quantize(aligned.data(), FloatType::kFloat16, rows, kHeadDim, params, words.data(),
                          scales.data(), biases.data(), kernel);
      });
      Report({{"operation", absl::StrFormat("quantize_1core_%s", name)},
              {"tokens", tokens},
              {"source", "ram"},
              {"seconds", q},
              {"bytes", input.size()}});
      double d = MedianSeconds(5, [&] {
        kvcache::Dequantize(words.data(), scales.data(), biases.data(), FloatType::kFloat16, rows,
                            kHeadDim, params, FloatType::kFloat16, output.data(), kernel);
      });
      Report({{"operation", absl::StrFormat("dequantize_1core_%s", name)},
              {"tokens", tokens},
              {"source", "ram"},
              {"seconds", d},
              {"bytes", input.size()}});
    }
  }

 private:
  const std::string engramd_;
  const int pool_mb_;
  engram::testing::TempDir dir_;
  FloatSource floats_;
  std::unique_ptr<testing::DaemonProcess> daemon_;
  std::unique_ptr<client::Client> client_;
  std::string data_dir_;
};

}  // namespace
}  // namespace engram::bench

int main(int argc, char** argv) {
  CLI::App app{"bench_kv: KV cache save/restore over loopback gRPC (Llama-3.1-8B geometry)"};
  std::vector<uint32_t> contexts = {1024, 4096, 16384};
  std::string engramd = ENGRAMD_PATH;
  int repeats = 5, pool_mb = 4096;
  app.add_flag("--json", engram::bench::json_output, "JSON lines on stdout");
  app.add_option("--tokens", contexts, "context lengths")->capture_default_str();
  app.add_option("--repeats", repeats, "runs per RAM measurement (median)")->capture_default_str();
  app.add_option("--pool-mb", pool_mb, "engramd kv.pool_mb")->capture_default_str();
  app.add_option("--engramd", engramd, "engramd binary")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  engram::bench::Bench bench(engramd, pool_mb);
  for (uint32_t tokens : {4096u}) bench.RunCodec(tokens);
  for (uint32_t tokens : contexts) bench.RunContext(tokens, repeats);
  return 0;
}
