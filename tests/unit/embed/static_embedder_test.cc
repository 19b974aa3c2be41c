// StaticEmbedder on small files written here (format, SIF weights, unknown
// words, errors), and on the real word vectors when
// scripts/fetch-word-vectors.sh has fetched them (skipped otherwise).
#include "embed/static_embedder.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "storage/half_float.h"

namespace engram::embed {
namespace {

void AppendU32(std::string& out, uint32_t value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(value));
}

// An ENGRAMWV file of `words` (most frequent first) and their vectors.
std::string WordVectorFile(const std::vector<std::string>& words,
                           const std::vector<std::vector<float>>& vectors) {
  std::string out = "ENGRAMWV";
  AppendU32(out, 1);
  AppendU32(out, static_cast<uint32_t>(vectors.at(0).size()));
  AppendU32(out, static_cast<uint32_t>(words.size()));
  AppendU32(out, 0);
  for (const std::string& word : words) {
    const uint16_t length = static_cast<uint16_t>(word.size());
    out.append(reinterpret_cast<const char*>(&length), 2);
    out += word;
  }
  for (const std::vector<float>& vector : vectors) {
    for (float v : vector) {
      const uint16_t half = FloatToHalf(v);
      out.append(reinterpret_cast<const char*>(&half), 2);
    }
  }
  return out;
}

double Dot(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += double{a[i]} * b[i];
  return sum;
}

class StaticEmbedderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loaded = StaticEmbedder::FromBytes(
        WordVectorFile({"the", "tea", "green", "coffee"},
                       {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0.5f, 0, 1}}));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    embedder_ = std::move(*loaded);
  }
  std::unique_ptr<StaticEmbedder> embedder_;
};

TEST_F(StaticEmbedderTest, WeightsFallWithFrequency) {
  EXPECT_EQ(embedder_->dimension(), 4u);
  EXPECT_EQ(embedder_->vocabulary_size(), 4u);
  // a / (a + p) with p = 1 / (rank * H_4), H_4 = 25/12.
  const double h4 = 1.0 + 1.0 / 2 + 1.0 / 3 + 1.0 / 4;
  for (auto [word, rank] : {std::pair{"the", 1}, {"tea", 2}, {"coffee", 4}}) {
    const double p = 1.0 / (rank * h4);
    EXPECT_NEAR(embedder_->WordWeight(word), 1e-3 / (1e-3 + p), 1e-7) << word;
  }
  EXPECT_LT(embedder_->WordWeight("the"), embedder_->WordWeight("tea"));
  EXPECT_EQ(embedder_->WordWeight("absent"), 0.0);
}

TEST_F(StaticEmbedderTest, SentenceIsTheWeightedMeanAtUnitLength) {
  auto vector = embedder_->EmbedOne("The GREEN tea");  // case folded by the tokenizer
  ASSERT_TRUE(vector.ok()) << vector.status();
  std::vector<float> expected = {static_cast<float>(embedder_->WordWeight("the")),
                                 static_cast<float>(embedder_->WordWeight("tea")),
                                 static_cast<float>(embedder_->WordWeight("green")), 0};
  const double norm = std::sqrt(Dot(expected, expected));
  for (size_t d = 0; d < 4; ++d) EXPECT_NEAR((*vector)[d], expected[d] / norm, 1e-5) << d;
  EXPECT_NEAR(Dot(*vector, *vector), 1.0, 1e-5);
}

TEST_F(StaticEmbedderTest, UnknownWordsAreStableAndShared) {
  auto first = embedder_->EmbedOne("zyxwv");
  auto again = embedder_->EmbedOne("zyxwv");
  auto other = embedder_->EmbedOne("qponm");
  ASSERT_TRUE(first.ok() && again.ok() && other.ok());
  EXPECT_EQ(*first, *again);
  EXPECT_NEAR(Dot(*first, *first), 1.0, 1e-5);
  EXPECT_LT(std::abs(Dot(*first, *other)), 0.99);
  // Two texts sharing an unknown name are closer than texts that do not.
  auto with_name = embedder_->EmbedOne("zyxwv tea");
  auto with_other = embedder_->EmbedOne("qponm tea");
  auto name_again = embedder_->EmbedOne("zyxwv green");
  ASSERT_TRUE(with_name.ok() && with_other.ok() && name_again.ok());
  EXPECT_GT(Dot(*name_again, *with_name), Dot(*name_again, *with_other));
}

