#include "server/engram_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "embed/embedder.h"
#include "retrieval/engine.h"
#include "server/admin_service.h"
#include "server/auth/authenticator.h"
#include "server/kv_cache_service.h"
#include "server/memory_service.h"
#include "server/metrics.h"
#include "server/parse_error_interceptor.h"
#include "server/rpc_runner.h"
#include "server/status_convert.h"
#include "server/tenant_limits.h"
#include "server/thread_pool.h"
#include "server/tls_credentials.h"
#include "storage/episode_store.h"
#include "storage/kvcache/kv_cache_store.h"

namespace engram::server {

absl::StatusOr<std::unique_ptr<EngramServer>> EngramServer::Start(const ServerConfig& config) {
  if (absl::Status valid = ValidateConfig(config); !valid.ok()) return valid;
  std::unique_ptr<EngramServer> server(new EngramServer());
  server->config_ = config;
  // Credentials first: a bad tokens or TLS file should stop engramd before
  // it spends minutes loading the index.
  absl::StatusOr<std::unique_ptr<auth::Authenticator>> authenticator =
      auth::Authenticator::Create(config.auth.tokens_file);
  if (!authenticator.ok()) return authenticator.status();
  server->authenticator_ = *std::move(authenticator);
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      ListenerCredentials(config.tls);
  if (!credentials.ok()) return credentials.status();
  storage::StoreOptions store_options = config.store;
  store_options.shard_index = config.shard.index;
  absl::StatusOr<std::unique_ptr<storage::EpisodeStore>> store =
      storage::EpisodeStore::Open(store_options);
  if (!store.ok()) return store.status();
  server->store_ = *std::move(store);
  const storage::EpisodeStore::TextIndexReport text = server->store_->text_index_report();
  if (text.spaces_rebuilt > 0) {
    spdlog::info(
        "event=text_index_rebuilt spaces={} episodes={} reason=\"new tokenizer or layout\"",
        text.spaces_rebuilt, text.episodes_indexed);
  }
  absl::StatusOr<std::unique_ptr<embed::Embedders>> embedders =
      embed::Embedders::Create(config.embedders);
  if (!embedders.ok()) return embedders.status();
  server->embedders_ = *std::move(embedders);
  for (const std::string& name : server->embedders_->Names()) {
    embed::Embedder* embedder = server->embedders_->Find(name);
    spdlog::info("event=embedder_ready name={} dimension={}", name, embedder->dimension());
  }
  retrieval::EngineOptions engine_options;
  engine_options.embedders = server->embedders_.get();
  engine_options.index = config.index;
  engine_options.default_snapshot_dir =
      (std::filesystem::path(config.store.data_dir) / "index").string();
  engine_options.scanner.use_gpu = config.gpu.enabled;
  engine_options.scanner.budget_bytes = config.gpu.budget_mb << 20;
  engine_options.scanner.precision =
      config.gpu.precision == "fp32" ? index::Precision::kFp32 : index::Precision::kFp16;
  engine_options.scanner.batch_window = absl::Microseconds(config.gpu.batch_window_us);
  engine_options.scanner.max_batch = static_cast<size_t>(config.gpu.max_batch);
  engine_options.max_k = static_cast<uint32_t>(config.max_k);
  engine_options.gate = config.router.gate;
  engine_options.deliberate_below = config.router.deliberate_below;
  absl::Time index_start = absl::Now();
  absl::StatusOr<std::unique_ptr<retrieval::Engine>> engine =
      retrieval::Engine::Open(server->store_.get(), std::move(engine_options));
  if (!engine.ok()) return engine.status();
  server->engine_ = *std::move(engine);
  const index::ScannerStats scan = server->engine_->ScanStats();
  spdlog::info("event=scan_backend backend={} reason=\"{}\"", scan.backend, scan.reason);
  spdlog::info("event=index_ready seconds={:.2f}",
               absl::ToDoubleSeconds(absl::Now() - index_start));
  storage::EpisodeStore::KvColumnFamilies kv_cfs = server->store_->kv_column_families();
  kvcache::KvStoreOptions kv_options;
  kv_options.pool_bytes = config.kv.pool_mb << 20;
  kv_options.max_tokens = config.kv.max_tokens;
  kv_options.max_agent_id_bytes = config.store.limits.max_id_bytes;
  kv_options.sync_writes = config.store.sync_writes;
  kv_options.disk_guard = &server->store_->disk_guard();
  server->kv_store_ =
      std::make_unique<kvcache::KvCacheStore>(kv_cfs.db, kv_cfs.blocks, kv_cfs.meta, kv_options);
  if (absl::Status recovered = server->kv_store_->Recover(); !recovered.ok()) return recovered;
  absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create(config.metrics_address);
  if (!metrics.ok()) return metrics.status();
  server->metrics_ = *std::move(metrics);
  server->metrics_->AddSource([guard = &server->store_->disk_guard()] {
    storage::DiskGuard::Stats disk = guard->stats();
    auto value = [](uint64_t v) { return static_cast<double>(v); };
    return std::vector<Metrics::Sample>{
        {"engram_disk_free_bytes", "bytes free on the data volume", value(disk.free_bytes)},
        {"engram_disk_min_free_bytes", "the free-space floor (min_free_disk_mb)",
         value(disk.min_free_bytes)},
        {"engram_disk_writes_stopped",
         "1 while RocksDB has stopped writes after running out of space", value(disk.stopped)},
        {"engram_disk_reserve_present", "1 while the disk reserve file exists",
         value(disk.reserve_present)},
        {"engram_disk_refused_writes_total", "writes refused for lack of disk space",
         value(disk.refused_writes), true},
        {"engram_disk_resumes_total", "times writes resumed after a full disk", value(disk.resumes),
         true},
    };
  });
  server->metrics_->AddSource([kv = server->kv_store_.get()] {
    kvcache::KvStoreStats stats = kv->Stats();
    auto value = [](uint64_t v) { return static_cast<double>(v); };
    return std::vector<Metrics::Sample>{
        {"engram_kv_caches", "KV caches stored (agent x model)", value(stats.caches)},
        {"engram_kv_stored_bytes", "bytes of stored KV layer-blocks (each shared block once)",
         value(stats.stored_bytes)},
        {"engram_kv_unique_layer_blocks", "stored KV layer-blocks", value(stats.unique_blocks)},
        {"engram_kv_pool_resident_bytes", "bytes of KV blocks in the RAM pool",
         value(stats.pool.resident_bytes)},
        {"engram_kv_pool_budget_bytes", "RAM pool budget (kv.pool_mb)",
         value(stats.pool.budget_bytes)},
        {"engram_kv_pool_hits_total", "KV block reads served from the RAM pool",
         value(stats.pool.hits), true},
        {"engram_kv_pool_misses_total", "KV block reads that went to disk",
         value(stats.pool.misses), true},
        {"engram_kv_pool_evictions_total", "KV blocks evicted from the RAM pool",
         value(stats.pool.evictions), true}};
  });
  server->metrics_->AddSource([engine = server->engine_.get()] {
    const retrieval::IndexHealth health = engine->Health();
    auto value = [](uint64_t v) { return static_cast<double>(v); };
    return std::vector<Metrics::Sample>{
        {"engram_index_queued_writes",
         "acknowledged writes waiting for the background indexer (searched exactly meanwhile)",
         value(health.queued)},
        {"engram_index_add_failures_total",
         "index adds that failed even when retried from the store's record",
         value(health.add_failures), true},
        {"engram_index_healed_total", "index adds that failed once and succeeded from the store",
         value(health.healed), true},
        {"engram_index_snapshot_failures_total", "index snapshot writes that failed",
         value(health.snapshot_failures), true}};
  });
  const size_t queue = static_cast<size_t>(config.max_queued_requests);
  server->lookup_pool_ = std::make_unique<ThreadPool>(config.lookup_threads, queue);
  server->read_pool_ = std::make_unique<ThreadPool>(config.read_threads, queue);
  server->write_pool_ = std::make_unique<ThreadPool>(config.worker_threads, queue);
  server->admin_pool_ = std::make_unique<ThreadPool>(config.admin_threads, queue);
  server->limits_ = std::make_unique<TenantLimits>(config.tenant_limits, server->store_.get(),
                                                   server->kv_store_.get());
  server->runner_ = std::make_unique<RpcRunner>(
      RpcRunner::Pools{server->lookup_pool_.get(), server->read_pool_.get(),
                       server->write_pool_.get(), server->admin_pool_.get()},
      server->metrics_.get(), server->authenticator_.get(), server->limits_.get(),
      config.max_inflight_write_mb << 20);
  server->memory_service_ = std::make_unique<MemoryServiceImpl>(
      server->engine_.get(), server->runner_.get(), config.shard);
  server->admin_service_ =
      std::make_unique<AdminServiceImpl>(server->engine_.get(), server->runner_.get(), config);
  server->kv_service_ =
      std::make_unique<KvCacheServiceImpl>(server->kv_store_.get(), server->runner_.get(), config);

  // Relative directories resolve against the working directory: say where
  // each one actually is.
  auto absolute = [](const std::string& path) {
    std::error_code ec;
    std::filesystem::path resolved = std::filesystem::absolute(path, ec);
    return ec ? path : resolved.string();
  };
  std::vector<ScrubbedPath> scrubbed = {{absolute(config.store.data_dir), "<data_dir>"},
                                        {absolute(config.checkpoint_dir), "<checkpoint_dir>"},
                                        {absolute(config.backup_dir), "<backup_dir>"},
                                        {absolute(config.restore_dir), "<restore_dir>"},
                                        {absolute(config.kv.export_dir), "<kv.export_dir>"}};
  if (!config.index.snapshot_dir.empty()) {
    scrubbed.push_back({absolute(config.index.snapshot_dir), "<index.snapshot_dir>"});
  }
  SetScrubbedPaths(std::move(scrubbed));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen_address, *credentials, &server->port_);
  builder.SetMaxReceiveMessageSize(config.max_message_bytes);
  builder.SetMaxSendMessageSize(config.max_message_bytes);
  builder.RegisterService(server->memory_service_.get());
  builder.RegisterService(server->admin_service_.get());
  builder.RegisterService(server->kv_service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<ParseErrorInterceptorFactory>());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server->grpc_server_ = builder.BuildAndStart();
  if (server->grpc_server_ == nullptr || server->port_ == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot listen on '", config.listen_address, "' (in use or invalid)"));
  }
  if (!config.health_address.empty()) {
    grpc::ServerBuilder health_builder;
    health_builder.AddListeningPort(config.health_address, grpc::InsecureServerCredentials(),
                                    &server->health_port_);
    server->health_server_ = health_builder.BuildAndStart();
    if (server->health_server_ == nullptr || server->health_port_ == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot listen on health_address '", config.health_address, "' (in use or invalid)"));
    }
    server->health_server_->GetHealthCheckService()->SetServingStatus(true);
  }
  server->grpc_server_->GetHealthCheckService()->SetServingStatus(true);

