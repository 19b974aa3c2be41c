#include "storage/episode_filter.h"

#include <gtest/gtest.h>

namespace engram::storage {
namespace {

using Op = MetadataPredicate::Op;

Episode MakeEpisode() {
  Episode e;
  e.agent_id = "a";
  e.session_id = "s";
  e.kind = "fact";
  e.event_time_us = 1000;
  e.metadata = {{"n", int64_t{5}}, {"x", 2.5}, {"tag", std::string("red")}, {"ok", true}};
  return e;
}

MetadataPredicate Pred(std::string key, Op op, std::optional<MetadataValue> value) {
  return MetadataPredicate{std::move(key), op, std::move(value)};
}

TEST(EpisodeFilterTest, EmptyFilterMatchesLiveEpisodes) {
  Episode e = MakeEpisode();
  EXPECT_TRUE(MatchesFilter({}, e, 0));
  e.expires_at_us = 500;
  EXPECT_FALSE(MatchesFilter({}, e, 500));
  EXPECT_TRUE(MatchesFilter({}, e, 499));
}

TEST(EpisodeFilterTest, ScopesKindsAndTimeRange) {
  Episode e = MakeEpisode();
  EpisodeFilter f;
  f.agent_id = "a";
  f.session_id = "s";
  f.kinds = {"message", "fact"};
  f.event_time_from_us = 1000;
  f.event_time_to_us = 1001;
  EXPECT_TRUE(MatchesFilter(f, e, 0));
  f.event_time_to_us = 1000;  // half-open: excludes 1000
  EXPECT_FALSE(MatchesFilter(f, e, 0));
  f.event_time_to_us.reset();
  f.kinds = {"summary"};
  EXPECT_FALSE(MatchesFilter(f, e, 0));
  f.kinds.clear();
  f.session_id = "other";
  EXPECT_FALSE(MatchesFilter(f, e, 0));
}

TEST(EpisodeFilterTest, MetadataComparisonsAcrossNumericTypes) {
  Episode e = MakeEpisode();
  auto matches = [&](MetadataPredicate p) {
    EpisodeFilter f;
    f.metadata = {std::move(p)};
    EXPECT_TRUE(ValidateFilter(f).ok());
    return MatchesFilter(f, e, 0);
  };
  EXPECT_TRUE(matches(Pred("n", Op::kEq, int64_t{5})));
  EXPECT_TRUE(matches(Pred("n", Op::kEq, 5.0)));
  EXPECT_TRUE(matches(Pred("n", Op::kGt, 4.5)));
  EXPECT_FALSE(matches(Pred("n", Op::kLt, int64_t{5})));
  EXPECT_TRUE(matches(Pred("x", Op::kLe, 2.5)));
  EXPECT_TRUE(matches(Pred("tag", Op::kGe, std::string("red"))));
  EXPECT_TRUE(matches(Pred("ok", Op::kEq, true)));
  EXPECT_TRUE(matches(Pred("missing", Op::kNe, int64_t{1})));
  EXPECT_FALSE(matches(Pred("missing", Op::kEq, int64_t{1})));
  EXPECT_FALSE(matches(Pred("tag", Op::kEq, int64_t{1})));  // type mismatch
  EXPECT_TRUE(matches(Pred("tag", Op::kNe, int64_t{1})));
  EXPECT_TRUE(matches(Pred("tag", Op::kExists, std::nullopt)));
  EXPECT_FALSE(matches(Pred("nope", Op::kExists, std::nullopt)));
}

TEST(EpisodeFilterTest, RejectsMalformedFilters) {
  EpisodeFilter session_only;
  session_only.session_id = "s";
  EXPECT_EQ(ValidateFilter(session_only).code(), absl::StatusCode::kInvalidArgument);

  EpisodeFilter empty_range;
  empty_range.event_time_from_us = 10;
  empty_range.event_time_to_us = 10;
  EXPECT_EQ(ValidateFilter(empty_range).code(), absl::StatusCode::kInvalidArgument);

  for (MetadataPredicate bad : {Pred("", Op::kEq, int64_t{1}), Pred("k", Op::kLt, std::nullopt),
                                Pred("k", Op::kExists, int64_t{1}), Pred("k", Op::kLt, true),
                                Pred("k", Op::kEq, std::nan(""))}) {
    EpisodeFilter f;
    f.metadata = {bad};
    absl::Status status = ValidateFilter(f);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad.key;
    EXPECT_NE(status.message().find("filter.metadata[0]"), std::string::npos) << status;
  }
}

}  // namespace
}  // namespace engram::storage
