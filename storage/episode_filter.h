// Episode filters: validation of a client's filter and the predicate that
// decides whether one episode matches it. Used by listing and search alike.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "storage/episode.h"

namespace engram::storage {

// INVALID_ARGUMENT naming the bad part when the filter cannot be evaluated
// (session without agent, empty time range, ordering on a bool, EXISTS with a
// value, comparison without a value, NaN, ...).
absl::Status ValidateFilter(const EpisodeFilter& filter);

// Whether `episode` meets every condition of a valid `filter` and has not
// expired at `now_us`. Comparisons across types never match, except NE.
bool MatchesFilter(const EpisodeFilter& filter, const Episode& episode, int64_t now_us);

}  // namespace engram::storage
