#include "retrieval/engine.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "retrieval/exact_search.h"
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

absl::Status ValidateQuery(const SpaceInfo& space, const SearchRequest& request, uint32_t max_k) {
  if (request.k == 0 || request.k > max_k) {
    return absl::InvalidArgumentError(absl::StrCat("k is ", request.k, "; must be in 1..", max_k));
  }
  if (request.query.size() != space.dimension) {
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
  return storage::ValidateFilter(request.filter);
}

}  // namespace

Engine::Engine(storage::EpisodeStore* store, EngineOptions options)
    : store_(store),
      max_k_(options.max_k),
      index_(options.index, store, options.default_snapshot_dir, std::move(options.scanner)) {}

Engine::~Engine() = default;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Open(storage::EpisodeStore* store,
                                                     EngineOptions options) {
  std::unique_ptr<Engine> engine(new Engine(store, std::move(options)));
  if (absl::Status loaded = engine->index_.Load(); !loaded.ok()) return loaded;
  return engine;
}

absl::StatusOr<SpaceInfo> Engine::CreateSpace(const std::string& tenant, const SpaceInfo& space) {
  return store_->CreateSpace(tenant, space);
}

absl::StatusOr<SpaceInfo> Engine::GetSpace(const std::string& tenant, const std::string& name) {
  return store_->GetSpace(tenant, name);
}

absl::StatusOr<std::vector<SpaceInfo>> Engine::ListSpaces(const std::string& tenant) {
  return store_->ListSpaces(tenant);
}

absl::StatusOr<uint64_t> Engine::DeleteSpace(const std::string& tenant, const std::string& name) {
  absl::StatusOr<uint64_t> deleted = store_->DeleteSpace(tenant, name);
  if (deleted.ok()) index_.DropSpace(tenant, name);
  return deleted;
}

absl::StatusOr<std::vector<PutResult>> Engine::PutEpisodes(const std::string& tenant,
                                                           const std::string& space_name,
                                                           std::vector<EpisodeWrite> writes) {
  std::vector<Episode> written;
  absl::StatusOr<std::vector<PutResult>> results =
      store_->PutEpisodes(tenant, space_name, std::move(writes), &written);
  if (!results.ok() || written.empty()) return results;
  absl::StatusOr<SpaceInfo> space = store_->LookupSpace(tenant, space_name);
  if (space.ok()) index_.Upsert(tenant, *space, written);  // else deleted meanwhile
  return results;
}

absl::StatusOr<Episode> Engine::UpdateEpisode(const std::string& tenant,
                                              const std::string& space_name,
                                              const EpisodeUpdate& update) {
  absl::StatusOr<Episode> updated = store_->UpdateEpisode(tenant, space_name, update);
  if (!updated.ok()) return updated.status();
  absl::StatusOr<SpaceInfo> space = store_->LookupSpace(tenant, space_name);
  if (space.ok()) index_.Upsert(tenant, *space, {*updated});
  return updated;
}

absl::StatusOr<uint64_t> Engine::DeleteEpisodes(const std::string& tenant, const std::string& space,
                                                const DeleteTarget& target) {
  std::vector<uint64_t> deleted_ids;
  absl::StatusOr<uint64_t> deleted = store_->DeleteEpisodes(tenant, space, target, &deleted_ids);
  if (deleted.ok()) index_.Remove(tenant, space, deleted_ids);
  return deleted;
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
  // The space's settings come from memory: no disk read per search.
  absl::StatusOr<SpaceInfo> space = store_->LookupSpace(tenant, space_name);
  if (!space.ok()) return space.status();
  if (absl::Status valid = ValidateQuery(*space, request, max_k_); !valid.ok()) {
    return valid;
  }
  if (request.route != Route::kExact) return SearchVectors(tenant, *space, request);
  SearchResult result;
  if (absl::Status searched = SearchExact(tenant, *space, request, result); !searched.ok()) {
    return searched;
  }
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
                                                   const SearchRequest& request) {
  VectorSource source(index_, request.route == Route::kScan);
  const SearchContext context{
      tenant, space, request.query, request.filter, request.beam_width, request.deadline};
  Hydrator hydrator(store_, tenant, space.name, request.filter);
  SearchResult result;
  result.route = request.route;
  // Ask for k; when the read-back (metadata predicates, races with writes)
  // leaves fewer than k, ask for 4x more, up to the index's k limit, then
  // fall back to an exact scan of the store.
  uint32_t asked = request.k;
  for (;;) {
    absl::Time start = absl::Now();
    absl::StatusOr<std::vector<Candidate>> candidates = source.Propose(context, asked);
    if (!candidates.ok()) return candidates.status();
    const absl::Time proposed = absl::Now();
    Account(result, source.name(), candidates->size(), proposed - start);
    result.candidates += candidates->size();
    if (proposed > request.deadline) {
      return absl::DeadlineExceededError("deadline passed while searching the index");
    }
    const uint64_t read_before = hydrator.read();
    absl::StatusOr<size_t> found = hydrator.Hydrate(*candidates, request.k);
    if (!found.ok()) return found.status();
    Account(result, "hydrate", hydrator.read() - read_before, absl::Now() - proposed);
    const bool exhausted = candidates->size() < asked;
    if (*found == request.k || exhausted) {
      result.hits = hydrator.TakeHits();
      return result;
    }
    if (asked == index::VectorPartition::kMaxK) break;
    asked = std::min(asked * 4, index::VectorPartition::kMaxK);
  }
  if (absl::Status searched = SearchExact(tenant, space, request, result); !searched.ok()) {
    return searched;
  }
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

void Engine::FlushIndex() { index_.Flush(); }

absl::Status Engine::SaveSnapshots() { return index_.SaveSnapshots(); }

}  // namespace engram::retrieval
