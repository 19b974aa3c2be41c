// Fuzz target for the parsers of untrusted or on-disk bytes: the YAML config,
// the key decoder, the stored record decoders, the tokenizer (any bytes a
// client sends as text), the posting-block merge operator (on-disk
// blocks and operands), the static embedder's word-vector file, an
// embeddings endpoint's JSON answer, and the router's reading of a query's
// text (time expressions against any reference time, query hints). Each must return a status for
// any input, never crash, hang or read out of bounds.
//
// Built two ways: with clang's libFuzzer (-DENGRAM_FUZZ=ON, see
// tests/fuzz/README.md) for coverage-guided runs, and as `parsers_fuzz_smoke`
// in every ctest run, which replays the seed corpus plus random mutations.
#include <google/protobuf/stubs/logging.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "embed/openai_embedder.h"
#include "embed/static_embedder.h"
#include "retrieval/quality_gate.h"
#include "retrieval/time_expressions.h"
#include "rocksdb/merge_operator.h"
#include "server/config.h"
#include "storage/key_encoding.h"
#include "storage/lexical_index.h"
#include "storage/record_codec.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Protobuf logs every invalid UTF-8 string it rejects; rejecting is the point.
  static const bool kSilenced = (google::protobuf::SetLogHandler(nullptr), true);
  (void)kSilenced;
  if (size == 0) return 0;
  std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  // Modulo 16 keeps the seed files' first bytes ('0'..'8') on their targets.
  switch (data[0] % 16) {
    case 0:
      (void)engram::server::ParseConfig(input);
      break;
    case 1: {
      // Read components in an order chosen by the input itself.
      engram::storage::KeyReader reader(input);
      for (size_t i = 0; i < input.size() && !reader.AtEnd(); ++i) {
        bool ok = (input[i] % 3 == 0)   ? reader.ReadString().ok()
                  : (input[i] % 3 == 1) ? reader.ReadUint64().ok()
                                        : reader.ReadInt64().ok();
        if (!ok) break;
      }
      break;
    }
    case 2:
      (void)engram::storage::DecodeEpisode(input);
      break;
    case 3:
      (void)engram::storage::DecodeSpace(input);
      break;
    case 4: {
      static const std::unique_ptr<engram::text::Tokenizer> kTokenizer =
          *engram::text::Tokenizer::Create({"english"});
      for (const std::string& term : kTokenizer->Tokenize(input)) {
        if (term.empty()) std::abort();  // a term is never empty
      }
      break;
    }
    case 5: {
      // The input as an existing block and operands, split at 0xFF bytes.
      static const std::shared_ptr<rocksdb::MergeOperator> kMerge =
          engram::storage::LexicalIndex::NewPostingsMergeOperator();
      std::vector<std::string> parts(1);
      for (char c : input) {
        if (static_cast<unsigned char>(c) == 0xFF) {
          parts.emplace_back();
        } else {
          parts.back().push_back(c);
        }
      }
      std::vector<rocksdb::Slice> operands(parts.begin() + 1, parts.end());
      rocksdb::Slice existing(parts[0]);
      std::string merged;
      rocksdb::Slice unused;
      rocksdb::MergeOperator::MergeOperationOutput out(merged, unused);
      const rocksdb::Slice key("key");
      const rocksdb::MergeOperator::MergeOperationInput in(key, &existing, operands, nullptr);
      (void)kMerge->FullMergeV2(in, &out);
      break;
    }
    case 6: {
      // A word-vector file (embed/static_embedder.h), then a text through it.
      auto embedder = engram::embed::StaticEmbedder::FromBytes(input);
      if (embedder.ok()) (void)(*embedder)->EmbedOne("the tea and zyxwv");
      break;
    }
    case 7:
      // An embeddings endpoint's answer (embed/openai_embedder.h): hostile
      // bytes from the network. Two texts of 3 dimensions.
      (void)engram::embed::ParseEmbeddingsAnswer(input, 2, 3);
      break;
    default: {
      // A query's text and reference time (SearchRequest.query_text and
      // reference_time_us, any int64): the first 8 bytes are the time.
      int64_t micros = 0;
      std::memcpy(&micros, input.data(), std::min<size_t>(8, input.size()));
      const absl::Time reference = absl::FromUnixMicros(micros);
      const std::string text = input.size() > 8 ? input.substr(8) : "";
      if (auto window = engram::retrieval::FindTimeExpression(text, reference)) {
        if (window->expression.empty()) std::abort();  // a match names its words
      }
      (void)engram::retrieval::ReadQueryHints(text, reference);
      break;
    }
  }
  return 0;
}
