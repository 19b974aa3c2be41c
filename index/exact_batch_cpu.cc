// The CPU twin of the CUDA searcher (see exact_batch.h). Dot products (fp16
// rows with fp16-rounded queries, or fp32 with fp32) run in AVX2/F16C/FMA
// when the CPU has them (chosen at run time) and in scalar code otherwise;
// Scan splits the rows over all hardware threads and merges their per-query
// top-k.
#include <immintrin.h>

#include <algorithm>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "index/exact_batch_common.h"
#include "index/exact_batch_cpu_kernels.h"
#include "index/float_distance.h"

namespace engram::index {

float DotScalar(const float* query, const uint16_t* row, size_t dim) {
  float sum = 0;
  for (size_t i = 0; i < dim; ++i) sum += query[i] * HalfToFloat(row[i]);
  return sum;
}

__attribute__((target("avx2,fma,f16c"))) float DotAvx2(const float* query, const uint16_t* row,
                                                       size_t dim) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i)));
    __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i + 8)));
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(query + i), x0, acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(query + i + 8), x1, acc1);
  }
  __m256 acc = _mm256_add_ps(acc0, acc1);
  __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  sum4 = _mm_hadd_ps(sum4, sum4);
  sum4 = _mm_hadd_ps(sum4, sum4);
  float sum = _mm_cvtss_f32(sum4);
  for (; i < dim; ++i) sum += query[i] * HalfToFloat(row[i]);
  return sum;
}

DotFunction SelectDot(bool allow_simd) {
  if (allow_simd && CpuHasAvx2AndF16c() && __builtin_cpu_supports("fma")) {
    return DotAvx2;
  }
  return DotScalar;
}

namespace {

// Keeps the best k (score, row) pairs in the shared result order.
class Selector {
 public:
  explicit Selector(int k) : k_(static_cast<size_t>(k)) { heap_.reserve(k_ + 1); }
  void Push(float score, uint32_t row) {
    if (heap_.size() == k_ && !Better(score, row, heap_.front().first, heap_.front().second)) {
      return;
    }
    heap_.emplace_back(score, row);
    std::push_heap(heap_.begin(), heap_.end(), Order);
    if (heap_.size() > k_) {
      std::pop_heap(heap_.begin(), heap_.end(), Order);
      heap_.pop_back();
    }
  }
  void Merge(const Selector& other) {
    for (const auto& [score, row] : other.heap_) Push(score, row);
  }
  // Writes best-first into rows/scores (k slots; the tail stays as it was).
  void Write(uint32_t* rows, float* scores) {
    std::sort_heap(heap_.begin(), heap_.end(), Order);
    for (size_t i = 0; i < heap_.size(); ++i) {
      rows[i] = heap_[i].second;
      scores[i] = heap_[i].first;
    }
  }

 private:
  // Heap order: the root is the worst kept pair.
  static bool Order(const std::pair<float, uint32_t>& a, const std::pair<float, uint32_t>& b) {
    return Better(a.first, a.second, b.first, b.second);
  }
  size_t k_;
  std::vector<std::pair<float, uint32_t>> heap_;
};

// A stored partition: fp16 values in `half` or fp32 values in `full`.
struct Partition {
  Metric metric;
  Precision precision;
  size_t num_rows, dim;
  std::vector<uint16_t> half;
  std::vector<float> full;
  std::vector<float> norms;
};

class CpuExactBatchSearcher final : public ExactBatchSearcher {
 public:
  explicit CpuExactBatchSearcher(bool allow_simd)
      : dot_(SelectDot(allow_simd)), float_dot_(SelectFloatKernels(allow_simd).inner_product) {}
  std::string name() const override { return "cpu"; }

  float* QueryStaging(size_t count) override {
    query_staging_.resize(std::max<size_t>(1, count));
    return query_staging_.data();
  }
  uint32_t* CandidateStaging(size_t count) override {
    candidate_staging_.resize(std::max<size_t>(1, count));
    return candidate_staging_.data();
  }

