// PartitionScanner: exhaustive exact scans of VectorPartitions (the
// full-deliberation path) through an ExactBatchSearcher, the CUDA searcher
// when a GPU answers and its CPU twin otherwise, with micro-batching.
//
// Device copies: the first scan of a partition uploads its rows (fp16, or
// fp32 with ScannerOptions::precision) under a byte budget; least recently
// scanned partitions are dropped to make room. Rows added later are scored
// on the host (same arithmetic) until they exceed max(4096, 1/32 of the
// copy); then only they are appended to the copy (AppendRows), which is made
// again only when it cannot grow within the budget. Removed rows
// stay on the device and are masked by a live-row bitmap (cached per
// partition change). A partition that cannot fit the budget is scanned on
// the host in fp32 (VectorPartition::ExactSearch) and counted as a fallback.
//
// Micro-batching: one dispatcher thread owns the searcher. Unfiltered scans
// of the same partition that are queued together share one Scan call; when
// scans arrive concurrently (the last launch carried more than one, or more
// are queued) the dispatcher waits up to `batch_window` for company. A lone
// scan is dispatched at once. Scans with an attribute filter get their own
// bitmap and run alone.
//
// Thread safety: Scan and Stats may be called from any thread.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "index/exact_batch.h"
#include "index/vector_partition.h"

namespace engram::index {

struct ScannerOptions {
  // Try the CUDA searcher first (when built with CUDA). Default: true.
  bool use_gpu = true;
  // Bytes of partition copies (GPU memory, or host memory for the CPU twin).
  // Default: 4 GiB.
  size_t budget_bytes = size_t{4} << 30;
  // How the copies hold vectors (see exact_batch.h). Default: fp16.
  Precision precision = Precision::kFp16;
  // How long a batch waits for more scans while scans arrive concurrently.
  // Default: 200 us.
  absl::Duration batch_window = absl::Microseconds(200);
  // Most queries per Scan call. Default: 256.
  size_t max_batch = 256;
  // Test hook: the searcher to use instead of MakeExactBatchSearcher's choice.
  std::unique_ptr<ExactBatchSearcher> searcher_for_test;
};

struct ScannerStats {
  std::string backend;  // "cuda" or "cpu"
  std::string reason;   // why (device name and budget, or why no GPU)
  uint64_t resident_partitions = 0;
  uint64_t resident_bytes = 0;
  uint64_t scans = 0;      // queries answered
  uint64_t launches = 0;   // Scan calls (a batch is one launch)
  uint64_t uploads = 0;    // partition copies made
  uint64_t appends = 0;    // copies grown by the rows added since they were made
  uint64_t fallbacks = 0;  // scans answered on the host because the copy did not fit
};

class PartitionScanner {
 public:
  explicit PartitionScanner(ScannerOptions options);
  ~PartitionScanner();
  PartitionScanner(const PartitionScanner&) = delete;
  PartitionScanner& operator=(const PartitionScanner&) = delete;

  // The k best live rows of `partition` for `query` (only those `accept`
  // takes, when given), as (id, score) best first. Scores are computed on
  // fp16 copies (exact_batch.h). INVALID_ARGUMENT for a query of the wrong
  // dimension or non-finite values, or k outside 1..kMaxK.
  absl::StatusOr<std::vector<ScoredId>> Scan(std::shared_ptr<const VectorPartition> partition,
                                             std::span<const float> query, uint32_t k,
                                             const AcceptFunction* accept = nullptr);

  ScannerStats Stats();

 private:
  struct Request;
  struct Resident;
  void DispatchLoop();
  // Takes the queued requests that may share a launch with `first`.
  void TakeCompanions(Request* first, std::vector<Request*>& batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void Execute(const std::vector<Request*>& batch);
  // The device copy of `partition`, made or refreshed; nullptr when it cannot fit.
  Resident* EnsureResident(const std::shared_ptr<const VectorPartition>& partition);
  void Evict(const VectorPartition* key);

  const ScannerOptions options_;
  std::unique_ptr<ExactBatchSearcher> searcher_;  // used by the dispatcher thread only
  std::string backend_, reason_;

  // Dispatcher-thread state.
  absl::flat_hash_map<const VectorPartition*, std::unique_ptr<Resident>> resident_;
  uint64_t next_device_id_ = 1;
  uint64_t clock_ = 0;
  size_t last_batch_size_ = 0;

  absl::Mutex mutex_;
  std::deque<Request*> queue_ ABSL_GUARDED_BY(mutex_);
  bool stop_ ABSL_GUARDED_BY(mutex_) = false;
  ScannerStats stats_ ABSL_GUARDED_BY(mutex_);
  std::thread dispatcher_;
};

}  // namespace engram::index
