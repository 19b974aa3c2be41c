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
  kIndex,    // the agent partitions' graphs (or code scans), exact rerank
  kScan,     // every vector of the partitions, exactly (GPU when present)
  kExact,    // every episode in the store, scored from its record (the reference)
  kLexical,  // BM25 over the postings (a text-only query)
  kHybrid,   // a vector route and BM25, fused by reciprocal rank
};
const char* RouteName(Route route);

// Reciprocal rank fusion's constant: a hit at rank r (from 1) in a source's
// list adds 1 / (kRrfK + r) (Cormack, Clarke & Buettcher, SIGIR 2009).
inline constexpr double kRrfK = 60;
// How deep each source's list goes for fusion: max(k, this).
inline constexpr uint32_t kFusionDepth = 50;

struct SearchRequest {
  // The query vector (the space's dimension), or empty for a text-only
  // search. With query_text as well, the search is hybrid.
  std::span<const float> query;
  // Words to search for by BM25 (tokenized as the space's episodes are).
  std::string query_text;
  uint32_t k = 10;
  // Graph beam width L; 0: each partition's calibrated default.
  uint32_t beam_width = 0;
  // The vector route: kIndex, kScan or kExact (alone or inside a hybrid).
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

// Where a fused hit stood in one source's list.
struct SourceRank {
  std::string source;  // "vector" or "lexical"
  uint32_t rank = 0;   // 1-based
  float score = 0;     // the source's own score (similarity; BM25)
};

struct SearchHit {
  // Higher is closer: cosine, inner product or -squared L2 (vector routes),
  // BM25 (lexical), the reciprocal rank fusion score (hybrid).
  float score = 0;
  Episode episode;
  std::vector<SourceRank> sources{};  // hybrid only: each list the hit was in
};

struct SearchResult {
  std::vector<SearchHit> hits;  // best first, at most k
  Route route = Route::kIndex;  // the route that produced the hits
  // Candidates the sources proposed (index, scan) or episodes scored (exact).
  uint64_t candidates = 0;
  std::vector<StageReport> stages;  // in the order they ran
  // The distinct terms query_text was searched as (lexical and hybrid).
  std::vector<std::string> query_terms;
};

}  // namespace engram::retrieval
