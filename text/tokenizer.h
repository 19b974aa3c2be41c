// Tokenizer: text -> the terms the lexical index stores and searches.
//
// Steps, in order:
//   1. UTF-8 in (invalid bytes become U+FFFD and never form a term);
//   2. NFKC normalisation with Unicode case folding (ICU's nfkc_cf), so
//      "Ｔｅａ", "TEA" and "tea" are one term;
//   3. ICU word boundaries (root locale): dictionary segmentation for
//      Chinese, Japanese, Thai, Lao, Khmer and Burmese, rules elsewhere;
//      only segments ICU classes as words (letters, numbers, kana,
//      ideographs) become terms, so punctuation and spaces never do;
//   4. terms longer than kMaxTermBytes are cut at a code point boundary;
//   5. optionally, Snowball stemming (libstemmer) in one language.
//
// version() names everything that decides the output (this code's
// revision, ICU's and Unicode's versions, the stemmer). The lexical index
// records it per space and re-tokenizes a space whose recorded version
// differs, so two token schemes never mix in one index.
//
// Thread safety: Tokenize may be called concurrently; ICU break iterators
// and stemmers are not thread-safe, so each call borrows one from a pool.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace engram::text {

// Longest term in bytes; longer words are cut (identifiers, hashes, URLs
// stay searchable by their first 64 bytes).
inline constexpr size_t kMaxTermBytes = 64;

struct TokenizerOptions {
  // A Snowball algorithm name ("english", "german", "porter", ...; see
  // StemmingLanguages()), or empty for no stemming (the default: spaces
  // often hold many languages, and a wrong stemmer hurts more than none).
  std::string stem_language;
};

class Tokenizer {
 public:
  // INVALID_ARGUMENT for an unknown stemming language; INTERNAL when ICU
  // cannot load its data.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const TokenizerOptions& options);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Appends the terms of `text` in order, repeats included.
  void Tokenize(std::string_view text, std::vector<std::string>& terms) const;
  std::vector<std::string> Tokenize(std::string_view text) const;

  const std::string& version() const { return version_; }
  const TokenizerOptions& options() const { return options_; }

  // The Snowball algorithms libstemmer offers, sorted.
  static std::vector<std::string> StemmingLanguages();

 private:
  struct Worker;  // a break iterator and a stemmer, used by one call at a time
  explicit Tokenizer(TokenizerOptions options, std::unique_ptr<Worker> prototype);
  std::unique_ptr<Worker> Borrow() const;
  void Return(std::unique_ptr<Worker> worker) const;

  const TokenizerOptions options_;
  std::string version_;
  std::unique_ptr<Worker> prototype_;  // cloned when the pool is empty
  mutable absl::Mutex pool_mutex_;
  mutable std::vector<std::unique_ptr<Worker>> pool_ ABSL_GUARDED_BY(pool_mutex_);
};

}  // namespace engram::text
