#include "storage/lexical_index.h"

#include <algorithm>
#include <cmath>
#include <deque>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/merge_operator.h"
#include "rocksdb/write_batch.h"
#include "storage/key_encoding.h"
#include "storage/rocks_status.h"

namespace engram::storage {
namespace {

constexpr char kStatsComponent[] = "lexical";
constexpr uint64_t kDocumentsField = 0;
constexpr uint64_t kTermsField = 1;
constexpr size_t kBlockBytes = 8;  // a posting key ends with the block number, big-endian

std::string StatsKey(std::string_view space_key, std::string_view scope, uint64_t field) {
  return KeyBuilder(space_key)
      .AddString(kStatsComponent)
      .AddString(scope)
      .AddUint64(field)
      .Release();
}

std::string TermPrefix(std::string_view space_key, std::string_view term) {
  return KeyBuilder(space_key).AddString(term).Release();
}

void AppendVarint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>(value | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

// False on truncated or overlong input.
bool ReadVarint(std::string_view& in, uint64_t& value) {
  value = 0;
  for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
    const auto byte = static_cast<unsigned char>(in.front());
    in.remove_prefix(1);
    value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

void AppendEntries(std::string& out, const std::vector<PostingEntry>& entries) {
  uint64_t previous = 0;
  for (const PostingEntry& entry : entries) {
    AppendVarint(out, entry.id - previous);
    AppendVarint(out, entry.tf);
    AppendVarint(out, entry.length);
    previous = entry.id;
  }
}

// Appends the entries of one block or operand to `out`; false when malformed.
bool DecodeEntries(std::string_view bytes, std::vector<PostingEntry>& out) {
  uint64_t id = 0;
  while (!bytes.empty()) {
    uint64_t delta = 0, tf = 0, length = 0;
    if (!ReadVarint(bytes, delta) || !ReadVarint(bytes, tf) || !ReadVarint(bytes, length)) {
      return false;
    }
    id += delta;
    out.push_back({id, static_cast<uint32_t>(tf), static_cast<uint32_t>(length)});
  }
  return true;
}

// Sorts changes (oldest first) by id, keeping the last change of each id;
// drops removals unless `keep_removals`.
void FoldEntries(std::vector<PostingEntry>& entries, bool keep_removals) {
  // Stable: among equal ids the later change comes last and wins.
  std::stable_sort(entries.begin(), entries.end(),
                   [](const PostingEntry& a, const PostingEntry& b) { return a.id < b.id; });
  size_t kept = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i + 1 < entries.size() && entries[i + 1].id == entries[i].id) continue;
    if (entries[i].tf == 0 && !keep_removals) continue;
    entries[kept++] = entries[i];
  }
  entries.resize(kept);
}

// Folds operands (oldest first) into one list, in id order, the last change
// of each id winning. A full merge drops removals; a partial merge keeps
// them, since they may cancel an entry of a block it does not see.
class PostingsMergeOperator final : public rocksdb::MergeOperator {
 public:
  const char* Name() const override { return "engram.PostingBlock"; }

  bool FullMergeV2(const MergeOperationInput& in, MergeOperationOutput* out) const override {
    std::vector<rocksdb::Slice> lists;
    if (in.existing_value != nullptr) lists.push_back(*in.existing_value);
    lists.insert(lists.end(), in.operand_list.begin(), in.operand_list.end());
    return Fold(lists, /*keep_removals=*/false, out->new_value);
  }

  bool PartialMergeMulti(const rocksdb::Slice&, const std::deque<rocksdb::Slice>& operands,
                         std::string* new_value, rocksdb::Logger*) const override {
    std::vector<rocksdb::Slice> lists(operands.begin(), operands.end());
    return Fold(lists, /*keep_removals=*/true, *new_value);
  }

