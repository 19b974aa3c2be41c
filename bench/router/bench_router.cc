// bench_router: the dual-process router through engramd, on LoCoMo and on
// LaBSE vectors (bench/router/README.md has the figures and what they say).
//
// LoCoMo (../shared/data/locomo10.json): the turns stored as in
// bench_locomo, twice: a BM25 space (stemmed, no embedder) and a space
// embedded by the static embedder. Each question with evidence is searched
// within its conversation by BM25 alone, by the static vector alone, and
// with query_text on the embedded space by FAST, DELIBERATE and AUTO, with
// the conversation's last session date as the reference time. Evidence
// recall at 5, 10, 25 and MRR per category; mean and p99 latency (loopback
// gRPC, client side). The gate is calibrated leave-one-conversation-out:
// for each conversation, a logistic model of "DELIBERATE's recall@10 beats
// FAST's" over AUTO's reported signals is fitted on the other nine, its
// threshold set on them as the fewest escalations that keep 97.5% of
// DELIBERATE's recall@10, and applied to the held-out one ("AUTO (LOCO)":
// FAST's answer, or DELIBERATE's when escalated, costing FAST's latency
// plus DELIBERATE's). The model fitted on all ten is printed as the
// defaults to commit (retrieval/quality_gate.cc). "AUTO (server)" is what
// the running engramd's gate did.
//
// LaBSE (--labse-n base vectors): stored over six agents (one with a graph,
// five small), ten sessions, a year of event times and two kinds; 200
// queries under six filters of every selectivity; recall@10 of FAST,
// DELIBERATE and AUTO against exact top-10 computed here; mean latency.
//
// Output: human tables on stderr; with --json one JSON object per row.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
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
  std::vector<std::string> dia_ids;
  double ms = 0;
};

struct Question {
  const LocomoQuestion* q;
  std::map<std::string, Ranked> by_system;  // bm25, static, fast, deliberate, auto
  std::vector<double> signals;              // AUTO's gate inputs
  bool server_escalated = false;
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
  size_t n = 0, escalated = 0;
};

void PrintRow(const std::string& bench, const std::string& system, int category, const Row& row,
              double cost_ratio) {
  std::vector<double> ms = row.ms;
  std::sort(ms.begin(), ms.end());
  const double mean = std::accumulate(ms.begin(), ms.end(), 0.0) / std::max<size_t>(1, ms.size());
  const double p99 = ms.empty() ? 0 : ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  const double n = std::max<double>(1, row.n);
  absl::FPrintF(stderr, "%-16s %-24s %5d %7.3f %7.3f %7.3f %7.3f %8.2f %8.2f %7.3f %6.3f\n", system,
                CategoryName(category), row.n, row.recall[0] / n, row.recall[1] / n,
                row.recall[2] / n, row.mrr / n, mean, p99, row.escalated / n, cost_ratio);
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
                                {"escalation_rate", row.escalated / n},
                                {"cost_vs_deliberate", cost_ratio}}
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

Logistic Fit(const std::vector<const Question*>& train, const std::vector<int>& labels) {
  Logistic model;
  const double lambda = 1e-3, rate = 0.5;
  const double n = static_cast<double>(train.size());
  for (int iteration = 0; iteration < 3000; ++iteration) {
    double grad_bias = 0;
    std::vector<double> grad(kSignals, 0.0);
    for (size_t i = 0; i < train.size(); ++i) {
      const double error = model.Predict(train[i]->signals) - labels[i];
      grad_bias += error;
      for (int j = 0; j < kSignals; ++j) grad[j] += error * train[i]->signals[j];
    }
    model.bias -= rate * grad_bias / n;
    for (int j = 0; j < kSignals; ++j) model.w[j] -= rate * (grad[j] / n + lambda * model.w[j]);
  }
  return model;
}

// The threshold that escalates the fewest training questions while AUTO
// keeps `keep` of DELIBERATE's recall@10 on them.
double ChooseThreshold(const Logistic& model, const std::vector<const Question*>& train,
                       double keep) {
  std::vector<std::pair<double, const Question*>> scored;
  double fast = 0, deliberate = 0;
  for (const Question* q : train) {
    scored.emplace_back(model.Predict(q->signals), q);
    fast += RecallAt(q->by_system.at("fast"), q->q->evidence, 10);
    deliberate += RecallAt(q->by_system.at("deliberate"), q->q->evidence, 10);
  }
  std::sort(scored.begin(), scored.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  double recall = fast;
  for (size_t c = 0; c < scored.size(); ++c) {
    if (recall >= keep * deliberate) {
      return c == 0 ? 1.0 + 1e-9 : (scored[c - 1].first + scored[c].first) / 2;
    }
    const Question* q = scored[c].second;
    recall += RecallAt(q->by_system.at("deliberate"), q->q->evidence, 10) -
              RecallAt(q->by_system.at("fast"), q->q->evidence, 10);
  }
  return 0;
}

absl::StatusOr<Ranked> RunSearch(client::Client& client, v1::SearchRequest request,
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
    ranked.dia_ids.push_back(hit.episode().metadata().at("dia_id").string_value());
  }
  if (response_out != nullptr) *response_out = *std::move(response);
  return ranked;
}

