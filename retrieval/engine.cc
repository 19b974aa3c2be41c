#include "retrieval/engine.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/retry_after.h"
#include "retrieval/exact_search.h"
#include "retrieval/fusion.h"
#include "retrieval/hydrator.h"
#include "storage/episode_filter.h"

namespace engram::retrieval {

const char* RouteName(Route route) {
  switch (route) {
    case Route::kIndex:
      return "index";
    case Route::kScan:
      return "scan";
    case Route::kExact:
      return "exact";
    case Route::kLexical:
      return "lexical";
    case Route::kHybrid:
      return "hybrid";
    case Route::kDeliberate:
      return "deliberate";
  }
  return "unknown";
}

const char* RoutePolicyName(RoutePolicy policy) {
  switch (policy) {
    case RoutePolicy::kAuto:
      return "auto";
    case RoutePolicy::kFast:
      return "fast";
    case RoutePolicy::kDeliberate:
      return "deliberate";
  }
  return "unknown";
}

namespace {

// The vector index as a candidate source: graphs (or code scans while small)
// for the index route, every vector for the scan route.
class VectorSource final : public CandidateSource {
 public:
  VectorSource(EpisodeIndex& index, bool scan) : index_(index), scan_(scan) {}
  const char* name() const override { return scan_ ? "scan" : "index"; }
  absl::StatusOr<std::vector<Candidate>> Propose(const SearchContext& context,
                                                 uint32_t count) override {
    return index_.Propose(context, count, scan_);
  }

 private:
  EpisodeIndex& index_;
  const bool scan_;
};

// The lexical index as a candidate source: the top episodes of the space (or
// of the filter's agent) by BM25 over the query's terms.
class LexicalSource final : public CandidateSource {
 public:
  LexicalSource(storage::EpisodeStore& store, const std::vector<std::string>& terms)
      : store_(store), terms_(terms) {}
  const char* name() const override { return "lexical"; }
  absl::StatusOr<std::vector<Candidate>> Propose(const SearchContext& context,
                                                 uint32_t count) override {
    storage::LexicalQuery query;
    query.terms = terms_;
    query.agent_id = context.filter.agent_id;
    query.limit = count;
    query.k1 = context.space.text.bm25_k1;
    query.b = context.space.text.bm25_b;
    query.deadline = context.deadline;
    absl::StatusOr<storage::LexicalResult> found =
        store_.SearchText(context.tenant, context.space.name, query);
    if (!found.ok()) return found.status();
    std::vector<Candidate> candidates;
    candidates.reserve(found->hits.size());
    for (storage::LexicalHit& hit : found->hits) {
      candidates.push_back({hit.id, hit.score, std::move(hit.agent_id)});
    }
    return candidates;
  }

 private:
  storage::EpisodeStore& store_;
  const std::vector<std::string>& terms_;
};

// Adds a step's count and time to the stage of that name (one entry per
// stage however many widening rounds ran).
void Account(SearchResult& result, const std::string& stage, uint64_t candidates,
             absl::Duration time) {
  for (StageReport& report : result.stages) {
    if (report.name == stage) {
      report.candidates += candidates;
      report.time += time;
      return;
    }
  }
  result.stages.push_back({stage, candidates, time});
}

// The first (up to) 10 scores of a ranked list, for the quality gate.
std::vector<float> TopScores(const std::vector<SearchHit>& hits) {
  std::vector<float> scores;
  for (size_t i = 0; i < hits.size() && i < 10; ++i) scores.push_back(hits[i].score);
  return scores;
}

// The share of `a`'s first 10 that `b`'s first 10 also hold.
double TopOverlap(const std::vector<SearchHit>& a, const std::vector<SearchHit>& b) {
  const size_t n = std::min<size_t>(a.size(), 10);
  if (n == 0) return 0;
  size_t shared = 0;
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < b.size() && j < 10; ++j) {
      if (a[i].episode.id == b[j].episode.id) {
        ++shared;
        break;
      }
    }
  }
  return double(shared) / n;
}

