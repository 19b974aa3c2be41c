#include "index/partition_scanner.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "index/exact_batch_common.h"
#include "index/float_distance.h"

namespace engram::index {

struct PartitionScanner::Request {
  std::shared_ptr<const VectorPartition> partition;
  std::span<const float> query;  // the caller's, alive until done
  uint32_t k = 0;
  const AcceptFunction* accept = nullptr;
  absl::StatusOr<std::vector<ScoredId>> result = absl::UnknownError("not run");
  bool done = false;
};

struct PartitionScanner::Resident {
  std::weak_ptr<const VectorPartition> owner;
  uint64_t device_id = 0;
  uint32_t rows = 0;  // rows in the device copy
  size_t bytes = 0;
  uint64_t last_used = 0;
  // Live-row bitmap of the copy's rows, for the partition change it reflects.
  uint64_t bitmap_change = UINT64_MAX;
  std::vector<uint64_t> live;
};

namespace {

// Rows added since the copy was made are scored on the host until there are
// more than this many; then they are appended to the copy.
uint32_t HostTailLimit(uint32_t copied_rows) { return std::max<uint32_t>(4096, copied_rows / 32); }

size_t CopyBytes(uint32_t rows, size_t dim, Precision precision) {
  return size_t{rows} * (dim * (precision == Precision::kFp16 ? 2 : 4) + sizeof(float));
}

// Rows (or queries) prepared the way the searcher prepares them at
// `precision`, with the values as floats (fp16 ones widened exactly).
struct PreparedFloats {
  std::vector<float> values, norms;
};
absl::StatusOr<PreparedFloats> PrepareAt(Precision precision, Metric metric, const float* rows,
                                         size_t num_rows, size_t dim, const char* what) {
  if (precision == Precision::kFp32) {
    absl::StatusOr<FloatRows> full = PrepareFloatRows(metric, rows, num_rows, dim, what);
    if (!full.ok()) return full.status();
    return PreparedFloats{std::move(full->values), std::move(full->norms)};
  }
  absl::StatusOr<HalfRows> half = PrepareRows(metric, rows, num_rows, dim, what);
  if (!half.ok()) return half.status();
  PreparedFloats out{std::vector<float>(half->values.size()), std::move(half->norms)};
  for (size_t i = 0; i < out.values.size(); ++i) out.values[i] = HalfToFloat(half->values[i]);
  return out;
}

}  // namespace

PartitionScanner::PartitionScanner(ScannerOptions options) : options_(std::move(options)) {
  ScannerOptions& mutable_options = const_cast<ScannerOptions&>(options_);
  if (mutable_options.searcher_for_test != nullptr) {
    searcher_ = std::move(mutable_options.searcher_for_test);
    reason_ = "searcher chosen by a test";
  } else if (options_.use_gpu) {
    searcher_ = MakeExactBatchSearcher(options_.budget_bytes, &reason_);
  } else {
    searcher_ = MakeCpuExactBatchSearcher();
    reason_ = "cpu: GPU use disabled in the configuration";
  }
  backend_ = searcher_->name();
  {
    absl::MutexLock lock(&mutex_);
    stats_.backend = backend_;
    stats_.reason = reason_;
  }
  dispatcher_ = std::thread([this] { DispatchLoop(); });
}

PartitionScanner::~PartitionScanner() {
  {
    absl::MutexLock lock(&mutex_);
    stop_ = true;
  }
  dispatcher_.join();
}

absl::StatusOr<std::vector<ScoredId>> PartitionScanner::Scan(
    std::shared_ptr<const VectorPartition> partition, std::span<const float> query, uint32_t k,
    const AcceptFunction* accept) {
  const size_t dim = partition->options().dimension;
  if (query.size() != dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("query has ", query.size(), " dimensions; the partition has ", dim));
  }
  for (size_t i = 0; i < dim; ++i) {
    if (!std::isfinite(query[i])) {
      return absl::InvalidArgumentError(absl::StrCat("query[", i, "] is not finite"));
    }
  }
  if (k == 0 || k > static_cast<uint32_t>(kMaxK)) {
    return absl::InvalidArgumentError(absl::StrCat("k is ", k, "; must be in 1..", kMaxK));
  }
  Request request;
  request.partition = std::move(partition);
  request.query = query;
  request.k = k;
  request.accept = accept;
  absl::MutexLock lock(&mutex_);
  queue_.push_back(&request);
  mutex_.Await(absl::Condition(&request.done));
  return std::move(request.result);
}

ScannerStats PartitionScanner::Stats() {
  absl::MutexLock lock(&mutex_);
  return stats_;
}

