#include "retrieval/quality_gate.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace engram::retrieval {
namespace {

constexpr const char* kSignalNames[kGateSignalCount] = {
    "rerank_depth",     "order_disagreement", "recall_shortfall", "hits_short",
    "filter_rejection", "vector_top_z",       "vector_margin",    "lexical_top_z",
    "lexical_margin",   "list_overlap",       "time_expression",  "rare_tokens",
    "aggregation",      "query_words",        "text_only"};

// Observations a profile needs before its z-scores mean anything.
constexpr uint64_t kProfileWarmup = 20;
// Each observation's weight decays by this per later one (half-life ~700).
constexpr double kProfileDecay = 0.999;

// Words that ask for more than one fact: answers spread over several
// episodes, which one ranked list rarely holds together.
bool IsAggregationWord(std::string_view word) {
  static constexpr std::string_view kWords[] = {"all",  "both",  "every", "list",  "ever", "and",
                                                "each", "times", "kinds", "types", "many", "often"};
  return std::find(std::begin(kWords), std::end(kWords), word) != std::end(kWords);
}

}  // namespace

const char* GateSignalName(int signal) {
  return signal >= 0 && signal < kGateSignalCount ? kSignalNames[signal] : "unknown";
}

GateModel DefaultGateModel() {
  // Fitted by bench_router (bench/router/README.md) on 1,982 LoCoMo
  // questions and 600 LaBSE searches, 2026-11-30; rounded. Signals the
  // calibration never exercised (shortfalls, filter rejection) or found no
  // use for (the graph's own doubts: on LaBSE its answers were already
  // DELIBERATE's) have weight 0: the fitted model trusts the fast path on
  // vector queries and escalates text questions that are long, name a time
  // or a rare token, or whose BM25 and vector lists disagree.
  GateModel model;
  model.bias = -4.1858;
  model.threshold = 0.1121;
  double* w = model.weights;
  w[kRerankDepth] = 0.0004;
  w[kOrderDisagreement] = 0;
  w[kRecallShortfall] = 0;
  w[kHitsShort] = 0;
  w[kFilterRejection] = 0;
  w[kVectorTopZ] = -0.1012;
  w[kVectorMargin] = -0.1676;
  w[kLexicalTopZ] = -0.0726;
  w[kLexicalMargin] = -0.3759;
  w[kListOverlap] = -0.3751;
  w[kTimeExpression] = 0.4426;
  w[kRareTokens] = 0.1135;
  w[kAggregation] = 0.0936;
  w[kQueryWords] = 0.4119;
  w[kTextOnly] = 1.9303;
  return model;
}

QueryHints ReadQueryHints(std::string_view text, absl::Time reference) {
  QueryHints hints;
  if (text.empty()) return hints;
  hints.time = FindTimeExpression(text, reference);
  // Words split on anything but letters, digits, '_' and '-'; bytes above
  // 0x7f count as letters (a non-ASCII word is one word).
  auto word_byte = [](unsigned char c) { return c >= 0x80 || std::isalnum(c) || c == '_'; };
  size_t i = 0;
  bool sentence_start = true;
  while (i < text.size()) {
    if (!word_byte(static_cast<unsigned char>(text[i]))) {
      if (text[i] == '.' || text[i] == '?' || text[i] == '!') sentence_start = true;
      ++i;
      continue;
    }
    size_t end = i;
    bool digit = false, underscore = false,
         capital = std::isupper(static_cast<unsigned char>(text[i]));
    std::string lower;
    while (end < text.size() && word_byte(static_cast<unsigned char>(text[end]))) {
      const unsigned char c = static_cast<unsigned char>(text[end]);
      digit |= std::isdigit(c) != 0;
      underscore |= c == '_';
      lower.push_back(static_cast<char>(std::tolower(c)));
      ++end;
    }
    ++hints.words;
    const bool named = capital && !sentence_start && lower != "i";
    if (digit || underscore || named) ++hints.rare_tokens;
    if (IsAggregationWord(lower)) hints.aggregation = true;
    sentence_start = false;
    i = end;
  }
  return hints;
}

ScoreProfiles::Reading ScoreProfiles::Observe(const std::string& key, double score) {
  absl::MutexLock lock(&mutex_);
  Profile& p = profiles_[key];
  Reading reading;
  if (p.seen >= kProfileWarmup && p.weight > 0) {
    const double variance = p.m2 / p.weight;
    reading.stddev = std::sqrt(std::max(variance, 0.0));
    if (reading.stddev > 0) reading.z = (score - p.mean) / reading.stddev;
  }
  // Exponentially weighted mean and variance (West's update).
  p.weight = p.weight * kProfileDecay + 1;
  p.m2 *= kProfileDecay;
  const double delta = score - p.mean;
  p.mean += delta / p.weight;
  p.m2 += delta * (score - p.mean);
  ++p.seen;
  return reading;
}

