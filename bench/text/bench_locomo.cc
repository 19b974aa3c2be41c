// bench_locomo: retrieval quality on LoCoMo (../shared/data/locomo10.json)
// through engramd, the baseline the retrieval router builds on.
//
// Each dialogue turn becomes an episode (agent = the conversation, session =
// session_N, event time = the session's date, kind "turn", metadata dia_id;
// text "Speaker: words", plus " [image: caption]" for shared images). Each
// question is searched within its conversation; a system's answer is the
// dia_ids of its top 25. Reported per LoCoMo category (1 multi-hop,
// 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial) and overall: the
// official evidence recall at k = 5, 10, 25 (the share of a question's
// evidence dia_ids among the first k retrieved, averaged over questions)
// and MRR (1 / rank of the first evidence turn within the 25, else 0).
//
// Systems, each in its own space, all through engramd's Search:
//   bm25               BM25, no stemming (query_text alone);
//   bm25-english-stem  BM25 with English Snowball stemming;
//   static             the static embedder alone: episodes stored as text
//                      only and embedded by engramd; each question embedded
//                      by engramd too (AnalyzeText with embed), then searched
//                      by that vector alone (two calls, both timed);
//   hybrid             the same space searched with query_text alone:
//                      engramd embeds it and fuses the vector route with
//                      stemmed BM25 by reciprocal rank (one call).
// The embedder rows need the word vectors (scripts/fetch-word-vectors.sh,
// which this benchmark runs when they are absent) or a running engramd that
// offers the static embedder.
//
// Output: a human table on stderr; with --json one JSON object per
// (system, category) on stdout.
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_format.h"
#include "bench/common/engramd_target.h"
#include "bench/common/locomo_space.h"