TEST_F(StaticEmbedderTest, ContractionsCountAsTheirWordAndSingleLettersAreSkipped) {
  auto plain = embedder_->EmbedOne("tea green");
  ASSERT_TRUE(plain.ok());
  for (const char* text : {"tea's green", "tea\u2019s green", "x tea green y", "tean't green"}) {
    auto contracted = embedder_->EmbedOne(text);
    ASSERT_TRUE(contracted.ok()) << text;
    EXPECT_NEAR(Dot(*plain, *contracted), 1.0, 1e-5) << text;
  }
}

TEST_F(StaticEmbedderTest, ErrorsAreClear) {
  auto nothing = embedder_->EmbedOne(" ... !!! ");
  EXPECT_EQ(nothing.status().code(), absl::StatusCode::kInvalidArgument);
  auto letters = embedder_->EmbedOne("x y z");
  EXPECT_EQ(letters.status().code(), absl::StatusCode::kInvalidArgument);
  auto wrong_dimension = embedder_->Embed({"tea"}, 8, absl::InfiniteFuture());
  EXPECT_EQ(wrong_dimension.status().code(), absl::StatusCode::kUnavailable);
  auto late = embedder_->Embed({"tea"}, 4, absl::InfinitePast());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded);
  auto batch = embedder_->Embed({"tea", "green coffee"}, 4, absl::InfiniteFuture());
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->size(), 2u);
}

TEST(StaticEmbedderFileTest, MalformedFilesAreRefused) {
  const std::string good = WordVectorFile({"a", "b"}, {{1, 2}, {3, 4}});
  ASSERT_TRUE(StaticEmbedder::FromBytes(good).ok());
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  std::string wrong_format = good;
  wrong_format[8] = 2;
  std::string zero_dimension = good;
  std::memset(&zero_dimension[12], 0, 4);
  std::string huge_count = good;
  std::memset(&huge_count[16], 0xff, 4);
  std::string nan_value = WordVectorFile({"a"}, {{std::nanf(""), 1}});
  for (const std::string& bytes :
       {std::string(), std::string("ENGRAMWV"), bad_magic, wrong_format, zero_dimension, huge_count,
        good.substr(0, good.size() - 1), good + "x", nan_value}) {
    auto loaded = StaticEmbedder::FromBytes(bytes);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << bytes.size();
  }
  EXPECT_EQ(StaticEmbedder::Load("/nonexistent/words.engramwv").status().code(),
            absl::StatusCode::kNotFound);
}

// The real vectors: ordering on word and sentence pairs.
TEST(StaticEmbedderRealVectorsTest, RelatedTextsAreCloser) {
  const char* configured = std::getenv("ENGRAM_WORD_VECTORS");
  const char* home = std::getenv("HOME");
  std::string path = configured != nullptr
                         ? configured
                         : std::string(home ? home : "") + "/.cache/engram/wink-100d.engramwv";
  if (!std::filesystem::exists(path)) {
    GTEST_SKIP() << "no word vectors at " << path << ": run scripts/fetch-word-vectors.sh";
  }
  auto loaded = StaticEmbedder::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  StaticEmbedder& embedder = **loaded;
  EXPECT_EQ(embedder.dimension(), 100u);
  EXPECT_GT(embedder.vocabulary_size(), 300000u);
  auto similarity = [&](const char* a, const char* b) {
    auto va = embedder.EmbedOne(a);
    auto vb = embedder.EmbedOne(b);
    EXPECT_TRUE(va.ok() && vb.ok());
    return Dot(*va, *vb);
  };
  // (anchor, closer, farther)
  const char* triples[][3] = {
      {"king", "queen", "banana"},
      {"car", "truck", "poem"},
      {"doctor", "nurse", "volcano"},
      {"the cat slept on the rug", "a kitten napped on the carpet", "stock prices fell sharply"},
      {"I love drinking green tea", "she enjoys a cup of coffee", "the train left the station"},
      {"my flight to tokyo was delayed", "the plane landed late in japan",
       "he baked bread for dinner"},
  };
  for (const auto& [anchor, closer, farther] : triples) {
    EXPECT_GT(similarity(anchor, closer), similarity(anchor, farther))
        << anchor << " / " << closer << " / " << farther;
  }
}

}  // namespace
}  // namespace engram::embed
