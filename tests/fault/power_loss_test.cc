// Power loss of engramd's own files: index snapshots, KV export files and
// the tokens file, each written through fileio::AtomicFileWriter.
//
// For each, a first version is on disk and a writer replaces it with a
// second through PowerLossFileSystem (tests/util/power_loss_file_system.h),
// which cuts the power after the writer's 0th, 1st, 2nd, ... call. For
// every cut, every surviving state the model allows (unsynced bytes lost,
// half kept or kept; any prefix of the directory changes not yet synced) is
// written out and read back by the real reader. The reader must find the
// first version or the second, whole, and the second whenever the writer
// had returned OK. Without a first version it must find nothing or the
// second. "Rejected" (a checksum failure) would be safe for snapshots, which
// are rebuilt from the store, but these writers never even get there, so
// the test demands more.
//
// The last tests run the same check on writers that skip a step (an fsync
// before the rename, the directory fsync, the temporary file) and require
// it to catch each, so a green run means something.
#include <fcntl.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "fileio/atomic_file.h"
#include "index/vector_partition.h"
#include "server/auth/tokens.h"
#include "storage/kvcache/safetensors.h"
#include "tests/util/power_loss_file_system.h"
#include "tests/util/temp_dir.h"

namespace engram {
namespace {

using testing::PowerLossFileSystem;
using testing::TempDir;
using Unsynced = PowerLossFileSystem::UnsyncedBytes;

// What a reader found at the path after the restart.
enum class Found { kFirst, kSecond, kMissing, kRejected, kNeither };

const char* FoundName(Found found) {
  switch (found) {
    case Found::kFirst:
      return "the first version";
    case Found::kSecond:
      return "the second version";
    case Found::kMissing:
      return "no file";
    case Found::kRejected:
      return "a file the reader rejected";
    case Found::kNeither:
      return "a file the reader accepted that is neither version (half trusted)";
  }
  return "?";
}

const char* UnsyncedName(Unsynced unsynced) {
  return unsynced == Unsynced::kLost ? "lost" : unsynced == Unsynced::kKept ? "kept" : "half kept";
}

struct Scenario {
  std::string file = "file";  // relative to the data directory
  // Writes the first version with the real file system; empty: no first
  // version, the second is the file's first write.
  std::function<absl::Status(const std::string& path)> write_first;
  std::function<absl::Status(const std::string& path, fileio::FileSystem* fs)> write_second;
  std::function<Found(const std::string& path)> read;
};

struct Report {
  int cuts = 0;    // power cuts tried (the last one after the writer's final call)
  int states = 0;  // surviving states read back
  std::vector<std::string> violations;
};

Report CutPowerAtEveryCall(const Scenario& scenario) {
  Report report;
  for (int cut = 0;; ++cut) {
    TempDir before;
    const std::string path = before.Sub(scenario.file);
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    if (scenario.write_first) {
      const absl::Status first = scenario.write_first(path);
      if (!first.ok()) {
        report.violations.push_back(absl::StrCat("the first version failed: ", first.ToString()));
        return report;
      }
    }
    PowerLossFileSystem fs(before.path());
    fs.CutPowerAfter(cut);
    const absl::Status written = scenario.write_second(path, &fs);
    ++report.cuts;
    for (Unsynced unsynced : {Unsynced::kLost, Unsynced::kHalfKept, Unsynced::kKept}) {
      for (size_t kept = 0; kept <= fs.pending_directory_changes(); ++kept) {
        TempDir after;
        fs.Materialize(unsynced, kept, after.path());
        const Found found = scenario.read(after.Sub(scenario.file));
        ++report.states;
        const bool allowed = written.ok() ? found == Found::kSecond
                             : scenario.write_first
                                 ? found == Found::kFirst || found == Found::kSecond
                                 : found == Found::kMissing || found == Found::kSecond;
        if (!allowed) {
          report.violations.push_back(absl::StrFormat(
              "power cut after %d calls (writer returned %s), unsynced bytes %s, %d of %d "
              "directory changes kept: found %s",
              cut, written.ToString(), UnsyncedName(unsynced), kept, fs.pending_directory_changes(),
              FoundName(found)));
        }
      }
    }
    // The writer finished before the power went: every call has had its cut.
    if (written.ok() || !fs.power_cut()) break;
  }
  return report;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

std::string RandomBytes(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  return bytes;
}

// A reader that trusts whatever it finds: only a writer that never exposes
// a torn file passes with it.
std::function<Found(const std::string&)> RawReader(const std::string& first,
                                                   const std::string& second) {
  return [first, second](const std::string& path) {
    if (!std::filesystem::exists(path)) return Found::kMissing;
    const std::string bytes = ReadBytes(path);
    return bytes == first ? Found::kFirst : bytes == second ? Found::kSecond : Found::kNeither;
  };
}

void ExpectNoViolations(const Report& report, int min_cuts) {
  EXPECT_GE(report.cuts, min_cuts) << "the writer made fewer calls than it should";
  EXPECT_TRUE(report.violations.empty()) << absl::StrJoin(report.violations, "\n");
  std::cerr << report.cuts << " power cuts, " << report.states << " surviving states read\n";
}

// Several megabytes in pieces, so the writer appends more than once.
TEST(PowerLoss, AtomicFileWriterLeavesTheOldFileOrTheNewOneWhole) {
  const std::string first = RandomBytes(1 << 20, 1);
  const std::string second = RandomBytes(3 << 20, 2);
  Scenario scenario;
  scenario.write_first = [&](const std::string& path) {
    return fileio::WriteFileAtomically(path, first);
  };
  scenario.write_second = [&](const std::string& path, fileio::FileSystem* fs) -> absl::Status {
    absl::StatusOr<std::unique_ptr<fileio::AtomicFileWriter>> writer =
        fileio::AtomicFileWriter::Create(path, 0644, fs);
    if (!writer.ok()) return writer.status();
    for (size_t at = 0; at < second.size(); at += 700'000) {
      (*writer)->Append(std::string_view(second).substr(at, 700'000)).IgnoreError();
    }
    return (*writer)->Commit();
  };
  scenario.read = RawReader(first, second);
  // Create, 4 appends, sync, close, rename, directory sync.
  ExpectNoViolations(CutPowerAtEveryCall(scenario), 9);

  scenario.write_first = nullptr;  // the file's first write
  ExpectNoViolations(CutPowerAtEveryCall(scenario), 9);
}

// A partition snapshot: the first has 30 vectors scanned exactly, the second
// 60 with codes and a graph.
TEST(PowerLoss, IndexSnapshotsLoadWholeOrNotAtAll) {
  index::PartitionOptions options;
  options.metric = Metric::kL2;
  options.dimension = 8;
  options.quantize_threshold = 16;
  options.graph_threshold = 40;
  auto make = [&](uint64_t count) {
    auto partition = index::VectorPartition::Create(options);
    EXPECT_TRUE(partition.ok()) << partition.status();
    std::mt19937 rng(7);
    std::normal_distribution<float> gauss(0.0f, 3.0f);
    for (uint64_t id = 1; id <= count; ++id) {
      std::vector<float> v(options.dimension);
      for (float& x : v) x = gauss(rng);
      EXPECT_TRUE((*partition)->Add(id, v).ok());
    }
    return *std::move(partition);
  };
  const std::unique_ptr<index::VectorPartition> first = make(30), second = make(60);
  auto ids_of = [](const index::VectorPartition& partition) {
    std::set<uint64_t> ids;
    partition.ForEachLive([&](uint64_t id, const uint8_t*) { ids.insert(id); });
    return ids;
  };
  Scenario scenario;
  scenario.file = "space/partition-0.snap";
  scenario.write_first = [&](const std::string& path) { return first->Save(path); };
  scenario.write_second = [&](const std::string& path, fileio::FileSystem* fs) {
    return second->Save(path, fs);
  };
  scenario.read = [&](const std::string& path) {
    absl::StatusOr<std::unique_ptr<index::VectorPartition>> loaded =
        index::VectorPartition::Load(path, options);
    if (absl::IsNotFound(loaded.status())) return Found::kMissing;
    if (!loaded.ok()) return Found::kRejected;
    const std::set<uint64_t> ids = ids_of(**loaded);
    const index::VectorPartition& expected = ids == ids_of(*first)    ? *first
                                             : ids == ids_of(*second) ? *second
                                                                      : **loaded;
    if (&expected == loaded->get()) return Found::kNeither;
    // Every vector as written: its own nearest neighbour at distance 0.
    std::vector<float> row(options.dimension);
    for (uint32_t r = 0; r < expected.row_count(); ++r) {
      expected.CopyRows(r, 1, row.data());
      const std::vector<index::ScoredId> hit = (*loaded)->ExactSearch(row, 1);
      if (hit.empty() || hit[0].id != expected.RowId(r) || hit[0].score != 0.0f) {
        return Found::kNeither;
      }
    }
    return &expected == first.get() ? Found::kFirst : Found::kSecond;
  };
  ExpectNoViolations(CutPowerAtEveryCall(scenario), 6);
  scenario.write_first = nullptr;
  ExpectNoViolations(CutPowerAtEveryCall(scenario), 6);
}

// A KV export: a safetensors file read back tensor by tensor, as ImportCache
// reads it.
TEST(PowerLoss, KvExportFilesImportWholeOrNotAtAll) {
  using kvcache::TensorDtype;
  const std::vector<kvcache::TensorLayout> layouts = {{"tokens", TensorDtype::kU32, {4096}},
                                                      {"k", TensorDtype::kU8, {2, 1 << 20}}};
  const std::vector<std::string> first = {RandomBytes(4096 * 4, 3), RandomBytes(2 << 20, 4)};
  const std::vector<std::string> second = {RandomBytes(4096 * 4, 5), RandomBytes(2 << 20, 6)};
  auto write = [&](const std::vector<std::string>& data, const std::string& path,
                   fileio::FileSystem* fs) {
    return kvcache::WriteSafetensors(
        path, layouts, {{"agent_id", "a"}},
        [&](size_t i) -> absl::StatusOr<std::string_view> { return data[i]; }, fs);
  };
  Scenario scenario;
  scenario.file = "exports/a.safetensors";
  scenario.write_first = [&](const std::string& path) {
    return write(first, path, fileio::PosixFileSystem());
  };
  scenario.write_second = [&](const std::string& path, fileio::FileSystem* fs) {
    return write(second, path, fs);
  };
  scenario.read = [&](const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Found::kMissing;
    absl::StatusOr<kvcache::SafetensorsReader> reader = kvcache::SafetensorsReader::Open(fd);
    if (!reader.ok()) return Found::kRejected;
    std::vector<std::string> data;
    for (const kvcache::TensorLayout& layout : layouts) {
      const kvcache::TensorInfo* info = reader->header().Find(layout.name);
      if (info == nullptr) return Found::kRejected;
      absl::StatusOr<std::string> bytes = reader->Read(*info);
      if (!bytes.ok()) return Found::kRejected;
      data.push_back(*std::move(bytes));
    }
    return data == first ? Found::kFirst : data == second ? Found::kSecond : Found::kNeither;
  };
  ExpectNoViolations(CutPowerAtEveryCall(scenario), 7);
  scenario.write_first = nullptr;
  ExpectNoViolations(CutPowerAtEveryCall(scenario), 7);
}

// The tokens file, as `engramctl token create` rewrites it and engramd's
// SIGHUP reads it.
TEST(PowerLoss, TokensFileRewritesLoadWhole) {
  auth::TokensFile first, second;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<auth::NewToken> token =
        auth::CreateToken(absl::StrCat("tenant", i), auth::Role::kWrite, "", 1);
    ASSERT_TRUE(token.ok());
    (i < 2 ? first : second).tokens.push_back(token->record);
  }
  second.tokens.insert(second.tokens.begin(), first.tokens.begin(), first.tokens.end());
  Scenario scenario;
  scenario.file = "tokens";
  scenario.write_first = [&](const std::string& path) { return auth::SaveTokensFile(path, first); };
  scenario.write_second = [&](const std::string& path, fileio::FileSystem* fs) {
    return auth::SaveTokensFile(path, second, fs);
  };
  scenario.read = [&](const std::string& path) {
    absl::StatusOr<auth::TokensFile> loaded = auth::LoadTokensFile(path);
    if (absl::IsNotFound(loaded.status())) return Found::kMissing;
    if (!loaded.ok()) return Found::kRejected;
    const std::string text = auth::FormatTokensFile(*loaded);
    return text == auth::FormatTokensFile(first)    ? Found::kFirst
           : text == auth::FormatTokensFile(second) ? Found::kSecond
                                                    : Found::kNeither;
  };
  ExpectNoViolations(CutPowerAtEveryCall(scenario), 6);
  scenario.write_first = nullptr;
  ExpectNoViolations(CutPowerAtEveryCall(scenario), 6);
}

// The check has teeth: writers that each skip one step are caught.
Scenario BrokenWriter(const std::string& first, const std::string& second, bool temporary,
                      bool sync_file, bool sync_directory) {
  Scenario scenario;
  scenario.write_first = [first](const std::string& path) {
    return fileio::WriteFileAtomically(path, first);
  };
  scenario.write_second = [=](const std::string& path, fileio::FileSystem* fs) -> absl::Status {
    const std::string target = temporary ? path + ".tmp" : path;
    absl::StatusOr<int> file = fs->CreateForWrite(target, 0644);
    if (!file.ok()) return file.status();
    for (absl::Status step :
         {fs->Append(*file, second), sync_file ? fs->Sync(*file) : absl::OkStatus(),
          fs->Close(*file), temporary ? fs->Rename(target, path) : absl::OkStatus(),
          sync_directory ? fs->SyncDirectory(fileio::DirectoryOf(path)) : absl::OkStatus()}) {
      if (!step.ok()) return step;
    }
    return absl::OkStatus();
  };
  scenario.read = RawReader(first, second);
  return scenario;
}

TEST(PowerLoss, CatchesAWriterThatRenamesBeforeItsDataIsSynced) {
  const Report report = CutPowerAtEveryCall(BrokenWriter("first", "second", /*temporary=*/true,
                                                         /*sync_file=*/false,
                                                         /*sync_directory=*/true));
  ASSERT_FALSE(report.violations.empty());
  EXPECT_NE(report.violations[0].find("neither version"), std::string::npos)
      << report.violations[0];
}

TEST(PowerLoss, CatchesAWriterThatDoesNotSyncTheDirectory) {
  const Report report = CutPowerAtEveryCall(BrokenWriter("first", "second", /*temporary=*/true,
                                                         /*sync_file=*/true,
                                                         /*sync_directory=*/false));
  ASSERT_FALSE(report.violations.empty());
  EXPECT_NE(report.violations[0].find("returned OK"), std::string::npos) << report.violations[0];
  EXPECT_NE(report.violations[0].find("found the first version"), std::string::npos)
      << report.violations[0];
}

TEST(PowerLoss, CatchesAWriterThatOverwritesInPlace) {
  const Report report = CutPowerAtEveryCall(BrokenWriter("first", "second", /*temporary=*/false,
                                                         /*sync_file=*/true,
                                                         /*sync_directory=*/true));
  ASSERT_FALSE(report.violations.empty());
  EXPECT_NE(report.violations[0].find("neither version"), std::string::npos)
      << report.violations[0];
}

}  // namespace
}  // namespace engram
