// What a search asks of the engine and what it gets back: the domain types
// of retrieval/engine.h's Search, free of protobuf and gRPC. A result says
// which route answered, what the router decided and why (GateDecision),
// and what each stage did, so a caller can see where time and candidates
// went.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "storage/episode.h"

namespace engram::retrieval {

enum class Route {
  kIndex,       // the agent partitions' graphs (or code scans), exact rerank
  kScan,        // every vector of the partitions, exactly (GPU when present)
  kExact,       // every episode in the store, scored from its record (the reference)
  kLexical,     // BM25 over the postings (a text-only query)
  kHybrid,      // a vector route and BM25, fused by reciprocal rank
  kDeliberate,  // full deliberation (retrieval/deliberation.h)
};
const char* RouteName(Route route);

// Who decides how a search with the index route is answered: the
// dual-process router (retrieval/quality_gate.h).
enum class RoutePolicy {
  kAuto,        // the fast path, then the quality gate; escalate when it says so
  kFast,        // the fast path only (index, lexical or hybrid by the query's fields)
  kDeliberate,  // full deliberation, no fast path
};
const char* RoutePolicyName(RoutePolicy policy);

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
  // kScan and kExact are explicit choices the router leaves alone; with
  // kIndex, `policy` decides.
  Route route = Route::kIndex;
  RoutePolicy policy = RoutePolicy::kAuto;
  // "Now" for time expressions in query_text ("yesterday", "last May");
  // InfinitePast: the server's clock.
  absl::Time reference_time = absl::InfinitePast();
  EpisodeFilter filter;
  absl::Time deadline = absl::InfiniteFuture();
};

// One step of a search: a candidate source, the read-back, a fallback.
struct StageReport {
  std::string name;         // "index", "scan", "hydrate", "exact"
  uint64_t candidates = 0;  // proposed (sources), read (hydrate), scored (exact)
  absl::Duration time;
  // What the stage passed on (deliberation's stages; 0 where not counted).
  uint64_t kept = 0;
  // The share of the deadline the stage was given (deliberation; zero: none).
  absl::Duration budget{};
  std::string note{};  // e.g. the time expression read, or why a stage was cut
};

// One input of the quality gate: its value, the weight the gate's model
// gives it, and value * weight, what it added to the gate's logit.
struct GateSignal {
  std::string name;
  double value = 0;
  double weight = 0;
  double contribution = 0;
};

// The quality gate's verdict on a fast answer (route AUTO).
struct GateDecision {
  bool evaluated = false;  // false: no gate ran (FAST, DELIBERATE, explicit routes)
  bool escalated = false;
  double score = 0;      // the model's probability that deliberation is needed
  double threshold = 0;  // escalate when score >= threshold
  std::vector<GateSignal> signals;
  std::string reason;  // the signals that decided, in words
  absl::Duration time;
};

// Where a fused hit stood in one source's list.
struct SourceRank {
  // "vector", "lexical", "time", "context" (a session neighbour or link of
  // a hit) or "rerank" (deliberation's exact scores of the fused set)
  std::string source;
  uint32_t rank = 0;  // 1-based
  float score = 0;    // the source's own score (similarity; BM25)
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
  RoutePolicy policy = RoutePolicy::kFast;  // what decided the route
  GateDecision gate;                        // AUTO: the gate's verdict
};

}  // namespace engram::retrieval
