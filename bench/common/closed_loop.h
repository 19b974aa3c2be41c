// A closed-loop load generator for engramd benchmarks: `concurrency` calls
// kept in flight for a duration, each completion starting the next, with
// every call's latency recorded. Header-only: benchmarks only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace engram::bench {

struct Measurement {
  std::string operation;
  int concurrency = 0;
  int batch = 0;
  double seconds = 0;
  uint64_t calls = 0;
  uint64_t errors = 0;
  std::vector<double> latencies_ms;
};

// Keeps `concurrency` calls in flight for `duration`. `start_call` issues one
// asynchronous call and must invoke `done(ok)` exactly once when it completes.
using StartCall = std::function<void(std::function<void(bool)> done)>;

inline Measurement RunClosedLoop(const std::string& operation, int concurrency, int batch,
                                 absl::Duration duration, const StartCall& start_call) {
  Measurement m;
  m.operation = operation;
  m.concurrency = concurrency;
  m.batch = batch;
  absl::Mutex mutex;
  absl::Time start = absl::Now();
  absl::Time end = start + duration;
  absl::BlockingCounter slots_finished(concurrency);
  std::function<void()> issue;
  issue = [&] {
    absl::Time call_start = absl::Now();
    start_call([&, call_start](bool ok) {
      absl::Time now = absl::Now();
      {
        absl::MutexLock lock(&mutex);
        ++m.calls;
        if (!ok) ++m.errors;
        m.latencies_ms.push_back(absl::ToDoubleMilliseconds(now - call_start));
      }
      if (now < end) {
        issue();
      } else {
        slots_finished.DecrementCount();
      }
    });
  };
  for (int i = 0; i < concurrency; ++i) issue();
  slots_finished.Wait();
  m.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return m;
}

inline double Percentile(std::vector<double>& values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t index = std::min(values.size() - 1, static_cast<size_t>(p * values.size()));
  return values[index];
}

}  // namespace engram::bench
