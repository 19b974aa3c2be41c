// engramd: the Engram daemon. With no arguments it runs the embedded default
// configuration (data in ./engram-data, gRPC on 127.0.0.1:50051, metrics on
// 127.0.0.1:9464). SIGTERM or SIGINT shut it down gracefully; SIGHUP
// re-reads the tokens file.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/version.h"
#include "server/config.h"
#include "server/engram_server.h"

namespace {

// The signals are blocked in every thread (gRPC's included) and taken here.
int WaitForSignal(const sigset_t& signals) {
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  return signal_number;
}

}  // namespace

int main(int argc, char** argv) {
  // Abseil's lock-order cycle detection (on in this Abseil build) costs a
  // graph lookup on every Mutex acquisition; the lock order is stated in the
  // headers and checked by clang's thread-safety analysis instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  CLI::App app{"engramd: Engram's memory database daemon"};
  // A flag given twice takes the last value, so wrappers can append overrides.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::vector<std::string> config_files;
  bool print_default_config = false;
  std::string listen, data_dir, metrics_address, port_file, log_level;
  std::optional<bool> sync_writes;
  bool insecure = false;
  std::optional<int> worker_threads;
  std::optional<uint32_t> shard_index, shard_count;
  app.add_option("-c,--config", config_files,
                 "YAML config file (see --print-default-config); repeat it to layer files, "
                 "later ones overriding earlier ones")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_flag("--print-default-config", print_default_config,
               "print every option with its default and exit");
  app.add_option("--listen", listen, "gRPC host:port (overrides listen_address)");
  app.add_option("--data-dir", data_dir, "database directory (overrides data_dir)");
  app.add_option("--metrics-address", metrics_address,
                 "Prometheus host:port, or 'off' (overrides metrics_address)");
  app.add_option("--port-file", port_file, "write the bound gRPC port here");
  std::string metrics_port_file;
  app.add_option("--metrics-port-file", metrics_port_file,
                 "write the metrics endpoint's bound port here");
  app.add_option("--sync-writes", sync_writes, "true|false (overrides sync_writes)");
  app.add_option("--worker-threads", worker_threads, "overrides worker_threads");
  app.add_option("--log-level", log_level, "overrides log_level");
  app.add_option("--shard-index", shard_index,
                 "this shard's index (overrides shard.index; a StatefulSet pod's ordinal)");
  app.add_option("--shard-count", shard_count, "shards in the deployment (overrides shard.count)");
  app.add_flag("--insecure", insecure,
               "allow a non-loopback --listen without auth and TLS (sets insecure)");
  app.set_version_flag("--version", absl::StrCat("engramd ", engram::kVersion, " (", engram::kBuild,
                                                 "; ", engram::kApi, ")"));
  CLI11_PARSE(app, argc, argv);

  if (print_default_config) {
    std::cout << engram::server::DescribeConfig();
    return 0;
  }
  engram::server::ServerConfig config;
  if (!config_files.empty()) {
    // Validated below, once the flags are applied.
    absl::StatusOr<engram::server::ServerConfig> loaded =
        engram::server::LoadConfigLayers(config_files);
    if (!loaded.ok()) {
      std::cerr << "engramd: " << loaded.status().message() << "\n";
      return 2;
    }
    config = *std::move(loaded);
  }
  if (!listen.empty()) config.listen_address = listen;
  if (!data_dir.empty()) config.store.data_dir = data_dir;
  if (!metrics_address.empty()) {
    config.metrics_address = metrics_address == "off" ? "" : metrics_address;
  }
  if (!port_file.empty()) config.port_file = port_file;
  if (!metrics_port_file.empty()) config.metrics_port_file = metrics_port_file;
  if (sync_writes) config.store.sync_writes = *sync_writes;
  if (worker_threads) config.worker_threads = *worker_threads;
  if (!log_level.empty()) config.log_level = log_level;
  if (shard_index) config.shard.index = *shard_index;
  if (shard_count) config.shard.count = *shard_count;
  if (insecure) config.insecure = true;
  if (absl::Status valid = engram::server::ValidateConfig(config); !valid.ok()) {
    std::cerr << "engramd: " << valid.message() << "\n";
    return 2;
  }

  auto logger = spdlog::stderr_color_mt("engramd");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ level=%l %v", spdlog::pattern_time_type::utc);
  logger->set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_default_logger(logger);

  absl::StatusOr<std::unique_ptr<engram::server::EngramServer>> server =
      engram::server::EngramServer::Start(config);
  if (!server.ok()) {
    spdlog::error("event=start_failed error=\"{}\"", server.status().ToString());
    return 1;
  }
  // Each written to a temp file and renamed, so a reader never sees a partial
  // port; the metrics port first, so it exists once the gRPC port does.
  auto write_port = [](const std::string& path, int port) {
    if (path.empty()) return;
    std::string tmp = path + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), path.c_str());
  };
  write_port(config.metrics_port_file, (*server)->metrics_port());
  write_port(config.port_file, (*server)->port());
  int signal_number = WaitForSignal(signals);
  for (; signal_number == SIGHUP; signal_number = WaitForSignal(signals)) {
    if (absl::Status reloaded = (*server)->Reload(); !reloaded.ok()) {
      spdlog::error("event=reload_failed error=\"{}\" kept=previous", reloaded.ToString());
    }
  }
  spdlog::info("event=signal signal={}", signal_number);
  absl::Status shutdown = (*server)->Shutdown();
  return shutdown.ok() ? 0 : 1;
}
