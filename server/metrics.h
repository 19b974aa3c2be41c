// Prometheus metrics of engramd, served at http://<metrics_address>/metrics:
//   engram_rpc_requests_total{rpc,code}     calls finished, by status code
//   engram_rpc_latency_seconds{rpc}         time from arrival to finish
// plus gauges and counters read from their owners at each scrape
// (AddSource; e.g. engram_kv_* from the KV cache store).
// Thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace prometheus {
class Exposer;
class Registry;
template <typename T>
class Family;
class Counter;
class Histogram;
class Collectable;
}  // namespace prometheus

namespace engram::server {

class Metrics {
 public:
  // Serves the metrics at `address` (host:port) unless it is empty.
  // FAILED_PRECONDITION when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const std::string& address);
  ~Metrics();

  // The port the endpoint listens on (the one the OS picked for port 0), or
  // 0 when metrics are off.
  int port() const;

  void RecordRpc(std::string_view rpc, absl::StatusCode code, absl::Duration latency);

  // A value read at scrape time.
  struct Sample {
    std::string name;
    std::string help;
    double value = 0;
    bool counter = false;  // monotonic (a counter) or not (a gauge)
  };
  // `source` is called at every scrape, from the exposer's thread; it must
  // stay valid until RemoveSources or the Metrics object's destruction.
  void AddSource(std::function<std::vector<Sample>()> source);
  // Unregisters every source; when it returns, no scrape is calling one.
  // (Shutdown closes the stores the sources read while the endpoint stops,
  // which takes civetweb up to a couple of seconds.)
  void RemoveSources();

 private:
  Metrics();
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* latency_;
  std::vector<std::shared_ptr<prometheus::Collectable>> sources_;
};

}  // namespace engram::server
