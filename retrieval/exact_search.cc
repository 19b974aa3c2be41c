#include "retrieval/exact_search.h"

#include "index/exact_scorer.h"

namespace engram::retrieval {

absl::StatusOr<ExactSearchResult> ExactSearch(storage::EpisodeStore& store,
                                              const std::string& tenant, const SpaceInfo& space,
                                              std::span<const float> query, uint32_t k,
                                              const EpisodeFilter& filter, absl::Time deadline) {
  index::ExactScorer scorer(space.metric, query);
  index::TopK<Episode> top(k);
  ExactSearchResult result;
  absl::Status status =
      store.ForEachEpisode(tenant, space.name, filter, deadline, [&](Episode&& episode) {
        ++result.scanned;
        const float score = scorer.Score(episode.embedding);
        top.Push(score, std::move(episode));
        return true;
      });
  if (!status.ok()) return status;
  for (auto& [score, episode] : top.TakeSorted())
    result.hits.push_back({score, std::move(episode)});
  return result;
}

}  // namespace engram::retrieval
