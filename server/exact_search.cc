#include "server/exact_search.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "index/exact_scorer.h"

namespace engram::server {

absl::StatusOr<SearchResult> ExactSearch(storage::EpisodeStore& store, const std::string& tenant,
                                         const std::string& space_name,
                                         std::span<const float> query, uint32_t k, uint32_t max_k,
                                         const EpisodeFilter& filter, absl::Time deadline) {
  absl::StatusOr<SpaceInfo> space = store.GetSpace(tenant, space_name);
  if (!space.ok()) return space.status();
  if (k == 0 || k > max_k) {
    return absl::InvalidArgumentError(absl::StrCat("k is ", k, "; must be in 1..", max_k));
  }
  if (query.size() != space->dimension) {
    return absl::InvalidArgumentError(absl::StrCat("query has ", query.size(),
                                                   " dimensions; space '", space_name, "' expects ",
                                                   space->dimension));
  }
  for (size_t i = 0; i < query.size(); ++i) {
    if (!std::isfinite(query[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("query[", i, "] is ", query[i], "; values must be finite"));
    }
  }
  index::ExactScorer scorer(space->metric, query);
  index::TopK<Episode> top(k);
  SearchResult result;
  absl::Status status =
      store.ForEachEpisode(tenant, space_name, filter, deadline, [&](Episode&& episode) {
        ++result.scanned;
        float score = scorer.Score(episode.embedding);
        top.Push(score, std::move(episode));
        return true;
      });
  if (!status.ok()) return status;
  result.hits = top.TakeSorted();
  return result;
}

}  // namespace engram::server
