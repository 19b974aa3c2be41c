// safetensors parsing rules, export -> import round trips and the confinement
// of client paths to the export directory.
#include "storage/kvcache/kv_files.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "storage/episode_store.h"
#include "storage/kvcache/safetensors.h"
#include "tests/util/temp_dir.h"

namespace engram::kvcache {
namespace {

std::string FileWithHeader(const std::string& json, const std::string& data) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((json.size() >> (8 * i)) & 0xFF);
  return bytes + json + data;
}

absl::StatusCode ParseCode(const std::string& json, const std::string& data) {
  std::string file = FileWithHeader(json, data);
  return ParseSafetensorsHeader(file, file.size()).status().code();
}

TEST(Safetensors, AcceptsAValidHeader) {
  std::string file = FileWithHeader(
      R"({"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]},)"
      R"("a":{"dtype":"U32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"k":"v"}})",
      std::string(8, 'x'));
  auto header = ParseSafetensorsHeader(file, file.size());
  ASSERT_TRUE(header.ok()) << header.status();
  ASSERT_EQ(header->tensors.size(), 2u);
  EXPECT_EQ(header->tensors[0].name, "a");  // offset order
  EXPECT_EQ(header->metadata.at("k"), "v");
}

// The streaming writer asks for each tensor in file order and writes a file
// the parser accepts; a source error or bytes of the wrong size leave no
// file (and no temp file) behind.
TEST(Safetensors, StreamingWriterFetchesTensorsInOrderAndCleansUpOnError) {
  engram::testing::TempDir dir;
  const std::string path = dir.Sub("t.safetensors");
  std::vector<TensorLayout> layouts = {{"a", TensorDtype::kU32, {2, 3}},
                                       {"b", TensorDtype::kF16, {5}}};
  std::vector<size_t> asked;
  std::string a(24, 'a'), b(10, 'b');
  auto source = [&](size_t index) -> absl::StatusOr<std::string_view> {
    asked.push_back(index);
    return std::string_view(index == 0 ? a : b);
  };
  ASSERT_TRUE(WriteSafetensors(path, layouts, {{"k", "v"}}, source).ok());
  EXPECT_EQ(asked, (std::vector<size_t>{0, 1}));
  std::ifstream in(path, std::ios::binary);
  std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto header = ParseSafetensorsHeader(file, file.size());
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->Find("b")->end - header->Find("b")->begin, 10u);
  EXPECT_EQ(file.substr(file.size() - 34), a + b);

  const std::string failed = dir.Sub("f.safetensors");
  b.resize(9);  // one byte short of 5 fp16 values
  EXPECT_EQ(WriteSafetensors(failed, layouts, {}, source).code(), absl::StatusCode::kInternal);
  EXPECT_FALSE(std::filesystem::exists(failed));
  EXPECT_FALSE(std::filesystem::exists(failed + ".tmp"));
  auto broken = [](size_t) -> absl::StatusOr<std::string_view> {
    return absl::DataLossError("block unreadable");
  };
  EXPECT_EQ(WriteSafetensors(failed, layouts, {}, broken).code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(std::filesystem::exists(failed + ".tmp"));
}

