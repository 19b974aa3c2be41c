// BlockPool: the RAM tier of the KV cache store. Holds recently saved or
// loaded blocks (immutable byte strings, shared with readers) under a byte
// budget and evicts the least recently used. Every block is also on disk, so
// eviction only drops the RAM copy. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace engram::kvcache {

using BlockBytes = std::shared_ptr<const std::string>;

struct BlockPoolStats {
  size_t budget_bytes = 0;
  size_t resident_bytes = 0;
  size_t resident_blocks = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
};

class BlockPool {
 public:
  explicit BlockPool(size_t budget_bytes) : budget_bytes_(budget_bytes) {}

  // The block, marked most recently used; nullptr (a miss) when not resident.
  BlockBytes Get(const std::string& key);
  // Inserts or replaces, then evicts from the cold end until within budget.
  // A block larger than the whole budget is not kept.
  void Put(const std::string& key, BlockBytes bytes);
  void Erase(const std::string& key);
  BlockPoolStats Stats();

 private:
  struct Entry {
    BlockBytes bytes;
    std::list<std::string>::iterator position;
  };
  void EvictLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const size_t budget_bytes_;
  absl::Mutex mutex_;
  std::list<std::string> lru_ ABSL_GUARDED_BY(mutex_);  // front: most recent
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mutex_);
  size_t resident_bytes_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t hits_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t misses_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t evictions_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace engram::kvcache
