#include "server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/strings/str_cat.h"

namespace engram::server {

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("engram_rpc_requests_total")
                   .Help("gRPC calls finished, by method and status code")
                   .Register(*registry_);
  latency_ = &prometheus::BuildHistogram()
                  .Name("engram_rpc_latency_seconds")
                  .Help("gRPC call latency from arrival to finish, by method")
                  .Register(*registry_);
}

Metrics::~Metrics() = default;

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& address) {
  std::unique_ptr<Metrics> metrics(new Metrics());
  if (address.empty()) return metrics;
  try {
    metrics->exposer_ = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot serve metrics on '", address, "': ", e.what()));
  }
  metrics->exposer_->RegisterCollectable(metrics->registry_);
  return metrics;
}

void Metrics::RecordRpc(std::string_view rpc, absl::StatusCode code, absl::Duration latency) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};
  std::string method(rpc);
  requests_->Add({{"rpc", method}, {"code", absl::StatusCodeToString(code)}}).Increment();
  latency_->Add({{"rpc", method}}, kBuckets).Observe(absl::ToDoubleSeconds(latency));
}

}  // namespace engram::server
