#include "storage/key_encoding.h"

#include <gtest/gtest.h>

#include <random>
#include <tuple>

namespace engram::storage {
namespace {

TEST(KeyEncodingTest, RoundTripsEveryComponentType) {
  std::string with_zero("a\0b\0", 4);
  std::string key = KeyBuilder()
                        .AddString("tenant")
                        .AddString(with_zero)
                        .AddString("")
                        .AddUint64(0xfedcba9876543210ull)
                        .AddInt64(-42)
                        .Release();
  KeyReader reader(key);
  EXPECT_EQ(*reader.ReadString(), "tenant");
  EXPECT_EQ(*reader.ReadString(), with_zero);
  EXPECT_EQ(*reader.ReadString(), "");
  EXPECT_EQ(*reader.ReadUint64(), 0xfedcba9876543210ull);
  EXPECT_EQ(*reader.ReadInt64(), -42);
  EXPECT_TRUE(reader.AtEnd());
}

TEST(KeyEncodingTest, PreservesTupleOrderOnRandomTuples) {
  std::mt19937_64 rng(7);
  const std::string alphabet("\0\1a\xff", 4);
  auto random_string = [&] {
    std::string s;
    for (int i = rng() % 4; i > 0; --i) s.push_back(alphabet[rng() % alphabet.size()]);
    return s;
  };
  using Tuple = std::tuple<std::string, std::string, int64_t>;
  for (int trial = 0; trial < 20000; ++trial) {
    Tuple a{random_string(), random_string(), static_cast<int64_t>(rng() % 7) - 3};
    Tuple b{random_string(), random_string(), static_cast<int64_t>(rng() % 7) - 3};
    auto encode = [](const Tuple& t) {
      return KeyBuilder()
          .AddString(std::get<0>(t))
          .AddString(std::get<1>(t))
          .AddInt64(std::get<2>(t))
          .Release();
    };
    ASSERT_EQ(a < b, encode(a) < encode(b)) << trial;
    ASSERT_EQ(a == b, encode(a) == encode(b)) << trial;
  }
}

TEST(KeyEncodingTest, TuplePrefixIsBytePrefix) {
  std::string prefix = KeyBuilder().AddString("t").AddString("space").Release();
  std::string longer = KeyBuilder(prefix).AddString("agent").AddUint64(5).Release();
  EXPECT_TRUE(longer.starts_with(prefix));
  // "space" must not be a byte prefix of "spaces" once encoded.
  std::string other = KeyBuilder().AddString("t").AddString("spaces").Release();
  EXPECT_FALSE(other.starts_with(prefix));
}

TEST(KeyEncodingTest, RejectsMalformedKeys) {
  EXPECT_FALSE(KeyReader("abc").ReadString().ok());                      // no terminator
  EXPECT_FALSE(KeyReader(std::string("a\0\x05", 3)).ReadString().ok());  // bad escape
  EXPECT_FALSE(KeyReader("1234567").ReadUint64().ok());                  // truncated
}

TEST(KeyEncodingTest, PrefixSuccessorBoundsThePrefixRange) {
  EXPECT_EQ(PrefixSuccessor("ab"), "ac");
  EXPECT_EQ(PrefixSuccessor(std::string("a\xff", 2)), "b");
  EXPECT_EQ(PrefixSuccessor(std::string("\xff\xff", 2)), "");
  std::string prefix = KeyBuilder().AddString("x").Release();
  std::string inside = KeyBuilder(prefix).AddUint64(~0ull).Release();
  EXPECT_LT(inside, PrefixSuccessor(prefix));
}

}  // namespace
}  // namespace engram::storage
