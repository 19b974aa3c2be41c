#include "storage/kvcache/block_pool.h"

namespace engram::kvcache {

BlockBytes BlockPool::Get(const std::string& key) {
  absl::MutexLock lock(&mutex_);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  lru_.splice(lru_.begin(), lru_, it->second.position);
  return it->second.bytes;
}

void BlockPool::Put(const std::string& key, BlockBytes bytes) {
  absl::MutexLock lock(&mutex_);
  if (auto it = entries_.find(key); it != entries_.end()) {
    resident_bytes_ -= it->second.bytes->size();
    lru_.erase(it->second.position);
    entries_.erase(it);
  }
  if (bytes->size() > budget_bytes_) return;
  lru_.push_front(key);
  resident_bytes_ += bytes->size();
  entries_[key] = Entry{std::move(bytes), lru_.begin()};
  EvictLocked();
}

void BlockPool::Erase(const std::string& key) {
  absl::MutexLock lock(&mutex_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  resident_bytes_ -= it->second.bytes->size();
  lru_.erase(it->second.position);
  entries_.erase(it);
}

void BlockPool::EvictLocked() {
  while (resident_bytes_ > budget_bytes_ && !lru_.empty()) {
    auto it = entries_.find(lru_.back());
    resident_bytes_ -= it->second.bytes->size();
    entries_.erase(it);
    lru_.pop_back();
    ++evictions_;
  }
}

BlockPoolStats BlockPool::Stats() {
  absl::MutexLock lock(&mutex_);
  return BlockPoolStats{budget_bytes_, resident_bytes_, entries_.size(),
                        hits_,         misses_,         evictions_};
}

}  // namespace engram::kvcache