absl::Status ValidateQuery(const SpaceInfo& space, const SearchRequest& request, uint32_t max_k,
                           const StoreLimits& limits) {
  const size_t max_text_bytes = limits.max_text_bytes;
  if (request.k == 0 || request.k > max_k) {
    return absl::InvalidArgumentError(absl::StrCat("k is ", request.k, "; must be in 1..", max_k));
  }
  if (request.query.empty() && request.query_text.empty()) {
    return absl::InvalidArgumentError("a search needs a query vector, query_text, or both");
  }
  if (request.query_text.size() > max_text_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("query_text is ", request.query_text.size(),
                                                   " bytes; the limit is ", max_text_bytes));
  }
  if (!request.query.empty() && request.query.size() != space.dimension) {
    return absl::InvalidArgumentError(absl::StrCat("query has ", request.query.size(),
                                                   " dimensions; space '", space.name, "' expects ",
                                                   space.dimension));
  }
  for (size_t i = 0; i < request.query.size(); ++i) {
    if (!std::isfinite(request.query[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("query[", i, "] is ", request.query[i], "; values must be finite"));
    }
  }
  if (request.beam_width > index::VectorPartition::kMaxBeamWidth) {
    return absl::InvalidArgumentError(absl::StrCat("beam_width is ", request.beam_width,
                                                   "; must be at most ",
                                                   index::VectorPartition::kMaxBeamWidth));
  }
  return storage::ValidateFilter(request.filter, limits);
}

}  // namespace

Engine::Engine(storage::EpisodeStore* store, EngineOptions options)
    : store_(store),
      max_k_(options.max_k),
      embedders_(options.embedders),
      gate_model_(options.gate),
      deliberate_below_(options.deliberate_below),
      index_(options.index, store, options.default_snapshot_dir, std::move(options.scanner)) {}

Engine::~Engine() = default;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Open(storage::EpisodeStore* store,
                                                     EngineOptions options) {
  std::unique_ptr<Engine> engine(new Engine(store, std::move(options)));
  if (absl::Status loaded = engine->index_.Load(); !loaded.ok()) return loaded;
  return engine;
}

absl::StatusOr<SpaceInfo> Engine::CreateSpace(const std::string& tenant,
                                              const SpaceInfo& requested) {
  SpaceInfo space = requested;
  if (!space.embedder.empty()) {
    embed::Embedder* embedder = embedders_ ? embedders_->Find(space.embedder) : nullptr;
    if (embedder == nullptr) {
      std::vector<std::string> offered =
          embedders_ ? embedders_->Names() : std::vector<std::string>();
      return absl::InvalidArgumentError(
          absl::StrCat("embedder '", space.embedder, "' is not offered by this server (offered: ",
                       offered.empty() ? "none; see embedders in the server configuration"
                                       : absl::StrJoin(offered, ", "),
                       ")"));
    }
    if (space.dimension == 0) space.dimension = embedder->dimension();
    if (embedder->dimension() != 0 && space.dimension != embedder->dimension()) {
      return absl::InvalidArgumentError(
          absl::StrCat("space dimension ", space.dimension, " does not match embedder '",
                       space.embedder, "', whose vectors have ", embedder->dimension()));
    }
  }
  return store_->CreateSpace(tenant, space);
}

absl::StatusOr<embed::Embedder*> Engine::SpaceEmbedder(const SpaceInfo& space) const {
  if (space.embedder.empty()) return nullptr;
  embed::Embedder* embedder = embedders_ ? embedders_->Find(space.embedder) : nullptr;
  if (embedder == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("space '", space.name, "' embeds with '", space.embedder,
                     "', which this server's configuration does not set up"));
  }
  return embedder;
}

absl::StatusOr<SpaceInfo> Engine::GetSpace(const std::string& tenant, const std::string& name) {
  return store_->GetSpace(tenant, name);
}

absl::StatusOr<std::vector<SpaceInfo>> Engine::ListSpaces(const std::string& tenant) {
  return store_->ListSpaces(tenant);
}

