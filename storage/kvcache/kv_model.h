// What a KV cache belongs to and how its blocks are named.
//
// ModelSpec is the model id plus the geometry that fixes a cache's byte
// layout. Its fingerprint scopes stored blocks, so blocks never cross models
// or geometries even when two models share an id by mistake.
//
// A block is one layer x kBlockTokens tokens (the last block of a cache may
// be shorter). Its digest is a prefix hash chain, as in SGLang's radix cache:
// digest(b) = SHA-256(digest(b - 1) || token ids of block b as uint32 LE),
// with digest(-1) empty, so equal digests mean equal token prefixes and
// agents that share a prompt prefix share blocks.
//
// A block's bytes: K then V, each weights [heads, tokens, head_dim * bits /
// 32] uint32, scales [heads, tokens, head_dim / group] and biases (same
// shape) in the model's float type, all little-endian, no padding.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "storage/kvcache/kv_codec.h"

namespace engram::kvcache {

inline constexpr uint32_t kBlockTokens = 256;

// Bounds on one model's geometry (the protocol's sanity limits).
inline constexpr uint32_t kMaxLayers = 1024;
inline constexpr uint32_t kMaxKvHeads = 1024;
inline constexpr uint32_t kMaxHeadDim = 1024;
inline constexpr size_t kMaxModelIdBytes = 256;

using Digest = std::array<uint8_t, 32>;

struct ModelSpec {
  std::string model_id;
  uint32_t n_layers = 0;
  uint32_t n_kv_heads = 0;
  uint32_t head_dim = 0;
  FloatType dtype = FloatType::kFloat16;
  CodecParams codec;

  // INVALID_ARGUMENT naming the offending field.
  absl::Status Validate() const;
  // 16 bytes identifying the id and the whole geometry.
  std::string Fingerprint() const;
  // "llama-3.1-8b (32 layers x 8 KV heads x 128, float16, 4-bit/64)".
  std::string Describe() const;
  bool operator==(const ModelSpec&) const = default;

  // Bytes of one tensor part of one layer-block of `tokens` tokens.
  size_t WeightBytes(size_t tokens) const;
  size_t ScaleBytes(size_t tokens) const;  // scales; biases are the same size
  // K + V, quantized: the stored size of one layer-block.
  size_t BlockBytes(size_t tokens) const {
    return 2 * (WeightBytes(tokens) + 2 * ScaleBytes(tokens));
  }
  // One of K or V as model floats: [heads, tokens, head_dim].
  size_t FloatTensorBytes(size_t tokens) const;
};

// Tokens of block `block` of a cache of `total_tokens` tokens.
inline uint32_t BlockTokenCount(size_t total_tokens, size_t block) {
  size_t start = block * kBlockTokens;
  return static_cast<uint32_t>(std::min<size_t>(kBlockTokens, total_tokens - start));
}
inline size_t BlockCount(size_t total_tokens) {
  return (total_tokens + kBlockTokens - 1) / kBlockTokens;
}

// The chain digests of every block of `tokens` (the last one may be partial).
std::vector<Digest> ChainDigests(std::span<const uint32_t> tokens);

}  // namespace engram::kvcache
