// Prometheus metrics of engramd, served at http://<metrics_address>/metrics:
//   engram_rpc_requests_total{rpc,code}     calls finished, by status code
//   engram_rpc_latency_seconds{rpc}         time from arrival to finish
//   engram_search_latency_seconds{policy,route}  a search's engine time, by
//                                           the route asked for and the one
//                                           that answered
//   engram_search_gate_total{decision}      the quality gate's verdicts
//                                           ("escalated", "kept"): the
//                                           escalation rate of route AUTO
//   engram_search_stage_seconds{stage}      each search stage's time
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
  // One finished search: what was asked (auto, fast, deliberate), what
  // answered, the gate's verdict when one ran, and its stages' times.
  struct StageTime {
    std::string_view stage;
    absl::Duration time;
  };
  void RecordSearch(std::string_view policy, std::string_view route, const bool* escalated,
                    absl::Duration latency, const std::vector<StageTime>& stages);

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
  prometheus::Family<prometheus::Histogram>* search_latency_;
  prometheus::Family<prometheus::Counter>* gate_;
  prometheus::Family<prometheus::Histogram>* stage_time_;
  std::vector<std::shared_ptr<prometheus::Collectable>> sources_;
};

}  // namespace engram::server
