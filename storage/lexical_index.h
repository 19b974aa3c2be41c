// LexicalIndex: BM25 postings of episode text, written in the same RocksDB
// WriteBatch as the episodes themselves, so text search is exactly as
// durable and as current as the records: an acknowledged episode is
// searchable by its words at once and survives kill -9 as it does, an
// update replaces its postings atomically, and checkpoints and backups hold
// them.
//
// Layout (the store's column families):
//   postings  (tenant, space, term, agent, id >> kBlockBits) -> a posting block
//   counters  (tenant, space, "lexical", scope, 0)  -> documents in scope (merge: add)
//             (tenant, space, "lexical", scope, 1)  -> terms in scope     (merge: add)
// where scope is an agent id, or "" for the whole space. Term before agent:
// one term's postings in a space are one contiguous key range, which a
// space-wide search reads once per query term; inside it each agent's
// postings are a sub-range, which an agent's search seeks straight to,
// reading nothing of other agents.
//
// A posting block holds the postings of up to 2^kBlockBits consecutive
// episode ids: (id delta, tf, document length) as varints, in id order, so a
// search decodes a few bytes per posting instead of stepping a RocksDB
// iterator per posting (4x less time on LoCoMo's questions), and the
// document length rides along, so scoring never reads an episode. Writers
// never read a block: each adds a merge operand (the same encoding, with tf
// 0 marking a removal) and the postings merge operator folds operands into
// the block at read and compaction time, so concurrent writers to one block
// need no lock and a WriteBatch stays the unit of atomicity.
//
// Statistics: document counts and lengths are merge-operator counters, exact
// under concurrent writers. Document frequencies are not stored: a search
// reads every posting of its terms in one snapshot with the counters, so the
// frequency is the length of the range it read, exact by construction.
// Every episode of the scope is a document (an episode whose text has no
// words has length 0); expired episodes count until they are deleted.
//
// Scoring is BM25 (Robertson & Zaragoza, "The Probabilistic Relevance
// Framework: BM25 and Beyond", 2009) with the non-negative idf Lucene uses:
//   idf(t)     = ln(1 + (N - df + 0.5) / (df + 0.5))
//   score(d)   = sum over distinct query terms t of
//                idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avglen))
// over the scope searched: the agent's episodes for an agent's search, the
// space's otherwise. A term repeated in the query counts once.
//
// Thread safety: every method may be called concurrently; LexicalBatch is
// one writer's and not shared.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/episode.h"
#include "text/tokenizer.h"

namespace rocksdb {
class DB;
class MergeOperator;
class ColumnFamilyHandle;
class WriteBatch;
class Snapshot;
}  // namespace rocksdb

namespace engram::storage {

// One posting of a block, or one change in a merge operand (tf 0 removes
// the id from the block).
struct PostingEntry {
  uint64_t id = 0;
  uint32_t tf = 0;
  uint32_t length = 0;  // the document's length in terms
};

struct LexicalQuery {
  std::vector<std::string> terms;  // distinct, from the space's tokenizer
  std::string agent_id;            // empty: the whole space
  uint32_t limit = 10;             // most hits to return
  float k1 = kDefaultBm25K1;
  float b = kDefaultBm25B;
  absl::Time deadline = absl::InfiniteFuture();
};

struct LexicalHit {
  uint64_t id = 0;
  float score = 0;
  std::string agent_id;
};

struct LexicalResult {
  std::vector<LexicalHit> hits;  // best first (ties: lower id first), at most limit
  uint64_t postings_read = 0;
  uint64_t matched = 0;  // documents with at least one query term
};

class LexicalIndex {
 public:
  // Ids per posting block: 2^kBlockBits.
  static constexpr int kBlockBits = 12;
  // Bumped when the postings' layout changes; part of the version a space
  // records (with the tokenizer's), so an old layout is rebuilt at Open.
  static constexpr int kLayoutVersion = 2;
  // The merge operator of the postings column family.
  static std::shared_ptr<rocksdb::MergeOperator> NewPostingsMergeOperator();
  // What a space records as the scheme of its postings.
  static std::string IndexedVersion(const text::Tokenizer& tokenizer);

  LexicalIndex(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* postings,
               rocksdb::ColumnFamilyHandle* counters)
      : db_(db), postings_(postings), counters_(counters) {}

  // The top `query.limit` episodes of the space (its key: storage's
  // (tenant, space) prefix) by BM25, read in one snapshot.
  // DEADLINE_EXCEEDED when the deadline passes while reading postings.
  absl::StatusOr<LexicalResult> Search(std::string_view space_key, const LexicalQuery& query) const;

  // Deletes every posting and statistic of the space (DeleteSpace, and a
  // rebuild under a new tokenizer).
  void DropSpace(rocksdb::WriteBatch& batch, std::string_view space_key) const;

  rocksdb::ColumnFamilyHandle* postings() const { return postings_; }
  rocksdb::ColumnFamilyHandle* counters() const { return counters_; }

 private:
  rocksdb::DB* const db_;
  rocksdb::ColumnFamilyHandle* const postings_;
  rocksdb::ColumnFamilyHandle* const counters_;
};

// The lexical side of one WriteBatch: postings are added and removed as the
// batch's episodes are, collected per posting block and merged by Finish as
// one operand per block (a 512-turn batch of one agent holds a common word
// once, not 300 times), and statistics are summed and merged once per scope.
// Remove an episode's old text before adding its new text.
class LexicalBatch {
 public:
  LexicalBatch(const LexicalIndex& index, rocksdb::WriteBatch& batch, std::string space_key,
               const text::Tokenizer& tokenizer)
      : index_(index), batch_(batch), space_key_(std::move(space_key)), tokenizer_(tokenizer) {}

  void Add(const Episode& episode);
  void Remove(const Episode& episode);
  // Merges the summed statistics into the batch. Call once, before commit.
  void Finish();

 private:
  void Apply(const Episode& episode, int sign);

  const LexicalIndex& index_;
  rocksdb::WriteBatch& batch_;
  const std::string space_key_;
  const text::Tokenizer& tokenizer_;
  // scope ("" or agent) -> (documents, terms) deltas.
  absl::flat_hash_map<std::string, std::pair<int64_t, int64_t>> deltas_;
  // posting block key -> its changes, in the order they were made.
  absl::flat_hash_map<std::string, std::vector<PostingEntry>> changes_;
  std::vector<std::string> terms_;  // reused between episodes
};

}  // namespace engram::storage