int RunLocomo(client::Client& client, const std::string& data_dir) {
  const Locomo locomo = ReadLocomo(data_dir + "/locomo10.json");
  for (const auto& [space, embedder] : std::vector<std::pair<std::string, std::string>>{
           {"router_bm25", ""}, {"router_static", "static"}}) {
    (void)client.DeleteSpace(space);
    if (absl::Status ingested = IngestLocomo(client, space, "english", embedder, locomo);
        !ingested.ok()) {
      std::cerr << space << ": " << ingested << "\n";
      return 1;
    }
  }
  std::map<std::string, int64_t> last_session;
  for (const LocomoTurn& turn : locomo.turns) {
    last_session[turn.conversation] =
        std::max(last_session[turn.conversation], turn.session_time_us);
  }
  std::vector<Question> questions;
  for (const LocomoQuestion& q : locomo.questions) {
    if (q.evidence.empty()) continue;
    Question question{&q, {}, {}, false};
    v1::SearchRequest request;
    request.set_k(kDepth);
    request.mutable_filter()->set_agent_id(q.conversation);
    request.set_reference_time_us(last_session[q.conversation] + 86'400'000'000LL);
    request.set_query_text(q.question);
    request.set_space("router_bm25");
    request.set_route(v1::ROUTE_FAST);
    auto bm25 = RunSearch(client, request);
    if (!bm25.ok()) return std::cerr << bm25.status() << "\n", 1;
    question.by_system["bm25"] = *bm25;
    request.set_space("router_static");
    {
      const absl::Time start = absl::Now();
      auto embedded = client.AnalyzeText("router_static", q.question, /*embed=*/true);
      if (!embedded.ok()) return std::cerr << embedded.status() << "\n", 1;
      v1::SearchRequest vector = request;
      vector.clear_query_text();
      vector.mutable_query()->CopyFrom(embedded->embedding());
      auto found = RunSearch(client, vector);
      if (!found.ok()) return std::cerr << found.status() << "\n", 1;
      found->ms = absl::ToDoubleMilliseconds(absl::Now() - start);
      question.by_system["static"] = *found;
    }
    for (auto [name, route] :
         {std::pair{"fast", v1::ROUTE_FAST}, std::pair{"deliberate", v1::ROUTE_DELIBERATE},
          std::pair{"auto", v1::ROUTE_AUTO}}) {
      request.set_route(route);
      v1::SearchResponse response;
      auto found = RunSearch(client, request, &response);
      if (!found.ok()) return std::cerr << found.status() << "\n", 1;
      question.by_system[name] = *found;
      if (route == v1::ROUTE_AUTO && response.has_gate()) {
        for (const v1::GateSignal& signal : response.gate().signals()) {
          question.signals.push_back(signal.value());
        }
        question.server_escalated = response.gate().escalated();
      }
    }
    if (question.signals.size() != kSignals) question.signals.assign(kSignals, 0.0);
    questions.push_back(std::move(question));
  }

  // Leave-one-conversation-out calibration.
  std::vector<std::string> conversations;
  for (const auto& [conversation, time] : last_session) conversations.push_back(conversation);
  std::map<const Question*, bool> loco_escalated;
  auto label = [](const Question& q) {
    return RecallAt(q.by_system.at("deliberate"), q.q->evidence, 10) >
                   RecallAt(q.by_system.at("fast"), q.q->evidence, 10)
               ? 1
               : 0;
  };
  for (const std::string& held_out : conversations) {
    std::vector<const Question*> train;
    std::vector<int> labels;
    for (const Question& q : questions) {
      if (q.q->conversation == held_out) continue;
      train.push_back(&q);
      labels.push_back(label(q));
    }
    const Logistic model = Fit(train, labels);
    const double threshold = ChooseThreshold(model, train, 0.975);
    for (const Question& q : questions) {
      if (q.q->conversation == held_out) loco_escalated[&q] = model.Predict(q.signals) >= threshold;
    }
  }
  {
    std::vector<const Question*> all;
    std::vector<int> labels;
    for (const Question& q : questions) {
      all.push_back(&q);
      labels.push_back(label(q));
    }
    const Logistic model = Fit(all, labels);
    const double threshold = ChooseThreshold(model, all, 0.975);
    nlohmann::json weights;
    static const char* kNames[kSignals] = {
        "rerank_depth",     "order_disagreement", "recall_shortfall", "hits_short",
        "filter_rejection", "vector_top_z",       "vector_margin",    "lexical_top_z",
        "lexical_margin",   "list_overlap",       "time_expression",  "rare_tokens",
        "aggregation",      "query_words",        "text_only"};
    absl::FPrintF(stderr, "gate fitted on all ten conversations: bias %.4f threshold %.4f\n",
                  model.bias, threshold);
    for (int i = 0; i < kSignals; ++i) {
      weights[kNames[i]] = model.w[i];
      absl::FPrintF(stderr, "  w[%s] = %.4f\n", kNames[i], model.w[i]);
    }
    if (json_output) {
      std::cout << nlohmann::json{{"bench", "router_gate_fit"},
                                  {"bias", model.bias},
                                  {"threshold", threshold},
                                  {"weights", weights},
                                  {"positives", std::accumulate(labels.begin(), labels.end(), 0)},
                                  {"questions", labels.size()}}
                       .dump()
                << std::endl;
    }
  }

  // The tables.
  double deliberate_mean = 0;
  for (const Question& q : questions) deliberate_mean += q.by_system.at("deliberate").ms;
  deliberate_mean /= std::max<size_t>(1, questions.size());
  absl::FPrintF(stderr, "\nLoCoMo, %d questions with evidence\n", questions.size());
  absl::FPrintF(stderr, "%-16s %-24s %5s %7s %7s %7s %7s %8s %8s %7s %6s\n", "system", "category",
                "n", "R@5", "R@10", "R@25", "MRR", "mean ms", "p99 ms", "escal.", "cost");
  for (const std::string system :
       {"bm25", "static", "fast", "deliberate", "auto (server)", "auto (LOCO)"}) {
    std::map<int, Row> rows;
    for (const Question& q : questions) {
      const Ranked* ranked;
      double ms;
      bool escalated = false;
      if (system == "auto (server)") {
        ranked = &q.by_system.at("auto");
        ms = ranked->ms;
        escalated = q.server_escalated;
      } else if (system == "auto (LOCO)") {
        escalated = loco_escalated.at(&q);
        ranked = &q.by_system.at(escalated ? "deliberate" : "fast");
        ms = q.by_system.at("fast").ms + (escalated ? q.by_system.at("deliberate").ms : 0);
      } else {
        ranked = &q.by_system.at(system);
        ms = ranked->ms;
      }
      std::vector<int> categories = {0, q.q->category};
      if (q.q->category != 5) categories.push_back(6);
      for (int category : categories) {
        Row& row = rows[category];
        for (int c = 0; c < 3; ++c) row.recall[c] += RecallAt(*ranked, q.q->evidence, kCutoffs[c]);
        row.mrr += ReciprocalRank(*ranked, q.q->evidence);
        row.ms.push_back(ms);
        ++row.n;
        row.escalated += escalated ? 1 : 0;
      }
    }
    for (const auto& [category, row] : rows) {
      const double mean = std::accumulate(row.ms.begin(), row.ms.end(), 0.0) / row.ms.size();
      PrintRow("router_locomo", system, category, row, category == 0 ? mean / deliberate_mean : 0);
    }
  }
  return 0;
}

// LaBSE: vectors only, filters of every selectivity, recall@10 against
// exact computed here.
int RunLabse(client::Client& client, const std::string& data_dir, size_t base_count,
             size_t query_count) {
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
  if (auto created = client.CreateSpace(space); !created.ok()) {
    std::cerr << created.status() << "\n";
    return 1;
  }
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
      if (!written.ok()) {
        std::cerr << written.status() << "\n";
        return 1;
      }
      for (uint64_t id : written->ids()) ids.push_back(id);
      put.clear_episodes();
    }
  }
  // Waits for the graph: a search per second until the index stops growing
  // is not observable from here, so give the indexer a fixed head start.
  absl::SleepFor(absl::Seconds(std::max<size_t>(5, base_count / 1500)));

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
  absl::FPrintF(stderr, "\nLaBSE: %d vectors, %d queries per filter\n", base_count, query_count);
  absl::FPrintF(stderr, "%-26s %-11s %8s %8s %8s %7s %6s\n", "filter", "route", "R@10", "mean ms",
                "p99 ms", "escal.", "cost");
  std::map<std::string, Row> overall;
  for (const Filter& filter : filters) {
    std::map<std::string, Row> rows;
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
      for (auto [name, route] :
           {std::pair{"fast", v1::ROUTE_FAST}, std::pair{"deliberate", v1::ROUTE_DELIBERATE},
            std::pair{"auto", v1::ROUTE_AUTO}}) {
        v1::SearchRequest request;
        request.set_space("router_labse");
        request.set_k(10);
        request.set_route(route);
        request.mutable_query()->Add(query, query + dim);
        filter.apply(request.mutable_filter());
        const absl::Time start = absl::Now();
        auto response = client.Search(request);
        const double ms = absl::ToDoubleMilliseconds(absl::Now() - start);
        if (!response.ok()) {
          std::cerr << response.status() << "\n";
          return 1;
        }
        size_t found = 0;
        for (const v1::SearchHit& hit : response->hits()) found += truth.count(hit.episode().id());
        for (Row* row : {&rows[name], &overall[name]}) {
          row->recall[1] += truth.empty() ? 1.0 : double(found) / truth.size();
          row->ms.push_back(ms);
          ++row->n;
          row->escalated += response->route() == "deliberate" && route == v1::ROUTE_AUTO;
        }
      }
    }
    const double deliberate_ms =
        std::accumulate(rows["deliberate"].ms.begin(), rows["deliberate"].ms.end(), 0.0);
    for (const char* name : {"fast", "deliberate", "auto"}) {
      const Row& row = rows[name];
      const double total = std::accumulate(row.ms.begin(), row.ms.end(), 0.0);
      std::vector<double> ms = row.ms;
      std::sort(ms.begin(), ms.end());
      absl::FPrintF(stderr, "%-26s %-11s %8.4f %8.3f %8.3f %7.3f %6.3f\n", filter.name, name,
                    row.recall[1] / row.n, total / row.n, ms[ms.size() * 99 / 100],
                    double(row.escalated) / row.n, total / deliberate_ms);
      if (json_output) {
        std::cout << nlohmann::json{{"bench", "router_labse"},
                                    {"filter", filter.name},
                                    {"route", name},
                                    {"queries", row.n},
                                    {"recall_at_10", row.recall[1] / row.n},
                                    {"mean_ms", total / row.n},
                                    {"p99_ms", ms[ms.size() * 99 / 100]},
                                    {"escalation_rate", double(row.escalated) / row.n},
                                    {"cost_vs_deliberate", total / deliberate_ms}}
                         .dump()
                  << std::endl;
      }
    }
  }
  const double deliberate_ms =
      std::accumulate(overall["deliberate"].ms.begin(), overall["deliberate"].ms.end(), 0.0);
  for (const char* name : {"fast", "deliberate", "auto"}) {
    const Row& row = overall[name];
    const double total = std::accumulate(row.ms.begin(), row.ms.end(), 0.0);
    absl::FPrintF(stderr, "%-26s %-11s %8.4f %8.3f %8s %7.3f %6.3f\n", "all filters", name,
                  row.recall[1] / row.n, total / row.n, "", double(row.escalated) / row.n,
                  total / deliberate_ms);
    if (json_output) {
      std::cout << nlohmann::json{{"bench", "router_labse"},
                                  {"filter", "all"},
                                  {"route", name},
                                  {"queries", row.n},
                                  {"recall_at_10", row.recall[1] / row.n},
                                  {"mean_ms", total / row.n},
                                  {"escalation_rate", double(row.escalated) / row.n},
                                  {"cost_vs_deliberate", total / deliberate_ms}}
                       .dump()
                << std::endl;
    }
  }
  return 0;
}

