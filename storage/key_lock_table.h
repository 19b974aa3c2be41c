// KeyLockTable: exclusive locks on arbitrary string keys (an episode, a
// client request id), held across a read-check-write sequence so that version
// checks and idempotency hold under concurrent writers. A guard takes all its
// keys at once, so two guards can never deadlock on each other.
#pragma once

#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"

namespace engram::storage {

class KeyLockTable {
 public:
  class Guard {
   public:
    Guard(KeyLockTable* table, std::vector<std::string> keys);
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    KeyLockTable* table_;
    std::vector<std::string> keys_;
  };

  // Blocks until none of `keys` is held by another guard, then holds them all.
  Guard Lock(std::vector<std::string> keys) { return Guard(this, std::move(keys)); }

 private:
  absl::Mutex mutex_;
  absl::flat_hash_set<std::string> held_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace engram::storage
