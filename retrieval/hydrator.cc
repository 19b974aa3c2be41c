#include "retrieval/hydrator.h"

#include "storage/episode_filter.h"

namespace engram::retrieval {

Hydrator::Hydrator(storage::EpisodeStore* store, const std::string& tenant,
                   const std::string& space, const EpisodeFilter& filter)
    : store_(store),
      tenant_(tenant),
      space_(space),
      filter_(filter),
      now_us_(absl::ToUnixMicros(absl::Now())) {}

absl::StatusOr<size_t> Hydrator::Hydrate(std::span<const Candidate> candidates, uint32_t k) {
  std::vector<EpisodeRef> unread;
  for (const Candidate& candidate : candidates) {
    if (seen_.try_emplace(candidate.id).second) {
      unread.push_back({candidate.agent_id, candidate.id});
    }
  }
  if (!unread.empty()) {
    absl::StatusOr<std::vector<std::optional<Episode>>> episodes =
        store_->GetEpisodes(tenant_, space_, unread);
    if (!episodes.ok()) return episodes.status();
    read_ += unread.size();
    for (size_t i = 0; i < unread.size(); ++i) {
      std::optional<Episode>& episode = (*episodes)[i];
      if (episode.has_value() && storage::MatchesFilter(filter_, *episode, now_us_)) {
        seen_[unread[i].id] = std::move(episode);
        ++passed_;
      }
    }
  }
  picked_.clear();
  for (const Candidate& candidate : candidates) {
    if (picked_.size() == k) break;
    if (seen_.at(candidate.id).has_value()) picked_.emplace_back(candidate.score, candidate.id);
  }
  return picked_.size();
}

std::vector<SearchHit> Hydrator::TakeHits() {
  std::vector<SearchHit> hits;
  hits.reserve(picked_.size());
  for (const auto& [score, id] : picked_) hits.push_back({score, *std::move(seen_.at(id))});
  picked_.clear();
  return hits;
}

}  // namespace engram::retrieval
