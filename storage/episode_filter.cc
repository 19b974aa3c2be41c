#include "storage/episode_filter.h"

#include <algorithm>
#include <cmath>
#include <compare>

#include "absl/strings/str_cat.h"

namespace engram::storage {
namespace {

using Op = MetadataPredicate::Op;

bool IsNumber(const MetadataValue& v) {
  return std::holds_alternative<int64_t>(v) || std::holds_alternative<double>(v);
}

double AsDouble(const MetadataValue& v) {
  return std::holds_alternative<int64_t>(v) ? static_cast<double>(std::get<int64_t>(v))
                                            : std::get<double>(v);
}

// Three-way comparison of two values of comparable types; nullopt otherwise.
std::optional<std::partial_ordering> Compare(const MetadataValue& a, const MetadataValue& b) {
  if (std::holds_alternative<int64_t>(a) && std::holds_alternative<int64_t>(b)) {
    return std::get<int64_t>(a) <=> std::get<int64_t>(b);
  }
  if (IsNumber(a) && IsNumber(b)) return AsDouble(a) <=> AsDouble(b);
  if (std::holds_alternative<std::string>(a) && std::holds_alternative<std::string>(b)) {
    return std::get<std::string>(a) <=> std::get<std::string>(b);
  }
  if (std::holds_alternative<bool>(a) && std::holds_alternative<bool>(b)) {
    return std::get<bool>(a) <=> std::get<bool>(b);
  }
  return std::nullopt;
}

bool MatchesPredicate(const MetadataPredicate& predicate, const Episode& episode) {
  auto it = episode.metadata.find(predicate.key);
  if (predicate.op == Op::kExists) return it != episode.metadata.end();
  if (it == episode.metadata.end()) return predicate.op == Op::kNe;
  std::optional<std::partial_ordering> order = Compare(it->second, *predicate.value);
  if (!order.has_value()) return predicate.op == Op::kNe;
  switch (predicate.op) {
    case Op::kEq:
      return *order == 0;
    case Op::kNe:
      return *order != 0;
    case Op::kLt:
      return *order < 0;
    case Op::kLe:
      return *order <= 0;
    case Op::kGt:
      return *order > 0;
    case Op::kGe:
      return *order >= 0;
    case Op::kExists:
      break;
  }
  return false;
}

}  // namespace

absl::Status ValidateFilter(const EpisodeFilter& filter, const StoreLimits& limits) {
  for (const auto& [name, id] :
       {std::pair{"agent_id", &filter.agent_id}, std::pair{"session_id", &filter.session_id}}) {
    if (id->size() > limits.max_id_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("filter.", name, " is ", id->size(),
                                                     " bytes; the limit is ", limits.max_id_bytes));
    }
  }
  if (filter.kinds.size() > kMaxFilterKinds) {
    return absl::InvalidArgumentError(absl::StrCat("filter.kinds lists ", filter.kinds.size(),
                                                   " kinds; the limit is ", kMaxFilterKinds));
  }
  for (size_t i = 0; i < filter.kinds.size(); ++i) {
    if (filter.kinds[i].size() > limits.max_kind_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("filter.kinds[", i, "] is ", filter.kinds[i].size(), " bytes; the limit is ",
                       limits.max_kind_bytes));
    }
  }
  if (filter.metadata.size() > limits.max_metadata_entries) {
    return absl::InvalidArgumentError(absl::StrCat("filter.metadata has ", filter.metadata.size(),
                                                   " predicates; the limit is ",
                                                   limits.max_metadata_entries));
  }
  size_t predicate_bytes = 0;
  for (const MetadataPredicate& p : filter.metadata) {
    predicate_bytes += p.key.size();
    if (p.value.has_value() && std::holds_alternative<std::string>(*p.value)) {
      predicate_bytes += std::get<std::string>(*p.value).size();
    }
  }
  if (predicate_bytes > limits.max_metadata_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("filter.metadata's keys and string values are ",
                                                   predicate_bytes, " bytes; the limit is ",
                                                   limits.max_metadata_bytes));
  }
  if (!filter.session_id.empty() && filter.agent_id.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("filter.session_id '", filter.session_id, "' requires filter.agent_id"));
  }
  if (filter.event_time_from_us && filter.event_time_to_us &&
      *filter.event_time_from_us >= *filter.event_time_to_us) {
    return absl::InvalidArgumentError(absl::StrCat("filter event-time range is empty: from ",
                                                   *filter.event_time_from_us, " >= to ",
                                                   *filter.event_time_to_us));
  }
  for (size_t i = 0; i < filter.metadata.size(); ++i) {
    const MetadataPredicate& p = filter.metadata[i];
    std::string where = absl::StrCat("filter.metadata[", i, "]");
    if (p.key.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": key is empty"));
    if (p.op == Op::kExists) {
      if (p.value.has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, " (key '", p.key, "'): EXISTS takes no value"));
      }
      continue;
    }
    if (!p.value.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " (key '", p.key, "'): comparison needs a value"));
    }
    if (std::holds_alternative<double>(*p.value) && std::isnan(std::get<double>(*p.value))) {
      return absl::InvalidArgumentError(absl::StrCat(where, " (key '", p.key, "'): value is NaN"));
    }
    bool ordering = p.op != Op::kEq && p.op != Op::kNe;
    if (ordering && std::holds_alternative<bool>(*p.value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " (key '", p.key, "'): bool values support only EQ and NE"));
    }
  }
  return absl::OkStatus();
}

bool MatchesFilter(const EpisodeFilter& filter, const Episode& episode, int64_t now_us) {
  if (episode.expires_at_us != 0 && episode.expires_at_us <= now_us) return false;
  if (!filter.agent_id.empty() && episode.agent_id != filter.agent_id) return false;
  if (!filter.session_id.empty() && episode.session_id != filter.session_id) return false;
  if (!filter.kinds.empty() &&
      std::find(filter.kinds.begin(), filter.kinds.end(), episode.kind) == filter.kinds.end()) {
    return false;
  }
  if (filter.event_time_from_us && episode.event_time_us < *filter.event_time_from_us) return false;
  if (filter.event_time_to_us && episode.event_time_us >= *filter.event_time_to_us) return false;
  for (const MetadataPredicate& predicate : filter.metadata) {
    if (!MatchesPredicate(predicate, episode)) return false;
  }
  return true;
}

}  // namespace engram::storage
