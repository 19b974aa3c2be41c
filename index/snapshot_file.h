// Checksummed, atomically replaced snapshot files for the index.
//
// A SnapshotWriter writes through an AtomicFileWriter (fileio/atomic_file.h:
// "<path>.tmp", fsync, rename, directory fsync), and Commit() appends the
// total length and a CRC-32 of everything before it, so a crash leaves
// either the old snapshot or the new one, never a torn one, and damage from
// anything else is caught on reading. A SnapshotReader checks the
// length and the CRC before anything read from the file is trusted:
// Finish() must be called, and the caller discards what it read when it
// fails. All integers are little-endian.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fileio/atomic_file.h"

namespace engram::index {

class SnapshotWriter {
 public:
  // Creates the directory of `path` if needed.
  static absl::StatusOr<std::unique_ptr<SnapshotWriter>> Create(
      const std::string& path, fileio::FileSystem* fs = fileio::PosixFileSystem());

  void Write(const void* data, size_t bytes);
  template <typename T>
  void Put(const T& value) {
    Write(&value, sizeof(T));
  }
  // Length, CRC, fsync, rename, directory fsync. The first write error (for
  // instance a full disk: RESOURCE_EXHAUSTED) is reported here.
  absl::Status Commit();

 private:
  explicit SnapshotWriter(std::unique_ptr<fileio::AtomicFileWriter> file)
      : file_(std::move(file)) {}
  std::unique_ptr<fileio::AtomicFileWriter> file_;  // removes the temporary file unless committed
  uint32_t crc_ = 0;
  uint64_t length_ = 0;
};

class SnapshotReader {
 public:
  // NOT_FOUND when the file does not exist.
  static absl::StatusOr<std::unique_ptr<SnapshotReader>> Open(const std::string& path);
  ~SnapshotReader();

  // False once a read ran past the end of the data (the caller then stops
  // and Finish() reports DATA_LOSS).
  bool Read(void* data, size_t bytes);
  template <typename T>
  bool Get(T* value) {
    return Read(value, sizeof(T));
  }
  uint64_t remaining() const { return data_length_ - consumed_; }
  // DATA_LOSS unless every byte was read and length and CRC match.
  absl::Status Finish();

 private:
  SnapshotReader(std::string path, std::FILE* file, uint64_t data_length)
      : path_(std::move(path)), file_(file), data_length_(data_length) {}
  std::string path_;
  std::FILE* file_;
  uint64_t data_length_;  // file size minus the trailer
  uint64_t consumed_ = 0;
  uint32_t crc_ = 0;
  bool overrun_ = false;
};

}  // namespace engram::index
