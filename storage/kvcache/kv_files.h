// Export and import of KV caches as safetensors files in the layout of the
// agent-memory project ("Agent Memory Below the Prompt"):
//   L{layer}_B{block}_{K,V}_weights  uint32 [1, n_kv_heads, tokens, head_dim * bits / 32]
//   L{layer}_B{block}_{K,V}_scales   F16/BF16 [1, n_kv_heads, tokens, head_dim / group]
//   L{layer}_B{block}_{K,V}_biases   (same)
// and metadata agent_id, model_id, n_layers, n_kv_heads, head_dim,
// block_tokens, total_tokens, token_sequence (a JSON array), kv_bits,
// kv_group_size. The float type of the scales is the model's dtype.
//
// Paths given by clients are confined to one directory (ConfinedPath); the
// functions here take an already confined path.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "storage/kvcache/kv_cache_store.h"

namespace engram::kvcache {

// Longest client path, and longest name in it (the filesystem's NAME_MAX).
inline constexpr size_t kMaxClientPathBytes = 1024;
inline constexpr size_t kMaxClientPathComponentBytes = 255;

// Resolves `relative` (a client-supplied path) inside `root`: it must be
// 1..kMaxClientPathBytes long, relative, free of control characters (NUL,
// newlines, ...), without "." or ".." components or names longer than
// kMaxClientPathComponentBytes, and every existing directory on the way
// must resolve (symlinks followed) to somewhere inside `root`. The last
// component must not be a symlink (callers open it with O_NOFOLLOW).
// INVALID_ARGUMENT, NOT_FOUND (a missing directory) or PERMISSION_DENIED
// otherwise; messages show at most 64 bytes of the path and never `root`.
absl::StatusOr<std::string> ConfinedPath(const std::string& root, const std::string& relative);

struct ExportResult {
  uint64_t bytes = 0;
  uint64_t tokens = 0;
};

// Writes the agent's cache of `model_id` to `path` (atomically).
absl::StatusOr<ExportResult> ExportCache(KvCacheStore* store, const std::string& tenant,
                                         const std::string& agent_id, const std::string& model_id,
                                         const std::string& path);

// Reads a file and saves it as the cache of its agent_id metadata (or of
// `agent_override` when not empty); atomic like any save. INVALID_ARGUMENT
// for files that break the safetensors rules or the layout above.
absl::StatusOr<CacheManifest> ImportCache(KvCacheStore* store, const std::string& tenant,
                                          const std::string& path,
                                          const std::string& agent_override);

}  // namespace engram::kvcache
