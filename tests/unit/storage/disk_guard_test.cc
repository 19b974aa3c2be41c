// DiskGuard with a simulated volume: the floor, the stopped state after
// RocksDB's NoSpace, resuming, and the reserve file.
#include "storage/disk_guard.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "tests/util/temp_dir.h"

namespace engram::storage {
namespace {

constexpr uint64_t kMiB = 1 << 20;

class DiskGuardTest : public ::testing::Test {
 protected:
  DiskGuard& Guard(uint64_t min_free, uint64_t reserve) {
    DiskGuardOptions options;
    options.data_dir = dir_.path();
    options.min_free_bytes = min_free;
    options.reserve_bytes = reserve;
    options.free_bytes = [this]() -> absl::StatusOr<uint64_t> { return free_; };
    options.resume = nullptr;
    guard_ = std::make_unique<DiskGuard>(options);
    guard_->set_resume([this] {
      ++resume_calls_;
      return resume_status_;
    });
    return *guard_;
  }
  std::string ReservePath() const {
    return (std::filesystem::path(dir_.path()) / DiskGuard::kReserveFileName).string();
  }

  testing::TempDir dir_;
  uint64_t free_ = 1024 * kMiB;
  rocksdb::Status resume_status_ = rocksdb::Status::OK();
  int resume_calls_ = 0;
  std::unique_ptr<DiskGuard> guard_;
};

TEST_F(DiskGuardTest, GrowingWritesStopAtTheFloorAndDeletesPass) {
  DiskGuard& guard = Guard(256 * kMiB, 0);
  EXPECT_TRUE(guard.Admit(DiskGuard::Write::kGrows, kMiB).ok());
  free_ = 256 * kMiB + kMiB - 1;  // one byte short of floor + write
  absl::Status refused = guard.Admit(DiskGuard::Write::kGrows, kMiB);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.message().find("disk full: 257.0 MiB free on the data volume; writes need "
                                   "257.0 MiB free (min_free_disk_mb 256 plus the write)"),
            std::string::npos)
      << refused;
  EXPECT_EQ(refused.message().find('/'), std::string::npos) << "no paths in messages";
  EXPECT_TRUE(guard.Admit(DiskGuard::Write::kFrees, kMiB).ok());
  free_ = 0;
  EXPECT_TRUE(guard.Admit(DiskGuard::Write::kFrees, kMiB).ok());
  free_ = 300 * kMiB;  // space came back: no restart, no resume needed
  EXPECT_TRUE(guard.Admit(DiskGuard::Write::kGrows, kMiB).ok());
  EXPECT_EQ(resume_calls_, 0);
  EXPECT_EQ(guard.stats().refused_writes, 1u);
}

TEST_F(DiskGuardTest, NoSpaceStopsWritesUntilResumeSucceeds) {
  DiskGuard& guard = Guard(64 * kMiB, 8 * kMiB);
  ASSERT_TRUE(guard.EnsureReserve());
  ASSERT_TRUE(std::filesystem::exists(ReservePath()));
  EXPECT_EQ(std::filesystem::file_size(ReservePath()), 8 * kMiB);

  absl::Status full = guard.Check(
      rocksdb::Status::NoSpace("While appending to file: /x/000004.log"), "committing write batch");
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("disk full: the data volume ran out of space"), std::string::npos);
  EXPECT_EQ(full.message().find('/'), std::string::npos) << full;
  EXPECT_TRUE(guard.stats().stopped);
  EXPECT_FALSE(std::filesystem::exists(ReservePath())) << "the reserve gives RocksDB room";

  // Stopped: below the floor nothing is tried, not even a delete's resume
  // beyond the reserve's worth.
  free_ = 4 * kMiB;
  EXPECT_EQ(guard.Admit(DiskGuard::Write::kGrows, 1).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(guard.Admit(DiskGuard::Write::kFrees, 1).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(resume_calls_, 0);
  // A delete may resume once the reserve's worth is free.
  free_ = 8 * kMiB;
  resume_status_ = rocksdb::Status::NoSpace("flush");
  EXPECT_EQ(guard.Admit(DiskGuard::Write::kFrees, 1).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(resume_calls_, 1);
  EXPECT_TRUE(guard.stats().stopped);
  // Room again: the next write resumes RocksDB and goes through; the
  // reserve is made again.
  free_ = 512 * kMiB;
  resume_status_ = rocksdb::Status::OK();
  EXPECT_TRUE(guard.Admit(DiskGuard::Write::kGrows, kMiB).ok());
  EXPECT_EQ(resume_calls_, 2);
  DiskGuard::Stats stats = guard.stats();
  EXPECT_FALSE(stats.stopped);
  EXPECT_EQ(stats.resumes, 1u);
  EXPECT_TRUE(stats.reserve_present);
  EXPECT_TRUE(std::filesystem::exists(ReservePath()));
}

TEST_F(DiskGuardTest, OtherErrorsKeepTheirCodes) {
  DiskGuard& guard = Guard(0, 0);
  EXPECT_TRUE(guard.Check(rocksdb::Status::OK(), "x").ok());
  EXPECT_EQ(guard.Check(rocksdb::Status::Corruption("bad block"), "reading").code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(guard.Check(rocksdb::Status::IOError("EIO"), "writing").code(),
            absl::StatusCode::kInternal);
  EXPECT_FALSE(guard.stats().stopped);
}

TEST_F(DiskGuardTest, ReserveNeedsRoomAboveTheFloor) {
  DiskGuard& guard = Guard(100 * kMiB, 50 * kMiB);
  free_ = 149 * kMiB;
  EXPECT_FALSE(guard.EnsureReserve());
  EXPECT_FALSE(std::filesystem::exists(ReservePath()));
  free_ = 150 * kMiB;
  EXPECT_TRUE(guard.EnsureReserve());
  EXPECT_TRUE(guard.ReleaseReserve());
  EXPECT_FALSE(guard.ReleaseReserve());
  DiskGuard& none = Guard(0, 0);
  EXPECT_FALSE(none.EnsureReserve());
}

TEST(FormatBytesTest, MiBAndGiB) {
  EXPECT_EQ(FormatBytes(0), "0.0 MiB");
  EXPECT_EQ(FormatBytes(3 * kMiB / 2), "1.5 MiB");
  EXPECT_EQ(FormatBytes(uint64_t{5} << 30), "5.0 GiB");
}

}  // namespace
}  // namespace engram::storage
