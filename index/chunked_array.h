// Append-only per-node storage whose elements never move: nodes live in
// fixed-size chunks reached through a table of chunk pointers, so readers can
// use a node's data without a lock while a writer appends more nodes. The
// writer must make a node's data visible (publish its index with a release
// store elsewhere) before readers look at it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace engram::index {

template <typename T>
class ChunkedArray {
 public:
  static constexpr uint32_t kChunkShift = 14;  // 16,384 nodes per chunk
  static constexpr uint32_t kChunkNodes = 1u << kChunkShift;
  static constexpr uint32_t kMaxChunks = 1u << 16;

  // `stride`: elements of T per node.
  explicit ChunkedArray(size_t stride) : stride_(stride), chunks_(new std::atomic<T*>[kMaxChunks]) {
    for (uint32_t i = 0; i < kMaxChunks; ++i) chunks_[i].store(nullptr, std::memory_order_relaxed);
  }
  ~ChunkedArray() {
    for (uint32_t i = 0; i < kMaxChunks; ++i) delete[] chunks_[i].load(std::memory_order_relaxed);
  }
  ChunkedArray(const ChunkedArray&) = delete;
  ChunkedArray& operator=(const ChunkedArray&) = delete;

  size_t stride() const { return stride_; }

  // Writer only (callers serialise): makes nodes [0, count) addressable.
  void Reserve(uint32_t count) {
    uint32_t capacity = capacity_.load(std::memory_order_relaxed);
    while (capacity < count) {
      chunks_[capacity >> kChunkShift].store(new T[size_t{kChunkNodes} * stride_](),
                                             std::memory_order_release);
      capacity += kChunkNodes;
    }
    capacity_.store(capacity, std::memory_order_release);
  }

  T* At(uint32_t node) const {
    T* chunk = chunks_[node >> kChunkShift].load(std::memory_order_acquire);
    return chunk + size_t{node & (kChunkNodes - 1)} * stride_;
  }

  size_t memory_bytes() const {
    return size_t{capacity_.load(std::memory_order_acquire)} * stride_ * sizeof(T);
  }

 private:
  size_t stride_;
  std::unique_ptr<std::atomic<T*>[]> chunks_;
  std::atomic<uint32_t> capacity_{0};
};

}  // namespace engram::index
