// Fusion of ranked lists from different candidate sources (vector, BM25)
// by reciprocal rank (Cormack, Clarke & Buettcher, "Reciprocal Rank Fusion
// outperforms Condorcet and individual Rank Learning Methods", SIGIR 2009):
// scores of different sources are not comparable, ranks are.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "retrieval/search.h"

namespace engram::retrieval {

struct RankedList {
  std::string source;           // "vector", "lexical", "time", "context", "rerank"
  std::vector<SearchHit> hits;  // best first, no episode twice
  double weight = 1;            // what the list's ranks count for
};

// The best `k` episodes by sum over lists of weight / (kRrfK + rank), rank
// from 1; ties go to the lower episode id. Each hit's score is its fused score
// and its `sources` name every list it was in, with its rank and that
// list's score, in the order of `lists`.
std::vector<SearchHit> FuseByReciprocalRank(std::vector<RankedList> lists, uint32_t k);

// The same fusion over ids, for callers that keep the episodes elsewhere
// (deliberation fuses twice from one pool of read-back episodes).
struct RankedIds {
  std::string source;
  std::vector<std::pair<uint64_t, float>> ids;  // (episode id, the source's score), best first
  double weight = 1;
};
struct FusedId {
  uint64_t id = 0;
  double score = 0;
  std::vector<SourceRank> sources;  // in the order of the lists
};
std::vector<FusedId> FuseRanks(const std::vector<RankedIds>& lists, size_t k);

}  // namespace engram::retrieval
