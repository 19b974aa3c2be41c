// Append-only per-node storage whose elements never move: nodes live in
// chunks reached through a small table of chunk pointers, so readers can use
// a node's data without a lock while a writer appends more nodes. The writer
// must make a node's data visible (publish its index with a release store
// elsewhere) before readers look at it.
//
// Chunk c holds 16 * 2^c nodes (16, 32, 64, ...), so a partition of a few
// vectors (most agents) costs kilobytes, finding a node's chunk is a
// leading-zero count (no branch), and a large partition over-allocates at
// most its last chunk. Plain data is allocated uninitialised, so the unused
// part of the last chunk is address space, not memory, until written; types
// that need a value (atomics) are zero-initialised.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace engram::index {

template <typename T>
class ChunkedArray {
 public:
  // `stride`: elements of T per node.
  explicit ChunkedArray(size_t stride) : stride_(stride) {
    for (auto& chunk : chunks_) chunk.store(nullptr, std::memory_order_relaxed);
  }
  ~ChunkedArray() {
    for (auto& chunk : chunks_) delete[] chunk.load(std::memory_order_relaxed);
  }
  ChunkedArray(const ChunkedArray&) = delete;
  ChunkedArray& operator=(const ChunkedArray&) = delete;

  // Writer only (callers serialise): makes nodes [0, count) addressable.
  void Reserve(uint32_t count) {
    uint64_t capacity = capacity_.load(std::memory_order_relaxed);
    while (capacity < count) {
      const size_t elements = ChunkNodes(chunk_count_) * stride_;
      T* data;
      if constexpr (std::is_trivially_default_constructible_v<T>) {
        data = new T[elements];  // untouched until written
      } else {
        data = new T[elements]();
      }
      chunks_[chunk_count_].store(data, std::memory_order_release);
      capacity += ChunkNodes(chunk_count_);
      ++chunk_count_;
    }
    capacity_.store(capacity, std::memory_order_release);
  }

  T* At(uint32_t node) const {
    const uint32_t chunk = ChunkOf(node);
    return chunks_[chunk].load(std::memory_order_acquire) +
           (node - ChunkStart(chunk)) * uint64_t{stride_};
  }

  // How many nodes from `node` on are contiguous in memory (to the end of
  // its chunk).
  static uint32_t RunLength(uint32_t node) {
    const uint32_t chunk = ChunkOf(node);
    return static_cast<uint32_t>(ChunkStart(chunk) + ChunkNodes(chunk) - node);
  }

  // Bytes allocated (the last chunk's unwritten tail included).
  size_t memory_bytes() const {
    return capacity_.load(std::memory_order_acquire) * stride_ * sizeof(T);
  }

 private:
  static constexpr uint32_t kFirstShift = 4;  // the first chunk holds 16 nodes
  static constexpr uint32_t kMaxChunks = 29;  // 16 * (2^29 - 1) > 2^32 nodes

  static uint32_t ChunkOf(uint32_t node) {
    return static_cast<uint32_t>(std::bit_width((uint64_t{node} >> kFirstShift) + 1) - 1);
  }
  static uint64_t ChunkStart(uint32_t chunk) { return ((uint64_t{1} << chunk) - 1) << kFirstShift; }
  static uint64_t ChunkNodes(uint32_t chunk) { return uint64_t{1} << (chunk + kFirstShift); }

  size_t stride_;
  std::atomic<T*> chunks_[kMaxChunks];
  uint32_t chunk_count_ = 0;  // writer only
  std::atomic<uint64_t> capacity_{0};
};

}  // namespace engram::index
