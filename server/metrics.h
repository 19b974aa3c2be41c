// Prometheus metrics of engramd, served at http://<metrics_address>/metrics:
//   engram_rpc_requests_total{rpc,code}     calls finished, by status code
//   engram_rpc_latency_seconds{rpc}         time from arrival to finish
// Thread-safe.
#pragma once

#include <memory>
#include <string>
#include <string_view>

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
}  // namespace prometheus

namespace engram::server {

class Metrics {
 public:
  // Serves the metrics at `address` (host:port) unless it is empty.
  // FAILED_PRECONDITION when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const std::string& address);
  ~Metrics();

  void RecordRpc(std::string_view rpc, absl::StatusCode code, absl::Duration latency);

 private:
  Metrics();
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* latency_;
};

}  // namespace engram::server
