#include "storage/kvcache/kv_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "storage/kvcache/safetensors.h"

namespace engram::kvcache {
namespace {

namespace fs = std::filesystem;

std::string TensorName(uint32_t layer, uint32_t block, char kv, std::string_view part) {
  return absl::StrCat("L", layer, "_B", block, "_", std::string(1, kv), "_", std::string(part));
}

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("KV cache file: ", what));
}

absl::StatusOr<uint32_t> MetadataUint(const std::map<std::string, std::string>& metadata,
                                      const std::string& key) {
  auto it = metadata.find(key);
  if (it == metadata.end()) return Invalid(absl::StrCat("metadata '", key, "' is missing"));
  uint32_t value = 0;
  if (!absl::SimpleAtoi(it->second, &value)) {
    return Invalid(absl::StrCat("metadata '", key, "' is not an unsigned integer: '",
                                it->second.substr(0, 40), "'"));
  }
  return value;
}

}  // namespace

// A client's path as error messages show it: at most 64 bytes of it.
std::string Shown(const std::string& relative) {
  return relative.size() <= 64 ? relative : absl::StrCat(relative.substr(0, 61), "...");
}

absl::StatusOr<std::string> ConfinedPath(const std::string& root, const std::string& relative) {
  if (relative.empty() || relative.size() > kMaxClientPathBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("path is ", relative.size(), " bytes; it must be 1..", kMaxClientPathBytes));
  }
  for (size_t i = 0; i < relative.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(relative[i]);
    if (c < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat("path holds a control character (byte ",
                                                     static_cast<int>(c), " at offset ", i, ")"));
    }
  }
  if (relative.front() == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("path '", Shown(relative), "' must be relative to the KV export directory"));
  }
  std::vector<std::string> parts = absl::StrSplit(relative, '/', absl::SkipEmpty());
  for (const std::string& part : parts) {
    if (part == "." || part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("path '", Shown(relative), "' must not contain '.' or '..' components"));
    }
    if (part.size() > kMaxClientPathComponentBytes) {
      return absl::InvalidArgumentError(absl::StrCat("path '", Shown(relative), "' has a name of ",
                                                     part.size(), " bytes; names may have at most ",
                                                     kMaxClientPathComponentBytes));
    }
  }
  if (parts.empty()) return absl::InvalidArgumentError("path names no file");
  std::error_code ec;
  fs::create_directories(root, ec);
  fs::path real_root = fs::canonical(root, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("KV export directory '", root, "' is unusable: ", ec.message()));
  }
  fs::path parent = real_root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) parent /= parts[i];
  fs::path real_parent = fs::canonical(parent, ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat("directory of '", Shown(relative), "' does not exist"));
  }
  std::string root_text = real_root.string(), parent_text = real_parent.string();
  if (parent_text != root_text && parent_text.rfind(root_text + "/", 0) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("path '", Shown(relative), "' leaves the KV export directory"));
  }
  fs::path target = real_parent / parts.back();
  if (fs::is_symlink(fs::symlink_status(target, ec))) {
    return absl::PermissionDeniedError(absl::StrCat("path '", Shown(relative), "' is a symlink"));
  }
  return target.string();
}

