#include "text/tokenizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "libstemmer.h"
#include "unicode/brkiter.h"
#include "unicode/normalizer2.h"
#include "unicode/ubrk.h"
#include "unicode/uchar.h"
#include "unicode/unistr.h"
#include "unicode/uvernum.h"

namespace engram::text {
namespace {

// Bump when this file changes what Tokenize returns for some input.
constexpr int kTokenizerRevision = 1;

struct StemmerDeleter {
  void operator()(sb_stemmer* stemmer) const { sb_stemmer_delete(stemmer); }
};

// Cuts a UTF-8 string to at most `limit` bytes without splitting a code point.
void TruncateUtf8(std::string& term, size_t limit) {
  if (term.size() <= limit) return;
  size_t end = limit;
  while (end > 0 && (static_cast<unsigned char>(term[end]) & 0xC0) == 0x80) --end;
  term.resize(end);
}

}  // namespace

struct Tokenizer::Worker {
  std::unique_ptr<icu::BreakIterator> words;
  std::unique_ptr<sb_stemmer, StemmerDeleter> stemmer;
};

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const TokenizerOptions& options) {
  auto prototype = std::make_unique<Worker>();
  UErrorCode status = U_ZERO_ERROR;
  prototype->words.reset(icu::BreakIterator::createWordInstance(icu::Locale::getRoot(), status));
  if (U_FAILURE(status) || prototype->words == nullptr) {
    return absl::InternalError(
        absl::StrCat("ICU cannot create a word break iterator: ", u_errorName(status)));
  }
  status = U_ZERO_ERROR;
  icu::Normalizer2::getNFKCCasefoldInstance(status);
  if (U_FAILURE(status)) {
    return absl::InternalError(
        absl::StrCat("ICU cannot load NFKC case folding: ", u_errorName(status)));
  }
  if (!options.stem_language.empty()) {
    prototype->stemmer.reset(sb_stemmer_new(options.stem_language.c_str(), "UTF_8"));
    if (prototype->stemmer == nullptr) {
      std::vector<std::string> known = StemmingLanguages();
      std::string list;
      for (const std::string& name : known) absl::StrAppend(&list, list.empty() ? "" : ", ", name);
      return absl::InvalidArgumentError(
          absl::StrCat("unknown stemming language '", options.stem_language, "'; known: ", list));
    }
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(options, std::move(prototype)));
}

Tokenizer::Tokenizer(TokenizerOptions options, std::unique_ptr<Worker> prototype)
    : options_(std::move(options)), prototype_(std::move(prototype)) {
  version_ = absl::StrCat("engram-words-", kTokenizerRevision, "/icu-", U_ICU_VERSION, "/unicode-",
                          U_UNICODE_VERSION, "/nfkc_cf/max", kMaxTermBytes, "/stem-",
                          options_.stem_language.empty() ? "none" : options_.stem_language);
}

Tokenizer::~Tokenizer() = default;

std::vector<std::string> Tokenizer::StemmingLanguages() {
  std::vector<std::string> names;
  for (const char** name = sb_stemmer_list(); *name != nullptr; ++name) names.emplace_back(*name);
  std::sort(names.begin(), names.end());
  return names;
}

std::unique_ptr<Tokenizer::Worker> Tokenizer::Borrow() const {
  absl::MutexLock lock(&pool_mutex_);
  if (!pool_.empty()) {
    std::unique_ptr<Worker> worker = std::move(pool_.back());
    pool_.pop_back();
    return worker;
  }
  auto worker = std::make_unique<Worker>();
  worker->words.reset(prototype_->words->clone());
  if (prototype_->stemmer != nullptr) {
    worker->stemmer.reset(sb_stemmer_new(options_.stem_language.c_str(), "UTF_8"));
  }
  return worker;
}

void Tokenizer::Return(std::unique_ptr<Worker> worker) const {
  absl::MutexLock lock(&pool_mutex_);
  pool_.push_back(std::move(worker));
}

std::vector<std::string> Tokenizer::Tokenize(std::string_view text) const {
  std::vector<std::string> terms;
  Tokenize(text, terms);
  return terms;
}

void Tokenizer::Tokenize(std::string_view text, std::vector<std::string>& terms) const {
  if (text.empty()) return;
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* fold = icu::Normalizer2::getNFKCCasefoldInstance(status);
  icu::UnicodeString input = icu::UnicodeString::fromUTF8(
      icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  icu::UnicodeString normalized = fold->normalize(input, status);
  if (U_FAILURE(status)) return;  // only on allocation failure

  std::unique_ptr<Worker> worker = Borrow();
  icu::BreakIterator& words = *worker->words;
  words.setText(normalized);
  std::string term;
  for (int32_t start = words.first(), end = words.next(); end != icu::BreakIterator::DONE;
       start = end, end = words.next()) {
    if (words.getRuleStatus() < UBRK_WORD_NONE_LIMIT) continue;  // spaces, punctuation
    term.clear();
    normalized.tempSubStringBetween(start, end).toUTF8String(term);
    if (term.find("\xEF\xBF\xBD") != std::string::npos) continue;  // from invalid UTF-8
    TruncateUtf8(term, kMaxTermBytes);
    if (worker->stemmer != nullptr) {
      const sb_symbol* stemmed =
          sb_stemmer_stem(worker->stemmer.get(), reinterpret_cast<const sb_symbol*>(term.data()),
                          static_cast<int>(term.size()));
      if (stemmed != nullptr) {
        term.assign(reinterpret_cast<const char*>(stemmed),
                    sb_stemmer_length(worker->stemmer.get()));
      }
    }
    if (!term.empty()) terms.push_back(term);
  }
  words.setText(icu::UnicodeString());  // drop the reference to `normalized`
  Return(std::move(worker));
}

}  // namespace engram::text
