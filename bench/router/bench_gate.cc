// bench_gate: the quality gate's own cost in-process, on LoCoMo's 1,986
// questions (../shared/data/locomo10.json): reading the query's hints
// (ReadQueryHints: words, rare tokens, a time expression), the signal values
// (GateSignalValues, with the score profiles' lock) and the decision with
// its explanation (DecideGate), each timed per query. Inside engramd the
// stage "gate" also pays for scheduling on a busy machine; bench_router
// reports that figure.
#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "bench/common/text_corpora.h"
#include "retrieval/quality_gate.h"

namespace engram::bench {
namespace {

int Main(int argc, char** argv) {
  std::string data_dir = "../shared/data";
  int rounds = 5;
  bool json = false;
  CLI::App app("The quality gate's cost per query, in-process");
  app.add_option("--data-dir", data_dir, "../shared/data");
  app.add_option("--rounds", rounds, "passes over the questions")->capture_default_str();
  app.add_flag("--json", json, "one JSON object on stdout");
  CLI11_PARSE(app, argc, argv);
  const Locomo locomo = ReadLocomo(data_dir + "/locomo10.json");
  retrieval::ScoreProfiles profiles;
  const retrieval::GateModel model = retrieval::DefaultGateModel();
  // A hybrid fast answer of 25 hits, as LoCoMo's questions get.
  retrieval::FastObservation fast;
  fast.k = fast.hits = 25;
  fast.vector_ran = fast.lexical_ran = fast.text_only = true;
  fast.vector_scores = {0.9f, 0.8f, 0.7f, 0.6f, 0.5f, 0.4f, 0.3f, 0.2f, 0.1f, 0.05f};
  fast.lexical_scores = {9.1f, 7.2f, 7.0f, 6.1f, 5.5f, 5.0f, 4.8f, 4.4f, 4.0f, 3.9f};
  fast.list_overlap = 0.3;
  fast.vector_read = fast.vector_passed = 50;
  const absl::Time reference = absl::Now();
  using Clock = std::chrono::steady_clock;
  double hints_ns = 0, values_ns = 0, decide_ns = 0;
  size_t queries = 0, escalated = 0;
  for (int round = 0; round < rounds; ++round) {
    for (const LocomoQuestion& question : locomo.questions) {
      const Clock::time_point start = Clock::now();
      const retrieval::QueryHints hints = retrieval::ReadQueryHints(question.question, reference);
      const Clock::time_point hinted = Clock::now();
      const std::vector<double> values =
          retrieval::GateSignalValues(fast, hints, profiles, question.conversation);
      const Clock::time_point valued = Clock::now();
      const retrieval::GateDecision decision = retrieval::DecideGate(model, values);
      const Clock::time_point decided = Clock::now();
      hints_ns += std::chrono::duration<double, std::nano>(hinted - start).count();
      values_ns += std::chrono::duration<double, std::nano>(valued - hinted).count();
      decide_ns += std::chrono::duration<double, std::nano>(decided - valued).count();
      escalated += decision.escalated ? 1 : 0;
      ++queries;
    }
  }
  const double n = static_cast<double>(queries);
  absl::FPrintF(stderr,
                "%d queries: hints %.0f ns, signal values %.0f ns, decision %.0f ns; total %.2f "
                "us per query (%d escalated)\n",
                queries, hints_ns / n, values_ns / n, decide_ns / n,
                (hints_ns + values_ns + decide_ns) / n / 1000, escalated);
  if (json) {
    std::cout << nlohmann::json{{"bench", "gate"},
                                {"queries", queries},
                                {"hints_ns", hints_ns / n},
                                {"values_ns", values_ns / n},
                                {"decide_ns", decide_ns / n},
                                {"total_us", (hints_ns + values_ns + decide_ns) / n / 1000}}
                     .dump()
              << std::endl;
  }
  return 0;
}

}  // namespace
}  // namespace engram::bench

int main(int argc, char** argv) { return engram::bench::Main(argc, argv); }
