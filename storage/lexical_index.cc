#include "storage/lexical_index.h"

#include <algorithm>
#include <cmath>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"
#include "storage/key_encoding.h"
#include "storage/rocks_status.h"

namespace engram::storage {
namespace {

constexpr char kStatsComponent[] = "lexical";
constexpr uint64_t kDocumentsField = 0;
constexpr uint64_t kTermsField = 1;
constexpr size_t kIdBytes = 8;  // a posting key ends with the id, big-endian

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

uint64_t ReadBigEndian(std::string_view bytes) {
  uint64_t value = 0;
  for (char c : bytes) value = (value << 8) | static_cast<unsigned char>(c);
  return value;
}

struct Posting {
  uint64_t id;
  uint32_t agent;  // index into the search's agent table
  uint32_t tf;
  uint32_t length;
};

}  // namespace

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
                                .AddUint64(episode.id)
                                .Release();
    if (sign > 0) {
      std::string value;
      AppendVarint(value, j - i);
      AppendVarint(value, static_cast<uint64_t>(length));
      batch_.Put(index_.postings(), key, value);
    } else {
      batch_.Delete(index_.postings(), key);
    }
    i = j;
  }
  for (const std::string& scope : {std::string(), episode.agent_id}) {
    auto& [documents, terms] = deltas_[scope];
    documents += sign;
    terms += sign * length;
  }
}

void LexicalBatch::Finish() {
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

  struct Accumulator {
    double score = 0;
    uint32_t agent = 0;
  };
  absl::flat_hash_map<uint64_t, Accumulator> scores;
  std::vector<std::string> agents;          // decoded agent ids, by table index
  std::vector<std::string> encoded_agents;  // their key encodings (space-wide search)
  const std::string encoded_query_agent =
      query.agent_id.empty() ? "" : KeyBuilder().AddString(query.agent_id).Release();
  if (!query.agent_id.empty()) agents.push_back(query.agent_id);
  std::vector<Posting> postings;
  for (const std::string& term : query.terms) {
    const std::string prefix = TermPrefix(space_key, term) + encoded_query_agent;
    const std::string end = PrefixSuccessor(prefix);
    rocksdb::Slice upper(end);
    read_options.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, postings_));
    postings.clear();
    for (it->Seek(prefix); it->Valid(); it->Next()) {
      if (postings.size() % 1024 == 1023 && absl::Now() > query.deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "deadline passed after reading ", result.postings_read + postings.size(), " postings"));
      }
      std::string_view suffix = it->key().ToStringView().substr(prefix.size());
      if (suffix.size() < kIdBytes) return absl::DataLossError("malformed posting key");
      Posting posting{};
      posting.id = ReadBigEndian(suffix.substr(suffix.size() - kIdBytes));
      if (query.agent_id.empty()) {
        const std::string_view encoded_agent = suffix.substr(0, suffix.size() - kIdBytes);
        if (encoded_agents.empty() || encoded_agents.back() != encoded_agent) {
          absl::StatusOr<std::string> agent = KeyReader(encoded_agent).ReadString();
          if (!agent.ok()) return absl::DataLossError("malformed posting key");
          agents.push_back(*std::move(agent));
          encoded_agents.emplace_back(encoded_agent);
        }
        posting.agent = static_cast<uint32_t>(agents.size() - 1);
      }
      std::string_view value = it->value().ToStringView();
      uint64_t tf = 0, length = 0;
      if (!ReadVarint(value, tf) || !ReadVarint(value, length)) {
        return absl::DataLossError("malformed posting value");
      }
      posting.tf = static_cast<uint32_t>(tf);
      posting.length = static_cast<uint32_t>(length);
      postings.push_back(posting);
    }
    if (absl::Status s = FromRocks(it->status(), "reading postings"); !s.ok()) return s;
    result.postings_read += postings.size();
    if (postings.empty()) continue;
    const double df = static_cast<double>(postings.size());
    const double idf = std::log(1.0 + (documents - df + 0.5) / (df + 0.5));
    const double k1 = query.k1, b = query.b;
    for (const Posting& posting : postings) {
      const double tf = posting.tf;
      const double norm = k1 * (1.0 - b + b * posting.length / average_length);
      Accumulator& accumulator = scores[posting.id];
      accumulator.score += idf * tf * (k1 + 1.0) / (tf + norm);
      accumulator.agent = posting.agent;
    }
  }
  result.matched = scores.size();
  std::vector<std::pair<uint64_t, Accumulator>> ranked(scores.begin(), scores.end());
  auto better = [](const auto& x, const auto& y) {
    if (x.second.score != y.second.score) return x.second.score > y.second.score;
    return x.first < y.first;
  };
  const size_t keep = std::min<size_t>(query.limit, ranked.size());
  std::partial_sort(ranked.begin(), ranked.begin() + keep, ranked.end(), better);
  result.hits.reserve(keep);
  for (size_t i = 0; i < keep; ++i) {
    result.hits.push_back({ranked[i].first, static_cast<float>(ranked[i].second.score),
                           agents[ranked[i].second.agent]});
  }
  return result;
}

}  // namespace engram::storage
