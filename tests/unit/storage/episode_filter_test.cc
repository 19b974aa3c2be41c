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

TEST(EpisodeFilterTest, RejectsFiltersNoEpisodeCouldMatchInSize) {
  StoreLimits limits;
  limits.max_id_bytes = 8;
  limits.max_kind_bytes = 4;
  limits.max_metadata_entries = 2;
  limits.max_metadata_bytes = 10;
  auto rejected = [&](const EpisodeFilter& f, const std::string& message) {
    absl::Status status = ValidateFilter(f, limits);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << message;
    EXPECT_NE(status.message().find(message), std::string::npos) << status;
  };
  EpisodeFilter agent;
  agent.agent_id = std::string(9, 'a');
  rejected(agent, "filter.agent_id is 9 bytes; the limit is 8");
  EpisodeFilter session;
  session.agent_id = "a";
  session.session_id = std::string(9, 's');
  rejected(session, "filter.session_id is 9 bytes");
  EpisodeFilter kinds;
  kinds.kinds.assign(kMaxFilterKinds + 1, "k");
  rejected(kinds, "lists 65 kinds; the limit is 64");
  EpisodeFilter long_kind;
  long_kind.kinds = {"ok", "toolong"};
  rejected(long_kind, "filter.kinds[1] is 7 bytes; the limit is 4");
  EpisodeFilter predicates;
  predicates.metadata.assign(3, Pred("k", Op::kExists, std::nullopt));
  rejected(predicates, "has 3 predicates; the limit is 2");
  EpisodeFilter bytes;
  bytes.metadata = {Pred("key", Op::kEq, std::string("12345678"))};
  rejected(bytes, "are 11 bytes; the limit is 10");
  // At the limits exactly: accepted.
  EpisodeFilter fits;
  fits.agent_id = std::string(8, 'a');
  fits.session_id = std::string(8, 's');
  fits.kinds.assign(kMaxFilterKinds, "kind");
  fits.metadata = {Pred("key", Op::kEq, std::string("123456")),
                   Pred("n", Op::kExists, std::nullopt)};
  EXPECT_TRUE(ValidateFilter(fits, limits).ok()) << ValidateFilter(fits, limits);
}

}  // namespace
}  // namespace engram::storage
