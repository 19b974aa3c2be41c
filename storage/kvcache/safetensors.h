// safetensors files (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON describing each tensor
// (dtype, shape, [begin, end) byte offsets into the data that follows) plus
// an optional "__metadata__" string map, then the data.
//
// The parser enforces the format's rules before anything is trusted: header
// at most 100 MB of valid JSON object; no duplicate names; known dtypes;
// shapes whose byte size matches the offsets; offsets that, sorted, start at
// 0, leave no gaps or overlaps and end exactly at the end of the file;
// metadata values are strings. Violations are INVALID_ARGUMENT naming the
// tensor. Data is read with pread into fresh buffers, so unaligned offsets
// are safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fileio/atomic_file.h"

namespace engram::kvcache {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

enum class TensorDtype {
  kU32,
  kF16,
  kBF16,
  kF32,
  kU8,
  kI32,
  kI64,
  kU64,
  kF64,
  kBool,
  kI8,
  kU16,
  kI16
};

std::string_view TensorDtypeName(TensorDtype dtype);  // "U32", "F16", ...
size_t TensorDtypeBytes(TensorDtype dtype);

struct TensorInfo {
  std::string name;
  TensorDtype dtype = TensorDtype::kU8;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;  // relative to the start of the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  uint64_t data_start = 0;          // 8 + N
  std::vector<TensorInfo> tensors;  // in offset order
  std::map<std::string, std::string> metadata;

  const TensorInfo* Find(std::string_view name) const;
};

// Parses and validates a header. `prefix` holds at least the file's first
// 8 + N bytes (more is fine); `file_size` is the whole file's size.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view prefix,
                                                         uint64_t file_size);

// A file opened for reading; the header is validated on Open.
class SafetensorsReader {
 public:
  // `fd` is an open file descriptor; the reader takes ownership.
  static absl::StatusOr<SafetensorsReader> Open(int fd);
  SafetensorsReader(SafetensorsReader&& other) noexcept;
  SafetensorsReader& operator=(SafetensorsReader&&) = delete;
  ~SafetensorsReader();

  const SafetensorsHeader& header() const { return header_; }
  // The tensor's bytes.
  absl::StatusOr<std::string> Read(const TensorInfo& tensor) const;

 private:
  SafetensorsReader(int fd, SafetensorsHeader header) : fd_(fd), header_(std::move(header)) {}
  int fd_;
  SafetensorsHeader header_;
};

struct TensorToWrite {
  std::string name;
  TensorDtype dtype;
  std::vector<uint64_t> shape;
  std::string_view data;
};

// Writes a file at `path` atomically (fileio/atomic_file.h: a power loss
// leaves the previous file or this one, whole; once OK, this one). The
// header is padded with spaces to a multiple of 8 bytes. A full disk is
// RESOURCE_EXHAUSTED.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata);

// A tensor to be written, without its bytes: their size is the product of
// the shape times the dtype's width.
struct TensorLayout {
  std::string name;
  TensorDtype dtype;
  std::vector<uint64_t> shape;
  uint64_t Bytes() const;
};
// Tensor `index`'s bytes (exactly its layout's Bytes()), asked for in file
// order; the view must stay valid until the next call.
using TensorSource = std::function<absl::StatusOr<std::string_view>(size_t index)>;

// The same, fetching each tensor's bytes only when it is written, so a large
// file never has to be held in memory. A source error, or bytes of the
// wrong size (INTERNAL), leaves no file behind.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorLayout>& tensors,
                              const std::map<std::string, std::string>& metadata,
                              const TensorSource& source,
                              fileio::FileSystem* fs = fileio::PosixFileSystem());

}  // namespace engram::kvcache