  const auth::Authenticator::Counts credentials_loaded = server->authenticator_->counts();
  spdlog::info("event=auth enabled={} tokens={} cert_mappings={} tls={} mtls={} insecure={}",
               server->authenticator_->enabled(), credentials_loaded.tokens,
               credentials_loaded.certs, !config.tls.cert_file.empty(),
               !config.tls.client_ca_file.empty(), config.insecure);
  spdlog::info(
      "event=serving listen={} port={} metrics={} metrics_port={} data_dir={} "
      "checkpoint_dir={} backup_dir={} restore_dir={} kv_export_dir={} sync_writes={}",
      config.listen_address, server->port_, config.metrics_address, server->metrics_port(),
      absolute(config.store.data_dir), absolute(config.checkpoint_dir), absolute(config.backup_dir),
      absolute(config.restore_dir), absolute(config.kv.export_dir), config.store.sync_writes);
  return server;
}

absl::Status EngramServer::Reload() {
  absl::Status reloaded = authenticator_->Reload();
  if (!reloaded.ok()) return reloaded;
  const auth::Authenticator::Counts loaded = authenticator_->counts();
  spdlog::info("event=auth_reloaded tokens={} cert_mappings={}", loaded.tokens, loaded.certs);
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> EngramServer::InProcessChannel() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(config_.max_message_bytes);
  args.SetMaxSendMessageSize(config_.max_message_bytes);
  return grpc_server_->InProcessChannel(args);
}