void PartitionScanner::TakeCompanions(Request* first, std::vector<Request*>& batch) {
  if (first->accept != nullptr) return;  // a filtered scan has its own bitmap
  for (auto it = queue_.begin(); it != queue_.end() && batch.size() < options_.max_batch;) {
    if ((*it)->partition == first->partition && (*it)->accept == nullptr) {
      batch.push_back(*it);
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
}

void PartitionScanner::DispatchLoop() {
  for (;;) {
    std::vector<Request*> batch;
    {
      absl::MutexLock lock(&mutex_);
      auto ready = [this]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return stop_ || !queue_.empty(); };
      mutex_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping
      Request* first = queue_.front();
      queue_.pop_front();
      batch.push_back(first);
      TakeCompanions(first, batch);
      // Wait for company only while scans arrive concurrently: a lone scan
      // never waits.
      const bool concurrent = last_batch_size_ > 1 || batch.size() > 1 || !queue_.empty();
      if (concurrent && first->accept == nullptr && options_.batch_window > absl::ZeroDuration()) {
        const absl::Time deadline = absl::Now() + options_.batch_window;
        auto companion = [this, first]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
          if (stop_) return true;
          for (const Request* r : queue_) {
            if (r->partition == first->partition && r->accept == nullptr) return true;
          }
          return false;
        };
        while (batch.size() < options_.max_batch &&
               mutex_.AwaitWithDeadline(absl::Condition(&companion), deadline) && !stop_) {
          TakeCompanions(first, batch);
        }
      }
    }
    Execute(batch);
    absl::MutexLock lock(&mutex_);
    last_batch_size_ = batch.size();
    stats_.scans += batch.size();
    stats_.resident_partitions = resident_.size();
    stats_.resident_bytes = 0;
    for (const auto& [key, resident] : resident_) stats_.resident_bytes += resident->bytes;
    for (Request* request : batch) request->done = true;
  }
}

void PartitionScanner::Evict(const VectorPartition* key) {
  auto it = resident_.find(key);
  if (it == resident_.end()) return;
  searcher_->DropPartition(it->second->device_id);
  resident_.erase(it);
}

PartitionScanner::Resident* PartitionScanner::EnsureResident(
    const std::shared_ptr<const VectorPartition>& partition) {
  const VectorPartition* key = partition.get();
  const size_t dim = partition->options().dimension;
  const uint32_t rows = partition->row_count();
  auto found = resident_.find(key);
  if (found != resident_.end() && found->second->owner.lock() != partition) {
    Evict(key);  // a new partition at a freed one's address
    found = resident_.end();
  }
  if (found != resident_.end() &&
      rows - found->second->rows <= HostTailLimit(found->second->rows)) {
    found->second->last_used = ++clock_;
    return found->second.get();
  }
  const size_t bytes = CopyBytes(rows, dim, options_.precision);
  if (bytes > options_.budget_bytes) {
    Evict(key);
    return nullptr;
  }
  // Make room: drop copies of partitions that are gone, then the least
  // recently scanned.
  for (;;) {
    size_t used = 0;
    const VectorPartition* coldest = nullptr;
    uint64_t coldest_use = UINT64_MAX;
    for (const auto& [other, resident] : resident_) {
      if (other == key) continue;
      if (resident->owner.expired()) {
        coldest = other;
        coldest_use = 0;
      }
      used += resident->bytes;
      if (resident->last_used < coldest_use) {
        coldest = other;
        coldest_use = resident->last_used;
      }
    }
    if (used + bytes <= options_.budget_bytes || coldest == nullptr) break;
    Evict(coldest);
  }
  if (found != resident_.end()) {
    // Grow the copy by the rows added since it was made: only they go up.
    Resident& resident = *found->second;
    const uint32_t added = rows - resident.rows;
    std::unique_ptr<float[]> tail(new float[size_t{added} * dim]);
    partition->CopyRows(resident.rows, added, tail.get());
    if (searcher_->AppendRows(resident.device_id, tail.get(), added).ok()) {
      resident.rows = rows;
      resident.bytes = bytes;
      resident.last_used = ++clock_;
      resident.bitmap_change = UINT64_MAX;  // the live-row bitmap covers fewer rows
      absl::MutexLock lock(&mutex_);
      ++stats_.appends;
      return &resident;
    }
    Evict(key);  // e.g. the device budget: make the copy again below
    found = resident_.end();
  }
  auto resident = std::make_unique<Resident>();
  resident->owner = partition;
  resident->device_id = found != resident_.end() ? found->second->device_id : next_device_id_++;
  resident->rows = rows;
  resident->bytes = bytes;
  resident->last_used = ++clock_;
  // Read piece by piece: no fp32 copy of the whole partition (3 GB at 1M x
  // 768) is made on the way.
  absl::Status set = searcher_->SetPartitionFrom(
      resident->device_id, partition->options().metric, options_.precision, rows, dim,
      [&partition](size_t first, size_t count, float* scratch) {
        partition->CopyRows(static_cast<uint32_t>(first), static_cast<uint32_t>(count), scratch);
        return static_cast<const float*>(scratch);
      });
  if (!set.ok()) {
    Evict(key);
    return nullptr;
  }
  {
    absl::MutexLock lock(&mutex_);
    ++stats_.uploads;
  }
  Resident* raw = resident.get();
  resident_[key] = std::move(resident);
  return raw;
}