namespace engram::bench {
namespace {

constexpr uint32_t kDepth = 25;
constexpr uint32_t kCutoffs[] = {5, 10, 25};

enum class Query { kText, kEmbeddedVector };

struct System {
  std::string name;
  std::string space;
  std::string stem_language;
  std::string embedder;  // "" : episodes carry a placeholder vector
  Query query = Query::kText;
};

struct Quality {
  double recall[3] = {0, 0, 0};  // at kCutoffs
  double reciprocal_rank = 0;
  size_t questions = 0;
  std::vector<double> latency_ms;
};

absl::StatusOr<std::map<int, Quality>> Evaluate(client::Client& client, const System& system,
                                                const Locomo& locomo) {
  std::map<int, Quality> by_category;  // 0: overall
  for (const LocomoQuestion& question : locomo.questions) {
    if (question.evidence.empty()) continue;
    v1::SearchRequest request;
    request.set_space(system.space);
    request.set_k(kDepth);
    request.mutable_filter()->set_agent_id(question.conversation);
    const absl::Time start = absl::Now();
    absl::StatusOr<v1::SearchResponse> response;
    if (system.query == Query::kText) {
      request.set_query_text(question.question);
      response = client.Search(request);
    } else {
      auto embedded = client.AnalyzeText(system.space, question.question, /*embed=*/true);
      if (embedded.ok()) {
        request.mutable_query()->CopyFrom(embedded->embedding());
        response = client.Search(request);
      } else {
        response = embedded.status();
      }
    }
    const double latency_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
    std::vector<std::string> ranked;
    if (response.ok()) {
      for (const v1::SearchHit& hit : response->hits()) {
        ranked.push_back(hit.episode().metadata().at("dia_id").string_value());
      }
    } else if (response.status().code() != absl::StatusCode::kInvalidArgument) {
      return response.status();  // a question with no words finds nothing; others are errors
    }
    const std::set<std::string> evidence(question.evidence.begin(), question.evidence.end());
    double recall[3] = {0, 0, 0};
    double reciprocal_rank = 0;
    for (size_t rank = 0; rank < ranked.size(); ++rank) {
      if (!evidence.contains(ranked[rank])) continue;
      if (reciprocal_rank == 0) reciprocal_rank = 1.0 / (rank + 1);
      for (int c = 0; c < 3; ++c) recall[c] += rank < kCutoffs[c] ? 1.0 / evidence.size() : 0;
    }
    for (int category : {0, question.category}) {
      Quality& quality = by_category[category];
      for (int c = 0; c < 3; ++c) quality.recall[c] += recall[c];
      quality.reciprocal_rank += reciprocal_rank;
      ++quality.questions;
      quality.latency_ms.push_back(latency_ms);
    }
  }
  return by_category;
}

const char* CategoryName(int category) {
  switch (category) {
    case 0:
      return "overall";
    case 1:
      return "multi-hop";
    case 2:
      return "temporal";
    case 3:
      return "open-domain";
    case 4:
      return "single-hop";
    case 5:
      return "adversarial";
  }
  return "?";
}

int Main(int argc, char** argv) {
  std::string data_dir = "../shared/data", address, word_vectors;
  bool json = false;
  CLI::App app("LoCoMo evidence recall through engramd (BM25, static embedder, hybrid)");
  app.add_option("--data-dir", data_dir, "../shared/data");
  app.add_option("--address", address,
                 "a running engramd (default: start one); the embedder rows need it to offer "
                 "the static embedder");
  app.add_option("--word-vectors", word_vectors,
                 "the static embedder's file (default ~/.cache/engram/wink-100d.engramwv, "
                 "fetched when absent)");
  app.add_flag("--json", json, "print one JSON object per system and category on stdout");
  CLI11_PARSE(app, argc, argv);
  const Locomo locomo = ReadLocomo(data_dir + "/locomo10.json");
  std::vector<std::string> engramd_args;
  testing::TempDir config_dir;
  if (address.empty()) {
    word_vectors = WordVectors(word_vectors);
    if (!word_vectors.empty()) {
      std::ofstream(config_dir.Sub("engramd.yaml"))
          << "embedders:\n  static:\n    path: " << word_vectors << "\n";
      engramd_args = {"--config", config_dir.Sub("engramd.yaml")};
    }
  }
  auto target = ConnectOrStart(address, ENGRAMD_PATH, engramd_args);
  if (!target.ok()) {
    std::cerr << target.status() << "\n";
    return 1;
  }
  std::vector<System> systems = {
      {"bm25", "locomo_bm25", "", "", Query::kText},
      {"bm25-english-stem", "locomo_bm25_stem", "english", "", Query::kText},
      {"static", "locomo_static", "english", "static", Query::kEmbeddedVector},
      {"hybrid", "locomo_static", "english", "static", Query::kText}};
  absl::FPrintF(stderr, "%d turns, %d questions\n", locomo.turns.size(), locomo.questions.size());
  absl::FPrintF(stderr, "%-18s %-12s %5s %8s %8s %8s %7s %8s\n", "system", "category", "n", "R@5",
                "R@10", "R@25", "MRR", "p50 ms");
  std::set<std::string> ingested_spaces;
  for (const System& system : systems) {
    if (ingested_spaces.insert(system.space).second) {
      (void)target->client->DeleteSpace(system.space);  // a rerun against a running engramd
      absl::Status ingested = IngestLocomo(*target->client, system.space, system.stem_language,
                                           system.embedder, locomo);
      if (!ingested.ok() && !system.embedder.empty() &&
          ingested.code() == absl::StatusCode::kInvalidArgument) {
        std::cerr << "skipping the embedder rows: " << ingested << "\n";
        break;
      }
      if (!ingested.ok()) {
        std::cerr << ingested << "\n";
        return 1;
      }
    }
    auto quality = Evaluate(*target->client, system, locomo);
    if (!quality.ok()) {
      std::cerr << quality.status() << "\n";
      return 1;
    }
    for (auto& [category, q] : *quality) {
      std::sort(q.latency_ms.begin(), q.latency_ms.end());
      const double n = static_cast<double>(q.questions);
      const double p50 = q.latency_ms[q.latency_ms.size() / 2];
      absl::FPrintF(stderr, "%-18s %-12s %5d %8.3f %8.3f %8.3f %7.3f %8.2f\n", system.name,
                    CategoryName(category), q.questions, q.recall[0] / n, q.recall[1] / n,
                    q.recall[2] / n, q.reciprocal_rank / n, p50);
      if (json) {
        std::cout << nlohmann::json{{"bench", "locomo"},
                                    {"system", system.name},
                                    {"category", category},
                                    {"category_name", CategoryName(category)},
                                    {"questions", q.questions},
                                    {"recall_at_5", q.recall[0] / n},
                                    {"recall_at_10", q.recall[1] / n},
                                    {"recall_at_25", q.recall[2] / n},
                                    {"mrr", q.reciprocal_rank / n},
                                    {"p50_ms", p50}}
                         .dump()
                  << std::endl;
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace engram::bench

int main(int argc, char** argv) { return engram::bench::Main(argc, argv); }
