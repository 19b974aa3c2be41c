// Hydrator: the read-back step of a search. Candidates from any source are
// read from the store with one batched lookup (EpisodeStore::GetEpisodes,
// a RocksDB MultiGet) and checked against the whole filter; episodes
// deleted or expired since they were indexed drop out. A hydrator lives for
// one search and remembers what it read, so a widening round reads only the
// candidates it has not seen.
//
// Thread safety: one search, one thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "retrieval/candidate_source.h"
#include "retrieval/search.h"
#include "storage/episode_store.h"

namespace engram::retrieval {

class Hydrator {
 public:
  Hydrator(storage::EpisodeStore* store, const std::string& tenant, const std::string& space,
           const EpisodeFilter& filter);

  // Picks the best `k` candidates (in the given order, which must be best
  // first) whose episodes exist and match the filter; returns how many it
  // found. Reads the candidates not read before in one batch.
  absl::StatusOr<size_t> Hydrate(std::span<const Candidate> candidates, uint32_t k);

  // The hits the last Hydrate picked, best first; their episodes are moved
  // out (no copy), so call it once, at the end.
  std::vector<SearchHit> TakeHits();

  // Episodes read from the store so far, and how many of them exist and
  // match the filter.
  uint64_t read() const { return read_; }
  uint64_t passed() const { return passed_; }

 private:
  storage::EpisodeStore* const store_;
  const std::string& tenant_;
  const std::string& space_;
  const EpisodeFilter& filter_;
  const int64_t now_us_;
  // Every id read so far; nullopt: gone or not matching the filter.
  absl::flat_hash_map<uint64_t, std::optional<Episode>> seen_;
  std::vector<std::pair<float, uint64_t>> picked_;  // by the last Hydrate
  uint64_t read_ = 0;
  uint64_t passed_ = 0;
};

}  // namespace engram::retrieval
