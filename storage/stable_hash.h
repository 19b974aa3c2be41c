// StableHash: 64-bit FNV-1a of a byte string. Unlike absl::Hash (seeded per
// process), its values are the same in every build and process, so they can
// be stored: the index's filter attributes (session and kind hashes in
// snapshots) and the static embedder's directions for unknown words both
// depend on it. Changing it changes stored data. Plain C++, no dependencies.
#pragma once

#include <cstdint>
#include <string_view>

namespace engram {

inline uint64_t StableHash(std::string_view bytes) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV offset basis
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ull;  // FNV prime
  }
  return hash;
}

}  // namespace engram
