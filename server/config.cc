#include "server/config.h"

#include <fstream>
#include <functional>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/sharding.h"
#include "index/vector_partition.h"
#include "yaml-cpp/yaml.h"

namespace engram::server {
namespace {

// One configuration key: its dotted YAML path, documentation, and how to
// read it from YAML and print its current value.
struct Option {
  std::string key;
  std::string doc;
  std::function<absl::Status(const YAML::Node&, ServerConfig&)> parse;
  std::function<std::string(const ServerConfig&)> print;
};

template <typename T>
std::string PrintValue(const T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    return value ? "true" : "false";
  } else if constexpr (std::is_same_v<T, std::string>) {
    return absl::StrCat("\"", value, "\"");
  } else {
    return absl::StrCat(value);
  }
}

// An option stored at `field(config)`, with an inclusive lower bound for numbers.
template <typename T, typename Field>
Option MakeOption(std::string key, std::string doc, Field field, T min_value = T()) {
  Option option;
  option.key = key;
  option.doc = std::move(doc);
  option.parse = [key, field, min_value](const YAML::Node& node, ServerConfig& config) {
    T value;
    try {
      value = node.as<T>();
    } catch (const YAML::Exception&) {
      return absl::InvalidArgumentError(
          absl::StrCat("config key '", key, "' has an invalid value '", YAML::Dump(node), "'"));
    }
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      if (value < min_value) {
        return absl::InvalidArgumentError(
            absl::StrCat("config key '", key, "' is ", value, "; minimum is ", min_value));
      }
    }
    field(config) = value;
    return absl::OkStatus();
  };
  option.print = [field](const ServerConfig& config) {
    return PrintValue(field(const_cast<ServerConfig&>(config)));
  };
  return option;
}

#define ENGRAM_FIELD(path) \
  [](ServerConfig & c) -> auto& { return c.path; }

// router.*: when AUTO deliberates at once, and the quality gate's model,
// one key per signal (retrieval/quality_gate.h).
void AddRouterOptions(std::vector<Option>& options) {
  constexpr double kAnyValue = -1e9;
  options.push_back(MakeOption<uint64_t>(
      "router.deliberate_below",
      "route AUTO deliberates at once when a search covers fewer vectors than this; 0: never",
      ENGRAM_FIELD(router.deliberate_below)));
  options.push_back(MakeOption<double>(
      "router.gate.threshold",
      "route AUTO escalates when the gate's probability reaches this (above 1: never, 0: always)",
      ENGRAM_FIELD(router.gate.threshold), 0.0));
  options.push_back(MakeOption<double>("router.gate.bias", "the gate's logistic model: its bias",
                                       ENGRAM_FIELD(router.gate.bias), kAnyValue));
  for (int signal = 0; signal < retrieval::kGateSignalCount; ++signal) {
    options.push_back(MakeOption<double>(
        absl::StrCat("router.gate.weights.", retrieval::GateSignalName(signal)),
        "the weight of this signal (retrieval/quality_gate.h)",
        [signal](ServerConfig & c) -> auto& { return c.router.gate.weights[signal]; }, kAnyValue));
  }
}

