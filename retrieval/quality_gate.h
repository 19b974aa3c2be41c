// The quality gate of the dual-process router: after the fast path has
// answered, decide from what it already did, in microseconds and without a
// model call, whether that answer can be trusted or the query should be
// escalated to full deliberation (retrieval/deliberation.cc).
//
// The gate is a logistic model over signals of the fast path's own work:
//   rerank_depth        how deep in a graph's exact-rerank window the
//                       deepest of the final top k came from (1: its tail,
//                       so true neighbours may lie beyond the window)
//   order_disagreement  share of the final top k that the quantized order
//                       did not have in its own first k
//   recall_shortfall    1 - the searched partitions' measured sample recall
//   hits_short          share of k the fast path could not fill
//   filter_rejection    share of the vector candidates read back that the
//                       filter rejected (a selective filter)
//   vector_top_z        the top vector score against this space's own
//                       distribution of top scores (a z-score: scores of
//                       different embedding models are not comparable)
//   vector_margin       (top - second) vector score, in that distribution's
//                       standard deviations
//   lexical_top_z       the top BM25 score against the space's BM25 tops
//   lexical_margin      (top - second) / top BM25 score
//   list_overlap        share of the vector list's first 10 that BM25's
//                       first 10 also hold (hybrid queries)
//   time_expression     1 when query_text names a time (time_expressions.h)
//   rare_tokens         numbers, identifiers and capitalised words after the
//                       first (up to 3)
//   aggregation         1 when the wording asks for several facts ("how
//                       many", "all", "both", "list", "ever", "and")
//   query_words         words in query_text / 10 (up to 3)
//   text_only           1 when the query had text and no vector of its own
// The model's bias, weights and threshold are configuration
// (router.gate.* in engramd's config) with defaults fitted by bench_router
// on LoCoMo's questions and LaBSE searches together, and checked on groups
// held out of the fit (bench/router/README.md has the figures and says how
// to refit).
// Every decision lists each signal's value, weight and contribution.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "retrieval/candidate_source.h"
#include "retrieval/search.h"
#include "retrieval/time_expressions.h"

namespace engram::retrieval {

// The gate's signals, in the order decisions list them.
enum GateSignalId : int {
  kRerankDepth,
  kOrderDisagreement,
  kRecallShortfall,
  kHitsShort,
  kFilterRejection,
  kVectorTopZ,
  kVectorMargin,
  kLexicalTopZ,
  kLexicalMargin,
  kListOverlap,
  kTimeExpression,
  kRareTokens,
  kAggregation,
  kQueryWords,
  kTextOnly,
  kGateSignalCount,
};
// The signal's name in decisions and in the configuration (router.gate.<name>).
const char* GateSignalName(int signal);

struct GateModel {
  double bias = 0;
  double weights[kGateSignalCount] = {};
  // Escalate when sigmoid(bias + sum weight * value) reaches it; above 1:
  // never (AUTO behaves as FAST), 0: always.
  double threshold = 0.5;
};
// The defaults committed from the calibration (bench/router/README.md).
GateModel DefaultGateModel();

// What query_text says before any search.
struct QueryHints {
  std::optional<TimeWindow> time;
  uint32_t rare_tokens = 0;
  bool aggregation = false;
  uint32_t words = 0;
};
QueryHints ReadQueryHints(std::string_view text, absl::Time reference);

// What the fast path did, as the gate sees it.
struct FastObservation {
  uint32_t k = 0;
  uint32_t hits = 0;
  bool text_only = false;
  bool vector_ran = false;
  bool lexical_ran = false;
  VectorTrace trace;                  // the vector source's last proposal
  uint64_t vector_read = 0;           // candidates the vector side read back
  uint64_t vector_passed = 0;         // ... and the filter kept
  std::vector<float> vector_scores;   // the vector list, best first (first 10)
  std::vector<float> lexical_scores;  // the BM25 list, best first (first 10)
  double list_overlap = 0;
  size_t stage_count = 0;  // stages the fast path reported
};

// Running mean and spread of each space's top scores per source, so that
// the gate reads a score against the space's own history. Forgets slowly
// (the weight of old observations halves about every 700 searches).
// Thread-safe.
class ScoreProfiles {
 public:
  struct Reading {
    double z = 0;       // 0 until the profile has seen 20 searches
    double stddev = 0;  // 0 likewise
  };
  // The reading of `score` against the profile `key`, then records it.
  Reading Observe(const std::string& key, double score) ABSL_LOCKS_EXCLUDED(mutex_);
  void Forget(std::string_view key_prefix) ABSL_LOCKS_EXCLUDED(mutex_);

 private:
  struct Profile {
    double weight = 0, mean = 0, m2 = 0;
    uint64_t seen = 0;
  };
  absl::Mutex mutex_;
  absl::flat_hash_map<std::string, Profile> profiles_ ABSL_GUARDED_BY(mutex_);
};

// The signal values of one fast answer (indexed by GateSignalId).
// `profile_key` names the space; profiles are updated.
std::vector<double> GateSignalValues(const FastObservation& fast, const QueryHints& hints,
                                     ScoreProfiles& profiles, const std::string& profile_key);

// The model's verdict on those values, with every signal explained.
GateDecision DecideGate(const GateModel& model, std::span<const double> values);

}  // namespace engram::retrieval
