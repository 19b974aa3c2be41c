// StaticEmbedder: sentence vectors from word vectors, with no ML runtime.
//
// A text's vector is the SIF-weighted mean of its words' vectors, scaled to
// unit length (Arora, Liang & Ma, "A Simple but Tough-to-Beat Baseline for
// Sentence Embeddings", ICLR 2017). A word's weight is a / (a + p(w)) with
// a = 1e-3: frequent words ("the", "of") count for little, rare ones for
// almost 1. The file holds words in frequency order but no counts, so p(w)
// is estimated from the word's rank r (from 1) by Zipf's law,
// p = 1 / (r * H_N) with H_N the N-th harmonic number. SIF's second step
// (removing the corpus' first principal component) is left out: it needs a
// corpus, and the normalised mean already ranks well for retrieval.
//
// Words come from text::Tokenizer without stemming (NFKC case folding, ICU
// word boundaries), matching the lowercase vocabulary of the GloVe-derived
// vectors. A contraction the file lacks counts as the word before its
// apostrophe ("it's" -> "it", "don't" -> "do"). Another word the file lacks
// (a name, an identifier, a year) gets a fixed pseudo-random direction
// derived from its bytes (a stable 64-bit FNV-1a hash seeding splitmix64),
// scaled to the vocabulary's median norm and given the weight of the rarest
// word: two texts that share an unknown name still come out close. Unknown
// single characters are skipped (the wink vocabulary has no "a" or "i";
// weighted as rare words they cost 2.5 points of LoCoMo R@5). A text with no
// usable word is INVALID_ARGUMENT.
//
// The file ("ENGRAMWV", written by scripts/convert_word_vectors.py),
// little-endian:
//   char[8] "ENGRAMWV"; u32 format (1); u32 dimension; u32 words; u32 0;
//   words times { u16 length; bytes }   (most frequent first)
//   words * dimension fp16 values        (row-major, one row per word)
//
// Thread safety: immutable after Load; Embed may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "embed/embedder.h"
#include "text/tokenizer.h"

namespace engram::embed {

class StaticEmbedder final : public Embedder {
 public:
  // SIF's smoothing constant a.
  static constexpr double kSifA = 1e-3;

  // Reads and checks a word-vector file: NOT_FOUND when it cannot be read,
  // INVALID_ARGUMENT when it is not a well-formed ENGRAMWV file.
  static absl::StatusOr<std::unique_ptr<StaticEmbedder>> Load(const std::string& path);
  // From bytes already in memory (tests, fuzzing).
  static absl::StatusOr<std::unique_ptr<StaticEmbedder>> FromBytes(std::string bytes);

  const std::string& name() const override { return name_; }
  uint32_t dimension() const override { return dimension_; }
  absl::StatusOr<std::vector<std::vector<float>>> Embed(const std::vector<std::string>& texts,
                                                        uint32_t dimension,
                                                        absl::Time deadline) override;

  // The vector of one text (unit length).
  absl::StatusOr<std::vector<float>> EmbedOne(std::string_view text) const;
  size_t vocabulary_size() const { return words_.size(); }
  // A word's SIF weight, from its rank in the file (0: not in the file).
  double WordWeight(std::string_view word) const;

 private:
  StaticEmbedder() = default;
  absl::Status Parse();
  // The word's row: itself, or for a contraction the file lacks, the word
  // before the apostrophe ("don't" -> "do", "it's" -> "it").
  std::optional<uint32_t> Row(std::string_view word) const;
  // Adds weight * (the word's vector) to `sum`; false when the word is
  // skipped (a single unknown character).
  bool AddWord(std::string_view word, std::vector<float>& sum) const;

  const std::string name_ = kStaticEmbedder;
  std::string bytes_;  // the whole file; words_ point into it
  uint32_t dimension_ = 0;
  std::vector<std::string_view> words_;
  absl::flat_hash_map<std::string_view, uint32_t> rank_of_;  // word -> row
  const char* rows_ = nullptr;                               // fp16 rows, in bytes_
  std::vector<float> weights_;                               // per row
  float unknown_weight_ = 0;
  float unknown_norm_ = 0;
  std::unique_ptr<text::Tokenizer> tokenizer_;
};

}  // namespace engram::embed