absl::StatusOr<uint64_t> Engine::DeleteSpace(const std::string& tenant, const std::string& name) {
  absl::StatusOr<uint64_t> deleted = store_->DeleteSpace(tenant, name);
  if (deleted.ok()) {
    index_.DropSpace(tenant, name);
    score_profiles_.Forget(absl::StrCat(tenant, absl::string_view("\0", 1), name, "\x01"));
  }
  return deleted;
}

absl::StatusOr<std::vector<PutResult>> Engine::PutEpisodes(const std::string& tenant,
                                                           const std::string& space_name,
                                                           std::vector<EpisodeWrite> writes,
                                                           absl::Time deadline) {
  if (absl::Status admitted = AdmitToIndex(tenant, space_name, deadline); !admitted.ok()) {
    return admitted;
  }
  if (absl::Status embedded = EmbedWrites(tenant, space_name, writes, deadline); !embedded.ok()) {
    return embedded;
  }
  std::vector<Episode> written;
  absl::StatusOr<std::vector<PutResult>> results =
      store_->PutEpisodes(tenant, space_name, std::move(writes), &written);
  if (results.ok()) IndexWritten(tenant, space_name, written);
  return results;
}

void Engine::IndexWritten(const std::string& tenant, const std::string& space_name,
                          const std::vector<Episode>& written) {
  if (written.empty()) return;
  absl::StatusOr<SpaceInfo> space = store_->LookupSpace(tenant, space_name);
  if (space.ok()) index_.Upsert(tenant, *space, written);  // else deleted meanwhile
}

absl::StatusOr<ImportResult> Engine::ImportEpisodes(const std::string& tenant,
                                                    const std::string& space_name,
                                                    std::vector<ImportedEpisode> episodes,
                                                    absl::Time deadline) {
  if (absl::Status admitted = AdmitToIndex(tenant, space_name, deadline); !admitted.ok()) {
    return admitted;
  }
  std::vector<Episode> written;
  absl::StatusOr<ImportResult> result =
      store_->ImportEpisodes(tenant, space_name, std::move(episodes), &written);
  if (result.ok()) IndexWritten(tenant, space_name, written);
  return result;
}

absl::StatusOr<Episode> Engine::UpdateEpisode(const std::string& tenant,
                                              const std::string& space_name,
                                              const EpisodeUpdate& request, absl::Time deadline) {
  if (absl::Status admitted = AdmitToIndex(tenant, space_name, deadline); !admitted.ok()) {
    return admitted;
  }
  EpisodeUpdate update = request;
  if (absl::Status embedded = EmbedUpdate(tenant, space_name, update, deadline); !embedded.ok()) {
    return embedded;
  }
  absl::StatusOr<Episode> updated = store_->UpdateEpisode(tenant, space_name, update);
  if (!updated.ok()) return updated.status();
  IndexWritten(tenant, space_name, {*updated});
  return updated;
}

absl::Status Engine::AdmitToIndex(const std::string& tenant, const std::string& space_name,
                                  absl::Time deadline) {
  size_t waiting = 0;
  if (index_.AwaitRoom(tenant, space_name, std::min(deadline, absl::Now() + kIndexAdmissionWait),
                       &waiting)) {
    return absl::OkStatus();
  }
  // The build that holds the indexer runs for seconds: a retry sooner would
  // only wait at admission again.
  return WithRetryAfter(
      absl::ResourceExhaustedError(absl::StrCat(
          "space '", space_name, "': the vector index is ", waiting,
          " writes behind (a graph build is running); nothing was written, retry with backoff")),
      absl::Seconds(1));
}

