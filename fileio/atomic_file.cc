#include "fileio/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace engram::fileio {
namespace {

constexpr size_t kBufferBytes = size_t{1} << 20;

absl::Status ErrnoStatus(int error, const std::string& what, const std::string& path) {
  const std::string message = absl::StrCat(what, " '", path, "': ", std::strerror(error));
  if (error == ENOSPC || error == EDQUOT) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

class Posix final : public FileSystem {
 public:
  absl::StatusOr<int> CreateForWrite(const std::string& path, mode_t mode) override {
    const int fd =
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) return ErrnoStatus(errno, "cannot create", path);
    return fd;
  }
  absl::Status Append(int file, std::string_view bytes) override {
    while (!bytes.empty()) {
      const ssize_t n = ::write(file, bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return ErrnoStatus(n < 0 ? errno : EIO, "cannot write", FdPath(file));
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return absl::OkStatus();
  }
  absl::Status Sync(int file) override {
    if (::fsync(file) != 0) return ErrnoStatus(errno, "cannot fsync", FdPath(file));
    return absl::OkStatus();
  }
  absl::Status Close(int file) override {
    const std::string path = FdPath(file);
    // Linux releases the descriptor even when close fails; never retry it.
    if (::close(file) != 0 && errno != EINTR) return ErrnoStatus(errno, "cannot close", path);
    return absl::OkStatus();
  }
  absl::Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoStatus(errno, absl::StrCat("cannot rename '", from, "' to"), to);
    }
    return absl::OkStatus();
  }
  absl::Status SyncDirectory(const std::string& dir) override {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(errno, "cannot open directory", dir);
    const int rc = ::fsync(fd);
    const int error = errno;
    ::close(fd);
    if (rc != 0) return ErrnoStatus(error, "cannot fsync directory", dir);
    return absl::OkStatus();
  }
  void RemoveIfExists(const std::string& path) override { ::unlink(path.c_str()); }

 private:
  // The path of an open descriptor, for messages.
  static std::string FdPath(int fd) {
    char target[4096];
    const std::string link = absl::StrCat("/proc/self/fd/", fd);
    const ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
    return n > 0 ? std::string(target, static_cast<size_t>(n)) : link;
  }
};

}  // namespace

FileSystem* PosixFileSystem() {
  static Posix* const posix = new Posix();
  return posix;
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::StatusOr<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Create(const std::string& path,
                                                                           mode_t mode,
                                                                           FileSystem* fs) {
  absl::StatusOr<int> file = fs->CreateForWrite(path + ".tmp", mode);
  if (!file.ok()) return file.status();
  return std::unique_ptr<AtomicFileWriter>(new AtomicFileWriter(path, fs, *file));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (file_ >= 0) fs_->Close(file_).IgnoreError();
  if (!committed_) fs_->RemoveIfExists(path_ + ".tmp");
}

absl::Status AtomicFileWriter::Flush() {
  if (error_.ok() && !buffer_.empty()) error_ = fs_->Append(file_, buffer_);
  buffer_.clear();
  return error_;
}

absl::Status AtomicFileWriter::Append(std::string_view bytes) {
  if (!error_.ok()) return error_;
  if (file_ < 0) return absl::FailedPreconditionError("the file was already committed");
  if (buffer_.size() + bytes.size() > kBufferBytes) {
    if (absl::Status flushed = Flush(); !flushed.ok()) return flushed;
    // A large piece goes straight to the file rather than through the buffer.
    if (bytes.size() >= kBufferBytes) return error_ = fs_->Append(file_, bytes);
  }
  buffer_.append(bytes);
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  if (file_ < 0) return absl::FailedPreconditionError("the file was already committed");
  absl::Status status = Flush();
  if (status.ok()) status = fs_->Sync(file_);
  absl::Status closed = fs_->Close(file_);
  file_ = -1;
  if (status.ok()) status = closed;
  const std::string temporary = path_ + ".tmp";
  if (status.ok()) status = fs_->Rename(temporary, path_);
  if (!status.ok()) {
    error_ = status;
    return status;  // the destructor removes the temporary file
  }
  committed_ = true;
  // The rename is durable once the directory is: until then a power loss
  // may bring back the previous file.
  return fs_->SyncDirectory(DirectoryOf(path_));
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view contents, mode_t mode,
                                 FileSystem* fs) {
  absl::StatusOr<std::unique_ptr<AtomicFileWriter>> writer =
      AtomicFileWriter::Create(path, mode, fs);
  if (!writer.ok()) return writer.status();
  if (absl::Status appended = (*writer)->Append(contents); !appended.ok()) return appended;
  return (*writer)->Commit();
}

}  // namespace engram::fileio
