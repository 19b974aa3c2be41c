#include "storage/key_encoding.h"

#include "absl/status/status.h"

namespace engram::storage {
namespace {
constexpr char kEscape = '\x00';
constexpr char kEscapedZero = '\xff';
constexpr char kTerminator = '\x01';

void AppendBigEndian(std::string& out, uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((value >> shift) & 0xff));
  }
}
}  // namespace

KeyBuilder& KeyBuilder::AddString(std::string_view value) {
  for (char c : value) {
    key_.push_back(c);
    if (c == kEscape) key_.push_back(kEscapedZero);
  }
  key_.push_back(kEscape);
  key_.push_back(kTerminator);
  return *this;
}

KeyBuilder& KeyBuilder::AddUint64(uint64_t value) {
  AppendBigEndian(key_, value);
  return *this;
}

KeyBuilder& KeyBuilder::AddInt64(int64_t value) {
  AppendBigEndian(key_, static_cast<uint64_t>(value) ^ (uint64_t{1} << 63));
  return *this;
}

std::string EncodeFixed64(uint64_t value) { return KeyBuilder().AddUint64(value).Release(); }

uint64_t DecodeFixed64(std::string_view bytes) {
  absl::StatusOr<uint64_t> value = KeyReader(bytes).ReadUint64();
  return value.ok() ? *value : 0;
}

absl::StatusOr<std::string> KeyReader::ReadString() {
  std::string out;
  for (size_t i = 0; i < rest_.size(); ++i) {
    if (rest_[i] != kEscape) {
      out.push_back(rest_[i]);
      continue;
    }
    if (i + 1 >= rest_.size()) break;
    if (rest_[i + 1] == kTerminator) {
      rest_.remove_prefix(i + 2);
      return out;
    }
    if (rest_[i + 1] != kEscapedZero) {
      return absl::InvalidArgumentError("key string component has an invalid escape");
    }
    out.push_back(kEscape);
    ++i;
  }
  return absl::InvalidArgumentError("key string component is not terminated");
}

absl::StatusOr<uint64_t> KeyReader::ReadUint64() {
  if (rest_.size() < 8) {
    return absl::InvalidArgumentError("key integer component is truncated");
  }
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value = (value << 8) | static_cast<uint8_t>(rest_[i]);
  rest_.remove_prefix(8);
  return value;
}

absl::StatusOr<int64_t> KeyReader::ReadInt64() {
  absl::StatusOr<uint64_t> raw = ReadUint64();
  if (!raw.ok()) return raw.status();
  return static_cast<int64_t>(*raw ^ (uint64_t{1} << 63));
}

std::string PrefixSuccessor(std::string_view prefix) {
  std::string bound(prefix);
  while (!bound.empty()) {
    unsigned char last = static_cast<unsigned char>(bound.back());
    if (last != 0xff) {
      bound.back() = static_cast<char>(last + 1);
      return bound;
    }
    bound.pop_back();
  }
  return bound;
}

}  // namespace engram::storage
