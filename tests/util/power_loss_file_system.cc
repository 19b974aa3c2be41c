#include "tests/util/power_loss_file_system.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace engram::testing {

PowerLossFileSystem::PowerLossFileSystem(std::string root) : root_(std::move(root)) {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root_)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    inodes_.push_back({bytes.str(), bytes.str(), false});
    durable_[entry.path().string()] = static_cast<int>(inodes_.size()) - 1;
  }
  current_ = durable_;
}

bool PowerLossFileSystem::Proceed() {
  if (calls_left_ == 0) return false;
  if (calls_left_ > 0) --calls_left_;
  ++calls_;
  return true;
}

namespace {
absl::Status PowerCut() { return absl::UnavailableError("power cut"); }
}  // namespace

absl::StatusOr<int> PowerLossFileSystem::CreateForWrite(const std::string& path, mode_t) {
  if (!Proceed()) return PowerCut();
  auto existing = current_.find(path);
  int inode;
  if (existing != current_.end()) {
    inode = existing->second;
    inodes_[inode].current.clear();
    inodes_[inode].truncated_since_sync = true;
  } else {
    inodes_.push_back({});
    inode = static_cast<int>(inodes_.size()) - 1;
    Change link{Change::kLink, path, "", inode};
    Apply(link, &current_);
    pending_.push_back(link);
  }
  open_[next_descriptor_] = inode;
  return next_descriptor_++;
}

absl::Status PowerLossFileSystem::Append(int file, std::string_view bytes) {
  if (!Proceed()) return PowerCut();
  inodes_.at(open_.at(file)).current.append(bytes);
  return absl::OkStatus();
}

absl::Status PowerLossFileSystem::Sync(int file) {
  if (!Proceed()) return PowerCut();
  Inode& inode = inodes_.at(open_.at(file));
  inode.synced = inode.current;
  inode.truncated_since_sync = false;
  return absl::OkStatus();
}

absl::Status PowerLossFileSystem::Close(int file) {
  if (!Proceed()) return PowerCut();
  open_.erase(file);
  return absl::OkStatus();
}

absl::Status PowerLossFileSystem::Rename(const std::string& from, const std::string& to) {
  if (!Proceed()) return PowerCut();
  if (!current_.contains(from)) return absl::NotFoundError(absl::StrCat("no file ", from));
  Change rename{Change::kRename, to, from, -1};
  Apply(rename, &current_);
  pending_.push_back(rename);
  return absl::OkStatus();
}

absl::Status PowerLossFileSystem::SyncDirectory(const std::string& dir) {
  if (!Proceed()) return PowerCut();
  std::vector<Change> still_pending;
  for (const Change& change : pending_) {
    const bool here = fileio::DirectoryOf(change.path) == dir &&
                      (change.kind != Change::kRename || fileio::DirectoryOf(change.from) == dir);
    if (here) {
      Apply(change, &durable_);
    } else {
      still_pending.push_back(change);
    }
  }
  pending_ = std::move(still_pending);
  return absl::OkStatus();
}

void PowerLossFileSystem::RemoveIfExists(const std::string& path) {
  if (!Proceed() || !current_.contains(path)) return;
  Change unlink{Change::kUnlink, path, "", -1};
  Apply(unlink, &current_);
  pending_.push_back(unlink);
}

void PowerLossFileSystem::Apply(const Change& change, Directory* directory) {
  switch (change.kind) {
    case Change::kLink:
      (*directory)[change.path] = change.inode;
      break;
    case Change::kRename: {
      auto from = directory->find(change.from);
      // A rename of a name whose creation did not survive renames nothing.
      if (from == directory->end()) break;
      (*directory)[change.path] = from->second;
      directory->erase(change.from);
      break;
    }
    case Change::kUnlink:
      directory->erase(change.path);
      break;
  }
}

void PowerLossFileSystem::Materialize(UnsyncedBytes unsynced, size_t directory_changes_kept,
                                      const std::string& into) const {
  Directory survivors = durable_;
  for (size_t i = 0; i < directory_changes_kept && i < pending_.size(); ++i) {
    Apply(pending_[i], &survivors);
  }
  for (const auto& [path, number] : survivors) {
    if (!absl::StartsWith(path, root_ + "/")) {
      throw std::logic_error(absl::StrCat(path, " is outside ", root_));
    }
    const Inode& inode = inodes_[number];
    std::string bytes;
    switch (unsynced) {
      case UnsyncedBytes::kLost:
        bytes = inode.synced;
        break;
      case UnsyncedBytes::kKept:
        bytes = inode.current;
        break;
      case UnsyncedBytes::kHalfKept: {
        const size_t kept_from = inode.truncated_since_sync ? 0 : inode.synced.size();
        const size_t unsynced_size =
            inode.current.size() > kept_from ? inode.current.size() - kept_from : 0;
        bytes = inode.truncated_since_sync || absl::StartsWith(inode.current, inode.synced)
                    ? inode.current.substr(0, kept_from + unsynced_size / 2)
                    : inode.synced;
        break;
      }
    }
    const std::filesystem::path target =
        std::filesystem::path(into) / path.substr(root_.size() + 1);
    std::filesystem::create_directories(target.parent_path());
    std::ofstream(target, std::ios::binary | std::ios::trunc) << bytes;
  }
}

}  // namespace engram::testing
