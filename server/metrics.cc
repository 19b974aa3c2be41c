#include "server/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/strings/str_cat.h"

namespace engram::server {
namespace {

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
      0.01,    0.025,    0.05,    0.1,    0.25,    0.5,    1,     2.5,    10};
  return kBuckets;
}

class SourceCollectable : public prometheus::Collectable {
 public:
  explicit SourceCollectable(std::function<std::vector<Metrics::Sample>()> source)
      : source_(std::move(source)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> families;
    for (const Metrics::Sample& sample : source_()) {
      prometheus::MetricFamily family;
      family.name = sample.name;
      family.help = sample.help;
      family.type =
          sample.counter ? prometheus::MetricType::Counter : prometheus::MetricType::Gauge;
      prometheus::ClientMetric metric;
      if (sample.counter) {
        metric.counter.value = sample.value;
      } else {
        metric.gauge.value = sample.value;
      }
      family.metric.push_back(std::move(metric));
      families.push_back(std::move(family));
    }
    return families;
  }

 private:
  std::function<std::vector<Metrics::Sample>()> source_;
};

}  // namespace

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("engram_rpc_requests_total")
                   .Help("gRPC calls finished, by method and status code")
                   .Register(*registry_);
  latency_ = &prometheus::BuildHistogram()
                  .Name("engram_rpc_latency_seconds")
                  .Help("gRPC call latency from arrival to finish, by method")
                  .Register(*registry_);
  search_latency_ = &prometheus::BuildHistogram()
                         .Name("engram_search_latency_seconds")
                         .Help(
                             "search time in the engine, by the route asked for (policy) and "
                             "the route that answered")
                         .Register(*registry_);
  gate_ = &prometheus::BuildCounter()
               .Name("engram_search_gate_total")
               .Help("the quality gate's verdicts on route AUTO searches (escalated, kept)")
               .Register(*registry_);
  stage_time_ = &prometheus::BuildHistogram()
                     .Name("engram_search_stage_seconds")
                     .Help(
                         "time of each search stage (index, hydrate, lexical, fuse, gate, "
                         "scan, time, context, rerank, ...)")
                     .Register(*registry_);
}

Metrics::~Metrics() { RemoveSources(); }

void Metrics::RemoveSources() {
  if (exposer_ != nullptr) {
    for (const auto& source : sources_) exposer_->RemoveCollectable(source);
  }
  sources_.clear();
}

void Metrics::AddSource(std::function<std::vector<Sample>()> source) {
  auto collectable = std::make_shared<SourceCollectable>(std::move(source));
  sources_.push_back(collectable);
  if (exposer_ != nullptr) exposer_->RegisterCollectable(collectable);
}

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

int Metrics::port() const {
  if (exposer_ == nullptr) return 0;
  std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void Metrics::RecordRpc(std::string_view rpc, absl::StatusCode code, absl::Duration latency) {
  std::string method(rpc);
  requests_->Add({{"rpc", method}, {"code", absl::StatusCodeToString(code)}}).Increment();
  latency_->Add({{"rpc", method}}, LatencyBuckets()).Observe(absl::ToDoubleSeconds(latency));
}

void Metrics::RecordSearch(std::string_view policy, std::string_view route, const bool* escalated,
                           absl::Duration latency, const std::vector<StageTime>& stages) {
  search_latency_
      ->Add({{"policy", std::string(policy)}, {"route", std::string(route)}}, LatencyBuckets())
      .Observe(absl::ToDoubleSeconds(latency));
  if (escalated != nullptr) {
    gate_->Add({{"decision", *escalated ? "escalated" : "kept"}}).Increment();
  }
  for (const StageTime& stage : stages) {
    stage_time_->Add({{"stage", std::string(stage.stage)}}, LatencyBuckets())
        .Observe(absl::ToDoubleSeconds(stage.time));
  }
}

}  // namespace engram::server
