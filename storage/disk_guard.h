// DiskGuard: keeps engramd's writes from filling the data volume, and lets
// them resume on their own once space returns.
//
//   Floor     a write that would grow the database is refused with
//             RESOURCE_EXHAUSTED ("disk full: ...") while the volume has
//             less than min_free_bytes free beyond the write's own size, so
//             RocksDB itself should never meet a full disk because of us.
//             Deletes are exempt: they are how a user makes room.
//   Stopped   when RocksDB does meet a full disk (another process filled it)
//             it stops all writes (a "hard" background error). The guard
//             maps that error to RESOURCE_EXHAUSTED, and the next write that
//             finds room again calls DB::Resume(), which flushes the
//             memtables to a fresh WAL. No restart needed.
//   Reserve   a file of reserve_bytes in the data directory, made while
//             there is room. It is deleted when RocksDB runs out of space
//             and when opening the database fails for lack of space, so a
//             flush, a resume or a restart always has room to complete and
//             data can always be deleted; it is made again once the volume
//             has room for it above the floor.
//
// Why this matters beyond error codes: Debian's librocksdb 7.8 is built with
// assertions on, and a WAL writer that has failed once aborts the process
// (writable_file_writer.h, AssertFalseAndGetStatusForPrevError) when written
// again. Keeping writes off a full disk, and not writing while RocksDB is
// stopped, keeps engramd clear of that path.
//
// Messages name sizes, never paths. Thread safety: every method may be
// called concurrently; resumes are serialized.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/status.h"

namespace engram::storage {

// Bytes available to an unprivileged writer on the filesystem holding
// `path` (statvfs f_bavail * f_frsize).
absl::StatusOr<uint64_t> FreeDiskBytes(const std::string& path);

// "12.3 MiB", "1.5 GiB".
std::string FormatBytes(uint64_t bytes);

struct DiskGuardOptions {
  std::string data_dir;
  uint64_t min_free_bytes = 0;
  uint64_t reserve_bytes = 0;
  // Tests: the free-space probe and DB::Resume. Defaults: FreeDiskBytes on
  // data_dir, and no resume (set by the store once the DB is open).
  std::function<absl::StatusOr<uint64_t>()> free_bytes;
  std::function<rocksdb::Status()> resume;
};

class DiskGuard {
 public:
  // The reserve file, inside data_dir.
  static constexpr char kReserveFileName[] = "ENGRAM-DISK-RESERVE";

  explicit DiskGuard(DiskGuardOptions options);

  enum class Write { kGrows, kFrees };

  // Before a write of `bytes`: OK, or RESOURCE_EXHAUSTED naming the free
  // space and what writes need. While RocksDB is stopped, tries to resume
  // it first when there is room (see the file comment).
  absl::Status Admit(Write kind, uint64_t bytes);

  // After a RocksDB write or flush: a full disk becomes RESOURCE_EXHAUSTED
  // (and stops writes until a resume); other statuses go through FromRocks
  // with `what`.
  absl::Status Check(const rocksdb::Status& status, absl::string_view what);

  // Makes the reserve file when the volume has room for it above the floor
  // (true when it exists afterwards).
  bool EnsureReserve();
  // Deletes the reserve file (true when one was deleted).
  bool ReleaseReserve();

  // Installs DB::Resume once the database is open.
  void set_resume(std::function<rocksdb::Status()> resume);

  struct Stats {
    uint64_t free_bytes = 0;
    uint64_t min_free_bytes = 0;
    bool stopped = false;  // RocksDB stopped writes for a full disk
    bool reserve_present = false;
    uint64_t refused_writes = 0;
    uint64_t resumes = 0;
  };
  Stats stats();

 private:
  uint64_t Free();
  absl::Status Full(uint64_t free, uint64_t needed) const;
  std::string ReservePath() const;

  const DiskGuardOptions options_;
  absl::Mutex mutex_;
  bool stopped_ ABSL_GUARDED_BY(mutex_) = false;
  bool reserve_present_ ABSL_GUARDED_BY(mutex_) = false;
  uint64_t refused_writes_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t resumes_ ABSL_GUARDED_BY(mutex_) = 0;
  std::function<rocksdb::Status()> resume_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace engram::storage
