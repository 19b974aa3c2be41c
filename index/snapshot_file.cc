#include "index/snapshot_file.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"

namespace engram::index {
namespace {

constexpr size_t kTrailerBytes = sizeof(uint64_t) + sizeof(uint32_t);
constexpr size_t kCrcChunk = size_t{1} << 30;  // zlib's crc32 takes a uInt length

uint32_t Crc(uint32_t crc, const void* data, size_t bytes) {
  const auto* p = static_cast<const Bytef*>(data);
  while (bytes > 0) {
    size_t n = std::min(bytes, kCrcChunk);
    crc = static_cast<uint32_t>(crc32(crc, p, static_cast<uInt>(n)));
    p += n;
    bytes -= n;
  }
  return crc;
}

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " '", path, "': ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SnapshotWriter>> SnapshotWriter::Create(const std::string& path,
                                                                       fileio::FileSystem* fs) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create the directory of '", path, "': ", ec.message()));
  }
  absl::StatusOr<std::unique_ptr<fileio::AtomicFileWriter>> file =
      fileio::AtomicFileWriter::Create(path, 0644, fs);
  if (!file.ok()) return file.status();
  return std::unique_ptr<SnapshotWriter>(new SnapshotWriter(*std::move(file)));
}

void SnapshotWriter::Write(const void* data, size_t bytes) {
  if (bytes == 0) return;
  crc_ = Crc(crc_, data, bytes);
  length_ += bytes;
  // A failure is kept by the file and returned by Commit.
  file_->Append(std::string_view(static_cast<const char*>(data), bytes)).IgnoreError();
}

absl::Status SnapshotWriter::Commit() {
  const uint64_t length = length_;
  const uint32_t crc = crc_;
  file_->Append(std::string_view(reinterpret_cast<const char*>(&length), sizeof(length)))
      .IgnoreError();
  file_->Append(std::string_view(reinterpret_cast<const char*>(&crc), sizeof(crc))).IgnoreError();
  return file_->Commit();
}

absl::StatusOr<std::unique_ptr<SnapshotReader>> SnapshotReader::Open(const std::string& path) {
  std::error_code ec;
  uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) {
      return absl::NotFoundError(absl::StrCat("no snapshot at '", path, "'"));
    }
    return absl::InternalError(absl::StrCat("cannot stat '", path, "': ", ec.message()));
  }
  if (size < kTrailerBytes) {
    return absl::DataLossError(
        absl::StrCat("snapshot '", path, "' is truncated (", size, " bytes)"));
  }
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return ErrnoError("cannot open", path);
  std::setvbuf(file, nullptr, _IOFBF, 1 << 20);
  return std::unique_ptr<SnapshotReader>(new SnapshotReader(path, file, size - kTrailerBytes));
}

SnapshotReader::~SnapshotReader() { std::fclose(file_); }

bool SnapshotReader::Read(void* data, size_t bytes) {
  if (overrun_ || bytes > data_length_ - consumed_) {
    overrun_ = true;
    return false;
  }
  if (bytes == 0) return true;
  if (std::fread(data, 1, bytes, file_) != bytes) {
    overrun_ = true;
    return false;
  }
  crc_ = Crc(crc_, data, bytes);
  consumed_ += bytes;
  return true;
}

absl::Status SnapshotReader::Finish() {
  uint64_t length = 0;
  uint32_t crc = 0;
  if (overrun_ || consumed_ != data_length_ || std::fread(&length, sizeof(length), 1, file_) != 1 ||
      std::fread(&crc, sizeof(crc), 1, file_) != 1) {
    return absl::DataLossError(
        absl::StrCat("snapshot '", path_, "' is truncated or does not match its format"));
  }
  if (length != data_length_ || crc != crc_) {
    return absl::DataLossError(absl::StrCat("snapshot '", path_, "' fails its checksum"));
  }
  return absl::OkStatus();
}

}  // namespace engram::index