int EngramServer::metrics_port() const { return metrics_ != nullptr ? metrics_->port() : 0; }

absl::Status EngramServer::Shutdown() {
  if (shut_down_) return absl::OkStatus();
  shut_down_ = true;
  spdlog::info("event=shutdown_begin grace_s={}", config_.shutdown_grace_s);
  const absl::Time grace_end = absl::Now() + absl::Seconds(config_.shutdown_grace_s);
  grpc_server_->GetHealthCheckService()->SetServingStatus(false);
  if (health_server_ != nullptr) health_server_->GetHealthCheckService()->SetServingStatus(false);
  // Refuses new calls, lets in-flight ones finish until the grace period
  // ends, then cancels the rest; returns when all handlers are done.
  grpc_server_->Shutdown(std::chrono::system_clock::now() +
                         std::chrono::seconds(config_.shutdown_grace_s));
  grpc_server_->Wait();
  lookup_pool_.reset();
  read_pool_.reset();
  write_pool_.reset();
  admin_pool_.reset();
  // The scrape sources read the stores closed below: detach them, then let
  // the endpoint stop (civetweb takes up to ~2 s) while the index snapshots.
  metrics_->RemoveSources();
  std::thread stop_metrics([metrics = std::move(metrics_)]() mutable { metrics.reset(); });
  // Writes still queued for the index (a graph build can take minutes on a
  // large partition) get what is left of the grace period; past it, builds
  // are cancelled and the rest is left to the next start, which reads back
  // from the store whatever the snapshots lack.
  if (!engine_->FlushIndex(grace_end)) {
    const uint64_t left = engine_->StopIndexing();
    spdlog::warn(
        "event=index_flush_abandoned queued_writes={} reason=\"shutdown grace of {} s passed; "
        "the next start reads them back from the store\"",
        left, config_.shutdown_grace_s);
  }
  absl::Status snapshotted = engine_->SaveSnapshots();
  if (!snapshotted.ok()) {
    spdlog::error("event=index_snapshot_failed error=\"{}\"", snapshotted.ToString());
  }
  engine_.reset();
  kv_store_.reset();
  absl::Status synced = store_->SyncWal();
  store_.reset();
  stop_metrics.join();
  // NOT_SERVING to probes until here, then gone.
  if (health_server_ != nullptr) {
    health_server_->Shutdown(std::chrono::system_clock::now());
    health_server_->Wait();
  }
  spdlog::info("event=shutdown_done wal_synced={}", synced.ok());
  return synced;
}

EngramServer::~EngramServer() {
  if (grpc_server_ != nullptr) Shutdown().IgnoreError();
}

}  // namespace engram::server