absl::StatusOr<ExportResult> ExportCache(KvCacheStore* store, const std::string& tenant,
                                         const std::string& agent_id, const std::string& model_id,
                                         const std::string& path) {
  absl::StatusOr<CacheManifest> manifest = store->GetManifest(tenant, agent_id, model_id);
  if (!manifest.ok()) return manifest.status();
  const ModelSpec& model = manifest->model;
  const TensorDtype scale_dtype =
      model.dtype == FloatType::kFloat16 ? TensorDtype::kF16 : TensorDtype::kBF16;
  // Six tensors per layer-block, layer by layer: K weights, scales, biases,
  // then V's; their bytes are the stored block's parts in that order.
  constexpr size_t kTensorsPerBlock = 6;
  std::vector<TensorLayout> tensors;
  std::vector<std::pair<uint32_t, uint32_t>> layer_blocks;
  ExportResult result;
  for (uint32_t layer = 0; layer < model.n_layers; ++layer) {
    for (uint32_t block = 0; block < manifest->block_count(); ++block) {
      layer_blocks.emplace_back(layer, block);
      const uint64_t tokens = manifest->BlockTokens(block);
      for (char kv : {'K', 'V'}) {
        tensors.push_back({TensorName(layer, block, kv, "weights"),
                           TensorDtype::kU32,
                           {1, model.n_kv_heads, tokens, model.codec.WordsPerRow(model.head_dim)}});
        for (std::string_view part : {"scales", "biases"}) {
          tensors.push_back(
              {TensorName(layer, block, kv, part),
               scale_dtype,
               {1, model.n_kv_heads, tokens, model.codec.GroupsPerRow(model.head_dim)}});
        }
      }
      result.bytes += model.BlockBytes(tokens);
    }
  }
  // The blocks are read ahead in file order and held one at a time while
  // their six tensors are written: the cache is never all in memory.
  KvCacheStore::BlockPrefetcher prefetcher(store, tenant, *manifest, layer_blocks);
  BlockBytes current;
  size_t offset = 0;
  TensorSource source = [&](size_t index) -> absl::StatusOr<std::string_view> {
    if (index % kTensorsPerBlock == 0) {
      absl::StatusOr<BlockBytes> next = prefetcher.Next();
      if (!next.ok()) return next.status();
      current = *std::move(next);
      offset = 0;
    }
    const uint64_t size = tensors[index].Bytes();
    if (offset + size > current->size()) {
      return absl::DataLossError(absl::StrCat("stored block of ", tensors[index].name,
                                              " is shorter than its model's geometry"));
    }
    std::string_view data = std::string_view(*current).substr(offset, size);
    offset += size;
    return data;
  };
  std::string token_sequence = nlohmann::json(manifest->tokens).dump();
  std::map<std::string, std::string> metadata = {
      {"agent_id", agent_id},
      {"model_id", model.model_id},
      {"n_layers", absl::StrCat(model.n_layers)},
      {"n_kv_heads", absl::StrCat(model.n_kv_heads)},
      {"head_dim", absl::StrCat(model.head_dim)},
      {"block_tokens", absl::StrCat(kBlockTokens)},
      {"total_tokens", absl::StrCat(manifest->tokens.size())},
      {"token_sequence", token_sequence},
      {"kv_bits", absl::StrCat(model.codec.bits)},
      {"kv_group_size", absl::StrCat(model.codec.group_size)}};
  if (absl::Status written = WriteSafetensors(path, tensors, metadata, source); !written.ok()) {
    return written;
  }
  result.tokens = manifest->tokens.size();
  return result;
}

