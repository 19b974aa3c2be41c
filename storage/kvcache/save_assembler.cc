#include "storage/kvcache/save_assembler.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace engram::kvcache {
namespace {

// Copies possibly unaligned wire bytes into uint16 values.
std::vector<uint16_t> ToHalfWords(std::string_view bytes) {
  std::vector<uint16_t> words(bytes.size() / 2);
  std::memcpy(words.data(), bytes.data(), words.size() * 2);
  return words;
}

absl::Status CheckSize(absl::string_view field, size_t actual, size_t expected, uint32_t layer,
                       uint32_t block, absl::string_view layout) {
  if (actual == expected) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " block ", block, ": ", field,
                                                 " has ", actual, " bytes, expected ", expected,
                                                 " (", layout, ")"));
}

}  // namespace

absl::Status SaveAssembler::Add(const BlockMessage& message) {
  if (message.layer >= model_.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer ", message.layer, " is out of range (the model has ", model_.n_layers, " layers)"));
  }
  if (message.block >= BlockCount(total_tokens_)) {
    return absl::InvalidArgumentError(absl::StrCat("block ", message.block, " is out of range (",
                                                   total_tokens_, " tokens make ",
                                                   BlockCount(total_tokens_), " blocks)"));
  }
  uint32_t tokens = BlockTokenCount(total_tokens_, message.block);
  std::string block;
  absl::Status built =
      quantized_input_ ? AddQuantized(message, tokens, &block) : AddFloat(message, tokens, &block);
  if (!built.ok()) return built;
  return sink_->PutBlock(message.layer, message.block, std::move(block));
}

absl::Status SaveAssembler::AddFloat(const BlockMessage& message, uint32_t tokens,
                                     std::string* block) {
  const size_t expected = model_.FloatTensorBytes(tokens);
  const std::string layout = absl::StrCat("[", model_.n_kv_heads, ", ", tokens, ", ",
                                          model_.head_dim, "] ", FloatTypeName(model_.dtype));
  if (!message.quantized_keys.weights.empty() || !message.quantized_values.weights.empty()) {
    return absl::InvalidArgumentError("quantized tensors in a save declared as float input");
  }
  if (absl::Status s =
          CheckSize("keys", message.keys.size(), expected, message.layer, message.block, layout);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckSize("values", message.values.size(), expected, message.layer,
                                 message.block, layout);
      !s.ok()) {
    return s;
  }
  const size_t rows = size_t{model_.n_kv_heads} * tokens;
  const size_t weight_bytes = model_.WeightBytes(tokens);
  const size_t scale_bytes = model_.ScaleBytes(tokens);
  block->assign(model_.BlockBytes(tokens), '\0');
  size_t offset = 0;
  for (std::string_view tensor : {message.keys, message.values}) {
    std::vector<uint16_t> input = ToHalfWords(tensor);
    size_t bad = FirstNonFinite(input.data(), input.size(), model_.dtype);
    if (bad != input.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", message.layer, " block ", message.block, ": ",
                       offset == 0 ? "keys" : "values", " element ", bad, " is not finite"));
    }
    char* base = block->data() + offset;
    Quantize(input.data(), model_.dtype, rows, model_.head_dim, model_.codec,
             reinterpret_cast<uint32_t*>(base), reinterpret_cast<uint16_t*>(base + weight_bytes),
             reinterpret_cast<uint16_t*>(base + weight_bytes + scale_bytes));
    offset += weight_bytes + 2 * scale_bytes;
  }
  return absl::OkStatus();
}

absl::Status SaveAssembler::AddQuantized(const BlockMessage& message, uint32_t tokens,
                                         std::string* block) {
  if (!message.keys.empty() || !message.values.empty()) {
    return absl::InvalidArgumentError("float tensors in a save declared as quantized input");
  }
  const size_t weight_bytes = model_.WeightBytes(tokens);
  const size_t scale_bytes = model_.ScaleBytes(tokens);
  const std::string weights_layout =
      absl::StrCat("[", model_.n_kv_heads, ", ", tokens, ", ",
                   model_.codec.WordsPerRow(model_.head_dim), "] uint32");
  const std::string scales_layout =
      absl::StrCat("[", model_.n_kv_heads, ", ", tokens, ", ",
                   model_.codec.GroupsPerRow(model_.head_dim), "] ", FloatTypeName(model_.dtype));
  block->reserve(model_.BlockBytes(tokens));
  for (int part = 0; part < 2; ++part) {
    const QuantizedPart& tensor = part == 0 ? message.quantized_keys : message.quantized_values;
    const std::string name = part == 0 ? "keys" : "values";
    struct Field {
      std::string_view bytes;
      std::string label;
      size_t expected;
      const std::string* layout;
    };
    const Field fields[] = {{tensor.weights, name + ".weights", weight_bytes, &weights_layout},
                            {tensor.scales, name + ".scales", scale_bytes, &scales_layout},
                            {tensor.biases, name + ".biases", scale_bytes, &scales_layout}};
    for (const Field& field : fields) {
      if (absl::Status s = CheckSize(field.label, field.bytes.size(), field.expected, message.layer,
                                     message.block, *field.layout);
          !s.ok()) {
        return s;
      }
    }
    for (int f = 1; f < 3; ++f) {
      std::vector<uint16_t> values = ToHalfWords(fields[f].bytes);
      size_t bad = FirstNonFinite(values.data(), values.size(), model_.dtype);
      if (bad != values.size()) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", message.layer, " block ",
                                                       message.block, ": ", fields[f].label,
                                                       " element ", bad, " is not finite"));
      }
    }
    for (const Field& field : fields) block->append(field.bytes);
  }
  return absl::OkStatus();
}

}  // namespace engram::kvcache
