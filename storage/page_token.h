// Page tokens of the listings that walk a key range in order (ListEpisodes,
// ListCaches): the hex of the last key a page returned, so the next page
// resumes right after it. A token is checked to be a key of the same range.
#pragma once

#include <algorithm>
#include <cctype>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace engram::storage {

inline std::string EncodePageToken(absl::string_view last_key) {
  return absl::BytesToHexString(last_key);
}

// The key to resume after. INVALID_ARGUMENT when the token is malformed or is
// not a key under `prefix` (a token of another listing, which `listing`
// names in the message, e.g. "this listing").
inline absl::StatusOr<std::string> DecodePageToken(absl::string_view token,
                                                   absl::string_view prefix,
                                                   absl::string_view listing) {
  if (token.size() % 2 != 0 || !std::all_of(token.begin(), token.end(), [](char c) {
        return std::isxdigit(static_cast<unsigned char>(c));
      })) {
    return absl::InvalidArgumentError("page_token is malformed");
  }
  std::string key = absl::HexStringToBytes(token);
  if (!absl::StartsWith(key, prefix) || key.size() == prefix.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_token does not belong to ", listing, "; start again without it"));
  }
  return key;
}

}  // namespace engram::storage
