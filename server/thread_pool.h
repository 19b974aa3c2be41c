// A fixed pool of worker threads with a bounded queue. gRPC's callback
// threads hand blocking work (RocksDB, scans) here and return at once.
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace engram::server {

class ThreadPool {
 public:
  ThreadPool(int threads, size_t max_queued);
  // Runs every task already queued, then joins the threads.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // False (and the task is dropped) when the queue is full or the pool is
  // shutting down; the caller reports the overload.
  bool TrySubmit(std::function<void()> task);

 private:
  void WorkLoop();

  const size_t max_queued_;
  absl::Mutex mutex_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mutex_);
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace engram::server
