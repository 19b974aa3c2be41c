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
  std::string source;           // "vector", "lexical"
  std::vector<SearchHit> hits;  // best first, no episode twice
};

// The best `k` episodes by sum over lists of 1 / (kRrfK + rank), rank from
// 1; ties go to the lower episode id. Each hit's score is its fused score
// and its `sources` name every list it was in, with its rank and that
// list's score, in the order of `lists`.
std::vector<SearchHit> FuseByReciprocalRank(std::vector<RankedList> lists, uint32_t k);

}  // namespace engram::retrieval
