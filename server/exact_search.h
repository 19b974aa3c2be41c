// Exact (brute-force) search over a space's episodes: every episode that
// passes the filter is scored with the space's metric and the best k kept.
// Stands in for the quantized graph index until it lands; thereafter the
// reference the index and the router are measured against.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/episode_store.h"

namespace engram::server {

struct SearchResult {
  std::vector<std::pair<float, Episode>> hits;  // best first
  uint64_t scanned = 0;
};

// INVALID_ARGUMENT for a query of the wrong dimension or with NaN/Inf, and
// for k outside 1..max_k; NOT_FOUND for an unknown space.
absl::StatusOr<SearchResult> ExactSearch(storage::EpisodeStore& store, const std::string& tenant,
                                         const std::string& space, std::span<const float> query,
                                         uint32_t k, uint32_t max_k, const EpisodeFilter& filter,
                                         absl::Time deadline);

}  // namespace engram::server
