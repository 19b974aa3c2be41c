// RocksDB status -> absl::Status, with `what` (the operation) in front of
// RocksDB's message: NotFound -> NOT_FOUND, Corruption -> DATA_LOSS, a paused
// manual compaction -> CANCELLED, InvalidArgument -> INVALID_ARGUMENT,
// Busy/TimedOut/TryAgain -> UNAVAILABLE, anything else -> INTERNAL.
#pragma once

#include <rocksdb/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace engram::storage {

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what);

}  // namespace engram::storage