int Main(int argc, char** argv) {
  std::string data_dir = "../shared/data", address, word_vectors;
  size_t labse_n = 20000, labse_queries = 200;
  bool skip_labse = false, skip_locomo = false;
  CLI::App app("The dual-process router on LoCoMo and LaBSE through engramd");
  app.add_option("--data-dir", data_dir, "../shared/data");
  app.add_option("--address", address,
                 "a running engramd (default: start one); it must offer the static embedder");
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
      std::cerr
          << "the static embedder's word vectors are missing (scripts/fetch-word-vectors.sh)\n";
      return 1;
    }
    std::ofstream(config_dir.Sub("engramd.yaml"))
        << "embedders:\n  static:\n    path: " << word_vectors << "\n";
    engramd_args = {"--config", config_dir.Sub("engramd.yaml")};
  }
  auto target = ConnectOrStart(address, ENGRAMD_PATH, engramd_args);
  if (!target.ok()) {
    std::cerr << target.status() << "\n";
    return 1;
  }
  if (!skip_locomo) {
    if (int failed = RunLocomo(*target->client, data_dir); failed != 0) return failed;
  }
  if (!skip_labse) return RunLabse(*target->client, data_dir, labse_n, labse_queries);
  return 0;
}

}  // namespace
}  // namespace engram::bench

int main(int argc, char** argv) { return engram::bench::Main(argc, argv); }
