// SaveAssembler: turns the messages of a streamed save into stored
// layer-blocks. The gRPC service (server/kv_cache_service.cc) converts each
// SaveCache message to a BlockMessage and hands it here; the fuzz target
// (tests/fuzz/kv_fuzz.cc) drives it directly.
//
// A block message carries one layer x one 256-token block, K and V, either
// as model floats ([n_kv_heads, tokens, head_dim], quantized here) or already
// quantized (weights [n_kv_heads, tokens, head_dim * bits / 32] uint32,
// scales and biases [n_kv_heads, tokens, head_dim / group] in the model's
// float type). Everything is checked (indices, byte counts, finite values)
// before the block reaches the sink; a bad message is INVALID_ARGUMENT and
// the caller drops the whole save.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "storage/kvcache/kv_model.h"

namespace engram::kvcache {

// Where assembled layer-blocks go (KvCacheStore::PendingSave in the server).
class BlockSink {
 public:
  virtual ~BlockSink() = default;
  virtual absl::Status PutBlock(uint32_t layer, uint32_t block, std::string bytes) = 0;
};

struct QuantizedPart {
  std::string_view weights;
  std::string_view scales;
  std::string_view biases;
};

struct BlockMessage {
  uint32_t layer = 0;
  uint32_t block = 0;
  // Float input.
  std::string_view keys;
  std::string_view values;
  // Quantized input.
  QuantizedPart quantized_keys;
  QuantizedPart quantized_values;
};

class SaveAssembler {
 public:
  SaveAssembler(ModelSpec model, size_t total_tokens, bool quantized_input, BlockSink* sink)
      : model_(std::move(model)),
        total_tokens_(total_tokens),
        quantized_input_(quantized_input),
        sink_(sink) {}

  absl::Status Add(const BlockMessage& message);

 private:
  absl::Status AddFloat(const BlockMessage& message, uint32_t tokens, std::string* block);
  absl::Status AddQuantized(const BlockMessage& message, uint32_t tokens, std::string* block);

  const ModelSpec model_;
  const size_t total_tokens_;
  const bool quantized_input_;
  BlockSink* sink_;
};

}  // namespace engram::kvcache
