// Engine: Engram's retrieval engine, the one layer that knows both the store
// (storage/) and the indexes (index/). The gRPC services translate protos to
// these calls and back and hold no logic of their own; everything between a
// request and the bytes on disk happens here:
//
//   write path   validate -> EpisodeStore (one WriteBatch, synced) -> the
//                records the store returned -> EpisodeIndex. Nothing is
//                indexed from a request: only what the store wrote.
//   read path    validate once -> route -> candidate source(s)
//                (retrieval/candidate_source.h) -> one batched read-back that
//                checks the whole filter (retrieval/hydrator.h) -> widen or
//                fall back to the exact scan when a filter leaves fewer than
//                k -> a result naming its route and each stage's time and
//                candidates (retrieval/search.h).
//
// The router decides the route here (Search; retrieval/quality_gate.h,
// retrieval/deliberation.cc); auth will plug in through the tenant every
// call already takes.
//
// Thread safety: every method may be called concurrently. Durability is the
// store's: a write returns once its WriteBatch is committed (synced unless
// StoreOptions::sync_writes is off) and then reaches the index, which can
// always be rebuilt from the store.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "embed/embedder.h"
#include "index/partition_scanner.h"
#include "retrieval/candidate_source.h"
#include "retrieval/episode_index.h"
#include "retrieval/fusion.h"
#include "retrieval/hydrator.h"
#include "retrieval/quality_gate.h"
#include "retrieval/search.h"
#include "storage/episode_store.h"