absl::Status Engine::EmbedWrites(const std::string& tenant, const std::string& space_name,
                                 std::vector<EpisodeWrite>& writes, absl::Time deadline) {
  std::vector<size_t> unembedded;
  for (size_t i = 0; i < writes.size(); ++i) {
    if (writes[i].episode.embedding.empty()) unembedded.push_back(i);
  }
  if (unembedded.empty()) return absl::OkStatus();
  absl::StatusOr<SpaceInfo> space = store_->LookupSpace(tenant, space_name);
  if (!space.ok()) return space.status();
  absl::StatusOr<embed::Embedder*> embedder = SpaceEmbedder(*space);
  if (!embedder.ok()) return embedder.status();
  const storage::StoreLimits& limits = store_->options().limits;
  if (writes.size() > limits.max_batch_size) return absl::OkStatus();  // the store refuses it
  std::vector<std::string> texts;
  for (size_t i : unembedded) {
    const std::string& text = writes[i].episode.text;
    if (*embedder == nullptr || text.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "episodes[", i, "]: no embedding", text.empty() ? " and no text" : "",
          *embedder == nullptr
              ? absl::StrCat("; space '", space_name,
                             "' has no embedder, so each episode needs an embedding of ",
                             space->dimension, " dimensions")
              : "; an embedder needs text to embed"));
    }
    if (text.size() > limits.max_text_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("episodes[", i, "]: text is ", text.size(),
                                                     " bytes; the limit is ",
                                                     limits.max_text_bytes));
    }
    texts.push_back(text);
  }
  absl::StatusOr<std::vector<std::vector<float>>> vectors =
      (*embedder)->Embed(texts, space->dimension, deadline);
  if (!vectors.ok()) return vectors.status();
  for (size_t j = 0; j < unembedded.size(); ++j) {
    writes[unembedded[j]].episode.embedding = std::move((*vectors)[j]);
  }
  return absl::OkStatus();
}

