// Exact (brute-force) search over a space's episodes, read from the store:
// every episode that passes the filter is scored with the space's metric and
// the best k kept. The reference the index and the router are measured
// against (Search's route "exact"), and the last resort of the index route
// when a filter leaves its candidates short of k.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "retrieval/search.h"
#include "storage/episode_store.h"

namespace engram::retrieval {

struct ExactSearchResult {
  std::vector<SearchHit> hits;  // best first
  uint64_t scanned = 0;         // episodes scored
};

// The query must already be validated against `space` (dimension, finite
// values) and k be positive. DEADLINE_EXCEEDED when the deadline passes.
absl::StatusOr<ExactSearchResult> ExactSearch(storage::EpisodeStore& store,
                                              const std::string& tenant, const SpaceInfo& space,
                                              std::span<const float> query, uint32_t k,
                                              const EpisodeFilter& filter, absl::Time deadline);

}  // namespace engram::retrieval
