// bench_router: the dual-process router through engramd, on LoCoMo and on
// LaBSE vectors (bench/router/README.md has the figures and what they say).
//
// LoCoMo (../shared/data/locomo10.json): the turns stored as in
// bench_locomo, twice: a BM25 space (stemmed, no embedder) and a space
// embedded by the static embedder. Each question with evidence is searched
// within its conversation by BM25 alone, by the static vector alone, and
// with query_text on the embedded space by FAST, DELIBERATE and AUTO, with
// the conversation's last session date as the reference time. Evidence
// recall at 5, 10, 25 and MRR per category, mean and p99 latency (loopback
// gRPC, client side) and the server's own time (the stages' sum).
//
// LaBSE (--labse-n base vectors): stored over six agents (one with 60% of
// them and a graph, five small), ten sessions, a year of event times and
// two kinds; --labse-queries queries under six filters of every
// selectivity; recall@10 of FAST, DELIBERATE and AUTO against the exact
// top 10 computed here.
//
// The gate's calibration: every search above is a sample (AUTO's reported
// signals; label "DELIBERATE's recall@10 beats FAST's"). A logistic model
// (each weight's sign constrained where the signal's meaning fixes it:
// kWeightRange) is fitted with each group held out in turn (a LoCoMo conversation, or a
// tenth of the LaBSE queries), its threshold set on the training samples
// as the fewest escalations that keep 97.5% of DELIBERATE's recall@10 on
// each dataset, and applied to the held-out group: "auto (held out)" is
// FAST's answer, or DELIBERATE's when escalated, costing FAST's time plus
// DELIBERATE's. The model fitted on every sample is printed as the
// defaults to commit (retrieval/quality_gate.cc). "auto (server)" is what
// the running engramd's own gate did.
//
// Output: human tables on stderr; with --json one JSON object per row.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>

#include "absl/strings/str_format.h"
#include "bench/common/engramd_target.h"
#include "bench/common/locomo_space.h"
#include "bench/common/vector_files.h"