absl::Status Engine::EmbedUpdate(const std::string& tenant, const std::string& space_name,
                                 EpisodeUpdate& update, absl::Time deadline) {
  auto sets = [&update](UpdatableField field) {
    return update.fields.empty() ||
           std::find(update.fields.begin(), update.fields.end(), field) != update.fields.end();
  };
  const bool replaces_text = sets(UpdatableField::kText);
  const bool replaces_embedding = sets(UpdatableField::kEmbedding);
  // Embedded only when the text changes and the caller sent no vector of
  // its own: either the mask leaves the embedding out or sets it empty.
  if (!replaces_text || (replaces_embedding && !update.values.embedding.empty())) {
    return absl::OkStatus();
  }
  absl::StatusOr<SpaceInfo> space = store_->LookupSpace(tenant, space_name);
  if (!space.ok()) return space.status();
  absl::StatusOr<embed::Embedder*> embedder = SpaceEmbedder(*space);
  if (!embedder.ok()) return embedder.status();
  if (*embedder == nullptr || update.values.text.empty()) return absl::OkStatus();
  const size_t limit = store_->options().limits.max_text_bytes;
  if (update.values.text.size() > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is ", update.values.text.size(), " bytes; the limit is ", limit));
  }
  absl::StatusOr<std::vector<float>> vector =
      (*embedder)->EmbedText(update.values.text, space->dimension, deadline);
  if (!vector.ok()) return vector.status();
  update.values.embedding = *std::move(vector);
  if (!replaces_embedding) update.fields.push_back(UpdatableField::kEmbedding);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Engine::DeleteEpisodes(const std::string& tenant, const std::string& space,
                                                const DeleteTarget& target) {
  std::vector<uint64_t> deleted_ids;
  absl::StatusOr<uint64_t> deleted = store_->DeleteEpisodes(tenant, space, target, &deleted_ids);
  if (deleted.ok()) index_.Remove(tenant, space, deleted_ids);
  return deleted;
}

absl::StatusOr<storage::EpisodeStore::AgentPage> Engine::ListAgents(const std::string& tenant,
                                                                    const std::string& space,
                                                                    uint32_t page_size,
                                                                    const std::string& page_token) {
  return store_->ListAgents(tenant, space, page_size, page_token);
}

absl::StatusOr<std::string> Engine::AgentOf(const std::string& tenant, const std::string& space,
                                            uint64_t id) {
  return store_->AgentOf(tenant, space, id);
}

absl::StatusOr<uint64_t> Engine::ResolveKey(const std::string& tenant, const std::string& space,
                                            const std::string& agent_id, const std::string& key) {
  return store_->ResolveKey(tenant, space, agent_id, key);
}

absl::StatusOr<Episode> Engine::GetEpisode(const std::string& tenant, const std::string& space,
                                           uint64_t id) {
  return store_->GetEpisode(tenant, space, id);
}

absl::StatusOr<HistoryPage> Engine::GetHistory(const std::string& tenant, const std::string& space,
                                               uint64_t id, uint32_t page_size,
                                               const std::string& page_token) {
  return store_->GetHistory(tenant, space, id, page_size, page_token);
}

absl::StatusOr<EpisodePage> Engine::ListEpisodes(const std::string& tenant,
                                                 const std::string& space,
                                                 const EpisodeFilter& filter, uint32_t page_size,
                                                 const std::string& page_token) {
  return store_->ListEpisodes(tenant, space, filter, page_size, page_token);
}

absl::StatusOr<SearchResult> Engine::Search(const std::string& tenant,
                                            const std::string& space_name,
                                            const SearchRequest& request) {
  const absl::Time start = absl::Now();
  // The space's settings come from memory: no disk read per search.
  absl::StatusOr<SpaceInfo> space = store_->LookupSpace(tenant, space_name);
  if (!space.ok()) return space.status();
  if (absl::Status valid = ValidateQuery(*space, request, max_k_, store_->options().limits);
      !valid.ok()) {
    return valid;
  }
  std::vector<std::string> terms;
  if (!request.query_text.empty()) {
    absl::StatusOr<std::shared_ptr<const text::Tokenizer>> tokenizer =
        store_->SpaceTokenizer(tenant, space_name);
    if (!tokenizer.ok()) return tokenizer.status();
    terms = (*tokenizer)->Tokenize(request.query_text);
    std::sort(terms.begin(), terms.end());
    terms.erase(std::unique(terms.begin(), terms.end()), terms.end());
    if (terms.size() > kMaxQueryTerms) {
      return absl::InvalidArgumentError(absl::StrCat(
          "query_text has ", terms.size(), " distinct words; the limit is ", kMaxQueryTerms));
    }
  }
  // A query without a vector takes one from the space's embedder, if any.
  SearchRequest prepared = request;
  std::vector<float> embedded_query;
  std::optional<StageReport> embed_stage;
  if (request.query.empty()) {
    absl::StatusOr<embed::Embedder*> embedder = SpaceEmbedder(*space);
    if (!embedder.ok()) return embedder.status();
    if (*embedder == nullptr && terms.empty()) {
      return absl::InvalidArgumentError(
          "query_text has no words to search for (only spaces, punctuation or symbols)");
    }
    if (*embedder != nullptr) {
      const absl::Time embed_start = absl::Now();
      absl::StatusOr<std::vector<float>> vector =
          (*embedder)->EmbedText(request.query_text, space->dimension, request.deadline);
      if (!vector.ok()) return vector.status();
      embedded_query = *std::move(vector);
      prepared.query = embedded_query;
      embed_stage = StageReport{"embed", 1, absl::Now() - embed_start};
    }
  }
  // Embedded text with no words for BM25 is a vector query.
  if (!embedded_query.empty() && terms.empty()) prepared.query_text.clear();
  if (prepared.reference_time == absl::InfinitePast()) prepared.reference_time = start;
  const bool text_only = request.query.empty();
  // Explicit vector routes (scan, exact) are the caller's choice: no router.
  const RoutePolicy policy = request.route == Route::kIndex ? request.policy : RoutePolicy::kFast;

  absl::StatusOr<SearchResult> result;
  uint64_t in_scope = 0;
  const bool small = policy == RoutePolicy::kAuto && deliberate_below_ > 0 &&
                     (in_scope = index_.VectorsInScope(
                          tenant, space_name, request.filter.agent_id)) < deliberate_below_;
  if (policy == RoutePolicy::kDeliberate || small) {
    result = Deliberate(tenant, *space, prepared, terms,
                        ReadQueryHints(request.query_text, prepared.reference_time));
    if (result.ok() && small) {
      result->gate.evaluated = result->gate.escalated = true;
      result->gate.score = 1;
      result->gate.threshold = gate_model_.threshold;
      result->gate.reason = absl::StrCat(
          "deliberated at once: the search covers ", in_scope,
          in_scope == 1 ? " vector" : " vectors", ", fewer than ", deliberate_below_,
          " (router.deliberate_below), where deliberation costs about what the fast path does");
    }
  } else if (policy == RoutePolicy::kFast) {
    result = SearchFast(tenant, *space, prepared, terms, nullptr);
  } else {
    FastObservation observed;
    observed.text_only = text_only;
    result = SearchFast(tenant, *space, prepared, terms, &observed);
    if (result.ok()) {
      const absl::Time gate_start = absl::Now();
      const QueryHints hints = ReadQueryHints(request.query_text, prepared.reference_time);
      observed.k = request.k;
      observed.hits = static_cast<uint32_t>(result->hits.size());
      const std::vector<double> values =
          GateSignalValues(observed, hints, score_profiles_,
                           absl::StrCat(tenant, absl::string_view("\0", 1), space_name));
      GateDecision gate = DecideGate(gate_model_, values);
      if (gate.escalated && request.query_text.empty() && observed.trace.exhaustive &&
          observed.hits == request.k) {
        // Every vector was scored exactly and k were found: deliberation
        // cannot change a vector query's answer.
        gate.escalated = false;
        gate.reason =
            "fast answer kept: it scored every vector exactly and found k (the model "
            "alone would have escalated: " +
            gate.reason + ")";
      }
      gate.time = absl::Now() - gate_start;
      if (gate.escalated) {
        std::vector<StageReport> fast_stages = std::move(result->stages);
        result = Deliberate(tenant, *space, prepared, terms, hints);
        if (result.ok()) {
          result->stages.insert(result->stages.begin(), fast_stages.begin(), fast_stages.end());
        }
      }
      if (result.ok()) {
        result->stages.push_back({"gate", kGateSignalCount, gate.time});
        // The gate's stage goes after the fast path's, before deliberation's.
        if (gate.escalated) {
          std::rotate(result->stages.begin() + observed.stage_count, result->stages.end() - 1,
                      result->stages.end());
        }
        result->gate = std::move(gate);
      }
    }
  }
  if (!result.ok()) return result.status();
  result->policy = policy;
  if (embed_stage) result->stages.insert(result->stages.begin(), *embed_stage);
  return result;
}

absl::StatusOr<SearchResult> Engine::SearchFast(const std::string& tenant, const SpaceInfo& space,
                                                const SearchRequest& request,
                                                std::vector<std::string> terms,
                                                FastObservation* observed) {
  absl::StatusOr<SearchResult> result;
  if (request.query_text.empty()) {
    // A vector alone (given, or embedded from text with no words for BM25).
    result = SearchVectorRoute(tenant, space, request, observed);
    if (result.ok() && observed != nullptr) observed->vector_scores = TopScores(result->hits);
  } else if (request.query.empty()) {
    result = SearchLexical(tenant, space, request, std::move(terms));
    if (result.ok() && observed != nullptr) {
      observed->lexical_ran = true;
      observed->lexical_scores = TopScores(result->hits);
    }
  } else {
    result = SearchHybrid(tenant, space, request, std::move(terms), observed);
  }
  if (result.ok() && observed != nullptr) observed->stage_count = result->stages.size();
  return result;
}

absl::StatusOr<SearchResult> Engine::SearchHybrid(const std::string& tenant, const SpaceInfo& space,
                                                  const SearchRequest& request,
                                                  std::vector<std::string> terms,
                                                  FastObservation* observed) {
  // Each side ranks max(k, kFusionDepth) episodes that pass the filter, and
  // reciprocal rank fusion picks k.
  SearchRequest deep = request;
  deep.k = std::min(std::max(request.k, kFusionDepth), max_k_);
  absl::StatusOr<SearchResult> vectors = SearchVectorRoute(tenant, space, deep, observed);
  if (!vectors.ok()) return vectors.status();
  absl::StatusOr<SearchResult> lexical = SearchLexical(tenant, space, deep, std::move(terms));
  if (!lexical.ok()) return lexical.status();
  const absl::Time start = absl::Now();
  SearchResult result;
  result.route = Route::kHybrid;
  result.candidates = vectors->candidates + lexical->candidates;
  for (const SearchResult* part : {&*vectors, &*lexical}) {
    for (const StageReport& stage : part->stages) {
      Account(result, stage.name, stage.candidates, stage.time);
    }
  }
  if (observed != nullptr) {
    observed->lexical_ran = true;
    observed->vector_scores = TopScores(vectors->hits);
    observed->lexical_scores = TopScores(lexical->hits);
    observed->list_overlap = TopOverlap(vectors->hits, lexical->hits);
  }
  result.query_terms = std::move(lexical->query_terms);
  const uint64_t fused = vectors->hits.size() + lexical->hits.size();
  std::vector<RankedList> lists;
  lists.push_back({"vector", std::move(vectors->hits)});
  lists.push_back({"lexical", std::move(lexical->hits)});
  result.hits = FuseByReciprocalRank(std::move(lists), request.k);
  Account(result, "fuse", fused, absl::Now() - start);
  return result;
}

absl::StatusOr<AnalyzedText> Engine::AnalyzeText(const std::string& tenant,
                                                 const std::string& space_name,
                                                 const std::string& text, bool embed,
                                                 absl::Time deadline) {
  absl::StatusOr<SpaceInfo> space = store_->LookupSpace(tenant, space_name);
  if (!space.ok()) return space.status();
  const size_t limit = store_->options().limits.max_text_bytes;
  if (text.size() > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is ", text.size(), " bytes; the limit is ", limit));
  }
  absl::StatusOr<std::shared_ptr<const text::Tokenizer>> tokenizer =
      store_->SpaceTokenizer(tenant, space_name);
  if (!tokenizer.ok()) return tokenizer.status();
  AnalyzedText analyzed{(*tokenizer)->Tokenize(text), space->text.tokenizer_version, {}};
  if (!embed) return analyzed;
  absl::StatusOr<embed::Embedder*> embedder = SpaceEmbedder(*space);
  if (!embedder.ok()) return embedder.status();
  if (*embedder == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("space '", space_name, "' has no embedder to embed the text with"));
  }
  absl::StatusOr<std::vector<float>> vector =
      (*embedder)->EmbedText(text, space->dimension, deadline);
  if (!vector.ok()) return vector.status();
  analyzed.embedding = *std::move(vector);
  return analyzed;
}

