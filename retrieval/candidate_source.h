// CandidateSource: one way of proposing episodes for a query (the graph
// index, the exhaustive scan, BM25; deliberation's time and context stages
// propose through the same read-back). A
// source only proposes ids with scores; the engine reads them back from the
// store once (retrieval/hydrator.h), checks the whole filter there, and fuses
// or widens. That keeps every source honest: nothing a source holds (codes,
// attributes, postings) is ever returned to a caller without the store
// confirming it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/episode.h"

namespace engram::retrieval {

struct Candidate {
  uint64_t id = 0;
  float score = 0;       // higher is closer, in the source's own scale
  std::string agent_id;  // lets the read-back find the record with one lookup
};

// What a vector proposal saw, over the partitions it searched (the worst
// of each): read by the router's quality gate (retrieval/quality_gate.h).
struct VectorTrace {
  uint32_t partitions = 0;        // searched
  bool exhaustive = true;         // every one scored exactly (small, or a scan)
  double rerank_depth = 0;        // deepest / window, the largest
  double order_disagreement = 0;  // 1 - agreement / returned, the largest
  float sample_recall = 1;        // the smallest measured (1 when none measured)
};

// What every source sees of a validated search.
struct SearchContext {
  const std::string& tenant;
  const SpaceInfo& space;
  std::span<const float> query;  // the space's dimension, finite
  const EpisodeFilter& filter;   // validated
  uint32_t beam_width = 0;
  absl::Time deadline = absl::InfiniteFuture();
  // When set, the vector source fills it in (the gate's signals).
  VectorTrace* trace = nullptr;
};

class CandidateSource {
 public:
  virtual ~CandidateSource() = default;
  // The stage name in SearchResult::stages.
  virtual const char* name() const = 0;
  // Up to `count` candidates, best first, no id twice. May propose episodes
  // the filter rejects in ways the source cannot see (metadata predicates);
  // the engine asks again with a larger count when the read-back leaves
  // fewer than k. DEADLINE_EXCEEDED when the deadline passes.
  virtual absl::StatusOr<std::vector<Candidate>> Propose(const SearchContext& context,
                                                         uint32_t count) = 0;
};

}  // namespace engram::retrieval