TEST(Safetensors, EnforcesTheRules) {
  const auto k = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(ParseCode(R"({"a":{"dtype":"U32","shape":[1],"data_offsets":[0,4]}})", "xxx"), k)
      << "data shorter than the offsets";
  EXPECT_EQ(ParseCode(R"({"a":{"dtype":"U32","shape":[1],"data_offsets":[0,4]}})", "xxxxx"), k)
      << "trailing bytes no tensor covers";
  EXPECT_EQ(ParseCode(R"({"a":{"dtype":"U32","shape":[2],"data_offsets":[0,4]}})", "xxxx"), k)
      << "shape and offsets disagree";
  EXPECT_EQ(ParseCode(R"({"a":{"dtype":"U32","shape":[1],"data_offsets":[0,4]},)"
                      R"("b":{"dtype":"U32","shape":[1],"data_offsets":[2,6]}})",
                      "xxxxxx"),
            k)
      << "overlap";
  EXPECT_EQ(ParseCode(R"({"a":{"dtype":"U32","shape":[1],"data_offsets":[4,8]}})", "xxxxxxxx"), k)
      << "gap at the start";
  EXPECT_EQ(ParseCode(R"({"a":{"dtype":"U32","shape":[1],"data_offsets":[0,4]},)"
                      R"("a":{"dtype":"U32","shape":[1],"data_offsets":[4,8]}})",
                      "xxxxxxxx"),
            k)
      << "duplicate name";
  EXPECT_EQ(ParseCode(R"({"a":{"dtype":"X9","shape":[1],"data_offsets":[0,4]}})", "xxxx"), k);
  EXPECT_EQ(ParseCode(R"({"a":{"dtype":"U32","shape":[-1],"data_offsets":[0,4]}})", "xxxx"), k);
  EXPECT_EQ(ParseCode(R"({"a":{"dtype":"U32","shape":[4294967296,4294967296,16],)"
                      R"("data_offsets":[0,4]}})",
                      "xxxx"),
            k)
      << "size overflow";
  EXPECT_EQ(ParseCode(R"({"__metadata__":{"k":1}})", ""), k) << "metadata values are strings";
  EXPECT_EQ(ParseCode(R"([1,2])", ""), k);
  EXPECT_EQ(ParseCode(R"({"a":)", ""), k);
  std::string huge(8, '\0');
  huge[4] = 0x10;  // header length 2^36
  EXPECT_EQ(ParseSafetensorsHeader(huge, huge.size()).status().code(), k);
  EXPECT_EQ(ParseSafetensorsHeader("abc", 3).status().code(), k);
}

class KvFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage::StoreOptions options;
    options.data_dir = dir_.Sub("db");
    store_ = *storage::EpisodeStore::Open(options);
    auto cfs = store_->kv_column_families();
    kv_ = std::make_unique<KvCacheStore>(cfs.db, cfs.blocks, cfs.meta, KvStoreOptions{});
    ASSERT_TRUE(kv_->Recover().ok());
    std::filesystem::create_directories(dir_.Sub("exports"));
  }

  // Saves a cache quantized from random floats.
  void SaveRandom(const std::string& agent, const ModelSpec& model, size_t token_count) {
    std::vector<uint32_t> tokens(token_count);
    std::iota(tokens.begin(), tokens.end(), 1000);
    auto save = *kv_->BeginSave("t", agent, model, tokens);
    SaveAssembler assembler(model, tokens.size(), false, save.get());
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    for (uint32_t layer = 0; layer < model.n_layers; ++layer) {
      for (uint32_t block = 0; block < BlockCount(token_count); ++block) {
        size_t count = model.FloatTensorBytes(BlockTokenCount(token_count, block)) / 2;
        std::vector<uint16_t> keys(count), values(count);
        for (auto& v : keys) v = FromFloat(normal(rng), model.dtype);
        for (auto& v : values) v = FromFloat(normal(rng), model.dtype);
        BlockMessage message;
        message.layer = layer;
        message.block = block;
        message.keys = std::string_view(reinterpret_cast<const char*>(keys.data()), count * 2);
        message.values = std::string_view(reinterpret_cast<const char*>(values.data()), count * 2);
        ASSERT_TRUE(assembler.Add(message).ok());
      }
    }
    ASSERT_TRUE(save->Commit().ok());
  }

  engram::testing::TempDir dir_;
  std::unique_ptr<storage::EpisodeStore> store_;
  std::unique_ptr<KvCacheStore> kv_;
};

TEST_F(KvFilesTest, ExportImportRoundTripEqualsTheOriginal) {
  for (FloatType dtype : {FloatType::kFloat16, FloatType::kBFloat16}) {
    ModelSpec model{"m-" + FloatTypeName(dtype), 2, 2, 128, dtype, CodecParams{4, 64}};
    SaveRandom("a", model, 300);
    std::string path = dir_.Sub("exports/a.safetensors");
    auto exported = ExportCache(kv_.get(), "t", "a", model.model_id, path);
    ASSERT_TRUE(exported.ok()) << exported.status();
    EXPECT_EQ(exported->tokens, 300u);

    // The file follows the agent-memory layout.
    auto reader = SafetensorsReader::Open(::open(path.c_str(), O_RDONLY));
    ASSERT_TRUE(reader.ok()) << reader.status();
    const TensorInfo* weights = reader->header().Find("L1_B1_V_weights");
    ASSERT_NE(weights, nullptr);
    EXPECT_EQ(weights->shape, (std::vector<uint64_t>{1, 2, 44, 16}));
    EXPECT_EQ(reader->header().Find("L0_B0_K_scales")->shape,
              (std::vector<uint64_t>{1, 2, 256, 2}));
    EXPECT_EQ(reader->header().metadata.at("total_tokens"), "300");
    EXPECT_EQ(reader->header().metadata.at("kv_group_size"), "64");

    auto imported = ImportCache(kv_.get(), "t", path, "b");
    ASSERT_TRUE(imported.ok()) << imported.status();
    auto original = *kv_->GetManifest("t", "a", model.model_id);
    EXPECT_EQ(imported->model, model);
    EXPECT_EQ(imported->tokens, original.tokens);
    for (uint32_t layer = 0; layer < 2; ++layer) {
      for (uint32_t block = 0; block < 2; ++block) {
        EXPECT_EQ(**kv_->ReadBlock("t", *imported, layer, block),
                  **kv_->ReadBlock("t", original, layer, block));
      }
    }
  }
}

