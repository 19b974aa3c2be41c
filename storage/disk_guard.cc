#include "storage/disk_guard.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "storage/rocks_status.h"

namespace engram::storage {

absl::StatusOr<uint64_t> FreeDiskBytes(const std::string& path) {
  struct statvfs info;
  if (statvfs(path.c_str(), &info) != 0) {
    return absl::InternalError(absl::StrCat("statvfs: ", std::strerror(errno)));
  }
  return static_cast<uint64_t>(info.f_bavail) * info.f_frsize;
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 30)) return absl::StrFormat("%.1f GiB", bytes / 1073741824.0);
  return absl::StrFormat("%.1f MiB", bytes / 1048576.0);
}

DiskGuard::DiskGuard(DiskGuardOptions options) : options_(std::move(options)) {
  std::error_code ec;
  absl::MutexLock lock(&mutex_);
  reserve_present_ = std::filesystem::file_size(ReservePath(), ec) >= options_.reserve_bytes &&
                     !ec && options_.reserve_bytes > 0;
}

std::string DiskGuard::ReservePath() const {
  return (std::filesystem::path(options_.data_dir) / kReserveFileName).string();
}

uint64_t DiskGuard::Free() {
  absl::StatusOr<uint64_t> free =
      options_.free_bytes ? options_.free_bytes() : FreeDiskBytes(options_.data_dir);
  // When the volume cannot be asked, let RocksDB's own errors speak.
  return free.ok() ? *free : std::numeric_limits<uint64_t>::max();
}

absl::Status DiskGuard::Full(uint64_t free, uint64_t needed) const {
  return absl::ResourceExhaustedError(absl::StrCat(
      "disk full: ", FormatBytes(free), " free on the data volume; writes need ",
      FormatBytes(needed), " free (min_free_disk_mb ", options_.min_free_bytes >> 20,
      " plus the write). Deletes are still accepted; writes resume on their own once space "
      "is freed"));
}

absl::Status DiskGuard::Admit(Write kind, uint64_t bytes) {
  const uint64_t free = Free();
  bool resumed = false;
  {
    absl::MutexLock lock(&mutex_);
    if (stopped_) {
      // DB::Resume flushes every memtable: wait for the floor (or, for a
      // delete, the reserve's worth) before trying.
      const uint64_t resume_at = kind == Write::kGrows
                                     ? options_.min_free_bytes
                                     : std::min(options_.min_free_bytes, options_.reserve_bytes);
      if (free < resume_at || !resume_) {
        ++refused_writes_;
        return Full(free, resume_at);
      }
      rocksdb::Status resumed_status = resume_();
      if (!resumed_status.ok()) {
        ++refused_writes_;
        spdlog::warn("event=disk_resume_failed free_bytes={} error=\"{}\"", free,
                     resumed_status.ToString());
        return absl::ResourceExhaustedError(
            absl::StrCat("disk full: writes are stopped and resuming them failed with ",
                         FormatBytes(free), " free; retry once more space is freed"));
      }
      stopped_ = false;
      ++resumes_;
      resumed = true;
      spdlog::info("event=disk_writes_resumed free_bytes={}", free);
    }
    if (kind == Write::kGrows && free < options_.min_free_bytes + bytes) {
      ++refused_writes_;
      return Full(free, options_.min_free_bytes + bytes);
    }
  }
  if (resumed) EnsureReserve();
  return absl::OkStatus();
}

absl::Status DiskGuard::Check(const rocksdb::Status& status, absl::string_view what) {
  if (status.ok()) return absl::OkStatus();
  if (!status.IsNoSpace()) return FromRocks(status, what);
  bool newly_stopped;
  {
    absl::MutexLock lock(&mutex_);
    newly_stopped = !stopped_;
    stopped_ = true;
    ++refused_writes_;
  }
  const bool released = ReleaseReserve();
  const uint64_t free = Free();
  if (newly_stopped) {
    spdlog::error("event=disk_full_writes_stopped free_bytes={} reserve_released={}", free,
                  released);
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("disk full: the data volume ran out of space (", FormatBytes(free),
                   " free now); writes are stopped and resume on their own once ",
                   FormatBytes(options_.min_free_bytes), " is free"));
}

bool DiskGuard::EnsureReserve() {
  if (options_.reserve_bytes == 0) return false;
  absl::MutexLock lock(&mutex_);
  if (reserve_present_) return true;
  if (Free() < options_.min_free_bytes + options_.reserve_bytes) return false;
  const std::string path = ReservePath();
  const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  const bool made =
      posix_fallocate(fd, 0, static_cast<off_t>(options_.reserve_bytes)) == 0 && ::fsync(fd) == 0;
  ::close(fd);
  if (!made) {
    ::unlink(path.c_str());
    return false;
  }
  reserve_present_ = true;
  spdlog::info("event=disk_reserve_made bytes={}", options_.reserve_bytes);
  return true;
}

bool DiskGuard::ReleaseReserve() {
  absl::MutexLock lock(&mutex_);
  const bool released = ::unlink(ReservePath().c_str()) == 0;
  reserve_present_ = false;
  if (released) spdlog::warn("event=disk_reserve_released bytes={}", options_.reserve_bytes);
  return released;
}

void DiskGuard::set_resume(std::function<rocksdb::Status()> resume) {
  absl::MutexLock lock(&mutex_);
  resume_ = std::move(resume);
}

DiskGuard::Stats DiskGuard::stats() {
  const uint64_t free = Free();
  absl::MutexLock lock(&mutex_);
  return Stats{free,    options_.min_free_bytes, stopped_, reserve_present_, refused_writes_,
               resumes_};
}

}  // namespace engram::storage