absl::StatusOr<SearchResult> Engine::SearchVectorRoute(const std::string& tenant,
                                                       const SpaceInfo& space,
                                                       const SearchRequest& request,
                                                       FastObservation* observed) {
  if (observed != nullptr) observed->vector_ran = true;
  if (request.route != Route::kExact) return SearchVectors(tenant, space, request, observed);
  SearchResult result;
  if (absl::Status searched = SearchExact(tenant, space, request, result); !searched.ok()) {
    return searched;
  }
  return result;
}

absl::StatusOr<bool> Engine::Gather(CandidateSource& source, const SearchContext& context,
                                    Hydrator& hydrator, uint32_t k, uint32_t max_count,
                                    SearchResult& result) {
  // Ask for k; when the read-back (filters the source cannot check, races
  // with writes) leaves fewer than k, ask for 4x more, up to max_count.
  uint32_t asked = std::min(k, max_count);
  for (;;) {
    absl::Time start = absl::Now();
    absl::StatusOr<std::vector<Candidate>> candidates = source.Propose(context, asked);
    if (!candidates.ok()) return candidates.status();
    const absl::Time proposed = absl::Now();
    Account(result, source.name(), candidates->size(), proposed - start);
    result.candidates += candidates->size();
    if (proposed > context.deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("deadline passed while searching (", source.name(), ")"));
    }
    const uint64_t read_before = hydrator.read();
    absl::StatusOr<size_t> found = hydrator.Hydrate(*candidates, k);
    if (!found.ok()) return found.status();
    Account(result, "hydrate", hydrator.read() - read_before, absl::Now() - proposed);
    const bool exhausted = candidates->size() < asked;
    if (*found == k || exhausted) {
      result.hits = hydrator.TakeHits();
      return true;
    }
    if (asked == max_count) return false;
    asked = static_cast<uint32_t>(std::min<uint64_t>(uint64_t{asked} * 4, max_count));
  }
}

