// Per-tenant ceilings (server/config.h TenantLimitsConfig): a request rate,
// live episodes, stored episode bytes and stored KV-cache bytes. Over one, a
// call is refused with RESOURCE_EXHAUSTED naming the limit, before anything
// is written. Operator calls are not counted.
//
// The byte and episode checks read the current usage and add the request's
// own size, so concurrent writes of one tenant can overshoot by at most the
// batches in flight; the rate is exact (a token bucket per tenant).
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/config.h"

namespace engram::storage {
class EpisodeStore;
}
namespace engram::kvcache {
class KvCacheStore;
}

namespace engram::server {

class TenantLimits {
 public:
  TenantLimits(const TenantLimitsConfig& config, storage::EpisodeStore* store,
               kvcache::KvCacheStore* kv_store)
      : config_(config), store_(store), kv_store_(kv_store) {}

  // One call of `tenant` now (token bucket of tenant_limits.requests_per_s).
  absl::Status AdmitCall(const std::string& tenant, absl::Time now = absl::Now());
  // A write that adds up to `new_episodes` episodes of `request_bytes`.
  absl::Status AdmitEpisodes(const std::string& tenant, uint64_t new_episodes,
                             uint64_t request_bytes);
  // A KV save that stores up to `new_bytes` bytes of blocks.
  absl::Status AdmitKvSave(const std::string& tenant, uint64_t new_bytes);

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time refilled;
  };
  const TenantLimitsConfig config_;
  storage::EpisodeStore* store_;
  kvcache::KvCacheStore* kv_store_;
  absl::Mutex mutex_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace engram::server
