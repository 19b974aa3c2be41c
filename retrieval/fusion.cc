#include "retrieval/fusion.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"

namespace engram::retrieval {

std::vector<FusedId> FuseRanks(const std::vector<RankedIds>& lists, size_t k) {
  absl::flat_hash_map<uint64_t, FusedId> fused;
  for (const RankedIds& list : lists) {
    for (size_t i = 0; i < list.ids.size(); ++i) {
      const auto [id, score] = list.ids[i];
      const uint32_t rank = static_cast<uint32_t>(i + 1);
      FusedId& entry = fused[id];
      entry.id = id;
      entry.score += list.weight / (kRrfK + rank);
      entry.sources.push_back({list.source, rank, score});
    }
  }
  std::vector<FusedId> ranked;
  ranked.reserve(fused.size());
  for (auto& [id, entry] : fused) ranked.push_back(std::move(entry));
  const size_t keep = std::min(k, ranked.size());
  std::partial_sort(ranked.begin(), ranked.begin() + keep, ranked.end(),
                    [](const FusedId& a, const FusedId& b) {
                      if (a.score != b.score) return a.score > b.score;
                      return a.id < b.id;
                    });
  ranked.resize(keep);
  return ranked;
}

std::vector<SearchHit> FuseByReciprocalRank(std::vector<RankedList> lists, uint32_t k) {
  std::vector<RankedIds> ranks;
  absl::flat_hash_map<uint64_t, Episode> episodes;
  for (RankedList& list : lists) {
    RankedIds& ids = ranks.emplace_back(RankedIds{list.source, {}, list.weight});
    for (SearchHit& hit : list.hits) {
      ids.ids.emplace_back(hit.episode.id, hit.score);
      episodes.try_emplace(hit.episode.id, std::move(hit.episode));
    }
  }
  std::vector<SearchHit> hits;
  for (FusedId& fused : FuseRanks(ranks, k)) {
    hits.push_back({static_cast<float>(fused.score), std::move(episodes.at(fused.id)),
                    std::move(fused.sources)});
  }
  return hits;
}

}  // namespace engram::retrieval
