#include "retrieval/fusion.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"

namespace engram::retrieval {

std::vector<SearchHit> FuseByReciprocalRank(std::vector<RankedList> lists, uint32_t k) {
  struct Fused {
    double score = 0;
    SearchHit hit;
  };
  absl::flat_hash_map<uint64_t, Fused> fused;
  for (RankedList& list : lists) {
    for (size_t i = 0; i < list.hits.size(); ++i) {
      SearchHit& hit = list.hits[i];
      const uint32_t rank = static_cast<uint32_t>(i + 1);
      auto [it, inserted] = fused.try_emplace(hit.episode.id);
      Fused& entry = it->second;
      if (inserted) entry.hit.episode = std::move(hit.episode);
      entry.score += 1.0 / (kRrfK + rank);
      entry.hit.sources.push_back({list.source, rank, hit.score});
    }
  }
  std::vector<Fused> ranked;
  ranked.reserve(fused.size());
  for (auto& [id, entry] : fused) ranked.push_back(std::move(entry));
  const size_t keep = std::min<size_t>(k, ranked.size());
  std::partial_sort(ranked.begin(), ranked.begin() + keep, ranked.end(),
                    [](const Fused& a, const Fused& b) {
                      if (a.score != b.score) return a.score > b.score;
                      return a.hit.episode.id < b.hit.episode.id;
                    });
  std::vector<SearchHit> hits;
  hits.reserve(keep);
  for (size_t i = 0; i < keep; ++i) {
    ranked[i].hit.score = static_cast<float>(ranked[i].score);
    hits.push_back(std::move(ranked[i].hit));
  }
  return hits;
}

}  // namespace engram::retrieval