absl::StatusOr<CacheManifest> ImportCache(KvCacheStore* store, const std::string& tenant,
                                          const std::string& path,
                                          const std::string& agent_override) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("no file '", path, "'"));
    if (errno == ELOOP)
      return absl::PermissionDeniedError(absl::StrCat("'", path, "' is a symlink"));
    return absl::InternalError(absl::StrCat("opening '", path, "': ", std::strerror(errno)));
  }
  absl::StatusOr<SafetensorsReader> reader = SafetensorsReader::Open(fd);
  if (!reader.ok()) return reader.status();
  const SafetensorsHeader& header = reader->header();
  const auto& metadata = header.metadata;

  ModelSpec model;
  auto model_id = metadata.find("model_id");
  if (model_id == metadata.end()) return Invalid("metadata 'model_id' is missing");
  model.model_id = model_id->second;
  std::string agent_id = agent_override;
  if (agent_id.empty()) {
    auto agent = metadata.find("agent_id");
    if (agent == metadata.end()) return Invalid("metadata 'agent_id' is missing");
    agent_id = agent->second;
  }
  for (auto [key, field] :
       {std::pair{"n_layers", &model.n_layers}, std::pair{"n_kv_heads", &model.n_kv_heads},
        std::pair{"head_dim", &model.head_dim}}) {
    absl::StatusOr<uint32_t> value = MetadataUint(metadata, key);
    if (!value.ok()) return value.status();
    *field = *value;
  }
  absl::StatusOr<uint32_t> bits = MetadataUint(metadata, "kv_bits");
  absl::StatusOr<uint32_t> group = MetadataUint(metadata, "kv_group_size");
  absl::StatusOr<uint32_t> block_tokens = MetadataUint(metadata, "block_tokens");
  absl::StatusOr<uint32_t> total_tokens = MetadataUint(metadata, "total_tokens");
  for (const auto* value : {&bits, &group, &block_tokens, &total_tokens}) {
    if (!value->ok()) return value->status();
  }
  if (*block_tokens != kBlockTokens) {
    return Invalid(absl::StrCat("block_tokens is ", *block_tokens, "; Engram stores blocks of ",
                                kBlockTokens));
  }
  model.codec = CodecParams{static_cast<int>(*bits), static_cast<int>(*group)};
  if (absl::Status valid = model.Validate(); !valid.ok()) return valid;
  if (model.n_kv_heads > 0) {
    const TensorInfo* first = header.Find(TensorName(0, 0, 'K', "scales"));
    if (first == nullptr) return Invalid("tensor L0_B0_K_scales is missing");
    if (first->dtype == TensorDtype::kBF16) {
      model.dtype = FloatType::kBFloat16;
    } else if (first->dtype != TensorDtype::kF16) {
      return Invalid("scales must be F16 or BF16");
    }
  }
  auto sequence = metadata.find("token_sequence");
  if (sequence == metadata.end()) return Invalid("metadata 'token_sequence' is missing");
  nlohmann::json parsed = nlohmann::json::parse(sequence->second, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_array()) {
    return Invalid("token_sequence must be a JSON array of token ids");
  }
  std::vector<uint32_t> tokens;
  tokens.reserve(parsed.size());
  for (const nlohmann::json& token : parsed) {
    if (!token.is_number_unsigned() || token.get<uint64_t>() > UINT32_MAX) {
      return Invalid("token_sequence holds a value that is not a uint32 token id");
    }
    tokens.push_back(static_cast<uint32_t>(token.get<uint64_t>()));
  }
  if (tokens.size() != *total_tokens) {
    return Invalid(
        absl::StrCat("total_tokens is ", *total_tokens, " but token_sequence has ", tokens.size()));
  }
  const size_t blocks = BlockCount(tokens.size());
  if (header.tensors.size() != size_t{6} * model.n_layers * blocks) {
    return Invalid(absl::StrCat("expected ", size_t{6} * model.n_layers * blocks, " tensors for ",
                                model.n_layers, " layers x ", blocks, " blocks, found ",
                                header.tensors.size()));
  }
  absl::StatusOr<std::unique_ptr<KvCacheStore::PendingSave>> save =
      store->BeginSave(tenant, agent_id, model, tokens);
  if (!save.ok()) return save.status();
  SaveAssembler assembler(model, tokens.size(), /*quantized_input=*/true, save->get());
  const TensorDtype scale_dtype =
      model.dtype == FloatType::kFloat16 ? TensorDtype::kF16 : TensorDtype::kBF16;
  for (uint32_t layer = 0; layer < model.n_layers; ++layer) {
    for (uint32_t block = 0; block < blocks; ++block) {
      const uint64_t count = BlockTokenCount(tokens.size(), block);
      std::string data[6];
      int index = 0;
      for (char kv : {'K', 'V'}) {
        for (std::string_view part : {"weights", "scales", "biases"}) {
          std::string name = TensorName(layer, block, kv, part);
          const TensorInfo* tensor = header.Find(name);
          if (tensor == nullptr) return Invalid(absl::StrCat("tensor ", name, " is missing"));
          bool weights = part == "weights";
          std::vector<uint64_t> shape = {1, model.n_kv_heads, count,
                                         weights ? model.codec.WordsPerRow(model.head_dim)
                                                 : model.codec.GroupsPerRow(model.head_dim)};
          if (tensor->dtype != (weights ? TensorDtype::kU32 : scale_dtype) ||
              tensor->shape != shape) {
            return Invalid(absl::StrCat(
                "tensor ", name, " must be ",
                std::string(TensorDtypeName(weights ? TensorDtype::kU32 : scale_dtype)), " [1, ",
                model.n_kv_heads, ", ", count, ", ", shape[3], "]"));
          }
          absl::StatusOr<std::string> bytes = reader->Read(*tensor);
          if (!bytes.ok()) return bytes.status();
          data[index++] = *std::move(bytes);
        }
      }
      BlockMessage message;
      message.layer = layer;
      message.block = block;
      message.quantized_keys = {data[0], data[1], data[2]};
      message.quantized_values = {data[3], data[4], data[5]};
      if (absl::Status added = assembler.Add(message); !added.ok()) return added;
    }
  }
  absl::StatusOr<SaveResult> committed = (*save)->Commit();
  if (!committed.ok()) return committed.status();
  return store->GetManifest(tenant, agent_id, model.model_id);
}

}  // namespace engram::kvcache