  absl::Status SetPartitionFrom(uint64_t partition, Metric metric, Precision precision,
                                size_t num_rows, size_t dim, const RowSource& rows) override {
    if (dim == 0) return absl::InvalidArgumentError("row dimension is 0");
    Partition stored{metric, precision, num_rows, dim, {}, {}, std::vector<float>(num_rows)};
    if (precision == Precision::kFp16) {
      stored.half.resize(num_rows * dim);
    } else {
      stored.full.resize(num_rows * dim);
    }
    const size_t piece_rows = std::min(num_rows, PieceRows(dim));
    std::vector<float> scratch(piece_rows * dim);
    for (size_t first = 0; first < num_rows; first += piece_rows) {
      const size_t count = std::min(piece_rows, num_rows - first);
      const float* piece = rows(first, count, scratch.data());
      absl::Status prepared =
          precision == Precision::kFp16
              ? PrepareRowsInto(metric, piece, count, dim, "row", first,
                                stored.half.data() + first * dim, stored.norms.data() + first)
              : PrepareRowsInto(metric, piece, count, dim, "row", first,
                                stored.full.data() + first * dim, stored.norms.data() + first);
      if (!prepared.ok()) return prepared;
    }
    partitions_[partition] = std::move(stored);
    return absl::OkStatus();
  }

  void DropPartition(uint64_t partition) override { partitions_.erase(partition); }

  absl::Status AppendRows(uint64_t partition, const float* vectors, size_t num_rows) override {
    auto it = partitions_.find(partition);
    if (it == partitions_.end()) {
      return absl::NotFoundError(absl::StrCat("partition ", partition, " is not loaded"));
    }
    Partition& p = it->second;
    if (p.precision == Precision::kFp16) {
      absl::StatusOr<HalfRows> rows = PrepareRows(p.metric, vectors, num_rows, p.dim, "row");
      if (!rows.ok()) return rows.status();
      AppendTo(p.half, rows->values);
      AppendTo(p.norms, rows->norms);
    } else {
      absl::StatusOr<FloatRows> rows = PrepareFloatRows(p.metric, vectors, num_rows, p.dim, "row");
      if (!rows.ok()) return rows.status();
      AppendTo(p.full, rows->values);
      AppendTo(p.norms, rows->norms);
    }
    p.num_rows += num_rows;
    return absl::OkStatus();
  }

  absl::StatusOr<TopKBatch> Rerank(uint64_t partition_id, const float* queries, size_t num_queries,
                                   const uint32_t* offsets, const uint32_t* candidates,
                                   int k) override {
    absl::StatusOr<Prepared> prepared = Prepare(partition_id, queries, num_queries, k);
    if (!prepared.ok()) return prepared.status();
    const Partition& p = *prepared->partition;
    if (absl::Status s = ValidateCandidates(num_queries, offsets, candidates, p.num_rows);
        !s.ok()) {
      return s;
    }
    TopKBatch out = EmptyTopK(num_queries, k);
    for (size_t q = 0; q < num_queries; ++q) {
      Selector selector(k);
      const float* query = prepared->queries.data() + q * p.dim;
      for (uint32_t c = offsets[q]; c < offsets[q + 1]; ++c) {
        uint32_t row = candidates[c];
        selector.Push(
            FinalScore(p.metric, Dot(p, query, row), p.norms[row], prepared->query_norms[q]), row);
      }
      selector.Write(out.rows.data() + q * k, out.scores.data() + q * k);
    }
    return out;
  }

