// Fuzz target for the KV cache store's untrusted input: the safetensors
// header parser (import files) and the save-stream assembler (SaveCache
// messages). The first byte picks the target. Both must answer with a status
// for any input, never crash or read out of bounds, and what they accept
// must satisfy the format's invariants (checked here; a violation aborts).
//
// Built three ways: `kv_fuzz_smoke` (seeds + deterministic mutations, every
// ctest run), `kv_fuzz_libfuzzer` (tests/fuzz/run-kv-libfuzzer.sh: clang,
// libFuzzer + AddressSanitizer, a short coverage-guided run in every ctest
// run when clang is installed) and by hand for longer runs (README.md).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "storage/kvcache/safetensors.h"
#include "storage/kvcache/save_assembler.h"

namespace {

using namespace engram::kvcache;

void Check(bool condition) {
  if (!condition) std::abort();
}

void FuzzSafetensors(std::string_view input) {
  absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(input, input.size());
  if (!header.ok()) {
    Check(!header.status().message().empty());
    return;
  }
  uint64_t expected = 0;
  for (const TensorInfo& tensor : header->tensors) {
    Check(tensor.begin == expected && tensor.end >= tensor.begin);
    expected = tensor.end;
  }
  Check(header->data_start + expected == input.size());
}

// Reads little pieces of the input as parameters.
class Reader {
 public:
  explicit Reader(std::string_view input) : rest_(input) {}
  uint8_t Byte() {
    if (rest_.empty()) return 0;
    uint8_t value = static_cast<uint8_t>(rest_.front());
    rest_.remove_prefix(1);
    return value;
  }
  uint16_t Short() { return static_cast<uint16_t>(Byte() | (Byte() << 8)); }
  std::string_view Bytes(size_t count) {
    std::string_view out = rest_.substr(0, count);
    rest_.remove_prefix(out.size());
    return out;
  }
  bool empty() const { return rest_.empty(); }

 private:
  std::string_view rest_;
};

class CheckingSink : public BlockSink {
 public:
  CheckingSink(const ModelSpec& model, size_t tokens) : model_(model), tokens_(tokens) {}
  absl::Status PutBlock(uint32_t layer, uint32_t block, std::string bytes) override {
    Check(layer < model_.n_layers && block < BlockCount(tokens_));
    Check(bytes.size() == model_.BlockBytes(BlockTokenCount(tokens_, block)));
    return absl::OkStatus();
  }

 private:
  const ModelSpec model_;
  const size_t tokens_;
};

void FuzzAssembler(std::string_view input) {
  Reader in(input);
  ModelSpec model;
  model.model_id = "fuzz";
  model.n_layers = 1 + in.Byte() % 3;
  model.n_kv_heads = 1 + in.Byte() % 2;
  const uint32_t dims[] = {32, 64, 128};
  model.head_dim = dims[in.Byte() % 3];
  model.codec.bits = in.Byte() % 2 ? 8 : 4;
  const int groups[] = {32, 64, 128};
  model.codec.group_size = groups[in.Byte() % 3];
  model.dtype = in.Byte() % 2 ? FloatType::kBFloat16 : FloatType::kFloat16;
  if (!model.Validate().ok()) return;
  const size_t tokens = 1 + in.Short() % 600;
  const bool quantized = in.Byte() % 2;
  CheckingSink sink(model, tokens);
  SaveAssembler assembler(model, tokens, quantized, &sink);
  while (!in.empty()) {
    BlockMessage message;
    message.layer = in.Byte() % 4;
    message.block = in.Byte() % 4;
    // Sizes are either exact for the claimed block or taken from the input.
    const uint32_t count =
        message.block < BlockCount(tokens) ? BlockTokenCount(tokens, message.block) : 1;
    const bool exact = in.Byte() % 4 != 0;
    auto size = [&](size_t exact_size) { return exact ? exact_size : size_t{in.Short()}; };
    if (quantized) {
      for (QuantizedPart* part : {&message.quantized_keys, &message.quantized_values}) {
        part->weights = in.Bytes(size(model.WeightBytes(count)));
        part->scales = in.Bytes(size(model.ScaleBytes(count)));
        part->biases = in.Bytes(size(model.ScaleBytes(count)));
      }
    } else {
      message.keys = in.Bytes(size(model.FloatTensorBytes(count)));
      message.values = in.Bytes(size(model.FloatTensorBytes(count)));
    }
    absl::Status added = assembler.Add(message);
    if (!added.ok()) Check(!added.message().empty());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    FuzzSafetensors(input);
  } else {
    FuzzAssembler(input);
  }
  return 0;
}