TEST_F(KvFilesTest, DamagedFilesAreRejectedAndStoreNothing) {
  ModelSpec model{"m", 2, 2, 128, FloatType::kFloat16, CodecParams{4, 64}};
  SaveRandom("a", model, 260);
  std::string path = dir_.Sub("exports/a.safetensors");
  ASSERT_TRUE(ExportCache(kv_.get(), "t", "a", "m", path).ok());
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& content) {
    std::string damaged = dir_.Sub("exports/damaged.safetensors");
    std::ofstream(damaged, std::ios::binary) << content;
    return damaged;
  };
  uint64_t stored_before = kv_->Stats().unique_blocks;
  // Truncated data, a truncated header, a flipped metadata value.
  EXPECT_EQ(
      ImportCache(kv_.get(), "t", write(bytes.substr(0, bytes.size() - 1)), "x").status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ImportCache(kv_.get(), "t", write(bytes.substr(0, 100)), "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  std::string wrong_total = bytes;
  size_t at = wrong_total.find("\"total_tokens\":\"260\"");
  ASSERT_NE(at, std::string::npos);
  wrong_total[at + 17] = '3';
  EXPECT_EQ(ImportCache(kv_.get(), "t", write(wrong_total), "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv_->GetManifest("t", "x", "m").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(kv_->Stats().unique_blocks, stored_before);
}

TEST_F(KvFilesTest, ClientPathsStayInsideTheExportDirectory) {
  const std::string root = dir_.Sub("exports");
  std::filesystem::create_directories(root + "/sub");
  EXPECT_TRUE(ConfinedPath(root, "a.safetensors").ok());
  EXPECT_TRUE(ConfinedPath(root, "sub/a.safetensors").ok());
  EXPECT_EQ(ConfinedPath(root, "/etc/passwd").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ConfinedPath(root, "../x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ConfinedPath(root, "sub/../../x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ConfinedPath(root, "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ConfinedPath(root, "missing/x").status().code(), absl::StatusCode::kNotFound);
  std::filesystem::create_directory_symlink(dir_.path(), root + "/escape");
  EXPECT_EQ(ConfinedPath(root, "escape/db/x").status().code(), absl::StatusCode::kPermissionDenied);
  std::filesystem::create_symlink(dir_.Sub("outside"), root + "/link.safetensors");
  EXPECT_EQ(ConfinedPath(root, "link.safetensors").status().code(),
            absl::StatusCode::kPermissionDenied);
  // Hostile names: too long for the filesystem, control characters, a path
  // beyond the limit. Refused before any file is touched, the message short
  // and free of the server's directory.
  EXPECT_TRUE(ConfinedPath(root, std::string(kMaxClientPathComponentBytes, 'n')).ok());
  for (const std::string& bad :
       {std::string(300, 'p'), std::string("a\nb.safetensors"), std::string("a\r\nb"),
        std::string("tab\there"), std::string("nul\0x", 5), std::string("del\x7f"),
        std::string(kMaxClientPathBytes + 1, 'q'), "sub/" + std::string(256, 'r')}) {
    absl::StatusOr<std::string> path = ConfinedPath(root, bad);
    EXPECT_EQ(path.status().code(), absl::StatusCode::kInvalidArgument) << bad.size();
    EXPECT_LT(path.status().message().size(), 200u) << path.status();
    EXPECT_EQ(path.status().message().find(root), std::string::npos) << path.status();
  }
  EXPECT_FALSE(std::filesystem::exists(root + "/a\nb.safetensors"));
}

}  // namespace
}  // namespace engram::kvcache
