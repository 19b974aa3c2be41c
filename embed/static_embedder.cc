#include "embed/static_embedder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "storage/half_float.h"
#include "storage/stable_hash.h"

namespace engram::embed {
namespace {

constexpr char kMagic[8] = {'E', 'N', 'G', 'R', 'A', 'M', 'W', 'V'};
constexpr uint32_t kFormat = 1;
constexpr size_t kHeaderBytes = 8 + 4 * 4;
constexpr uint32_t kMaxDimension = 4096;

uint32_t ReadU32(const char* at) {
  uint32_t value;
  std::memcpy(&value, at, sizeof(value));
  return value;
}

uint16_t ReadU16(const char* at) {
  uint16_t value;
  std::memcpy(&value, at, sizeof(value));
  return value;
}

// Code points in UTF-8 text (bytes that do not continue a sequence).
size_t CodePoints(std::string_view text) {
  size_t count = 0;
  for (unsigned char c : text) count += (c & 0xC0) != 0x80 ? 1 : 0;
  return count;
}

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

absl::StatusOr<std::unique_ptr<StaticEmbedder>> StaticEmbedder::Load(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot read word-vector file '", path, "'"));
  std::stringstream bytes;
  bytes << file.rdbuf();
  absl::StatusOr<std::unique_ptr<StaticEmbedder>> embedder = FromBytes(std::move(bytes).str());
  if (!embedder.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("word-vector file '", path, "': ", embedder.status().message()));
  }
  return embedder;
}

absl::StatusOr<std::unique_ptr<StaticEmbedder>> StaticEmbedder::FromBytes(std::string bytes) {
  std::unique_ptr<StaticEmbedder> embedder(new StaticEmbedder());
  embedder->bytes_ = std::move(bytes);
  if (absl::Status parsed = embedder->Parse(); !parsed.ok()) return parsed;
  absl::StatusOr<std::unique_ptr<text::Tokenizer>> tokenizer =
      text::Tokenizer::Create(text::TokenizerOptions{});
  if (!tokenizer.ok()) return tokenizer.status();
  embedder->tokenizer_ = std::move(*tokenizer);
  return embedder;
}

absl::Status StaticEmbedder::Parse() {
  const std::string& b = bytes_;
  if (b.size() < kHeaderBytes || std::memcmp(b.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::InvalidArgumentError("not an ENGRAMWV word-vector file (bad magic)");
  }
  const uint32_t format = ReadU32(b.data() + 8);
  dimension_ = ReadU32(b.data() + 12);
  const uint32_t count = ReadU32(b.data() + 16);
  if (format != kFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat("format ", format, "; this build reads format ", kFormat));
  }
  if (dimension_ == 0 || dimension_ > kMaxDimension || count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("dimension ", dimension_, " and ", count, " words are out of range"));
  }
  // Each word takes at least its length field and its vector: a count the
  // file cannot hold is refused before anything is allocated for it.
  if (uint64_t{count} * (2 + uint64_t{dimension_} * 2) > b.size() - kHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        count, " words of ", dimension_, " dimensions do not fit in ", b.size(), " bytes"));
  }
  size_t at = kHeaderBytes;
  words_.reserve(count);
  rank_of_.reserve(count);
  for (uint32_t row = 0; row < count; ++row) {
    if (b.size() - at < 2) return absl::InvalidArgumentError("word list is truncated");
    const uint16_t length = ReadU16(b.data() + at);
    at += 2;
    if (b.size() - at < length) return absl::InvalidArgumentError("word list is truncated");
    std::string_view word(b.data() + at, length);
    at += length;
    words_.push_back(word);
    rank_of_.try_emplace(word, row);  // a repeated word keeps its first (most frequent) row
  }
  const size_t row_bytes = size_t{dimension_} * 2;
  if ((b.size() - at) != row_bytes * count) {
    return absl::InvalidArgumentError(
        absl::StrCat("vectors take ", b.size() - at, " bytes; expected ", row_bytes * count));
  }
  rows_ = b.data() + at;

  // SIF weights from Zipf's law over the ranks (see the header).
  double harmonic = 0;
  for (uint32_t r = 1; r <= count; ++r) harmonic += 1.0 / r;
  weights_.resize(count);
  for (uint32_t row = 0; row < count; ++row) {
    const double p = 1.0 / ((row + 1.0) * harmonic);
    weights_[row] = static_cast<float>(kSifA / (kSifA + p));
  }
  unknown_weight_ = weights_.back();
  std::vector<float> norms(count);
  for (uint32_t row = 0; row < count; ++row) {
    double sum = 0;
    for (uint32_t d = 0; d < dimension_; ++d) {
      const float v = HalfToFloat(ReadU16(rows_ + row * row_bytes + d * 2));
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("the vector of word ", row, " has a NaN or infinite value"));
      }
      sum += double{v} * v;
    }
    norms[row] = static_cast<float>(std::sqrt(sum));
  }
  std::nth_element(norms.begin(), norms.begin() + count / 2, norms.end());
  unknown_norm_ = norms[count / 2];
  return absl::OkStatus();
}