absl::StatusOr<SearchResult> Engine::SearchLexical(const std::string& tenant,
                                                   const SpaceInfo& space,
                                                   const SearchRequest& request,
                                                   std::vector<std::string> terms) {
  LexicalSource source(*store_, terms);
  const SearchContext context{
      tenant, space, request.query, request.filter, request.beam_width, request.deadline};
  Hydrator hydrator(store_, tenant, space.name, request.filter);
  SearchResult result;
  result.route = Route::kLexical;
  // BM25 ranks every matching episode, so widening ends with all of them:
  // the list is never short of what the filter allows.
  absl::StatusOr<bool> gathered =
      Gather(source, context, hydrator, request.k, std::numeric_limits<uint32_t>::max(), result);
  if (!gathered.ok()) return gathered.status();
  result.query_terms = std::move(terms);
  return result;
}

absl::Status Engine::SearchExact(const std::string& tenant, const SpaceInfo& space,
                                 const SearchRequest& request, SearchResult& result) {
  const absl::Time start = absl::Now();
  absl::StatusOr<ExactSearchResult> exact = ExactSearch(
      *store_, tenant, space, request.query, request.k, request.filter, request.deadline);
  if (!exact.ok()) return exact.status();
  result.route = Route::kExact;
  result.hits = std::move(exact->hits);
  result.candidates += exact->scanned;
  Account(result, "exact", exact->scanned, absl::Now() - start);
  return absl::OkStatus();
}