 private:
  static bool Fold(const std::vector<rocksdb::Slice>& lists, bool keep_removals,
                   std::string& result) {
    std::vector<PostingEntry> entries;
    for (const rocksdb::Slice& list : lists) {
      if (!DecodeEntries(list.ToStringView(), entries)) return false;
    }
    FoldEntries(entries, keep_removals);
    result.clear();
    AppendEntries(result, entries);
    return true;
  }
};

struct Accumulator {
  double score = 0;  // > 0 once any term matched: every BM25 contribution is positive
  uint32_t agent = 0;
};

// Adds every term's BM25 contributions to the accumulator `slot(id)` returns.
template <typename Slot>
void Accumulate(const std::vector<std::vector<PostingEntry>>& lists,
                const std::vector<std::vector<uint32_t>>& list_agents, double documents,
                double average_length, double k1, double b, Slot&& slot) {
  const double length_weight = k1 * b / average_length;
  const double base_norm = k1 * (1.0 - b);
  for (size_t t = 0; t < lists.size(); ++t) {
    const std::vector<PostingEntry>& postings = lists[t];
    if (postings.empty()) continue;
    const double df = static_cast<double>(postings.size());
    const double idf = std::log(1.0 + (documents - df + 0.5) / (df + 0.5));
    for (size_t i = 0; i < postings.size(); ++i) {
      const double tf = postings[i].tf;
      Accumulator& accumulator = slot(postings[i].id);
      accumulator.score +=
          idf * tf * (k1 + 1.0) / (tf + base_norm + length_weight * postings[i].length);
      accumulator.agent = list_agents[t][i];
    }
  }
}

// The best `limit` of the offered (id, accumulator) pairs, in a heap whose
// top is the worst of them; ties go to the lower id.
class TopScores {
 public:
  explicit TopScores(size_t limit) : limit_(limit) {}
  void Offer(uint64_t id, const Accumulator& accumulator) {
    const Scored scored{id, accumulator};
    if (best_.size() < limit_) {
      best_.push_back(scored);
      std::push_heap(best_.begin(), best_.end(), Better);
    } else if (Better(scored, best_.front())) {
      std::pop_heap(best_.begin(), best_.end(), Better);
      best_.back() = scored;
      std::push_heap(best_.begin(), best_.end(), Better);
    }
  }
  // Best first.
  std::vector<std::pair<uint64_t, Accumulator>> Take() {
    std::sort_heap(best_.begin(), best_.end(), Better);
    return std::move(best_);
  }

