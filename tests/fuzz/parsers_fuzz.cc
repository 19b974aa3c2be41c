// Fuzz target for the parsers of untrusted or on-disk bytes: the YAML config,
// the key decoder and the stored record decoders. Each must return a status
// for any input, never crash, hang or read out of bounds.
//
// Built two ways: with clang's libFuzzer (-DENGRAM_FUZZ=ON, see
// tests/fuzz/README.md) for coverage-guided runs, and as `parsers_fuzz_smoke`
// in every ctest run, which replays the seed corpus plus random mutations.
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "server/config.h"
#include "storage/key_encoding.h"
#include "storage/record_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Protobuf logs every invalid UTF-8 string it rejects; rejecting is the point.
  static const bool kSilenced = (google::protobuf::SetLogHandler(nullptr), true);
  (void)kSilenced;
  if (size == 0) return 0;
  std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
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
  }
  return 0;
}
