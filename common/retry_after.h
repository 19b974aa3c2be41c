// "Retry after": the mark an overload refusal carries so that clients can
// tell it from a refusal that retrying will not cure.
//
// RESOURCE_EXHAUSTED means both "busy now" (a full queue, the in-flight
// write budget, the index's admission, a tenant's request rate) and "no
// room" (a full disk, a tenant's storage limit, a message too large). The
// busy ones carry a retry delay as a status payload; the server sends it to
// the client as gRPC's standard `grpc-retry-pushback-ms` trailer (gRFC A6),
// and the Engram clients retry a refused write only when it is present,
// after that delay. Nothing of a refused call was applied.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/time/time.h"

namespace engram {

inline constexpr char kRetryAfterPayload[] = "type.engram.dev/retry-after-ms";
// The trailer gRPC defines for server pushback.
inline constexpr char kRetryPushbackTrailer[] = "grpc-retry-pushback-ms";

// `status` marked as worth retrying after `delay`.
inline absl::Status WithRetryAfter(absl::Status status, absl::Duration delay) {
  status.SetPayload(kRetryAfterPayload,
                    absl::Cord(std::to_string(absl::ToInt64Milliseconds(delay))));
  return status;
}

// The delay a status was marked with; nullopt for none.
inline std::optional<absl::Duration> RetryAfter(const absl::Status& status) {
  // (Debian's Abseil returns absl::optional, which is not std::optional.)
  const auto payload = status.GetPayload(kRetryAfterPayload);
  int64_t ms = 0;
  if (!payload.has_value() || !absl::SimpleAtoi(std::string(*payload), &ms) || ms < 0) {
    return std::nullopt;
  }
  return absl::Milliseconds(ms);
}

}  // namespace engram