namespace engram::bench {
namespace {

constexpr uint32_t kDepth = 25;
constexpr uint32_t kCutoffs[] = {5, 10, 25};
constexpr int kSignals = 15;

bool json_output = false;

struct Ranked {
  std::vector<std::string> dia_ids;  // LoCoMo
  std::vector<uint64_t> ids;         // LaBSE
  double ms = 0;                     // client side, loopback gRPC included
  double server_us = 0;              // the stages' own time, as engramd reports it
  bool escalated = false;            // AUTO: the server's gate escalated
  double gate_us = 0;                // AUTO: the gate's own time
  std::vector<double> signals;       // AUTO: the gate's inputs
};

// One search run by FAST, DELIBERATE and AUTO: a calibration sample.
struct Sample {
  std::string dataset;  // "locomo" or "labse"
  std::string group;    // held out together: a conversation, a tenth of the queries
  std::vector<double> signals;
  double fast_recall = 0, deliberate_recall = 0;  // @10
  bool held_out_escalated = false;                // by the model fitted without its group
};

struct Question {
  const LocomoQuestion* q;
  std::map<std::string, Ranked> by_system;  // bm25, static, fast, deliberate, auto
  size_t sample = 0;
};

double RecallAt(const Ranked& ranked, const std::vector<std::string>& evidence, size_t k) {
  const std::set<std::string> wanted(evidence.begin(), evidence.end());
  double found = 0;
  for (size_t i = 0; i < ranked.dia_ids.size() && i < k; ++i) {
    if (wanted.contains(ranked.dia_ids[i])) found += 1.0 / wanted.size();
  }
  return found;
}

double ReciprocalRank(const Ranked& ranked, const std::vector<std::string>& evidence) {
  const std::set<std::string> wanted(evidence.begin(), evidence.end());
  for (size_t i = 0; i < ranked.dia_ids.size(); ++i) {
    if (wanted.contains(ranked.dia_ids[i])) return 1.0 / (i + 1);
  }
  return 0;
}

const char* CategoryName(int category) {
  static const char* kNames[] = {"overall",
                                 "multi-hop",
                                 "temporal",
                                 "open-domain",
                                 "single-hop",
                                 "adversarial",
                                 "overall w/o adversarial"};
  return category >= 0 && category <= 6 ? kNames[category] : "?";
}

struct Row {
  double recall[3] = {0, 0, 0}, mrr = 0;
  std::vector<double> ms;
  double server_us = 0;
  size_t n = 0, escalated = 0;
};

// cost_ratio: this row's server-side time over DELIBERATE's (overall rows).
void PrintRow(const std::string& bench, const std::string& system, int category, const Row& row,
              double cost_ratio) {
  std::vector<double> ms = row.ms;
  std::sort(ms.begin(), ms.end());
  const double mean = std::accumulate(ms.begin(), ms.end(), 0.0) / std::max<size_t>(1, ms.size());
  const double p99 = ms.empty() ? 0 : ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  const double n = std::max<double>(1, row.n);
  absl::FPrintF(stderr, "%-16s %-24s %5d %7.3f %7.3f %7.3f %7.3f %8.2f %8.2f %9.0f %7.3f %6.3f\n",
                system, CategoryName(category), row.n, row.recall[0] / n, row.recall[1] / n,
                row.recall[2] / n, row.mrr / n, mean, p99, row.server_us / n, row.escalated / n,
                cost_ratio);
  if (json_output) {
    std::cout << nlohmann::json{{"bench", bench},
                                {"system", system},
                                {"category", category},
                                {"category_name", CategoryName(category)},
                                {"questions", row.n},
                                {"recall_at_5", row.recall[0] / n},
                                {"recall_at_10", row.recall[1] / n},
                                {"recall_at_25", row.recall[2] / n},
                                {"mrr", row.mrr / n},
                                {"mean_ms", mean},
                                {"p99_ms", p99},
                                {"server_us", row.server_us / n},
                                {"escalation_rate", row.escalated / n},
                                {"server_cost_vs_deliberate", cost_ratio}}
                     .dump()
              << std::endl;
  }
}

// Logistic regression by gradient descent with a small L2 penalty.
struct Logistic {
  double bias = 0;
  std::vector<double> w = std::vector<double>(kSignals, 0.0);
  double Predict(const std::vector<double>& x) const {
    double z = bias;
    for (int i = 0; i < kSignals; ++i) z += w[i] * x[i];
    return 1 / (1 + std::exp(-z));
  }
};

// The sign each weight may take: a signal that can only mean the fast
// answer is worse (a deep rerank, disagreement, a shortfall, a time
// expression, ...) never argues against escalation, and one that can only
// mean it is better (a margin, agreement of the lists) never for it. Without
// this, signals the calibration data barely exercises pick up noise.
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr std::pair<double, double> kWeightRange[kSignals] = {
    {0, kInf},     {0, kInf},  {0, kInf},     {0, kInf},     {0, kInf},
    {-kInf, kInf}, {-kInf, 0}, {-kInf, kInf}, {-kInf, 0},    {-kInf, 0},
    {0, kInf},     {0, kInf},  {0, kInf},     {-kInf, kInf}, {-kInf, kInf}};

int Label(const Sample& s) { return s.deliberate_recall > s.fast_recall ? 1 : 0; }

Logistic Fit(const std::vector<const Sample*>& train) {
  Logistic model;
  const double lambda = 1e-3, rate = 0.5;
  const double n = static_cast<double>(train.size());
  for (int iteration = 0; iteration < 3000; ++iteration) {
    double grad_bias = 0;
    std::vector<double> grad(kSignals, 0.0);
    for (const Sample* sample : train) {
      const double error = model.Predict(sample->signals) - Label(*sample);
      grad_bias += error;
      for (int j = 0; j < kSignals; ++j) grad[j] += error * sample->signals[j];
    }
    model.bias -= rate * grad_bias / n;
    for (int j = 0; j < kSignals; ++j) {
      model.w[j] -= rate * (grad[j] / n + lambda * model.w[j]);
      model.w[j] = std::clamp(model.w[j], kWeightRange[j].first, kWeightRange[j].second);
    }
  }
  return model;
}

// The highest threshold (fewest escalations) at which AUTO keeps `keep` of
// DELIBERATE's recall@10 on each dataset among `train`.
double ChooseThreshold(const Logistic& model, const std::vector<const Sample*>& train,
                       double keep) {
  double threshold = 1.0 + 1e-9;
  for (const std::string dataset : {"locomo", "labse"}) {
    std::vector<std::pair<double, const Sample*>> scored;
    double recall = 0, deliberate = 0;
    for (const Sample* s : train) {
      if (s->dataset != dataset) continue;
      scored.emplace_back(model.Predict(s->signals), s);
      recall += s->fast_recall;
      deliberate += s->deliberate_recall;
    }
    std::sort(scored.begin(), scored.end(),
              [](const auto& a, const auto& b) { return a.first > b.first; });
    double needed = 1.0 + 1e-9;
    for (size_t c = 0; c <= scored.size(); ++c) {
      if (recall >= keep * deliberate) {
        needed = c == 0               ? 1.0 + 1e-9
                 : c == scored.size() ? 0.0
                                      : (scored[c - 1].first + scored[c].first) / 2;
        break;
      }
      if (c == scored.size())
        needed = 0;
      else
        recall += scored[c].second->deliberate_recall - scored[c].second->fast_recall;
    }
    threshold = std::min(threshold, needed);
  }
  return threshold;
}

constexpr const char* kSignalNames[kSignals] = {
    "rerank_depth",     "order_disagreement", "recall_shortfall", "hits_short",
    "filter_rejection", "vector_top_z",       "vector_margin",    "lexical_top_z",
    "lexical_margin",   "list_overlap",       "time_expression",  "rare_tokens",
    "aggregation",      "query_words",        "text_only"};

// Held-out decisions for every sample, then the model of all of them.
void Calibrate(std::vector<Sample>& samples) {
  std::set<std::string> groups;
  for (const Sample& s : samples) groups.insert(s.dataset + "/" + s.group);
  for (const std::string& group : groups) {
    std::vector<const Sample*> train;
    for (const Sample& s : samples) {
      if (s.dataset + "/" + s.group != group) train.push_back(&s);
    }
    const Logistic model = Fit(train);
    const double threshold = ChooseThreshold(model, train, 0.975);
    for (Sample& s : samples) {
      if (s.dataset + "/" + s.group == group) {
        s.held_out_escalated = model.Predict(s.signals) >= threshold;
      }
    }
  }
  std::vector<const Sample*> all;
  size_t positives = 0;
  for (const Sample& s : samples) {
    all.push_back(&s);
    positives += Label(s);
  }
  const Logistic model = Fit(all);
  const double threshold = ChooseThreshold(model, all, 0.975);
  absl::FPrintF(stderr,
                "\ngate fitted on all %d samples (%d where DELIBERATE beat FAST): bias %.4f "
                "threshold %.4f\n",
                all.size(), positives, model.bias, threshold);
  nlohmann::json weights;
  for (int i = 0; i < kSignals; ++i) {
    weights[kSignalNames[i]] = model.w[i];
    absl::FPrintF(stderr, "  w[%s] = %.4f\n", kSignalNames[i], model.w[i]);
  }
  if (json_output) {
    std::cout << nlohmann::json{{"bench", "router_gate_fit"}, {"bias", model.bias},
                                {"threshold", threshold},     {"weights", weights},
                                {"positives", positives},     {"samples", all.size()}}
                     .dump()
              << std::endl;
  }
}

absl::StatusOr<Ranked> RunSearch(client::Client& client, const v1::SearchRequest& request,
                                 v1::SearchResponse* response_out = nullptr) {
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::SearchResponse> response = client.Search(request);
  Ranked ranked;
  ranked.ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  if (!response.ok()) {
    if (response.status().code() == absl::StatusCode::kInvalidArgument) return ranked;  // no words
    return response.status();
  }
  for (const v1::SearchHit& hit : response->hits()) {
    ranked.ids.push_back(hit.episode().id());
    auto dia_id = hit.episode().metadata().find("dia_id");
    if (dia_id != hit.episode().metadata().end()) {
      ranked.dia_ids.push_back(dia_id->second.string_value());
    }
  }
  for (const v1::SearchStage& stage : response->stages()) {
    ranked.server_us += stage.micros();
    if (stage.name() == "gate") ranked.gate_us = stage.micros();
  }
  if (response->has_gate()) {
    ranked.escalated = response->gate().escalated();
    for (const v1::GateSignal& signal : response->gate().signals()) {
      ranked.signals.push_back(signal.value());
    }
  }
  if (ranked.signals.size() != kSignals) ranked.signals.assign(kSignals, 0.0);
  if (response_out != nullptr) *response_out = *std::move(response);
  return ranked;
}

// Runs every LoCoMo question by each system; adds one sample per question.
absl::Status CollectLocomo(client::Client& client, const std::string& data_dir,
                           const Locomo& locomo, std::vector<Question>& questions,
                           std::vector<Sample>& samples) {
  for (const auto& [space, embedder] : std::vector<std::pair<std::string, std::string>>{
           {"router_bm25", ""}, {"router_static", "static"}}) {
    (void)client.DeleteSpace(space);
    if (absl::Status ingested = IngestLocomo(client, space, "english", embedder, locomo);
        !ingested.ok()) {
      return ingested;
    }
  }
  std::map<std::string, int64_t> last_session;
  for (const LocomoTurn& turn : locomo.turns) {
    last_session[turn.conversation] =
        std::max(last_session[turn.conversation], turn.session_time_us);
  }
  for (const LocomoQuestion& q : locomo.questions) {
    if (q.evidence.empty()) continue;
    Question question{&q, {}, samples.size()};
    v1::SearchRequest request;
    request.set_k(kDepth);
    request.mutable_filter()->set_agent_id(q.conversation);
    request.set_reference_time_us(last_session[q.conversation] + 86'400'000'000LL);
    request.set_query_text(q.question);
    request.set_space("router_bm25");
    request.set_route(v1::ROUTE_FAST);
    absl::StatusOr<Ranked> found = RunSearch(client, request);
    if (!found.ok()) return found.status();
    question.by_system["bm25"] = *found;
    request.set_space("router_static");
    {
      const absl::Time start = absl::Now();
      auto embedded = client.AnalyzeText("router_static", q.question, /*embed=*/true);
      if (!embedded.ok()) return embedded.status();
      v1::SearchRequest vector = request;
      vector.clear_query_text();
      vector.mutable_query()->CopyFrom(embedded->embedding());
      found = RunSearch(client, vector);
      if (!found.ok()) return found.status();
      found->ms = absl::ToDoubleMilliseconds(absl::Now() - start);
      question.by_system["static"] = *found;
    }
    for (auto [name, route] :
         {std::pair{"fast", v1::ROUTE_FAST}, std::pair{"deliberate", v1::ROUTE_DELIBERATE},
          std::pair{"auto", v1::ROUTE_AUTO}}) {
      request.set_route(route);
      found = RunSearch(client, request);
      if (!found.ok()) return found.status();
      question.by_system[name] = *found;
    }
    samples.push_back({"locomo", q.conversation, question.by_system["auto"].signals,
                       RecallAt(question.by_system["fast"], q.evidence, 10),
                       RecallAt(question.by_system["deliberate"], q.evidence, 10)});
    questions.push_back(std::move(question));
  }
  return absl::OkStatus();
}

// The gate's own time over the AUTO searches that ran it (the stage
// "gate", microseconds as engramd reports them).
void PrintGateTime(const std::string& dataset, std::vector<double> micros) {
  if (micros.empty()) return;
  std::sort(micros.begin(), micros.end());
  const double mean = std::accumulate(micros.begin(), micros.end(), 0.0) / micros.size();
  const double p99 = micros[std::min(micros.size() - 1, micros.size() * 99 / 100)];
  absl::FPrintF(stderr, "%s: the gate took %.1f us on average, %.0f us at p99 (%d searches)\n",
                dataset, mean, p99, micros.size());
  if (json_output) {
    std::cout << nlohmann::json{{"bench", "router_gate_time"},
                                {"dataset", dataset},
                                {"mean_us", mean},
                                {"p99_us", p99},
                                {"searches", micros.size()}}
                     .dump()
              << std::endl;
  }
}

void PrintLocomo(const std::vector<Question>& questions, const std::vector<Sample>& samples) {
  std::vector<double> gate_us;
  for (const Question& q : questions) gate_us.push_back(q.by_system.at("auto").gate_us);
  PrintGateTime("LoCoMo", gate_us);
  double deliberate_us = 0;
  for (const Question& q : questions) deliberate_us += q.by_system.at("deliberate").server_us;
  deliberate_us /= std::max<size_t>(1, questions.size());
  absl::FPrintF(stderr, "\nLoCoMo, %d questions with evidence\n", questions.size());
  absl::FPrintF(stderr, "%-16s %-24s %5s %7s %7s %7s %7s %8s %8s %9s %7s %6s\n", "system",
                "category", "n", "R@5", "R@10", "R@25", "MRR", "mean ms", "p99 ms", "server us",
                "escal.", "cost");
  for (const std::string system :
       {"bm25", "static", "fast", "deliberate", "auto (server)", "auto (held out)"}) {
    std::map<int, Row> rows;
    for (const Question& q : questions) {
      const bool held_out = system == "auto (held out)";
      const bool escalated = held_out                    ? samples[q.sample].held_out_escalated
                             : system == "auto (server)" ? q.by_system.at("auto").escalated
                                                         : false;
      const Ranked& ranked = q.by_system.at(held_out ? (escalated ? "deliberate" : "fast")
                                            : system == "auto (server)" ? "auto"
                                                                        : system);
      double ms = ranked.ms, server_us = ranked.server_us;
      if (held_out) {  // the fast path ran first; then deliberation
        const Ranked& fast = q.by_system.at("fast");
        const Ranked& deliberate = q.by_system.at("deliberate");
        ms = fast.ms + (escalated ? deliberate.ms : 0);
        server_us = fast.server_us + (escalated ? deliberate.server_us : 0);
      }
      std::vector<int> categories = {0, q.q->category};
      if (q.q->category != 5) categories.push_back(6);
      for (int category : categories) {
        Row& row = rows[category];
        for (int c = 0; c < 3; ++c) row.recall[c] += RecallAt(ranked, q.q->evidence, kCutoffs[c]);
        row.mrr += ReciprocalRank(ranked, q.q->evidence);
        row.ms.push_back(ms);
        row.server_us += server_us;
        ++row.n;
        row.escalated += escalated ? 1 : 0;
      }
    }
    for (const auto& [category, row] : rows) {
      PrintRow("router_locomo", system, category, row,
               category == 0 ? row.server_us / row.n / deliberate_us : 0);
    }
  }
}

// LaBSE: vectors only, filters of every selectivity, recall@10 against the
// exact top 10 computed here.
struct LabseRun {
  std::string filter;
  std::map<std::string, Ranked> by_route;  // fast, deliberate, auto
  std::map<std::string, double> recall;    // @10, by route
  size_t sample = 0;
};

absl::Status CollectLabse(client::Client& client, const std::string& data_dir, size_t base_count,
                          size_t query_count, std::vector<LabseRun>& runs,
                          std::vector<Sample>& samples) {
  Matrix base = ReadVectors(data_dir + "/labse_base.f16bin");
  Matrix queries = ReadVectors(data_dir + "/labse_query.f16bin");
  base_count = std::min(base_count, base.rows);
  query_count = std::min(query_count, queries.rows);
  const size_t dim = base.cols;
  std::mt19937 rng(5);
  struct Attributes {
    std::string agent, session, kind;
    int64_t time_us;
  };
  std::vector<Attributes> attributes(base_count);
  const int64_t year_us = 365LL * 86'400'000'000LL;
  for (size_t i = 0; i < base_count; ++i) {
    // One agent holds 60% (a graph), five share the rest.
    attributes[i].agent = i % 10 < 6 ? "a0" : absl::StrCat("a", 1 + i % 5);
    attributes[i].session = absl::StrCat("s", rng() % 10);
    attributes[i].kind = rng() % 10 < 3 ? "fact" : "message";
    attributes[i].time_us = static_cast<int64_t>(rng() % year_us);
  }
  (void)client.DeleteSpace("router_labse");
  v1::Space space;
  space.set_name("router_labse");
  space.set_dimension(static_cast<uint32_t>(dim));
  space.set_metric(v1::METRIC_INNER_PRODUCT);
  if (auto created = client.CreateSpace(space); !created.ok()) return created.status();
  v1::PutEpisodesRequest put;
  put.set_space("router_labse");
  std::vector<uint64_t> ids;
  for (size_t i = 0; i < base_count; ++i) {
    v1::Episode* episode = put.add_episodes()->mutable_episode();
    episode->set_agent_id(attributes[i].agent);
    episode->set_session_id(attributes[i].session);
    episode->set_kind(attributes[i].kind);
    episode->set_event_time_us(attributes[i].time_us);
    episode->mutable_embedding()->Add(base.Row(i), base.Row(i) + dim);
    if (put.episodes_size() == 256 || i + 1 == base_count) {
      auto written = client.PutEpisodes(put);
      if (!written.ok()) return written.status();
      for (uint64_t id : written->ids()) ids.push_back(id);
      put.clear_episodes();
    }
  }
  // The index's Stats says when every write is in a partition (graphs built).
  for (;;) {
    auto stats = client.Stats();
    if (!stats.ok()) return stats.status();
    if (stats->index_health().queued() == 0) break;
    absl::SleepFor(absl::Milliseconds(500));
  }

  struct Filter {
    std::string name;
    std::function<void(v1::EpisodeFilter*)> apply;
    std::function<bool(const Attributes&)> keep;
  };
  const std::vector<Filter> filters = {
      {"agent a0 (60%)", [](v1::EpisodeFilter* f) { f->set_agent_id("a0"); },
       [](const Attributes& a) { return a.agent == "a0"; }},
      {"whole space (100%)", [](v1::EpisodeFilter*) {}, [](const Attributes&) { return true; }},
      {"a0, kind fact (18%)",
       [](v1::EpisodeFilter* f) {
         f->set_agent_id("a0");
         f->add_kinds("fact");
       },
       [](const Attributes& a) { return a.agent == "a0" && a.kind == "fact"; }},
      {"a0, session s3 (6%)",
       [](v1::EpisodeFilter* f) {
         f->set_agent_id("a0");
         f->set_session_id("s3");
       },
       [](const Attributes& a) { return a.agent == "a0" && a.session == "s3"; }},
      {"a0, fact, 1 month (1.5%)",
       [year_us](v1::EpisodeFilter* f) {
         f->set_agent_id("a0");
         f->add_kinds("fact");
         f->set_event_time_from_us(0);
         f->set_event_time_to_us(year_us / 12);
       },
       [year_us](const Attributes& a) {
         return a.agent == "a0" && a.kind == "fact" && a.time_us < year_us / 12;
       }},
      {"agent a3 (8%)", [](v1::EpisodeFilter* f) { f->set_agent_id("a3"); },
       [](const Attributes& a) { return a.agent == "a3"; }},
  };
  for (const Filter& filter : filters) {
    // One untimed deliberation first: the scanner's first scan of a
    // partition makes its copy (GPU, or host memory for the CPU twin).
    v1::SearchRequest warm;
    warm.set_space("router_labse");
    warm.set_k(10);
    warm.set_route(v1::ROUTE_DELIBERATE);
    warm.mutable_query()->Add(queries.Row(0), queries.Row(0) + dim);
    filter.apply(warm.mutable_filter());
    if (auto warmed = client.Search(warm); !warmed.ok()) return warmed.status();
    for (size_t q = 0; q < query_count; ++q) {
      const float* query = queries.Row(q);
      std::vector<std::pair<float, size_t>> scored;
      for (size_t i = 0; i < base_count; ++i) {
        if (!filter.keep(attributes[i])) continue;
        float dot = 0;
        for (size_t d = 0; d < dim; ++d) dot += query[d] * base.Row(i)[d];
        scored.emplace_back(dot, i);
      }
      const size_t k = std::min<size_t>(10, scored.size());
      std::partial_sort(scored.begin(), scored.begin() + k, scored.end(),
                        [](const auto& a, const auto& b) { return a.first > b.first; });
      std::set<uint64_t> truth;
      for (size_t i = 0; i < k; ++i) truth.insert(ids[scored[i].second]);
      LabseRun run{filter.name, {}, {}, samples.size()};
      for (auto [name, route] :
           {std::pair{"fast", v1::ROUTE_FAST}, std::pair{"deliberate", v1::ROUTE_DELIBERATE},
            std::pair{"auto", v1::ROUTE_AUTO}}) {
        v1::SearchRequest request;
        request.set_space("router_labse");
        request.set_k(10);
        request.set_route(route);
        request.mutable_query()->Add(query, query + dim);
        filter.apply(request.mutable_filter());
        absl::StatusOr<Ranked> found = RunSearch(client, request);
        if (!found.ok()) return found.status();
        size_t hits = 0;
        for (uint64_t id : found->ids) hits += truth.count(id);
        run.recall[name] = truth.empty() ? 1.0 : double(hits) / truth.size();
        run.by_route[name] = *std::move(found);
      }
      samples.push_back({"labse", absl::StrCat("fold", q % 10), run.by_route["auto"].signals,
                         run.recall["fast"], run.recall["deliberate"]});
      runs.push_back(std::move(run));
    }
  }
  return absl::OkStatus();
}

void PrintLabse(const std::vector<LabseRun>& runs, const std::vector<Sample>& samples,
                size_t base_count) {
  std::vector<double> gate_us;
  for (const LabseRun& run : runs) gate_us.push_back(run.by_route.at("auto").gate_us);
  PrintGateTime("LaBSE", gate_us);
  absl::FPrintF(stderr, "\nLaBSE: %d vectors, %d searches\n", base_count, runs.size());
  absl::FPrintF(stderr, "%-26s %-16s %8s %8s %8s %9s %7s %6s\n", "filter", "route", "R@10",
                "mean ms", "p99 ms", "server us", "escal.", "cost");
  std::vector<std::string> filters;
  for (const LabseRun& run : runs) {
    if (filters.empty() || filters.back() != run.filter) filters.push_back(run.filter);
  }
  filters.push_back("all filters");
  for (const std::string& filter : filters) {
    std::map<std::string, Row> rows;
    for (const LabseRun& run : runs) {
      if (filter != "all filters" && run.filter != filter) continue;
      for (const std::string route : {"fast", "deliberate", "auto (server)", "auto (held out)"}) {
        const bool held_out = route == "auto (held out)";
        const bool escalated = held_out                   ? samples[run.sample].held_out_escalated
                               : route == "auto (server)" ? run.by_route.at("auto").escalated
                                                          : false;
        const std::string answered = held_out ? (escalated ? "deliberate" : "fast")
                                     : route == "auto (server)" ? "auto"
                                                                : route;
        const Ranked& ranked = run.by_route.at(answered);
        Row& row = rows[route];
        row.recall[1] += run.recall.at(answered);
        double ms = ranked.ms, server_us = ranked.server_us;
        if (held_out) {
          ms = run.by_route.at("fast").ms + (escalated ? run.by_route.at("deliberate").ms : 0);
          server_us = run.by_route.at("fast").server_us +
                      (escalated ? run.by_route.at("deliberate").server_us : 0);
        }
        row.ms.push_back(ms);
        row.server_us += server_us;
        ++row.n;
        row.escalated += escalated ? 1 : 0;
      }
    }
    const double deliberate_us = rows["deliberate"].server_us;
    for (const std::string route : {"fast", "deliberate", "auto (server)", "auto (held out)"}) {
      const Row& row = rows[route];
      std::vector<double> ms = row.ms;
      std::sort(ms.begin(), ms.end());
      const double n = std::max<double>(1, row.n);
      const double mean = std::accumulate(ms.begin(), ms.end(), 0.0) / n;
      const double p99 = ms.empty() ? 0 : ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
      absl::FPrintF(stderr, "%-26s %-16s %8.4f %8.3f %8.3f %9.0f %7.3f %6.3f\n", filter, route,
                    row.recall[1] / n, mean, p99, row.server_us / n, row.escalated / n,
                    row.server_us / deliberate_us);
      if (json_output) {
        std::cout << nlohmann::json{{"bench", "router_labse"},
                                    {"vectors", base_count},
                                    {"filter", filter},
                                    {"route", route},
                                    {"searches", row.n},
                                    {"recall_at_10", row.recall[1] / n},
                                    {"mean_ms", mean},
                                    {"p99_ms", p99},
                                    {"server_us", row.server_us / n},
                                    {"escalation_rate", row.escalated / n},
                                    {"server_cost_vs_deliberate", row.server_us / deliberate_us}}
                         .dump()
                  << std::endl;
      }
    }
  }
}

int Main(int argc, char** argv) {
  std::string data_dir = "../shared/data", address, word_vectors;
  size_t labse_n = 20000, labse_queries = 200;
  bool skip_labse = false, skip_locomo = false;
  CLI::App app("The dual-process router on LoCoMo and LaBSE through engramd");
  app.add_option("--data-dir", data_dir, "../shared/data");
  app.add_option("--address", address,
                 "a running engramd (default: start one); it must offer the static embedder, "
                 "and run with router.deliberate_below 0 for the gate's figures");
  app.add_option("--word-vectors", word_vectors, "the static embedder's file");
  app.add_option("--labse-n", labse_n, "LaBSE base vectors to store")->capture_default_str();
  app.add_option("--labse-queries", labse_queries, "LaBSE queries per filter")
      ->capture_default_str();
  app.add_flag("--skip-labse", skip_labse);
  app.add_flag("--skip-locomo", skip_locomo);
  app.add_flag("--json", json_output, "one JSON object per row on stdout");
  CLI11_PARSE(app, argc, argv);
  std::vector<std::string> engramd_args;
  testing::TempDir config_dir;
  if (address.empty()) {
    word_vectors = WordVectors(word_vectors);
    if (word_vectors.empty()) {
      std::cerr << "the static embedder's word vectors are missing "
                   "(scripts/fetch-word-vectors.sh)\n";
      return 1;
    }
    // deliberate_below 0: every AUTO search goes through the gate, which is
    // what is calibrated (LoCoMo's agents are small enough to be
    // deliberated at once by default).
    std::ofstream(config_dir.Sub("engramd.yaml"))
        << "embedders:\n  static:\n    path: " << word_vectors
        << "\nrouter:\n  deliberate_below: 0\n";
    engramd_args = {"--config", config_dir.Sub("engramd.yaml")};
  }
  auto target = ConnectOrStart(address, ENGRAMD_PATH, engramd_args);
  if (!target.ok()) {
    std::cerr << target.status() << "\n";
    return 1;
  }
  std::vector<Sample> samples;
  Locomo locomo;
  std::vector<Question> questions;
  if (!skip_locomo) {
    locomo = ReadLocomo(data_dir + "/locomo10.json");
    if (absl::Status done = CollectLocomo(*target->client, data_dir, locomo, questions, samples);
        !done.ok()) {
      std::cerr << "LoCoMo: " << done << "\n";
      return 1;
    }
  }
  std::vector<LabseRun> runs;
  if (!skip_labse) {
    if (absl::Status done =
            CollectLabse(*target->client, data_dir, labse_n, labse_queries, runs, samples);
        !done.ok()) {
      std::cerr << "LaBSE: " << done << "\n";
      return 1;
    }
  }
  Calibrate(samples);
  if (!skip_locomo) PrintLocomo(questions, samples);
  if (!skip_labse) PrintLabse(runs, samples, labse_n);
  return 0;
}

}  // namespace
}  // namespace engram::bench

int main(int argc, char** argv) { return engram::bench::Main(argc, argv); }