 private:
  using Scored = std::pair<uint64_t, Accumulator>;
  static bool Better(const Scored& x, const Scored& y) {
    if (x.second.score != y.second.score) return x.second.score > y.second.score;
    return x.first < y.first;
  }
  const size_t limit_;
  std::vector<Scored> best_;
};

}  // namespace

std::shared_ptr<rocksdb::MergeOperator> LexicalIndex::NewPostingsMergeOperator() {
  return std::make_shared<PostingsMergeOperator>();
}

std::string LexicalIndex::IndexedVersion(const text::Tokenizer& tokenizer) {
  return absl::StrCat(tokenizer.version(), "/postings-", kLayoutVersion);
}

void LexicalBatch::Add(const Episode& episode) { Apply(episode, +1); }
void LexicalBatch::Remove(const Episode& episode) { Apply(episode, -1); }

void LexicalBatch::Apply(const Episode& episode, int sign) {
  terms_.clear();
  tokenizer_.Tokenize(episode.text, terms_);
  const int64_t length = static_cast<int64_t>(terms_.size());
  std::sort(terms_.begin(), terms_.end());
  for (size_t i = 0; i < terms_.size();) {
    size_t j = i;
    while (j < terms_.size() && terms_[j] == terms_[i]) ++j;
    const std::string key = KeyBuilder(TermPrefix(space_key_, terms_[i]))
                                .AddString(episode.agent_id)
                                .AddUint64(episode.id >> LexicalIndex::kBlockBits)
                                .Release();
    changes_[key].push_back(
        {episode.id, sign > 0 ? static_cast<uint32_t>(j - i) : 0, static_cast<uint32_t>(length)});
    i = j;
  }
  for (const std::string& scope : {std::string(), episode.agent_id}) {
    auto& [documents, terms] = deltas_[scope];
    documents += sign;
    terms += sign * length;
  }
}

void LexicalBatch::Finish() {
  // Removals stay in the operand: they cancel postings of the stored block.
  for (auto& [key, changes] : changes_) {
    FoldEntries(changes, /*keep_removals=*/true);
    std::string operand;
    AppendEntries(operand, changes);
    batch_.Merge(index_.postings(), key, operand);
  }
  changes_.clear();
  for (const auto& [scope, delta] : deltas_) {
    if (delta.first != 0) {
      batch_.Merge(index_.counters(), StatsKey(space_key_, scope, kDocumentsField),
                   EncodeFixed64(static_cast<uint64_t>(delta.first)));
    }
    if (delta.second != 0) {
      batch_.Merge(index_.counters(), StatsKey(space_key_, scope, kTermsField),
                   EncodeFixed64(static_cast<uint64_t>(delta.second)));
    }
  }
  deltas_.clear();
}

void LexicalIndex::DropSpace(rocksdb::WriteBatch& batch, std::string_view space_key) const {
  const std::string postings_end = PrefixSuccessor(space_key);
  batch.DeleteRange(postings_, rocksdb::Slice(space_key.data(), space_key.size()), postings_end);
  const std::string stats = KeyBuilder(space_key).AddString(kStatsComponent).Release();
  batch.DeleteRange(counters_, stats, PrefixSuccessor(stats));
}

absl::StatusOr<LexicalResult> LexicalIndex::Search(std::string_view space_key,
                                                   const LexicalQuery& query) const {
  LexicalResult result;
  if (query.terms.empty() || query.limit == 0) return result;
  const rocksdb::Snapshot* snapshot = db_->GetSnapshot();
  auto release = absl::MakeCleanup([&] { db_->ReleaseSnapshot(snapshot); });
  rocksdb::ReadOptions read_options;
  read_options.snapshot = snapshot;

  uint64_t stats[2] = {0, 0};
  for (uint64_t field : {kDocumentsField, kTermsField}) {
    std::string value;
    rocksdb::Status s =
        db_->Get(read_options, counters_, StatsKey(space_key, query.agent_id, field), &value);
    if (!s.ok() && !s.IsNotFound()) return FromRocks(s, "reading text statistics");
    if (s.ok()) stats[field] = DecodeFixed64(value);
  }
  const double documents = static_cast<double>(static_cast<int64_t>(stats[kDocumentsField]));
  if (documents <= 0) return result;
  const double average_length =
      std::max(1e-9, static_cast<double>(static_cast<int64_t>(stats[kTermsField])) / documents);

  std::vector<std::string> agents;          // decoded agent ids, by table index
  std::vector<std::string> encoded_agents;  // their key encodings (space-wide search)
  const std::string encoded_query_agent =
      query.agent_id.empty() ? "" : KeyBuilder().AddString(query.agent_id).Release();
  if (!query.agent_id.empty()) agents.push_back(query.agent_id);
  // Every term's postings first (their count is the term's document
  // frequency), then one scoring pass into a map sized for them all.
  std::vector<std::vector<PostingEntry>> lists(query.terms.size());
  std::vector<std::vector<uint32_t>> list_agents(query.terms.size());  // parallel to lists
  for (size_t t = 0; t < query.terms.size(); ++t) {
    const std::string& term = query.terms[t];
    std::vector<PostingEntry>& postings = lists[t];
    std::vector<uint32_t>& posting_agents = list_agents[t];
    const std::string prefix = TermPrefix(space_key, term) + encoded_query_agent;
    const std::string end = PrefixSuccessor(prefix);
    rocksdb::Slice upper(end);
    read_options.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, postings_));
    uint64_t blocks = 0;
    for (it->Seek(prefix); it->Valid(); it->Next()) {
      if (++blocks % 64 == 0 && absl::Now() > query.deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "deadline passed after reading ", result.postings_read + postings.size(), " postings"));
      }
      std::string_view suffix = it->key().ToStringView().substr(prefix.size());
      if (suffix.size() < kBlockBytes) return absl::DataLossError("malformed posting key");
      uint32_t agent = 0;
      if (query.agent_id.empty()) {
        const std::string_view encoded_agent = suffix.substr(0, suffix.size() - kBlockBytes);
        if (encoded_agents.empty() || encoded_agents.back() != encoded_agent) {
          absl::StatusOr<std::string> decoded = KeyReader(encoded_agent).ReadString();
          if (!decoded.ok()) return absl::DataLossError("malformed posting key");
          agents.push_back(*std::move(decoded));
          encoded_agents.emplace_back(encoded_agent);
        }
        agent = static_cast<uint32_t>(agents.size() - 1);
      }
      if (!DecodeEntries(it->value().ToStringView(), postings)) {
        return absl::DataLossError("malformed posting block");
      }
      posting_agents.resize(postings.size(), agent);
    }
    if (absl::Status s = FromRocks(it->status(), "reading postings"); !s.ok()) return s;
    result.postings_read += postings.size();
  }
  // Accumulate into a dense array over the ids the postings span when that
  // is not much larger than the postings (ids of a space are mostly
  // consecutive), else into a hash map.
  uint64_t min_id = UINT64_MAX, max_id = 0;
  for (const std::vector<PostingEntry>& postings : lists) {
    for (const PostingEntry& posting : postings) {
      min_id = std::min(min_id, posting.id);
      max_id = std::max(max_id, posting.id);
    }
  }
  if (result.postings_read == 0) return result;
  TopScores top(query.limit);
  const uint64_t span = max_id - min_id + 1;
  if (span <= std::max<uint64_t>(4 * result.postings_read, 1 << 14)) {
    std::vector<Accumulator> dense(span);
    Accumulate(lists, list_agents, documents, average_length, query.k1, query.b,
               [&](uint64_t id) -> Accumulator& { return dense[id - min_id]; });
    for (uint64_t offset = 0; offset < span; ++offset) {
      if (dense[offset].score <= 0) continue;
      ++result.matched;
      top.Offer(min_id + offset, dense[offset]);
    }
  } else {
    absl::flat_hash_map<uint64_t, Accumulator> scores;
    scores.reserve(result.postings_read);
    Accumulate(lists, list_agents, documents, average_length, query.k1, query.b,
               [&](uint64_t id) -> Accumulator& { return scores[id]; });
    result.matched = scores.size();
    for (const auto& [id, accumulator] : scores) top.Offer(id, accumulator);
  }
  for (const auto& [id, accumulator] : top.Take()) {
    result.hits.push_back({id, static_cast<float>(accumulator.score), agents[accumulator.agent]});
  }
  return result;
}

}  // namespace engram::storage