const std::vector<Option>& Options() {
  static const std::vector<Option> options = [] {
    std::vector<Option> options = {
        MakeOption<std::string>("listen_address",
                                "host:port gRPC listens on; port 0 picks a free port",
                                ENGRAM_FIELD(listen_address)),
        MakeOption<bool>("insecure",
                         "allow a non-loopback listen_address without both auth.tokens_file and "
                         "tls.cert_file (anyone reaching the port has every right)",
                         ENGRAM_FIELD(insecure)),
        MakeOption<std::string>("port_file", "if set, the bound port is written here once serving",
                                ENGRAM_FIELD(port_file)),
        MakeOption<std::string>("metrics_address",
                                "host:port of the Prometheus /metrics endpoint; empty disables it",
                                ENGRAM_FIELD(metrics_address)),
        MakeOption<std::string>("metrics_port_file",
                                "if set, the metrics endpoint's bound port is written here",
                                ENGRAM_FIELD(metrics_port_file)),
        MakeOption<std::string>(
            "health_address",
            "host:port of a plaintext listener serving only gRPC health checks (kubelet gRPC "
            "probes cannot speak TLS); empty disables it",
            ENGRAM_FIELD(health_address)),
        MakeOption<std::string>("data_dir", "directory of the RocksDB database",
                                ENGRAM_FIELD(store.data_dir)),
        MakeOption<bool>("sync_writes",
                         "fsync the WAL before acknowledging a write (false: faster, but the "
                         "last writes may be lost on power loss)",
                         ENGRAM_FIELD(store.sync_writes)),
        MakeOption<size_t>("min_free_disk_mb",
                           "writes that grow the database are refused (RESOURCE_EXHAUSTED, disk "
                           "full) while the data volume has less than this free; deletes pass",
                           ENGRAM_FIELD(store.min_free_disk_mb)),
        MakeOption<size_t>("disk_reserve_mb",
                           "a file this large kept in data_dir, deleted when the volume fills up "
                           "so a resume, restart or delete has room; 0: none",
                           ENGRAM_FIELD(store.disk_reserve_mb)),
        MakeOption<uint64_t>("max_history_versions",
                             "older versions kept per episode (the current one always is); an "
                             "update drops those past it; 0 keeps every version",
                             ENGRAM_FIELD(store.max_history_versions)),
        MakeOption<size_t>("block_cache_mb",
                           "MiB of RocksDB block cache (decompressed blocks shared by every "
                           "column family): searches read their hits back through it",
                           ENGRAM_FIELD(store.block_cache_mb)),
        MakeOption<size_t>("memtable_mb",
                           "MiB of RocksDB memtables, all column families together; past it the "
                           "largest is flushed",
                           ENGRAM_FIELD(store.memtable_mb), 1),
        MakeOption<int>("read_threads",
                        "threads that run searches, lists and KV loads (apart from the writers)",
                        ENGRAM_FIELD(read_threads), 1),
        MakeOption<int>("lookup_threads",
                        "threads that run lookups: GetSpace, ListSpaces, GetEpisode, Stats, "
                        "KvStats, ListBackups (apart from the searches)",
                        ENGRAM_FIELD(lookup_threads), 1),
        MakeOption<int>("admin_threads",
                        "threads that run compaction, checkpoints, backups, rebuilds, KV export",
                        ENGRAM_FIELD(admin_threads), 1),
        MakeOption<int>("worker_threads", "threads that run writes", ENGRAM_FIELD(worker_threads),
                        1),
        MakeOption<int>("max_queued_requests",
                        "calls of one class (lookup, read, write, admin) waiting beyond this get "
                        "RESOURCE_EXHAUSTED",
                        ENGRAM_FIELD(max_queued_requests), 1),
        MakeOption<int>("max_message_bytes", "largest request or response message",
                        ENGRAM_FIELD(max_message_bytes), 1024),
        MakeOption<uint64_t>(
            "max_inflight_write_mb",
            "MiB of put and update requests applied at once (all callers); more is refused at once",
            ENGRAM_FIELD(max_inflight_write_mb), 1),
        MakeOption<int>("max_k", "largest k a Search may ask for", ENGRAM_FIELD(max_k), 1),
        MakeOption<int>(
            "shutdown_grace_s",
            "seconds in-flight calls, then the index's queued writes, get on SIGTERM/SIGINT; graph "
            "builds still running then are cancelled",
            ENGRAM_FIELD(shutdown_grace_s), 0),
        MakeOption<std::string>("checkpoint_dir", "where Checkpoint creates checkpoints",
                                ENGRAM_FIELD(checkpoint_dir)),
        MakeOption<std::string>("backup_dir", "where Backup keeps backups",
                                ENGRAM_FIELD(backup_dir)),
        MakeOption<std::string>("restore_dir", "where RestoreBackup restores into",
                                ENGRAM_FIELD(restore_dir)),
        MakeOption<std::string>("log_level", "trace, debug, info, warn or error",
                                ENGRAM_FIELD(log_level)),
        MakeOption<size_t>("limits.max_id_bytes", "longest agent, session or request id",
                           ENGRAM_FIELD(store.limits.max_id_bytes), 1),
        MakeOption<size_t>("limits.max_kind_bytes", "longest episode kind",
                           ENGRAM_FIELD(store.limits.max_kind_bytes), 1),
        MakeOption<size_t>("limits.max_text_bytes", "longest episode text",
                           ENGRAM_FIELD(store.limits.max_text_bytes), 0),
        MakeOption<size_t>("limits.max_metadata_bytes", "most serialized metadata per episode",
                           ENGRAM_FIELD(store.limits.max_metadata_bytes), 0),
        MakeOption<size_t>("limits.max_metadata_entries", "most metadata entries per episode",
                           ENGRAM_FIELD(store.limits.max_metadata_entries), 0),
        MakeOption<size_t>("limits.max_links", "most links per episode",
                           ENGRAM_FIELD(store.limits.max_links), 0),
        MakeOption<uint32_t>("limits.max_dimension", "largest space dimension",
                             ENGRAM_FIELD(store.limits.max_dimension), 1),
        MakeOption<size_t>("limits.max_batch_size", "most episodes per PutEpisodes",
                           ENGRAM_FIELD(store.limits.max_batch_size), 1),
        MakeOption<size_t>("limits.max_delete_ids", "most ids one DeleteEpisodes may name",
                           ENGRAM_FIELD(store.limits.max_delete_ids), 1),
        MakeOption<uint32_t>("index.quantize_threshold",
                             "vectors a partition needs before INT8 codes are fitted",
                             ENGRAM_FIELD(index.quantize_threshold), 1),
        MakeOption<uint32_t>("index.graph_threshold",
                             "vectors at which a partition gets a graph (below: code scan)",
                             ENGRAM_FIELD(index.graph_threshold), 1),
        MakeOption<uint32_t>("index.max_degree", "R: most out-edges per graph node",
                             ENGRAM_FIELD(index.max_degree), 2),
        MakeOption<uint32_t>("index.build_beam_width", "L while building the graph",
                             ENGRAM_FIELD(index.build_beam_width), 1),
        MakeOption<float>("index.alpha", "RobustPrune alpha (>= 1)", ENGRAM_FIELD(index.alpha),
                          1.0f),
        MakeOption<uint32_t>("index.default_beam_width",
                             "search beam width before each graph calibrates its own",
                             ENGRAM_FIELD(index.default_beam_width), 1),
        MakeOption<float>("index.target_recall",
                          "sample recall@10 a graph must reach (else INT8 codes, wider beam)",
                          ENGRAM_FIELD(index.target_recall), 0.0f),
        MakeOption<int>("index.build_threads", "graph build threads; 0: all hardware threads",
                        ENGRAM_FIELD(index.build_threads), 0),
        MakeOption<std::string>("index.snapshot_dir",
                                "where partition snapshots go; empty: <data_dir>/index",
                                ENGRAM_FIELD(index.snapshot_dir)),
        MakeOption<int>("index.snapshot_interval_s",
                        "seconds between snapshots of changed partitions; 0: only at shutdown",
                        ENGRAM_FIELD(index.snapshot_interval_s), 0),
        MakeOption<bool>("gpu.enabled", "use a GPU for scans when one answers (else the CPU twin)",
                         ENGRAM_FIELD(gpu.enabled)),
        MakeOption<size_t>("gpu.budget_mb", "MiB of partition copies for scans (GPU or host)",
                           ENGRAM_FIELD(gpu.budget_mb), 1),
        MakeOption<std::string>("gpu.precision",
                                "fp16 or fp32: how scanned partitions' copies hold vectors",
                                ENGRAM_FIELD(gpu.precision)),
        MakeOption<int>(
            "gpu.batch_window_us",
            "how long concurrent scans wait to share a launch (a lone scan never waits)",
            ENGRAM_FIELD(gpu.batch_window_us), 0),
        MakeOption<int>("gpu.max_batch", "most queries per scan launch",
                        ENGRAM_FIELD(gpu.max_batch), 1),
        MakeOption<size_t>("kv.pool_mb", "RAM pool of KV cache blocks, in MiB (LRU; all on disk)",
                           ENGRAM_FIELD(kv.pool_mb), 0),
        MakeOption<size_t>("kv.max_tokens", "most tokens one KV cache may hold",
                           ENGRAM_FIELD(kv.max_tokens), 1),
        MakeOption<std::string>(
            "kv.export_dir", "where KV cache export/import files live; requests name paths in it",
            ENGRAM_FIELD(kv.export_dir)),
        MakeOption<std::string>("embedders.static.path",
                                "word-vector file of the \"static\" embedder "
                                "(scripts/fetch-word-vectors.sh); empty: not offered",
                                ENGRAM_FIELD(embedders.static_vectors.path)),
        MakeOption<std::string>("embedders.openai.url",
                                "OpenAI-compatible embeddings URL of the \"openai\" embedder, "
                                "e.g. http://127.0.0.1:11434/v1/embeddings; empty: not offered",
                                ENGRAM_FIELD(embedders.openai.url)),
        MakeOption<std::string>("embedders.openai.model", "model name sent with each request",
                                ENGRAM_FIELD(embedders.openai.model)),
        MakeOption<std::string>("embedders.openai.api_key_env",
                                "environment variable holding the API key (never logged)",
                                ENGRAM_FIELD(embedders.openai.api_key_env)),
        MakeOption<std::string>("embedders.openai.api_key_file",
                                "file holding the API key, if api_key_env is empty",
                                ENGRAM_FIELD(embedders.openai.api_key_file)),
        MakeOption<uint32_t>("embedders.openai.dimension",
                             "the model's vector length, checked at space creation; 0: unknown",
                             ENGRAM_FIELD(embedders.openai.dimension), 0),
        MakeOption<uint32_t>("embedders.openai.batch_size", "most texts per HTTP request",
                             ENGRAM_FIELD(embedders.openai.batch_size), 1),
        MakeOption<int>("embedders.openai.timeout_ms", "limit on one HTTP attempt",
                        ENGRAM_FIELD(embedders.openai.timeout_ms), 1),
        MakeOption<int>("embedders.openai.max_retries",
                        "retries after a connection error, timeout, HTTP 429 or 5xx",
                        ENGRAM_FIELD(embedders.openai.max_retries), 0),
        MakeOption<int>("embedders.openai.retry_backoff_ms",
                        "first wait before a retry; doubled each time (or Retry-After)",
                        ENGRAM_FIELD(embedders.openai.retry_backoff_ms), 0),
    };
    AddRouterOptions(options);
    options.push_back(MakeOption<std::string>(
        "auth.tokens_file",
        "tokens file (engramctl token); re-read on SIGHUP; empty: auth off, every call is the "
        "tenant 'default' with every right",
        ENGRAM_FIELD(auth.tokens_file)));
    options.push_back(MakeOption<std::string>(
        "tls.cert_file", "PEM certificate chain of the gRPC listener; empty: plaintext",
        ENGRAM_FIELD(tls.cert_file)));
    options.push_back(MakeOption<std::string>("tls.key_file", "PEM private key of tls.cert_file",
                                              ENGRAM_FIELD(tls.key_file)));
    options.push_back(MakeOption<std::string>(
        "tls.client_ca_file",
        "PEM CA bundle client certificates must chain to; set: mTLS, every client presents one",
        ENGRAM_FIELD(tls.client_ca_file)));
    options.push_back(MakeOption<uint64_t>("tenant_limits.max_episodes",
                                           "live episodes one tenant may hold; 0: no limit",
                                           ENGRAM_FIELD(tenant_limits.max_episodes)));
    options.push_back(MakeOption<uint64_t>(
        "tenant_limits.max_stored_mb",
        "MiB of episode storage one tenant may use (compressed estimate); 0: no limit",
        ENGRAM_FIELD(tenant_limits.max_stored_mb)));
    options.push_back(MakeOption<uint64_t>(
        "tenant_limits.max_kv_mb", "MiB of KV-cache blocks one tenant may store; 0: no limit",
        ENGRAM_FIELD(tenant_limits.max_kv_mb)));
    options.push_back(
        MakeOption<double>("tenant_limits.requests_per_s",
                           "calls per second of one tenant (token bucket); 0: no limit",
                           ENGRAM_FIELD(tenant_limits.requests_per_s), 0.0));
    options.push_back(MakeOption<uint32_t>("tenant_limits.burst",
                                           "calls a tenant may make at once; 0: one second's worth",
                                           ENGRAM_FIELD(tenant_limits.burst)));
    options.push_back(MakeOption<uint32_t>(
        "shard.index",
        "this shard's index, 0..count-1, fixed for its data dir (--shard-index; docs/sharding.md)",
        ENGRAM_FIELD(shard.index)));
    options.push_back(MakeOption<uint32_t>(
        "shard.count", "shards in the deployment; 1: not sharded (writes of any agent accepted)",
        ENGRAM_FIELD(shard.count), 1));
    options.push_back(MakeOption<int>(
        "tls.reload_interval_s", "seconds between re-reads of the TLS files (renewals apply live)",
        ENGRAM_FIELD(tls.reload_interval_s), 1));
    return options;
  }();
  return options;
}