  absl::StatusOr<TopKBatch> Scan(uint64_t partition_id, const float* queries, size_t num_queries,
                                 int k, const uint64_t* allowed_rows) override {
    absl::StatusOr<Prepared> prepared = Prepare(partition_id, queries, num_queries, k);
    if (!prepared.ok()) return prepared.status();
    const Partition& p = *prepared->partition;
    size_t threads = std::max<size_t>(1, std::thread::hardware_concurrency());
    threads = std::min(threads, std::max<size_t>(1, p.num_rows / 4096));
    std::vector<std::vector<Selector>> selectors(threads,
                                                 std::vector<Selector>(num_queries, Selector(k)));
    auto scan_range = [&](size_t worker, size_t begin, size_t end) {
      for (size_t r = begin; r < end; ++r) {
        if (allowed_rows != nullptr && !((allowed_rows[r / 64] >> (r % 64)) & 1)) continue;
        for (size_t q = 0; q < num_queries; ++q) {
          float dot = Dot(p, prepared->queries.data() + q * p.dim, r);
          selectors[worker][q].Push(FinalScore(p.metric, dot, p.norms[r], prepared->query_norms[q]),
                                    static_cast<uint32_t>(r));
        }
      }
    };
    std::vector<std::thread> workers;
    size_t per_worker = (p.num_rows + threads - 1) / threads;
    for (size_t w = 0; w < threads; ++w) {
      size_t begin = std::min(p.num_rows, w * per_worker);
      size_t end = std::min(p.num_rows, begin + per_worker);
      workers.emplace_back(scan_range, w, begin, end);
    }
    for (std::thread& worker : workers) worker.join();
    TopKBatch out = EmptyTopK(num_queries, k);
    for (size_t q = 0; q < num_queries; ++q) {
      for (size_t w = 1; w < threads; ++w) selectors[0][q].Merge(selectors[w][q]);
      selectors[0][q].Write(out.rows.data() + q * k, out.scores.data() + q * k);
    }
    return out;
  }

 private:
  // Appends with room for 1/8 more when the vector must grow (the GPU
  // searcher's policy), not the doubling push_back would do: copies are
  // counted against a memory budget.
  template <typename T>
  static void AppendTo(std::vector<T>& to, const std::vector<T>& values) {
    const size_t needed = to.size() + values.size();
    if (needed > to.capacity()) to.reserve(std::max(needed, to.size() + to.size() / 8));
    to.insert(to.end(), values.begin(), values.end());
  }

  struct Prepared {
    const Partition* partition;
    std::vector<float> queries;  // the query values at the partition's precision, as floats
    std::vector<float> query_norms;
  };

  // The dot product of a prepared query with row `row` of `p`.
  float Dot(const Partition& p, const float* query, size_t row) const {
    return p.precision == Precision::kFp16 ? dot_(query, p.half.data() + row * p.dim, p.dim)
                                           : float_dot_(query, p.full.data() + row * p.dim, p.dim);
  }

  absl::StatusOr<Prepared> Prepare(uint64_t partition_id, const float* queries, size_t num_queries,
                                   int k) {
    auto it = partitions_.find(partition_id);
    if (it == partitions_.end()) {
      return absl::NotFoundError(absl::StrCat("partition ", partition_id, " is not loaded"));
    }
    if (absl::Status s = ValidateK(k); !s.ok()) return s;
    const Partition& p = it->second;
    if (p.precision == Precision::kFp32) {
      absl::StatusOr<FloatRows> full =
          PrepareFloatRows(p.metric, queries, num_queries, p.dim, "query");
      if (!full.ok()) return full.status();
      return Prepared{&p, std::move(full->values), std::move(full->norms)};
    }
    absl::StatusOr<HalfRows> half_queries =
        PrepareRows(p.metric, queries, num_queries, p.dim, "query");
    if (!half_queries.ok()) return half_queries.status();
    Prepared prepared{&p, {}, std::move(half_queries->norms)};
    prepared.queries.resize(half_queries->values.size());
    for (size_t i = 0; i < prepared.queries.size(); ++i) {
      prepared.queries[i] = HalfToFloat(half_queries->values[i]);
    }
    return prepared;
  }

  DotFunction dot_;
  FloatKernel float_dot_;  // fp32 partitions: the index's exact inner product
  absl::flat_hash_map<uint64_t, Partition> partitions_;
  std::vector<float> query_staging_;         // QueryStaging
  std::vector<uint32_t> candidate_staging_;  // CandidateStaging
};

}  // namespace

std::unique_ptr<ExactBatchSearcher> MakeCpuExactBatchSearcher() {
  return std::make_unique<CpuExactBatchSearcher>(/*allow_simd=*/true);
}

std::unique_ptr<ExactBatchSearcher> MakeScalarCpuExactBatchSearcherForTest() {
  return std::make_unique<CpuExactBatchSearcher>(/*allow_simd=*/false);
}

}  // namespace engram::index
