#include "server/tenant_limits.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/retry_after.h"
#include "storage/episode_store.h"
#include "storage/kvcache/kv_cache_store.h"

namespace engram::server {

absl::Status TenantLimits::AdmitCall(const std::string& tenant, absl::Time now) {
  if (config_.requests_per_s <= 0) return absl::OkStatus();
  const double capacity = config_.burst > 0 ? static_cast<double>(config_.burst)
                                            : std::max(1.0, config_.requests_per_s);
  double wait_s = 0;
  {
    absl::MutexLock lock(&mutex_);
    auto [bucket, inserted] = buckets_.try_emplace(tenant, Bucket{capacity, now});
    Bucket& b = bucket->second;
    const double elapsed = std::max(0.0, absl::ToDoubleSeconds(now - b.refilled));
    b.tokens = std::min(capacity, b.tokens + elapsed * config_.requests_per_s);
    b.refilled = now;
    if (b.tokens >= 1.0) {
      b.tokens -= 1.0;
      return absl::OkStatus();
    }
    wait_s = (1.0 - b.tokens) / config_.requests_per_s;
  }
  const int64_t wait_ms = static_cast<int64_t>(std::ceil(wait_s * 1000));
  return WithRetryAfter(
      absl::ResourceExhaustedError(absl::StrCat(
          "the tenant's request rate limit is reached (tenant_limits.requests_per_s = ",
          config_.requests_per_s, ", burst ", capacity, "); retry in ", wait_ms, " ms")),
      absl::Milliseconds(wait_ms));
}

absl::Status TenantLimits::AdmitEpisodes(const std::string& tenant, uint64_t new_episodes,
                                         uint64_t request_bytes) {
  if (config_.max_episodes == 0 && config_.max_stored_mb == 0) return absl::OkStatus();
  const storage::EpisodeStore::TenantUsage usage = store_->Usage(tenant);
  if (config_.max_episodes > 0 && usage.episodes + new_episodes > config_.max_episodes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the tenant holds ", usage.episodes, " episodes; ", new_episodes,
                     " more would pass tenant_limits.max_episodes (", config_.max_episodes,
                     "); nothing was written"));
  }
  const uint64_t max_bytes = config_.max_stored_mb << 20;
  if (max_bytes > 0 && usage.stored_bytes + request_bytes > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the tenant stores about ", usage.stored_bytes, " bytes of episodes; this write of ",
        request_bytes, " bytes would pass tenant_limits.max_stored_mb (", config_.max_stored_mb,
        " MiB); nothing was written"));
  }
  return absl::OkStatus();
}

absl::Status TenantLimits::AdmitKvSave(const std::string& tenant, uint64_t new_bytes) {
  const uint64_t max_bytes = config_.max_kv_mb << 20;
  if (max_bytes == 0) return absl::OkStatus();
  const uint64_t stored = kv_store_->TenantStoredBytes(tenant);
  if (stored + new_bytes > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the tenant's KV caches store ", stored, " bytes; this save of up to ",
                     new_bytes, " bytes would pass tenant_limits.max_kv_mb (", config_.max_kv_mb,
                     " MiB); nothing was stored"));
  }
  return absl::OkStatus();
}

}  // namespace engram::server
