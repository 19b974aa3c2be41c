#include "text/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace engram::text {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

std::unique_ptr<Tokenizer> Make(std::string stem = "") {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Create({std::move(stem)});
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return *std::move(tokenizer);
}

TEST(TokenizerTest, WordsAreCaseFoldedAndPunctuationDropped) {
  EXPECT_THAT(Make()->Tokenize("Alice likes GREEN tea, doesn't she? (2024-05-07)"),
              ElementsAre("alice", "likes", "green", "tea", "doesn't", "she", "2024", "05", "07"));
}

TEST(TokenizerTest, NfkcFoldsCompatibilityForms) {
  // Full-width Latin, the "fi" ligature and German sharp s fold to plain forms.
  EXPECT_THAT(Make()->Tokenize("ＴＥＡ ﬁsh Straße"), ElementsAre("tea", "fish", "strasse"));
}

TEST(TokenizerTest, DictionaryScriptsAreSegmented) {
  // Chinese and Thai have no spaces between words; ICU's dictionaries split them.
  std::vector<std::string> chinese = Make()->Tokenize("我喜欢喝绿茶");
  EXPECT_GE(chinese.size(), 3u);
  EXPECT_THAT(chinese, ::testing::Contains("绿茶"));
  std::vector<std::string> thai = Make()->Tokenize("ฉันชอบดื่มชาเขียว");
  EXPECT_GE(thai.size(), 3u);
  std::vector<std::string> japanese = Make()->Tokenize("私は緑茶が好きです");
  EXPECT_GE(japanese.size(), 3u);
}

TEST(TokenizerTest, EmptyAndSymbolOnlyTextHasNoTerms) {
  EXPECT_THAT(Make()->Tokenize(""), IsEmpty());
  EXPECT_THAT(Make()->Tokenize("  ... --- !!! ☺"), IsEmpty());
}

TEST(TokenizerTest, InvalidUtf8NeverBecomesATerm) {
  EXPECT_THAT(Make()->Tokenize(std::string("tea \xff\xfe coffee \xc3", 16)),
              ElementsAre("tea", "coffee"));
}

TEST(TokenizerTest, LongTermsAreCutAtACodePoint) {
  std::string long_word(100, 'a');
  EXPECT_THAT(Make()->Tokenize(long_word), ElementsAre(std::string(kMaxTermBytes, 'a')));
  // 2-byte characters: 64 bytes hold 32 of them, never half of one.
  std::string cyrillic;
  for (int i = 0; i < 40; ++i) cyrillic += "ж";
  std::vector<std::string> terms = Make()->Tokenize(cyrillic);
  ASSERT_EQ(terms.size(), 1u);
  EXPECT_EQ(terms[0].size(), kMaxTermBytes);
}

TEST(TokenizerTest, StemmingIsPerLanguageAndOptional) {
  EXPECT_THAT(Make("english")->Tokenize("Running runners ran"),
              ElementsAre("run", "runner", "ran"));
  EXPECT_THAT(Make()->Tokenize("Running"), ElementsAre("running"));
  absl::StatusOr<std::unique_ptr<Tokenizer>> unknown = Tokenizer::Create({"klingon"});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()), ::testing::HasSubstr("english"));
}

TEST(TokenizerTest, VersionNamesTheSchemeSoAChangeIsDetected) {
  EXPECT_NE(Make()->version(), Make("english")->version());
  EXPECT_EQ(Make("english")->version(), Make("english")->version());
  EXPECT_THAT(Make()->version(), ::testing::HasSubstr("icu-"));
}

TEST(TokenizerTest, ConcurrentCallsAgree) {
  std::unique_ptr<Tokenizer> tokenizer = Make("english");
  const std::vector<std::string> expected = tokenizer->Tokenize("the quick brown foxes jumped");
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        if (tokenizer->Tokenize("the quick brown foxes jumped") != expected) ++mismatches;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace engram::text
