// Full deliberation (Engine::Deliberate): the slow path of the
// dual-process router, for queries the quality gate (retrieval/quality_gate.h)
// does not trust to the fast path, or that ask for it (route DELIBERATE).
//
// Stages, each with its share of the time left when it starts (when the
// call has a deadline), its time and its candidates in and out reported:
//   scan     every vector of the matching partitions, exactly (the
//            PartitionScanner: the GPU when present, micro-batched with
//            concurrent scans; the CPU twin otherwise), depth max(k, 50)
//   lexical  BM25 over the query's terms, the same depth
//   time     when query_text names a time (time_expressions.h): the vector
//            scan (or BM25, text alone) again with the filter narrowed to
//            that window. Its list adds weight to in-window episodes, so
//            out-of-window ones are demoted, not dropped.
//   context  (queries with text) the two episodes written just before and
//            after each of the first 5 fused hits in the same session, and
//            the episodes they link to (Episode.links): the turn that
//            answers a question is often next to the one that matches it.
//            Weight 0.3.
//   fuse     weighted reciprocal rank fusion (k = 60) of the lists above
//   rerank   exact scores of the query vector against every fused
//            candidate's stored vector; the final order fuses this exact
//            order with the other lists again (a vector query alone: the
//            exact order is the answer).
// A stage that runs out of its share is cut (its list is left out and the
// report says so); the search fails only when the call's own deadline
// passes.
#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "index/exact_scorer.h"
#include "retrieval/engine.h"
#include "retrieval/fusion.h"
#include "storage/episode_filter.h"

