// Episode filters: validation of a client's filter and the predicate that
// decides whether one episode matches it. Used by listing and search alike.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "storage/episode.h"

namespace engram::storage {

// Most kinds a filter may list.
inline constexpr size_t kMaxFilterKinds = 64;

// INVALID_ARGUMENT naming the bad part when the filter cannot be evaluated
// (session without agent, empty time range, ordering on a bool, EXISTS with a
// value, comparison without a value, NaN, ...) or exceeds what an episode
// could hold (`limits`): an agent or session id over max_id_bytes, more than
// kMaxFilterKinds kinds or one over max_kind_bytes, more metadata
// predicates than max_metadata_entries, or predicates whose keys and string
// values add up to more than max_metadata_bytes. Messages never echo more
// than a short prefix of a rejected value.
absl::Status ValidateFilter(const EpisodeFilter& filter, const StoreLimits& limits = {});

// Whether `episode` meets every condition of a valid `filter` and has not
// expired at `now_us`. Comparisons across types never match, except NE.
bool MatchesFilter(const EpisodeFilter& filter, const Episode& episode, int64_t now_us);

}  // namespace engram::storage