void ScoreProfiles::Forget(std::string_view key_prefix) {
  absl::MutexLock lock(&mutex_);
  absl::erase_if(profiles_, [key_prefix](const auto& entry) {
    return std::string_view(entry.first).starts_with(key_prefix);
  });
}

std::vector<double> GateSignalValues(const FastObservation& fast, const QueryHints& hints,
                                     ScoreProfiles& profiles, const std::string& profile_key) {
  std::vector<double> v(kGateSignalCount, 0.0);
  auto clamp = [](double x, double lo, double hi) { return std::min(hi, std::max(lo, x)); };
  if (fast.vector_ran) {
    const VectorTrace& t = fast.trace;
    if (!t.exhaustive) {
      v[kRerankDepth] = t.rerank_depth;
      v[kOrderDisagreement] = t.order_disagreement;
      v[kRecallShortfall] = 1.0 - t.sample_recall;
    }
    if (fast.vector_read > 0) {
      v[kFilterRejection] = 1.0 - double(fast.vector_passed) / double(fast.vector_read);
    }
    if (!fast.vector_scores.empty()) {
      const ScoreProfiles::Reading top =
          profiles.Observe(profile_key + "\x01vector", fast.vector_scores[0]);
      v[kVectorTopZ] = clamp(top.z, -4, 4);
      if (fast.vector_scores.size() > 1 && top.stddev > 0) {
        v[kVectorMargin] =
            clamp((fast.vector_scores[0] - fast.vector_scores[1]) / top.stddev, 0, 4);
      }
    }
  }
  if (fast.lexical_ran && !fast.lexical_scores.empty()) {
    const ScoreProfiles::Reading top =
        profiles.Observe(profile_key + "\x01lexical", fast.lexical_scores[0]);
    v[kLexicalTopZ] = clamp(top.z, -4, 4);
    if (fast.lexical_scores.size() > 1 && fast.lexical_scores[0] > 0) {
      v[kLexicalMargin] =
          (fast.lexical_scores[0] - fast.lexical_scores[1]) / fast.lexical_scores[0];
    }
  }
  if (fast.vector_ran && fast.lexical_ran) v[kListOverlap] = fast.list_overlap;
  if (fast.k > 0 && fast.hits < fast.k) v[kHitsShort] = double(fast.k - fast.hits) / fast.k;
  v[kTimeExpression] = hints.time.has_value() ? 1 : 0;
  v[kRareTokens] = std::min<uint32_t>(hints.rare_tokens, 3);
  v[kAggregation] = hints.aggregation ? 1 : 0;
  v[kQueryWords] = std::min(hints.words / 10.0, 3.0);
  v[kTextOnly] = fast.text_only ? 1 : 0;
  return v;
}

GateDecision DecideGate(const GateModel& model, std::span<const double> values) {
  GateDecision decision;
  decision.evaluated = true;
  decision.threshold = model.threshold;
  double logit = model.bias;
  for (int s = 0; s < kGateSignalCount && s < static_cast<int>(values.size()); ++s) {
    const double contribution = model.weights[s] * values[s];
    logit += contribution;
    decision.signals.push_back({kSignalNames[s], values[s], model.weights[s], contribution});
  }
  decision.score = 1.0 / (1.0 + std::exp(-logit));
  decision.escalated = decision.score >= model.threshold;
  // The reason: the (up to three) largest contributions pushing toward the
  // verdict.
  std::vector<const GateSignal*> pushing;
  for (const GateSignal& signal : decision.signals) {
    if (decision.escalated ? signal.contribution > 0 : signal.contribution < 0) {
      pushing.push_back(&signal);
    }
  }
  std::sort(pushing.begin(), pushing.end(), [](const GateSignal* a, const GateSignal* b) {
    return std::abs(a->contribution) > std::abs(b->contribution);
  });
  if (pushing.size() > 3) pushing.resize(3);
  std::vector<std::string> named;
  for (const GateSignal* signal : pushing) {
    named.push_back(absl::StrCat(signal->name, "=", absl::SixDigits(signal->value), " (",
                                 signal->contribution > 0 ? "+" : "",
                                 absl::SixDigits(signal->contribution), ")"));
  }
  decision.reason =
      absl::StrCat(decision.escalated ? "escalated" : "fast answer kept",
                   ": p=", absl::SixDigits(decision.score), decision.escalated ? " >= " : " < ",
                   absl::SixDigits(model.threshold),
                   named.empty() ? std::string(" (the bias alone)")
                                 : absl::StrCat("; decided by ", absl::StrJoin(named, ", ")));
  return decision;
}

}  // namespace engram::retrieval