#undef ENGRAM_FIELD

// Flattens a YAML map into dotted keys ("limits.max_text_bytes").
absl::Status Flatten(const YAML::Node& node, const std::string& prefix,
                     std::vector<std::pair<std::string, YAML::Node>>& out) {
  if (!node.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config ", prefix.empty() ? "document" : "key '" + prefix + "'", " must be a mapping"));
  }
  for (const auto& entry : node) {
    if (!entry.first.IsScalar()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config ", prefix.empty() ? "document" : "key '" + prefix + "'",
                       " has a non-scalar key"));
    }
    std::string key =
        prefix.empty() ? entry.first.Scalar() : absl::StrCat(prefix, ".", entry.first.Scalar());
    if (entry.second.IsMap()) {
      if (absl::Status s = Flatten(entry.second, key, out); !s.ok()) return s;
    } else {
      out.emplace_back(key, entry.second);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ServerConfig> ParseConfig(const std::string& yaml_text, ServerConfig base) {
  absl::StatusOr<ServerConfig> merged = MergeConfig(yaml_text, std::move(base));
  if (!merged.ok()) return merged.status();
  if (absl::Status s = ValidateConfig(*merged); !s.ok()) return s;
  return merged;
}

absl::StatusOr<ServerConfig> MergeConfig(const std::string& yaml_text, ServerConfig base) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config is not valid YAML: ", e.what()));
  }
  if (root.IsNull()) return base;
  std::vector<std::pair<std::string, YAML::Node>> entries;
  try {
    if (absl::Status s = Flatten(root, "", entries); !s.ok()) return s;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config is not valid YAML: ", e.what()));
  }
  for (const auto& [key, node] : entries) {
    const Option* option = nullptr;
    for (const Option& candidate : Options()) {
      if (candidate.key == key) option = &candidate;
    }
    if (option == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown config key '", key, "'"));
    }
    if (absl::Status s = option->parse(node, base); !s.ok()) return s;
  }
  return base;
}

