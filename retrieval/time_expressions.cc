#include "retrieval/time_expressions.h"

#include <array>
#include <cctype>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/time/civil_time.h"

namespace engram::retrieval {
namespace {

constexpr std::array<std::string_view, 12> kMonths = {
    "january", "february", "march",     "april",   "may",      "june",
    "july",    "august",   "september", "october", "november", "december"};
constexpr std::array<std::string_view, 12> kNumberWords = {"one",  "two", "three",  "four",
                                                           "five", "six", "seven",  "eight",
                                                           "nine", "ten", "eleven", "twelve"};

// Words of the text, lower-cased, letters and digits only ("8th" stays
// "8th"; "2023-05-08" is split on the dashes but remembered as one date).
struct Word {
  std::string text;
  bool dash_after = false;  // followed directly by '-'
};

std::vector<Word> Words(std::string_view text) {
  std::vector<Word> words;
  std::string current;
  for (size_t i = 0; i <= text.size(); ++i) {
    const unsigned char c = i < text.size() ? static_cast<unsigned char>(text[i]) : ' ';
    if (std::isalnum(c)) {
      current.push_back(static_cast<char>(std::tolower(c)));
      continue;
    }
    if (!current.empty()) {
      words.push_back({std::move(current), c == '-'});
      current.clear();
    }
  }
  return words;
}

// absl::SimpleAtoi over a std::string_view (Debian's Abseil has its own
// string_view type).
bool ToInt(std::string_view text, int* value) {
  return absl::SimpleAtoi(absl::string_view(text.data(), text.size()), value);
}

// A month's full name or its three-letter abbreviation ("sept" too).
int MonthOf(std::string_view word) {
  for (size_t m = 0; m < kMonths.size(); ++m) {
    if (word == kMonths[m] || (word.size() == 3 && kMonths[m].starts_with(word))) {
      return static_cast<int>(m) + 1;
    }
  }
  return word == "sept" ? 9 : 0;
}

// "8", "8th", "1st", "22nd", "3rd" -> the day, when 1..31.
int DayOf(std::string_view word) {
  size_t digits = 0;
  while (digits < word.size() && std::isdigit(static_cast<unsigned char>(word[digits]))) ++digits;
  if (digits == 0 || digits > 2) return 0;
  const std::string_view suffix = word.substr(digits);
  if (!suffix.empty() && suffix != "st" && suffix != "nd" && suffix != "rd" && suffix != "th") {
    return 0;
  }
  int day = 0;
  if (!ToInt(word.substr(0, digits), &day) || day < 1 || day > 31) return 0;
  return day;
}

int YearOf(std::string_view word) {
  int year = 0;
  if (word.size() != 4 || !ToInt(word, &year) || year < 1900 || year > 2199) return 0;
  return year;
}

int CountOf(std::string_view word) {
  if (word == "a" || word == "an") return 1;
  for (size_t n = 0; n < kNumberWords.size(); ++n) {
    if (word == kNumberWords[n]) return static_cast<int>(n) + 1;
  }
  int count = 0;
  if (ToInt(word, &count) && count >= 1 && count <= 1000) return count;
  return 0;
}

int64_t Micros(absl::CivilSecond when) {
  return absl::ToUnixMicros(absl::FromCivil(when, absl::UTCTimeZone()));
}

TimeWindow Days(absl::CivilDay first, absl::CivilDay end) {
  return {Micros(absl::CivilSecond(first)), Micros(absl::CivilSecond(end)), ""};
}

TimeWindow Month(absl::CivilMonth month) {
  return {Micros(absl::CivilSecond(month)), Micros(absl::CivilSecond(month + 1)), ""};
}

TimeWindow Year(absl::CivilYear year) {
  return {Micros(absl::CivilSecond(year)), Micros(absl::CivilSecond(year + 1)), ""};
}

absl::CivilDay WeekStart(absl::CivilDay day) {
  // Monday starts the week.
  return absl::PrevWeekday(day + 1, absl::Weekday::monday);
}

// Tries every pattern at word `i`; the number of words it used, 0 if none.
size_t MatchAt(const std::vector<Word>& w, size_t i, absl::CivilDay today, TimeWindow& out) {
  auto at = [&w](size_t j) -> std::string_view {
    return j < w.size() ? std::string_view(w[j].text) : std::string_view();
  };
  const std::string_view word = at(i);

  // YYYY-MM-DD
  if (YearOf(word) && w[i].dash_after && i + 2 < w.size() && w[i + 1].dash_after) {
    int month = 0, day = 0;
    if (ToInt(at(i + 1), &month) && ToInt(at(i + 2), &day) && month >= 1 && month <= 12 &&
        day >= 1 && day <= 31) {
      const absl::CivilDay date(YearOf(word), month, day);
      out = Days(date, date + 1);
      return 3;
    }
  }
  if (word == "the" && at(i + 1) == "day" && at(i + 2) == "before" && at(i + 3) == "yesterday") {
    out = Days(today - 2, today - 1);
    return 4;
  }
  if (word == "today" || word == "tonight") {
    out = Days(today, today + 1);
    return 1;
  }
  if (word == "yesterday") {
    out = Days(today - 1, today);
    return 1;
  }
  if (word == "this" &&
      (at(i + 1) == "morning" || at(i + 1) == "afternoon" || at(i + 1) == "evening")) {
    out = Days(today, today + 1);
    return 2;
  }
  if (word == "last" && at(i + 1) == "night") {
    out = Days(today - 1, today);
    return 2;
  }
  // N units ago
  if (const int n = CountOf(word); n > 0 && at(i + 2) == "ago") {
    std::string_view unit = at(i + 1);
    if (unit.ends_with('s')) unit.remove_suffix(1);
    if (unit == "day") {
      out = Days(today - n, today - n + 1);
      return 3;
    }
    if (unit == "week") {
      const absl::CivilDay start = WeekStart(today - 7 * n);
      out = Days(start, start + 7);
      return 3;
    }
    if (unit == "month") {
      out = Month(absl::CivilMonth(today) - n);
      return 3;
    }
    if (unit == "year") {
      out = Year(absl::CivilYear(today) - n);
      return 3;
    }
  }
  // this / last / next week, weekend, month, year
  if (word == "this" || word == "last" || word == "next" || word == "past") {
    const int shift = word == "last" || word == "past" ? -1 : word == "next" ? 1 : 0;
    const std::string_view unit = at(i + 1);
    if (unit == "week") {
      const absl::CivilDay start = WeekStart(today) + 7 * shift;
      out = Days(start, start + 7);
      return 2;
    }
    if (unit == "weekend") {
      const absl::CivilDay saturday = WeekStart(today) + 5 + 7 * shift;
      out = Days(saturday, saturday + 2);
      return 2;
    }
    if (unit == "month") {
      out = Month(absl::CivilMonth(today) + shift);
      return 2;
    }
    if (unit == "year") {
      out = Year(absl::CivilYear(today) + shift);
      return 2;
    }
  }
  // <month> <day>[,] [<year>] / <month> <year> / [in|last] <month>
  const bool last = word == "last";
  const size_t m = (last || word == "in" || word == "during" || word == "since") ? i + 1 : i;
  if (const int month = MonthOf(at(m)); month > 0) {
    // "may" alone is a verb far more often than a month: it needs a
    // preposition, a day or a year with it.
    const bool bare_may = at(m) == "may" && m == i;
    if (const int day = DayOf(at(m + 1)); day > 0 && !last) {
      const int year = YearOf(at(m + 2));
      const absl::CivilDay date(year ? year : absl::CivilYear(today).year(), month, day);
      out = Days(date, date + 1);
      return m - i + (year ? 3 : 2);
    }
    if (const int year = YearOf(at(m + 1)); year > 0 && !last) {
      out = Month(absl::CivilMonth(year, month));
      return m - i + 2;
    }
    if (!bare_may) {
      absl::CivilMonth candidate(absl::CivilYear(today).year(), month);
      const absl::CivilMonth current(today);
      if (candidate > current || (last && candidate == current)) candidate = candidate - 12;
      out = Month(candidate);
      return m - i + 1;
    }
  }
  // <day> <month>[,] [<year>]
  if (const int day = DayOf(word); day > 0) {
    if (const int month = MonthOf(at(i + 1)); month > 0) {
      const int year = YearOf(at(i + 2));
      const absl::CivilDay date(year ? year : absl::CivilYear(today).year(), month, day);
      out = Days(date, date + 1);
      return year ? 3 : 2;
    }
  }
  // in / during / since / after / before <year>
  if (word == "in" || word == "during" || word == "since" || word == "after" || word == "before") {
    if (const int year = YearOf(at(i + 1)); year > 0) {
      out = Year(absl::CivilYear(year));
      if (word == "since" || word == "after") {
        if (word == "after") out.from_us = out.to_us;
        out.to_us = Micros(absl::CivilSecond(absl::CivilYear(2200)));
      } else if (word == "before") {
        out.to_us = out.from_us;
        out.from_us = Micros(absl::CivilSecond(absl::CivilYear(1900)));
      }
      return 2;
    }
  }
  return 0;
}

}  // namespace

std::optional<TimeWindow> FindTimeExpression(std::string_view text, absl::Time reference) {
  const std::vector<Word> words = Words(text);
  const absl::CivilDay today = absl::ToCivilDay(reference, absl::UTCTimeZone());
  for (size_t i = 0; i < words.size(); ++i) {
    TimeWindow window;
    const size_t used = MatchAt(words, i, today, window);
    if (used == 0) continue;
    std::vector<std::string> said;
    for (size_t j = i; j < i + used && j < words.size(); ++j) said.push_back(words[j].text);
    window.expression = absl::StrJoin(said, " ");
    return window;
  }
  return std::nullopt;
}

}  // namespace engram::retrieval
