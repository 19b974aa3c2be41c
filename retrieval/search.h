// What a search asks of the engine and what it gets back: the domain types
// of retrieval/engine.h's Search, free of protobuf and gRPC. A result says
// which route answered and what each stage did, so a caller (and later the
// router's quality gate) can see where time and candidates went.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "storage/episode.h"

namespace engram::retrieval {

enum class Route {
  kIndex,  // the agent partitions' graphs (or code scans), exact rerank
  kScan,   // every vector of the partitions, exactly (GPU when present)
  kExact,  // every episode in the store, scored from its record (the reference)
};
const char* RouteName(Route route);

struct SearchRequest {
  std::span<const float> query;
  uint32_t k = 10;
  // Graph beam width L; 0: each partition's calibrated default.
  uint32_t beam_width = 0;
  Route route = Route::kIndex;
  EpisodeFilter filter;
  absl::Time deadline = absl::InfiniteFuture();
};

// One step of a search: a candidate source, the read-back, a fallback.
struct StageReport {
  std::string name;         // "index", "scan", "hydrate", "exact"
  uint64_t candidates = 0;  // proposed (sources), read (hydrate), scored (exact)
  absl::Duration time;
};

struct SearchHit {
  float score = 0;  // higher is closer: cosine, inner product, or -squared L2
  Episode episode;
};

struct SearchResult {
  std::vector<SearchHit> hits;  // best first, at most k
  Route route = Route::kIndex;  // the route that produced the hits
  // Candidates the sources proposed (index, scan) or episodes scored (exact).
  uint64_t candidates = 0;
  std::vector<StageReport> stages;  // in the order they ran
};

}  // namespace engram::retrieval