absl::StatusOr<ServerConfig> LoadConfigLayers(const std::vector<std::string>& paths) {
  ServerConfig config;
  for (const std::string& path : paths) {
    std::ifstream file(path);
    if (!file) return absl::NotFoundError(absl::StrCat("cannot read config file '", path, "'"));
    std::stringstream text;
    text << file.rdbuf();
    absl::StatusOr<ServerConfig> merged = MergeConfig(text.str(), std::move(config));
    if (!merged.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", merged.status().message()));
    }
    config = *std::move(merged);
  }
  return config;
}

absl::Status ValidateConfig(const ServerConfig& config) {
  if (config.listen_address.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen_address '", config.listen_address, "' must be host:port"));
  }
  if (config.store.data_dir.empty()) return absl::InvalidArgumentError("data_dir is empty");
  if (config.tls.cert_file.empty() != config.tls.key_file.empty()) {
    return absl::InvalidArgumentError("tls.cert_file and tls.key_file go together: set both");
  }
  if (!config.tls.client_ca_file.empty() && config.tls.cert_file.empty()) {
    return absl::InvalidArgumentError(
        "tls.client_ca_file (mTLS) needs the server's own tls.cert_file and tls.key_file");
  }
  const bool auth = !config.auth.tokens_file.empty();
  const bool tls = !config.tls.cert_file.empty();
  if (!IsLoopbackAddress(config.listen_address) && !(auth && tls) && !config.insecure) {
    return absl::FailedPreconditionError(absl::StrCat(
        "listen_address '", config.listen_address, "' is reachable from other machines, but ",
        !auth && !tls ? "neither auth (auth.tokens_file) nor TLS (tls.cert_file) is"
        : !auth       ? "auth (auth.tokens_file) is not"
                      : "TLS (tls.cert_file) is not",
        " configured: anyone reaching the port could read and write every tenant's data, or "
        "read tokens off the wire. Configure both, listen on loopback, or accept the risk with "
        "insecure: true (--insecure)"));
  }
  if (config.shard.count > sharding::kMaxShards) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard.count is ", config.shard.count, "; at most ", sharding::kMaxShards));
  }
  if (config.shard.index >= config.shard.count) {
    return absl::InvalidArgumentError(absl::StrCat("shard.index is ", config.shard.index,
                                                   "; shard.count is ", config.shard.count,
                                                   ", so the index must be below it"));
  }
  if (!config.health_address.empty() && config.health_address.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("health_address '", config.health_address, "' must be host:port"));
  }
  static const char* kLevels[] = {"trace", "debug", "info", "warn", "error"};
  if (std::find(std::begin(kLevels), std::end(kLevels), config.log_level) == std::end(kLevels)) {
    return absl::InvalidArgumentError(absl::StrCat("log_level '", config.log_level,
                                                   "' is not one of trace, debug, info, warn, "
                                                   "error"));
  }
  if (config.gpu.precision != "fp16" && config.gpu.precision != "fp32") {
    return absl::InvalidArgumentError(
        absl::StrCat("gpu.precision '", config.gpu.precision, "' is not one of fp16, fp32"));
  }
  if (config.worker_threads < 1 || config.read_threads < 1 || config.lookup_threads < 1 ||
      config.admin_threads < 1 || config.max_k < 1) {
    return absl::InvalidArgumentError(
        "worker_threads, read_threads, lookup_threads, admin_threads and max_k must be at "
        "least 1");
  }
  if (config.max_k > static_cast<int>(index::VectorPartition::kMaxK)) {
    return absl::InvalidArgumentError(absl::StrCat("max_k is ", config.max_k, "; the index allows ",
                                                   index::VectorPartition::kMaxK));
  }
  const IndexConfig& ix = config.index;
  if (ix.alpha > 4.0f) {
    return absl::InvalidArgumentError(absl::StrCat("index.alpha is ", ix.alpha, "; must be <= 4"));
  }
  if (ix.target_recall > 1.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("index.target_recall is ", ix.target_recall, "; must be <= 1"));
  }
  if (ix.max_degree > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("index.max_degree is ", ix.max_degree, "; must be <= 1024"));
  }
  for (uint32_t beam : {ix.build_beam_width, ix.default_beam_width}) {
    if (beam > index::VectorPartition::kMaxBeamWidth) {
      return absl::InvalidArgumentError(absl::StrCat("index beam width ", beam, " exceeds ",
                                                     index::VectorPartition::kMaxBeamWidth));
    }
  }
  return absl::OkStatus();
}