void PartitionScanner::Execute(const std::vector<Request*>& batch) {
  const std::shared_ptr<const VectorPartition>& partition = batch.front()->partition;
  const Metric metric = partition->options().metric;
  const size_t dim = partition->options().dimension;
  if (partition->row_count() == 0) {
    for (Request* request : batch) request->result = std::vector<ScoredId>();
    return;
  }
  Resident* resident = EnsureResident(partition);
  // Read after the copy was made: rows only grow, so this covers every row
  // the copy holds (bitmaps below must be at least that long).
  const uint32_t rows_now = partition->row_count();
  if (resident == nullptr) {
    for (Request* request : batch) {
      request->result = partition->ExactSearch(request->query, request->k, request->accept);
    }
    absl::MutexLock lock(&mutex_);
    stats_.fallbacks += batch.size();
    return;
  }

  // Rows the copy may return: live ones (and accepted, for a filtered scan).
  // A filtered scan runs alone; its bitmap covers the host tail too.
  std::vector<uint64_t> own_bits;
  const uint64_t* allowed = nullptr;
  if (batch.front()->accept != nullptr) {
    own_bits = partition->LiveRowBitmap(rows_now, batch.front()->accept);
    allowed = own_bits.data();
  } else if (partition->deleted_count() > 0) {
    const uint64_t change = partition->change_count();
    if (resident->bitmap_change != change) {
      resident->live = partition->LiveRowBitmap(resident->rows, nullptr);
      resident->bitmap_change = change;
    }
    allowed = resident->live.data();
  }

  // The batch's queries, built in the searcher's staging memory (page-locked
  // for the GPU, so the upload skips the driver's copy).
  uint32_t k = 0;
  std::vector<float> own_queries;
  float* queries = searcher_->QueryStaging(batch.size() * dim);
  if (queries == nullptr) {
    own_queries.resize(batch.size() * dim);
    queries = own_queries.data();
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    k = std::max(k, batch[i]->k);
    std::copy(batch[i]->query.begin(), batch[i]->query.end(), queries + i * dim);
  }
  absl::StatusOr<TopKBatch> top =
      searcher_->Scan(resident->device_id, queries, batch.size(), static_cast<int>(k), allowed);
  {
    absl::MutexLock lock(&mutex_);
    ++stats_.launches;
  }
  if (!top.ok()) {
    for (Request* request : batch) request->result = top.status();
    return;
  }

  // Rows added after the copy, scored here on inputs prepared as the
  // searcher prepares them (fp16 values widened to floats exactly) with the
  // index's fp32 inner product: the copy's arithmetic up to the order of
  // fp32 additions.
  const uint32_t tail_begin = resident->rows;
  absl::StatusOr<PreparedFloats> tail = PreparedFloats{};
  if (rows_now > tail_begin) {
    std::vector<float> raw(size_t{rows_now - tail_begin} * dim);
    partition->CopyRows(tail_begin, rows_now - tail_begin, raw.data());
    tail = PrepareAt(options_.precision, metric, raw.data(), rows_now - tail_begin, dim, "row");
  }
  const FloatKernel dot = SelectFloatKernels().inner_product;
  std::vector<uint64_t> tail_live;
  const uint64_t* tail_bits = own_bits.data();
  if (rows_now > tail_begin && own_bits.empty()) {
    tail_live = partition->LiveRowBitmap(rows_now, nullptr);
    tail_bits = tail_live.data();
  }

  for (size_t q = 0; q < batch.size(); ++q) {
    Request* request = batch[q];
    std::vector<std::pair<float, uint32_t>> candidates;
    for (int i = 0; i < top->k; ++i) {
      uint32_t row = top->rows[q * top->k + i];
      if (row == kNoRow) break;
      candidates.emplace_back(top->scores[q * top->k + i], row);
    }
    if (tail.ok() && rows_now > tail_begin) {
      absl::StatusOr<PreparedFloats> query =
          PrepareAt(options_.precision, metric, request->query.data(), 1, dim, "query");
      if (!query.ok()) {
        request->result = query.status();
        continue;
      }
      for (uint32_t row = tail_begin; row < rows_now; ++row) {
        if (!(tail_bits[row / 64] >> (row % 64) & 1)) continue;
        const size_t offset = size_t{row - tail_begin} * dim;
        float d = dot(query->values.data(), tail->values.data() + offset, dim);
        candidates.emplace_back(
            FinalScore(metric, d, tail->norms[row - tail_begin], query->norms[0]), row);
      }
    }
    const size_t keep = std::min<size_t>(request->k, candidates.size());
    std::partial_sort(
        candidates.begin(), candidates.begin() + keep, candidates.end(),
        [](const auto& a, const auto& b) { return Better(a.first, a.second, b.first, b.second); });
    std::vector<ScoredId> hits;
    hits.reserve(keep);
    for (size_t i = 0; i < keep; ++i) {
      hits.push_back({partition->RowId(candidates[i].second), candidates[i].first});
    }
    request->result = std::move(hits);
  }
}

}  // namespace engram::index
