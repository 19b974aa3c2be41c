#include "storage/kvcache/kv_model.h"

#include <openssl/evp.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace engram::kvcache {
namespace {

Digest Sha256(const std::string& bytes) {
  Digest digest{};
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest.data(), &length, EVP_sha256(), nullptr);
  return digest;
}

void AppendLe32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

}  // namespace

absl::Status ModelSpec::Validate() const {
  if (model_id.empty() || model_id.size() > kMaxModelIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_id must be 1-", kMaxModelIdBytes, " bytes"));
  }
  if (n_layers == 0 || n_layers > kMaxLayers) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_layers must be 1-", kMaxLayers, ", got ", n_layers));
  }
  if (n_kv_heads == 0 || n_kv_heads > kMaxKvHeads) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_kv_heads must be 1-", kMaxKvHeads, ", got ", n_kv_heads));
  }
  if (head_dim == 0 || head_dim > kMaxHeadDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim must be 1-", kMaxHeadDim, ", got ", head_dim));
  }
  return ValidateCodec(codec, head_dim);
}

std::string ModelSpec::Fingerprint() const {
  std::string canonical = model_id;
  canonical.push_back('\0');
  for (uint32_t value :
       {n_layers, n_kv_heads, head_dim, static_cast<uint32_t>(dtype),
        static_cast<uint32_t>(codec.bits), static_cast<uint32_t>(codec.group_size)}) {
    AppendLe32(canonical, value);
  }
  Digest digest = Sha256(canonical);
  return std::string(reinterpret_cast<const char*>(digest.data()), 16);
}

std::string ModelSpec::Describe() const {
  return absl::StrCat(model_id, " (", n_layers, " layers x ", n_kv_heads, " KV heads x ", head_dim,
                      ", ", FloatTypeName(dtype), ", ", codec.bits, "-bit/", codec.group_size, ")");
}

size_t ModelSpec::WeightBytes(size_t tokens) const {
  return size_t{n_kv_heads} * tokens * codec.WordsPerRow(head_dim) * sizeof(uint32_t);
}

size_t ModelSpec::ScaleBytes(size_t tokens) const {
  return size_t{n_kv_heads} * tokens * codec.GroupsPerRow(head_dim) * sizeof(uint16_t);
}

size_t ModelSpec::FloatTensorBytes(size_t tokens) const {
  return size_t{n_kv_heads} * tokens * head_dim * sizeof(uint16_t);
}

std::vector<Digest> ChainDigests(std::span<const uint32_t> tokens) {
  std::vector<Digest> digests;
  digests.reserve(BlockCount(tokens.size()));
  std::string input;
  for (size_t start = 0; start < tokens.size(); start += kBlockTokens) {
    input.clear();
    if (!digests.empty()) {
      input.append(reinterpret_cast<const char*>(digests.back().data()), digests.back().size());
    }
    size_t end = std::min(tokens.size(), start + kBlockTokens);
    for (size_t i = start; i < end; ++i) AppendLe32(input, tokens[i]);
    digests.push_back(Sha256(input));
  }
  return digests;
}

}  // namespace engram::kvcache
