// A fileio::FileSystem that models what a machine keeps when it loses power,
// so that a test can cut the power after any call a writer makes and see
// exactly what a restart would find.
//
// The model (conservative, as POSIX promises and no more):
// - a file's bytes reach the disk only at Sync; what was appended (or the
//   truncation done by CreateForWrite) since the last Sync may be lost
//   entirely, kept in part, or kept whole;
// - creations, renames and removals reach the disk only at SyncDirectory of
//   their directory; of those still pending at the power loss, a prefix
//   survives, in the order they were made (as a journaling file system
//   commits them).
// Nothing touches the real disk while the writer runs; Materialize() writes
// one surviving state into a real directory for the reader under test.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "fileio/atomic_file.h"

namespace engram::testing {

class PowerLossFileSystem : public fileio::FileSystem {
 public:
  // Every regular file under `root` (recursively) as it is now, all durable.
  explicit PowerLossFileSystem(std::string root);

  // After `calls` more calls, every call fails with UNAVAILABLE "power cut"
  // and changes nothing, as if the machine had stopped.
  void CutPowerAfter(int calls) { calls_left_ = calls; }
  bool power_cut() const { return calls_left_ == 0; }
  // Calls made so far that took effect.
  int calls() const { return calls_; }

  enum class UnsyncedBytes { kLost, kHalfKept, kKept };
  // Directory changes not yet made durable (a restart keeps a prefix).
  size_t pending_directory_changes() const { return pending_.size(); }
  // Writes what a restart would find into the empty directory `into`
  // (paths relative to root): the durable directory plus the first
  // `directory_changes_kept` pending changes, each file's synced bytes plus
  // `unsynced` of the rest.
  void Materialize(UnsyncedBytes unsynced, size_t directory_changes_kept,
                   const std::string& into) const;

  absl::StatusOr<int> CreateForWrite(const std::string& path, mode_t mode) override;
  absl::Status Append(int file, std::string_view bytes) override;
  absl::Status Sync(int file) override;
  absl::Status Close(int file) override;
  absl::Status Rename(const std::string& from, const std::string& to) override;
  absl::Status SyncDirectory(const std::string& dir) override;
  void RemoveIfExists(const std::string& path) override;

 private:
  struct Inode {
    std::string synced;   // on the disk
    std::string current;  // what the writer sees
    bool truncated_since_sync = false;
  };
  struct Change {
    enum Kind { kLink, kRename, kUnlink } kind;
    std::string path;  // kLink, kUnlink: the name; kRename: the new name
    std::string from;  // kRename: the old name
    int inode = -1;    // kLink
  };
  using Directory = std::map<std::string, int>;  // path -> inode
  bool Proceed();
  static void Apply(const Change& change, Directory* directory);

  const std::string root_;
  std::vector<Inode> inodes_;
  Directory durable_, current_;
  std::vector<Change> pending_;
  std::map<int, int> open_;  // descriptor -> inode
  int next_descriptor_ = 3;
  int calls_ = 0;
  int calls_left_ = -1;  // -1: never cut
};

}  // namespace engram::testing