namespace engram::retrieval {

// Most distinct words a query_text may have.
inline constexpr size_t kMaxQueryTerms = 1024;

// How long a write waits for the vector index to catch up (a graph build of
// a large partition can hold it for minutes) before it is refused with
// RESOURCE_EXHAUSTED, nothing written; less when the call's deadline is
// sooner.
inline constexpr absl::Duration kIndexAdmissionWait = absl::Seconds(5);

struct AnalyzedText {
  std::vector<std::string> terms;
  std::string tokenizer;         // the space's recorded tokenizer scheme
  std::vector<float> embedding;  // when asked for: the space's embedder's vector
};

struct EngineOptions {
  // The vector index's settings.
  IndexOptions index;
  // Where snapshots go when index.snapshot_dir is empty.
  std::string default_snapshot_dir;
  // The exhaustive scan's backend (GPU or the CPU twin) and its budget.
  index::ScannerOptions scanner;
  // Largest k a search may ask for. Default: 1000.
  uint32_t max_k = 1000;
  // The embedders spaces may name (embed/embedder.h); must outlive the
  // engine. nullptr: none.
  const embed::Embedders* embedders = nullptr;
  // The router's quality gate (retrieval/quality_gate.h).
  GateModel gate = DefaultGateModel();
  // Route AUTO deliberates at once, without the fast path, when a search
  // covers fewer vectors than this (EpisodeIndex::VectorsInScope): there
  // the fast path is an exhaustive scan too, deliberation costs about what
  // it does, and running both costs more than deliberating alone
  // (bench/router/README.md). 0: always the fast path and the gate.
  // Default: 4096.
  uint64_t deliberate_below = 4096;
};

class Engine {
 public:
  // Takes an open store (which must outlive the engine) and indexes every
  // space of every tenant, from snapshots where they are good.
  static absl::StatusOr<std::unique_ptr<Engine>> Open(storage::EpisodeStore* store,
                                                      EngineOptions options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Spaces (storage/episode_store.h has the rules); deleting a space drops
  // its index and snapshots. A space's embedder must be one this server
  // offers (INVALID_ARGUMENT naming those it does) and of the space's
  // dimension; a dimension of 0 takes the embedder's.
  absl::StatusOr<SpaceInfo> CreateSpace(const std::string& tenant, const SpaceInfo& space);
  absl::StatusOr<SpaceInfo> GetSpace(const std::string& tenant, const std::string& name);
  absl::StatusOr<std::vector<SpaceInfo>> ListSpaces(const std::string& tenant);
  absl::StatusOr<uint64_t> DeleteSpace(const std::string& tenant, const std::string& name);

  // Writes: stored first (all or nothing), then indexed from the records the
  // store wrote. Results are the store's. In a space with an embedder, an
  // episode with text and no embedding is embedded first, and so is an
  // update that replaces the text and not the embedding; the embedder's
  // errors (embed/embedder.h: UNAVAILABLE, DEADLINE_EXCEEDED at `deadline`,
  // INVALID_ARGUMENT) fail the whole call before anything is written.
  // Without an embedder, an episode with no embedding is INVALID_ARGUMENT.
  // When the vector index has fallen far behind (EpisodeIndex::AwaitRoom),
  // a write waits up to kIndexAdmissionWait (or its deadline), then is
  // RESOURCE_EXHAUSTED with nothing written.
  absl::StatusOr<std::vector<PutResult>> PutEpisodes(const std::string& tenant,
                                                     const std::string& space,
                                                     std::vector<EpisodeWrite> writes,
                                                     absl::Time deadline = absl::InfiniteFuture());
  absl::StatusOr<Episode> UpdateEpisode(const std::string& tenant, const std::string& space,
                                        const EpisodeUpdate& update,
                                        absl::Time deadline = absl::InfiniteFuture());
  absl::StatusOr<uint64_t> DeleteEpisodes(const std::string& tenant, const std::string& space,
                                          const DeleteTarget& target);
  // Episodes moved from another shard (EpisodeStore::ImportEpisodes), then
  // indexed like puts; admitted to the index like a put.
  absl::StatusOr<ImportResult> ImportEpisodes(const std::string& tenant, const std::string& space,
                                              std::vector<ImportedEpisode> episodes,
                                              absl::Time deadline = absl::InfiniteFuture());

  // The embedders spaces may name here, sorted.
  std::vector<std::string> EmbedderNames() const {
    return embedders_ ? embedders_->Names() : std::vector<std::string>();
  }

  // Reads straight from the store. ResolveKey: the id of the episode an
  // agent stored under a caller-chosen key (EpisodeStore::ResolveKey).
  absl::StatusOr<uint64_t> ResolveKey(const std::string& tenant, const std::string& space,
                                      const std::string& agent_id, const std::string& key);
  // The agent an episode belongs to (EpisodeStore::AgentOf).
  absl::StatusOr<std::string> AgentOf(const std::string& tenant, const std::string& space,
                                      uint64_t id);
  absl::StatusOr<Episode> GetEpisode(const std::string& tenant, const std::string& space,
                                     uint64_t id);
  absl::StatusOr<HistoryPage> GetHistory(const std::string& tenant, const std::string& space,
                                         uint64_t id, uint32_t page_size,
                                         const std::string& page_token);
  absl::StatusOr<EpisodePage> ListEpisodes(const std::string& tenant, const std::string& space,
                                           const EpisodeFilter& filter, uint32_t page_size,
                                           const std::string& page_token);
  absl::StatusOr<storage::EpisodeStore::AgentPage> ListAgents(const std::string& tenant,
                                                              const std::string& space,
                                                              uint32_t page_size,
                                                              const std::string& page_token);

  // The k best episodes for the query. Routes (retrieval/search.h): the
  // explicit vector routes scan and exact answer as asked; otherwise
  // request.policy decides. FAST: the fast path, by the query's fields: a
  // vector alone the index route, query_text alone BM25 (route lexical),
  // both fused by reciprocal rank (hybrid, retrieval/fusion.h). In a space
  // with an embedder, query_text alone is embedded first and becomes hybrid
  // (the vector route alone when the text has no terms). DELIBERATE: full
  // deliberation (retrieval/deliberation.cc). AUTO (the default): the fast
  // path, then the quality gate (retrieval/quality_gate.h) on what it did;
  // deliberation when the gate escalates; result.gate says why either way.
  // A search covering fewer than EngineOptions::deliberate_below vectors
  // deliberates at once (result.gate says so, with no signals).
  // The embedder's errors fail the search. NOT_FOUND for an unknown space;
  // INVALID_ARGUMENT for no query at all, a query of the wrong dimension or
  // with NaN/Inf, a query_text over the store's text limit, with more than
  // kMaxQueryTerms distinct words or (text alone, no embedder) none, k
  // outside 1..max_k, a beam width above the index's limit, or a malformed
  // filter; DEADLINE_EXCEEDED when the deadline passes. The index and scan
  // routes fall back to the exact route (and say so) when filters leave
  // their widest candidate list short of k.
  absl::StatusOr<SearchResult> Search(const std::string& tenant, const std::string& space,
                                      const SearchRequest& request);

  // The terms `text` becomes in the space's lexical index, in order, and
  // with `embed` the vector its embedder makes of it. NOT_FOUND for an
  // unknown space; INVALID_ARGUMENT for text over the store's text limit or
  // `embed` in a space without an embedder; the embedder's errors.
  absl::StatusOr<AnalyzedText> AnalyzeText(const std::string& tenant, const std::string& space,
                                           const std::string& text, bool embed = false,
                                           absl::Time deadline = absl::InfiniteFuture());

  // Index operations.
  absl::Status RebuildIndex(const std::string& tenant, const std::string& space,
                            const std::function<void(uint64_t, uint64_t)>& progress = {});
  std::vector<PartitionReport> IndexStats(const std::string& tenant) const;
  IndexHealth Health() const;
  EpisodeIndex::LoadReport IndexLoadReport() const;
  index::ScannerStats ScanStats();
  // Waits until every acknowledged write is in a partition (tests, shutdown).
  // Or until `deadline`; true when drained.
  bool FlushIndex(absl::Time deadline = absl::InfiniteFuture());
  // Shutdown past its grace (EpisodeIndex::StopIndexing): cancels graph
  // builds, leaves unindexed writes to the next start; returns how many.
  uint64_t StopIndexing();
  absl::Status SaveSnapshots();

  storage::EpisodeStore& store() { return *store_; }
  uint32_t max_k() const { return max_k_; }

 private:
  Engine(storage::EpisodeStore* store, EngineOptions options);
  // The fast path: the vector route, BM25 or both fused, by the query's
  // fields (see Search). `observed`, when given, collects the gate's inputs.
  absl::StatusOr<SearchResult> SearchFast(const std::string& tenant, const SpaceInfo& space,
                                          const SearchRequest& request,
                                          std::vector<std::string> terms,
                                          FastObservation* observed);
  absl::StatusOr<SearchResult> SearchHybrid(const std::string& tenant, const SpaceInfo& space,
                                            const SearchRequest& request,
                                            std::vector<std::string> terms,
                                            FastObservation* observed);
  // Full deliberation (retrieval/deliberation.cc has the stages).
  absl::StatusOr<SearchResult> Deliberate(const std::string& tenant, const SpaceInfo& space,
                                          const SearchRequest& request,
                                          const std::vector<std::string>& terms,
                                          const QueryHints& hints);
  // Deliberation's context stage: the session neighbours and links of
  // `seeds` (from `pool`) that pass the filter, in seed order.
  absl::StatusOr<SearchResult> ExpandContext(const std::string& tenant, const SpaceInfo& space,
                                             const EpisodeFilter& filter,
                                             const std::vector<FusedId>& seeds,
                                             const absl::flat_hash_map<uint64_t, Episode>& pool,
                                             absl::Time deadline);
  // The vector route the request names (index, scan or exact).
  absl::StatusOr<SearchResult> SearchVectorRoute(const std::string& tenant, const SpaceInfo& space,
                                                 const SearchRequest& request,
                                                 FastObservation* observed = nullptr);
  // BM25 over the postings of `terms`, read back and widened until k pass.
  absl::StatusOr<SearchResult> SearchLexical(const std::string& tenant, const SpaceInfo& space,
                                             const SearchRequest& request,
                                             std::vector<std::string> terms);
  // Proposes, reads back and widens (4x per round, up to max_count
  // candidates) until k hits pass the filter: true, with result.hits set,
  // when k were found or the source ran out; false when max_count
  // candidates still left fewer than k.
  absl::StatusOr<bool> Gather(CandidateSource& source, const SearchContext& context,
                              Hydrator& hydrator, uint32_t k, uint32_t max_count,
                              SearchResult& result);
  // The index or scan route: propose, read back, widen, fall back.
  absl::StatusOr<SearchResult> SearchVectors(const std::string& tenant, const SpaceInfo& space,
                                             const SearchRequest& request,
                                             FastObservation* observed);
  // The exact route, into `result` (alone, or as the vector routes' fallback).
  absl::Status SearchExact(const std::string& tenant, const SpaceInfo& space,
                           const SearchRequest& request, SearchResult& result);

  // Hands the records a write stored to the index (unless the space was
  // deleted meanwhile).
  void IndexWritten(const std::string& tenant, const std::string& space_name,
                    const std::vector<Episode>& written);
  // Waits for the index to have room for more writes (see PutEpisodes).
  absl::Status AdmitToIndex(const std::string& tenant, const std::string& space,
                            absl::Time deadline);
  // Fills in the embedding of each write that has text and none, or of an
  // update whose text changes without one (see PutEpisodes).
  absl::Status EmbedWrites(const std::string& tenant, const std::string& space,
                           std::vector<EpisodeWrite>& writes, absl::Time deadline);
  absl::Status EmbedUpdate(const std::string& tenant, const std::string& space,
                           EpisodeUpdate& update, absl::Time deadline);
  // The embedder of `space`: nullptr when it has none; FAILED_PRECONDITION
  // when it names one this server does not offer (any more).
  absl::StatusOr<embed::Embedder*> SpaceEmbedder(const SpaceInfo& space) const;

  storage::EpisodeStore* const store_;
  const uint32_t max_k_;
  const embed::Embedders* const embedders_;
  const GateModel gate_model_;
  const uint64_t deliberate_below_;
  ScoreProfiles score_profiles_;
  EpisodeIndex index_;
};

}  // namespace engram::retrieval