absl::StatusOr<SearchResult> Engine::SearchVectors(const std::string& tenant,
                                                   const SpaceInfo& space,
                                                   const SearchRequest& request,
                                                   FastObservation* observed) {
  VectorSource source(index_, request.route == Route::kScan);
  const SearchContext context{tenant,
                              space,
                              request.query,
                              request.filter,
                              request.beam_width,
                              request.deadline,
                              observed != nullptr ? &observed->trace : nullptr};
  Hydrator hydrator(store_, tenant, space.name, request.filter);
  SearchResult result;
  result.route = request.route;
  absl::StatusOr<bool> gathered =
      Gather(source, context, hydrator, request.k, index::VectorPartition::kMaxK, result);
  if (!gathered.ok()) return gathered.status();
  if (observed != nullptr) {
    observed->vector_read = hydrator.read();
    observed->vector_passed = hydrator.passed();
  }
  if (*gathered) return result;
  // The widest candidate list left fewer than k after the filter.
  if (absl::Status searched = SearchExact(tenant, space, request, result); !searched.ok()) {
    return searched;
  }
  if (observed != nullptr) observed->trace.exhaustive = true;  // the exact route answered
  return result;
}

absl::Status Engine::RebuildIndex(const std::string& tenant, const std::string& space,
                                  const std::function<void(uint64_t, uint64_t)>& progress) {
  return index_.Rebuild(tenant, space, progress);
}

std::vector<PartitionReport> Engine::IndexStats(const std::string& tenant) const {
  return index_.Stats(tenant);
}

IndexHealth Engine::Health() const { return index_.Health(); }

EpisodeIndex::LoadReport Engine::IndexLoadReport() const { return index_.last_load(); }

index::ScannerStats Engine::ScanStats() { return index_.ScanStats(); }

bool Engine::FlushIndex(absl::Time deadline) { return index_.Flush(deadline); }

uint64_t Engine::StopIndexing() { return index_.StopIndexing(); }

absl::Status Engine::SaveSnapshots() { return index_.SaveSnapshots(); }

}  // namespace engram::retrieval