double StaticEmbedder::WordWeight(std::string_view word) const {
  auto found = rank_of_.find(word);
  return found == rank_of_.end() ? 0.0 : weights_[found->second];
}

std::optional<uint32_t> StaticEmbedder::Row(std::string_view word) const {
  auto found = rank_of_.find(word);
  if (found != rank_of_.end()) return found->second;
  // A contraction the vocabulary lacks ("don't", "it's", "she’s"): the word
  // before its clitic, when that is known.
  for (std::string_view apostrophe : {std::string_view("'"), std::string_view("\u2019")}) {
    const size_t at = word.find(apostrophe);
    if (at == std::string_view::npos || at == 0) continue;
    std::string_view stem = word.substr(0, at);
    if (word.substr(at + apostrophe.size()) == "t" && stem.size() > 1 && stem.back() == 'n') {
      auto negated = rank_of_.find(stem.substr(0, stem.size() - 1));  // "don't" -> "do"
      if (negated != rank_of_.end()) return negated->second;
    }
    auto before = rank_of_.find(stem);
    if (before != rank_of_.end()) return before->second;
  }
  return std::nullopt;
}

bool StaticEmbedder::AddWord(std::string_view word, std::vector<float>& sum) const {
  std::optional<uint32_t> row_index = Row(word);
  if (row_index.has_value()) {
    const float weight = weights_[*row_index];
    const char* row = rows_ + size_t{*row_index} * dimension_ * 2;
    for (uint32_t d = 0; d < dimension_; ++d) {
      sum[d] += weight * HalfToFloat(ReadU16(row + d * 2));
    }
    return true;
  }
  // A single unknown character ("a" and "i" are not in the vocabulary) says
  // nothing about the text; at the rarest word's weight it would swamp it.
  if (CodePoints(word) < 2) return false;
  // An unknown word: a fixed direction from its bytes, of median length.
  uint64_t state = StableHash(word);
  std::vector<float> direction(dimension_);
  double norm = 0;
  for (uint32_t d = 0; d < dimension_; ++d) {
    // Uniform in [-1, 1): enough for a direction that only has to be stable
    // and nearly orthogonal to the others.
    direction[d] = static_cast<float>(static_cast<double>(SplitMix64(state) >> 11) * 0x1.0p-52 - 1);
    norm += double{direction[d]} * direction[d];
  }
  const float scale = unknown_weight_ * unknown_norm_ / static_cast<float>(std::sqrt(norm));
  for (uint32_t d = 0; d < dimension_; ++d) sum[d] += scale * direction[d];
  return true;
}

absl::StatusOr<std::vector<float>> StaticEmbedder::EmbedOne(std::string_view text) const {
  std::vector<std::string> words = tokenizer_->Tokenize(text);
  if (words.empty()) {
    return absl::InvalidArgumentError(
        "the static embedder found no words in the text (only spaces, punctuation or symbols)");
  }
  std::vector<float> sum(dimension_, 0.0f);
  size_t used = 0;
  for (const std::string& word : words) used += AddWord(word, sum) ? 1 : 0;
  if (used == 0) {
    return absl::InvalidArgumentError(
        "the static embedder has no vector for any word of the text (single letters only)");
  }
  double norm = 0;
  for (float v : sum) norm += double{v} * v;
  if (norm == 0 || !std::isfinite(norm)) {
    return absl::InvalidArgumentError("the static embedder's words cancel out in this text");
  }
  const float inverse = static_cast<float>(1.0 / std::sqrt(norm));
  for (float& v : sum) v *= inverse;
  return sum;
}

absl::StatusOr<std::vector<std::vector<float>>> StaticEmbedder::Embed(
    const std::vector<std::string>& texts, uint32_t dimension, absl::Time deadline) {
  if (dimension != dimension_) {
    return absl::UnavailableError(absl::StrCat("the static embedder's vectors have ", dimension_,
                                               " dimensions; the space has ", dimension));
  }
  std::vector<std::vector<float>> vectors;
  vectors.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError("deadline passed while embedding texts");
    }
    absl::StatusOr<std::vector<float>> vector = EmbedOne(texts[i]);
    if (!vector.ok()) {
      return absl::Status(vector.status().code(),
                          absl::StrCat("text ", i, ": ", vector.status().message()));
    }
    vectors.push_back(std::move(*vector));
  }
  return vectors;
}

}  // namespace engram::embed