namespace engram::retrieval {
namespace {

// Shares of the time left when each stage starts.
constexpr double kScanShare = 0.5;
constexpr double kLexicalShare = 0.4;
constexpr double kTimeShare = 0.4;
constexpr double kContextShare = 0.5;
// Fused hits whose neighbours and links the context stage reads, the
// neighbours each way per seed, links followed per seed, and the weight of
// the context list in the fusions. Chosen on LoCoMo among a handful of
// values (bench/router/README.md): more seeds or a heavier context list
// crowd out the direct matches (MRR falls), fewer miss answers.
constexpr size_t kContextSeeds = 5;
constexpr uint32_t kNeighborsPerSide = 2;
constexpr size_t kLinksPerSeed = 4;
constexpr double kContextWeight = 0.3;

// The filter narrowed to a time window; nullopt when nothing is left.
std::optional<EpisodeFilter> Narrow(const EpisodeFilter& filter, const TimeWindow& window) {
  EpisodeFilter narrowed = filter;
  narrowed.event_time_from_us =
      std::max(filter.event_time_from_us.value_or(window.from_us), window.from_us);
  narrowed.event_time_to_us =
      std::min(filter.event_time_to_us.value_or(window.to_us), window.to_us);
  if (*narrowed.event_time_from_us >= *narrowed.event_time_to_us) return std::nullopt;
  return narrowed;
}

}  // namespace

absl::StatusOr<SearchResult> Engine::Deliberate(const std::string& tenant, const SpaceInfo& space,
                                                const SearchRequest& request,
                                                const std::vector<std::string>& terms,
                                                const QueryHints& hints) {
  const bool finite = request.deadline != absl::InfiniteFuture();
  auto stage_deadline = [&](double share) {
    if (!finite) return absl::InfiniteFuture();
    const absl::Time now = absl::Now();
    return std::min(request.deadline, now + (request.deadline - now) * share);
  };
  SearchResult result;
  result.route = Route::kDeliberate;
  const uint32_t depth = std::min(std::max(request.k, kFusionDepth), max_k_);

  // Every episode read back, by id: the lists hold ids and scores only.
  absl::flat_hash_map<uint64_t, Episode> pool;
  std::vector<RankedIds> lists;
  auto add_list = [&](const char* source, std::vector<SearchHit> hits, double weight) {
    RankedIds& list = lists.emplace_back(RankedIds{source, {}, weight});
    for (SearchHit& hit : hits) {
      list.ids.emplace_back(hit.episode.id, hit.score);
      pool.try_emplace(hit.episode.id, std::move(hit.episode));
    }
  };
  // Runs one stage: a search within `share` of the time left. A stage cut
  // by its share is reported and skipped; the call's deadline fails it.
  int stages_cut = 0;
  auto run_stage = [&](const char* name, double share,
                       const std::function<absl::StatusOr<SearchResult>(absl::Time)>& search)
      -> absl::StatusOr<std::optional<SearchResult>> {
    const absl::Time start = absl::Now();
    const absl::Time deadline = stage_deadline(share);
    absl::StatusOr<SearchResult> found = search(deadline);
    StageReport report{name, 0, absl::Now() - start};
    report.budget = finite ? deadline - start : absl::ZeroDuration();
    if (!found.ok()) {
      if (found.status().code() != absl::StatusCode::kDeadlineExceeded ||
          absl::Now() >= request.deadline) {
        return found.status();
      }
      report.note = "cut: its share of the deadline ran out";
      ++stages_cut;
      result.stages.push_back(std::move(report));
      return std::optional<SearchResult>();
    }
    report.candidates = found->candidates;
    report.kept = found->hits.size();
    result.candidates += found->candidates;
    result.stages.push_back(std::move(report));
    return std::optional<SearchResult>(*std::move(found));
  };

  const bool has_vector = !request.query.empty();
  if (has_vector) {
    absl::StatusOr<std::optional<SearchResult>> scanned =
        run_stage("scan", kScanShare, [&](absl::Time deadline) {
          SearchRequest scan = request;
          scan.k = depth;
          scan.route = Route::kScan;
          scan.deadline = deadline;
          return SearchVectors(tenant, space, scan, nullptr);
        });
    if (!scanned.ok()) return scanned.status();
    if (*scanned) add_list("vector", std::move((*scanned)->hits), 1.0);
  }
  if (!terms.empty()) {
    absl::StatusOr<std::optional<SearchResult>> matched =
        run_stage("lexical", kLexicalShare, [&](absl::Time deadline) {
          SearchRequest lexical = request;
          lexical.k = depth;
          lexical.deadline = deadline;
          return SearchLexical(tenant, space, lexical, terms);
        });
    if (!matched.ok()) return matched.status();
    if (*matched) {
      result.query_terms = (*matched)->query_terms;
      add_list("lexical", std::move((*matched)->hits), 1.0);
    }
  }
  if (hints.time.has_value()) {
    if (std::optional<EpisodeFilter> narrowed = Narrow(request.filter, *hints.time)) {
      absl::StatusOr<std::optional<SearchResult>> timed =
          run_stage("time", kTimeShare, [&](absl::Time deadline) {
            SearchRequest in_window = request;
            in_window.k = depth;
            in_window.filter = *narrowed;
            in_window.deadline = deadline;
            if (has_vector) {
              in_window.route = Route::kScan;
              return SearchVectors(tenant, space, in_window, nullptr);
            }
            return SearchLexical(tenant, space, in_window, terms);
          });
      if (!timed.ok()) return timed.status();
      if (*timed) add_list("time", std::move((*timed)->hits), 1.0);
      if (!result.stages.empty() && result.stages.back().name == "time") {
        result.stages.back().note = absl::StrCat("\"", hints.time->expression, "\"");
      }
    }
  }

  if (!request.query_text.empty()) {
    absl::StatusOr<std::optional<SearchResult>> expanded =
        run_stage("context", kContextShare, [&](absl::Time deadline) {
          return ExpandContext(tenant, space, request.filter, FuseRanks(lists, kContextSeeds), pool,
                               deadline);
        });
    if (!expanded.ok()) return expanded.status();
    if (*expanded) add_list("context", std::move((*expanded)->hits), kContextWeight);
  }

  // Every stage cut: nothing to answer with, which is not an empty answer.
  if (lists.empty() && stages_cut > 0) {
    return absl::DeadlineExceededError(
        "deliberation's stages ran out of their shares of the deadline before any finished");
  }

  // Fusion of every list, then the exact rerank of what it kept.
  absl::Time start = absl::Now();
  const size_t listed = [&] {
    size_t n = 0;
    for (const RankedIds& list : lists) n += list.ids.size();
    return n;
  }();
  std::vector<FusedId> fused = FuseRanks(lists, depth);
  result.stages.push_back({"fuse", listed, absl::Now() - start, fused.size()});
  if (absl::Now() > request.deadline) {
    return absl::DeadlineExceededError("deadline passed while deliberating (fuse)");
  }

  std::vector<FusedId> final_order;
  if (has_vector) {
    start = absl::Now();
    const index::ExactScorer scorer(space.metric, request.query);
    RankedIds rerank{"rerank", {}, 1.0};
    for (const FusedId& candidate : fused) {
      rerank.ids.emplace_back(candidate.id, scorer.Score(pool.at(candidate.id).embedding));
    }
    std::sort(rerank.ids.begin(), rerank.ids.end(), [](const auto& a, const auto& b) {
      return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    result.stages.push_back({"rerank", fused.size(), absl::Now() - start, rerank.ids.size()});
    if (request.query_text.empty()) {
      // A vector query alone: the exact order is the answer.
      for (size_t i = 0; i < rerank.ids.size() && i < request.k; ++i) {
        const auto [id, score] = rerank.ids[i];
        FusedId hit{id, score, {{"rerank", static_cast<uint32_t>(i + 1), score}}};
        final_order.push_back(std::move(hit));
      }
    } else {
      // The exact order replaces the vector scan's list and ranks every
      // fused candidate, those only BM25 or the context proposed too.
      std::vector<RankedIds> final_lists;
      final_lists.push_back(std::move(rerank));
      for (RankedIds& list : lists) {
        if (list.source != "vector") final_lists.push_back(std::move(list));
      }
      final_order = FuseRanks(final_lists, request.k);
    }
  } else {
    fused.resize(std::min<size_t>(fused.size(), request.k));
    final_order = std::move(fused);
  }
  for (FusedId& hit : final_order) {
    const bool exact_score = request.query_text.empty();
    result.hits.push_back({static_cast<float>(hit.score), std::move(pool.at(hit.id)),
                           exact_score ? std::vector<SourceRank>() : std::move(hit.sources)});
  }
  return result;
}

absl::StatusOr<SearchResult> Engine::ExpandContext(
    const std::string& tenant, const SpaceInfo& space, const EpisodeFilter& filter,
    const std::vector<FusedId>& seeds, const absl::flat_hash_map<uint64_t, Episode>& pool,
    absl::Time deadline) {
  std::vector<const Episode*> seed_episodes;
  for (const FusedId& seed : seeds) seed_episodes.push_back(&pool.at(seed.id));
  absl::StatusOr<std::vector<std::vector<EpisodeRef>>> neighbors =
      store_->SessionNeighbors(tenant, space.name, seed_episodes, kNeighborsPerSide);
  if (!neighbors.ok()) return neighbors.status();
  // Candidates in seed order (a neighbour or link of the best seed first),
  // scored by their seed's fused score.
  std::vector<Candidate> candidates;
  absl::flat_hash_set<uint64_t> proposed;
  for (const FusedId& seed : seeds) proposed.insert(seed.id);
  SearchResult result;
  for (size_t s = 0; s < seeds.size(); ++s) {
    const Episode& seed = *seed_episodes[s];
    const float score = static_cast<float>(seeds[s].score);
    for (const EpisodeRef& ref : (*neighbors)[s]) {
      if (proposed.insert(ref.id).second) candidates.push_back({ref.id, score, ref.agent_id});
    }
    for (size_t l = 0; l < seed.links.size() && l < kLinksPerSeed; ++l) {
      if (!proposed.insert(seed.links[l]).second) continue;
      absl::StatusOr<Episode> linked = store_->GetEpisode(tenant, space.name, seed.links[l]);
      if (!linked.ok()) continue;  // deleted, expired or never there: links are not checked
      candidates.push_back({linked->id, score, linked->agent_id});
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError("deadline passed while expanding context");
    }
  }
  Hydrator hydrator(store_, tenant, space.name, filter);
  absl::StatusOr<size_t> found =
      hydrator.Hydrate(candidates, static_cast<uint32_t>(candidates.size()));
  if (!found.ok()) return found.status();
  result.candidates = candidates.size();
  result.hits = hydrator.TakeHits();
  return result;
}

}  // namespace engram::retrieval
