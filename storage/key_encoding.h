// Order-preserving key encoding for Engram's RocksDB keys.
//
// A key is a tuple of components (strings, unsigned and signed 64-bit
// integers). The encoding keeps tuple order under bytewise comparison, and the
// encoding of a tuple prefix is a byte prefix of the encodings of all longer
// tuples, so "all episodes of (tenant, space, agent)" is one contiguous key
// range. Strings: bytes with 0x00 escaped as 0x00 0xFF, terminated by
// 0x00 0x01. Unsigned integers: 8 bytes big-endian. Signed integers: big-endian
// with the sign bit flipped.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace engram::storage {

class KeyBuilder {
 public:
  KeyBuilder() = default;
  explicit KeyBuilder(std::string_view prefix) : key_(prefix) {}

  KeyBuilder& AddString(std::string_view value);
  KeyBuilder& AddUint64(uint64_t value);
  KeyBuilder& AddInt64(int64_t value);

  const std::string& key() const { return key_; }
  std::string Release() { return std::move(key_); }

 private:
  std::string key_;
};

// Decodes components in the order they were added. Each Read* fails with
// INVALID_ARGUMENT (naming the component) on malformed or truncated input.
class KeyReader {
 public:
  explicit KeyReader(std::string_view key) : rest_(key) {}

  absl::StatusOr<std::string> ReadString();
  absl::StatusOr<uint64_t> ReadUint64();
  absl::StatusOr<int64_t> ReadInt64();
  bool AtEnd() const { return rest_.empty(); }

 private:
  std::string_view rest_;
};

// Counter values (the `counters` column family and the id high-water mark):
// 8 bytes big-endian, as AddUint64 writes them. Decoding anything but 8
// bytes gives 0.
std::string EncodeFixed64(uint64_t value);
uint64_t DecodeFixed64(std::string_view bytes);

// The smallest key greater than every key that starts with `prefix`, or an
// empty string when there is none (prefix of all 0xFF bytes): the exclusive
// upper bound of a prefix scan.
std::string PrefixSuccessor(std::string_view prefix);

}  // namespace engram::storage
