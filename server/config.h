// engramd's configuration: a YAML file, overridden by command-line flags,
// over the defaults written here. `engramd --print-default-config` prints
// every option with its documentation; README.md's configuration reference
// is checked against that output by tests/unit/server/config_test.cc.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "embed/embedder.h"
#include "retrieval/episode_index.h"
#include "retrieval/quality_gate.h"
#include "storage/episode_store.h"

namespace engram::server {

// The vector index (retrieval/episode_index.h, index/vector_partition.h).
using IndexConfig = retrieval::IndexOptions;

// The KV cache store (storage/kvcache, server/kv_cache_service.h).
struct KvConfig {
  // RAM block pool budget in MiB; blocks beyond it are served from disk.
  // Default: 2048.
  size_t pool_mb = 2048;
  // Most tokens one cache may hold. Default: 131072.
  size_t max_tokens = 131072;
  // Where ExportCache writes and ImportCache reads safetensors files;
  // requests name paths inside it. Default: ./engram-kv-exports.
  std::string export_dir = "engram-kv-exports";
};

// The full-deliberation scan (index/partition_scanner.h): GPU when present.
struct GpuConfig {
  // Use a GPU when the build has CUDA and one answers; false: CPU twin.
  // Default: true.
  bool enabled = true;
  // MiB of partition copies (GPU memory, or host memory for the CPU twin);
  // least recently scanned partitions are dropped. Default: 4096.
  size_t budget_mb = 4096;
  // How the copies hold vectors: "fp16" (half the memory and bandwidth;
  // scores within fp16 rounding of exact) or "fp32" (scores as exact as the
  // graph search's float rerank, an fp32 GEMM). Default: "fp16".
  std::string precision = "fp16";
  // How long a batch of concurrent scans waits for more (only while scans
  // arrive concurrently; a lone scan never waits). Default: 200.
  int batch_window_us = 200;
  // Most queries per launch. Default: 256.
  int max_batch = 256;
};

// The dual-process router (retrieval/quality_gate.h): the quality gate's
// logistic model. Defaults: fitted on LoCoMo (bench/router/README.md).
struct RouterConfig {
  retrieval::GateModel gate = retrieval::DefaultGateModel();
  // Route AUTO deliberates at once when a search covers fewer vectors than
  // this (retrieval/engine.h); 0: never. Default: 4096.
  uint64_t deliberate_below = 4096;
};

// Who may call (server/auth/authenticator.h).
struct AuthConfig {
  // The tokens file `engramctl token` writes; re-read on SIGHUP. "": auth
  // off, every call is the tenant `default` with every right. Default: "".
  std::string tokens_file;
};

// TLS on the gRPC listener (not on the metrics endpoint).
struct TlsConfig {
  // PEM certificate chain and private key of the server; both or neither.
  // Default: "" (plaintext).
  std::string cert_file;
  std::string key_file;
  // PEM CA bundle client certificates must chain to. Set: mTLS, every
  // client presents a certificate (the tokens file may map its common name
  // to a tenant). Default: "".
  std::string client_ca_file;
  // How often the files above are re-read, so renewed certificates apply
  // without a restart (gRPC's file watcher; a SIGHUP cannot force it).
  // Default: 60.
  int reload_interval_s = 60;
};

// Per-tenant ceilings (server/tenant_limits.h); 0: no limit. Over one, a
// call is refused with RESOURCE_EXHAUSTED naming it, nothing written.
struct TenantLimitsConfig {
  // Live episodes one tenant may hold. Default: 0.
  uint64_t max_episodes = 0;
  // MiB of episode storage (RocksDB's estimate: compressed) one tenant may
  // use. Default: 0.
  uint64_t max_stored_mb = 0;
  // MiB of KV-cache blocks one tenant may store. Default: 0.
  uint64_t max_kv_mb = 0;
  // Calls per second of one tenant, any RPC (token bucket). Default: 0.
  double requests_per_s = 0;
  // Calls a tenant may make at once after a quiet spell; 0: one second's
  // worth of requests_per_s. Default: 0.
  uint32_t burst = 0;
};

// This engramd's place among shards (common/sharding.h, docs/sharding.md).
// Agents are placed on shards by rendezvous hashing of (tenant, agent);
// a shard refuses writes for agents it does not own.
struct ShardConfig {
  // This shard's index, 0..count-1; fixed for its data dir (recorded there on
  // first start). In a StatefulSet, the pod's ordinal (--shard-index).
  // Default: 0.
  uint32_t index = 0;
  // Shards in the deployment; 1: not sharded, every agent is this one's.
  // Default: 1.
  uint32_t count = 1;
};

struct ServerConfig {
  // host:port gRPC listens on; port 0 picks a free port (see port_file).
  // Default: 127.0.0.1:50051 (loopback only).
  std::string listen_address = "127.0.0.1:50051";
  // Listen on a non-loopback address without both auth (auth.tokens_file)
  // and TLS (tls.cert_file). Without it engramd refuses to start that way,
  // as anyone who reaches the port could read and write every tenant's data.
  // Default: false.
  bool insecure = false;
  // If set, the bound port is written here once the server accepts calls.
  // Default: "" (not written).
  std::string port_file;
  // host:port of the Prometheus /metrics endpoint; "" disables it; port 0
  // picks a free port (see metrics_port_file). Default: 127.0.0.1:9464.
  std::string metrics_address = "127.0.0.1:9464";
  // If set, the metrics endpoint's bound port is written here before
  // port_file is. Default: "" (not written).
  std::string metrics_port_file;
  // host:port of a second, plaintext listener that serves only the standard
  // gRPC health service (grpc.health.v1), for probes that cannot speak TLS
  // (Kubernetes' native gRPC probes) or hold no token. It answers SERVING
  // once the main listener does, and NOT_SERVING from the start of a
  // shutdown until engramd exits. "" disables it. Default: "".
  std::string health_address;
  // Threads that run writes (puts, updates, deletes, space changes, KV
  // saves). Writers block on fsync, so more threads give group commit more
  // to share. Default: 16.
  int worker_threads = 16;
  // Threads that run reads (searches, lists, histories, KV loads), apart
  // from the writers so that saturated writes never delay a read. Default: 8.
  int read_threads = 8;
  // Threads that run lookups (GetSpace, ListSpaces, GetEpisode, Stats,
  // KvStats, ListBackups), apart from the searches so that a saturated read
  // pool never delays one. Default: 2.
  int lookup_threads = 2;
  // Threads that run admin calls (compaction, checkpoints, backups, index
  // rebuilds, KV export/import). Default: 2.
  int admin_threads = 2;
  // Calls of one class (lookup, read, write, admin) waiting for its threads beyond
  // this are refused at once with RESOURCE_EXHAUSTED instead of queueing
  // without bound. Default: 4096.
  int max_queued_requests = 4096;
  // Largest request or response message, in bytes. Default: 64 MiB.
  int max_message_bytes = 64 << 20;
  // Bytes of PutEpisodes and UpdateEpisode requests being applied at once,
  // all callers together. A write holds several copies of itself in memory
  // while applied (the parsed request, the episodes, the write batch with
  // its postings, the memtable); a write that would pass this budget is
  // refused with RESOURCE_EXHAUSTED at once. Default: 512 MiB.
  uint64_t max_inflight_write_mb = 512;
  // Largest k a Search may ask for. Default: 1000.
  int max_k = 1000;
  // On SIGTERM/SIGINT, in-flight calls get this long to finish, and writes
  // still queued for the index what is left of it; graph builds still
  // running then are cancelled (the next start reads back what the
  // snapshots lack). Default: 10.
  int shutdown_grace_s = 10;
  // Where Checkpoint, Backup and RestoreBackup put their output. Requests name
  // entries inside these directories, never paths.
  // Defaults: ./engram-checkpoints, ./engram-backups, ./engram-restores.
  std::string checkpoint_dir = "engram-checkpoints";
  std::string backup_dir = "engram-backups";
  std::string restore_dir = "engram-restores";
  // trace, debug, info, warn, error. Default: info.
  std::string log_level = "info";
  // data_dir, sync_writes, block_cache_mb and the request limits
  // (storage/episode_store.h).
  storage::StoreOptions store;
  IndexConfig index;
  KvConfig kv;
  GpuConfig gpu;
  // The embedders spaces may name (embed/embedder.h): none by default.
  embed::EmbedderOptions embedders;
  RouterConfig router;
  AuthConfig auth;
  TlsConfig tls;
  TenantLimitsConfig tenant_limits;
  ShardConfig shard;
};

// Parses YAML over the defaults. Unknown keys and ill-typed or out-of-range
// values are INVALID_ARGUMENT naming the key.
absl::StatusOr<ServerConfig> ParseConfig(const std::string& yaml_text,
                                         ServerConfig base = ServerConfig());
// ParseConfig without the final ValidateConfig: for a file that is one of
// several (an overlay may hold what makes the whole valid).
absl::StatusOr<ServerConfig> MergeConfig(const std::string& yaml_text, ServerConfig base);
// Several files, each over the previous (later keys win), over the
// defaults, NOT validated: a file of the layers need not be valid alone (a
// deployment's common file and its overlay's), and engramd validates once
// its flags are applied too.
absl::StatusOr<ServerConfig> LoadConfigLayers(const std::vector<std::string>& paths);

// Checks cross-field constraints (e.g. worker_threads >= 1).
absl::Status ValidateConfig(const ServerConfig& config);

// True for addresses only this machine can reach: localhost, 127.0.0.0/8,
// [::1] and unix: sockets.
bool IsLoopbackAddress(const std::string& listen_address);

// Every option as commented YAML with the values of `config`.
std::string DescribeConfig(const ServerConfig& config = ServerConfig());

}  // namespace engram::server
