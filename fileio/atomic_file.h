// Files engramd writes whole and replaces atomically: index snapshots and
// their layout marker, KV export files, the tokens file.
//
// An AtomicFileWriter writes "<path>.tmp"; Commit() fsyncs it, renames it
// over <path> and fsyncs the directory. So after a power loss at any moment
// <path> holds the previous file or the new one, whole, and once Commit()
// returned OK it holds the new one. Formats that must also survive other
// damage (a disk's bit rot, a copy cut short) add their own checksum on top
// (index/snapshot_file.h).
//
// Every system call goes through a FileSystem, so that a test can substitute
// one that simulates losing power after any call
// (tests/util/power_loss_file_system.h).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace engram::fileio {

// The calls an AtomicFileWriter makes. Errors are statuses that name the
// path: RESOURCE_EXHAUSTED "... no space left on device" for ENOSPC and
// EDQUOT, INTERNAL otherwise.
class FileSystem {
 public:
  virtual ~FileSystem() = default;
  // Creates `path`, or truncates it, for writing; never follows a symlink.
  virtual absl::StatusOr<int> CreateForWrite(const std::string& path, mode_t mode) = 0;
  virtual absl::Status Append(int file, std::string_view bytes) = 0;
  virtual absl::Status Sync(int file) = 0;
  virtual absl::Status Close(int file) = 0;
  // Replaces `to` (if any) with `from`, atomically.
  virtual absl::Status Rename(const std::string& from, const std::string& to) = 0;
  // Makes the creations, renames and removals in `dir` durable.
  virtual absl::Status SyncDirectory(const std::string& dir) = 0;
  virtual void RemoveIfExists(const std::string& path) = 0;
};

// The real one (POSIX calls). Never null.
FileSystem* PosixFileSystem();

class AtomicFileWriter {
 public:
  // Opens "<path>.tmp" (the directory must exist) with `mode`.
  static absl::StatusOr<std::unique_ptr<AtomicFileWriter>> Create(
      const std::string& path, mode_t mode = 0644, FileSystem* fs = PosixFileSystem());
  // Removes the temporary file unless committed.
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Buffered; the first error is kept and returned by this and every later
  // Append and by Commit.
  absl::Status Append(std::string_view bytes);
  // Flush, fsync, close, rename over the path, fsync the directory. The
  // writer is finished afterwards, whatever the outcome.
  absl::Status Commit();

  const std::string& path() const { return path_; }

 private:
  AtomicFileWriter(std::string path, FileSystem* fs, int file)
      : path_(std::move(path)), fs_(fs), file_(file) {}
  absl::Status Flush();

  const std::string path_;
  FileSystem* const fs_;
  int file_;  // -1 once closed
  std::string buffer_;
  absl::Status error_;
  bool committed_ = false;
};

// Writes `contents` to `path` through an AtomicFileWriter.
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents,
                                 mode_t mode = 0644, FileSystem* fs = PosixFileSystem());

// The directory that holds `path` ("." for a bare name).
std::string DirectoryOf(const std::string& path);

}  // namespace engram::fileio