bool IsLoopbackAddress(const std::string& listen_address) {
  absl::string_view address = listen_address;
  if (absl::StartsWith(address, "unix:") || absl::StartsWith(address, "unix-abstract:")) {
    return true;
  }
  absl::string_view host;
  if (absl::ConsumePrefix(&address, "[")) {
    host = address.substr(0, address.find(']'));
  } else {
    host = address.substr(0, address.rfind(':'));
  }
  if (host == "localhost" || host == "::1") return true;
  // 127.0.0.0/8, written as a dotted quad.
  std::vector<absl::string_view> octets = absl::StrSplit(host, '.');
  if (octets.size() != 4 || octets[0] != "127") return false;
  for (absl::string_view octet : octets) {
    int value = 0;
    if (!absl::SimpleAtoi(octet, &value) || value < 0 || value > 255) return false;
  }
  return true;
}

std::string DescribeConfig(const ServerConfig& config) {
  std::string out;
  std::vector<std::string> sections;  // the mappings the previous key was in
  for (const Option& option : Options()) {
    std::vector<std::string> parts = absl::StrSplit(option.key, '.');
    const size_t depth = parts.size() - 1;
    size_t same = 0;
    while (same < depth && same < sections.size() && sections[same] == parts[same]) ++same;
    for (size_t level = same; level < depth; ++level) {
      absl::StrAppend(&out, std::string(2 * level, ' '), parts[level], ":\n");
    }
    sections.assign(parts.begin(), parts.end() - 1);
    const std::string indent(2 * depth, ' ');
    absl::StrAppend(&out, indent, "# ", option.doc, "\n", indent, parts.back(), ": ",
                    option.print(config), "\n");
  }
  return out;
}

}  // namespace engram::server
