// Time expressions in a query's text, resolved against the query's
// reference time: deliberation's time stage (retrieval/deliberation.cc)
// and one of the quality gate's hints. English only, UTC calendar.
//
// Recognised (case-insensitive, anywhere in the text; the first one wins):
//   today, tonight, this morning/afternoon/evening     the reference day
//   yesterday, last night; the day before yesterday    the day(s) before
//   N days|weeks|months|years ago (N a number, "a", "an", or one..twelve)
//                                                      that day, week, month or year
//   this|last|next week, weekend, month, year          calendar spans (weeks from Monday)
//   [in|last] <month> [<year>]                         that month: with no year the
//                                                      latest one not after the
//                                                      reference ("last May": before
//                                                      the reference's month)
//   <month> <day>[,] [<year>]; <day> <month>[,] [<year>]   that day
//   in|during|since|before|after <year> (1900..2199)   that year (since/after: from it
//                                                      on; before: up to it)
//   YYYY-MM-DD                                         that day
// Not recognised: expressions anchored by events ("before the trip"),
// ranges ("between May and July"), clock times.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/time/time.h"

namespace engram::retrieval {

struct TimeWindow {
  int64_t from_us = 0;     // inclusive
  int64_t to_us = 0;       // exclusive
  std::string expression;  // the words that said so, lower-cased
};

std::optional<TimeWindow> FindTimeExpression(std::string_view text, absl::Time reference);

}  // namespace engram::retrieval
