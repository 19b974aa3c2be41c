// Batched exact scoring over device-resident partitions: the final rerank of
// graph-search candidates and the exhaustive scan of the router's
// full-deliberation path. Two implementations share this interface and its
// arithmetic, so they return the same answers:
//   - the CPU twin (index/exact_batch_cpu.cc, SIMD with runtime dispatch),
//     which every CI run tests;
//   - the CUDA searcher (index/gpu/), built when nvcc is found and used when a
//     GPU is present (MakeExactBatchSearcher picks, and says why).
//
// Arithmetic (identical in both): a partition is held in fp16 (the default:
// half the memory and bandwidth) or fp32 (Precision). Its vectors and the
// queries against it are rounded to IEEE fp16 or kept in fp32 accordingly
// (cosine: normalised first, in fp32); products accumulate in fp32. Scores
// are "higher is closer": dot product for cosine and inner product,
// -(|x|^2 - 2 q.x + |q|^2) for L2 with the norms taken over the stored
// values. Results are ordered by score, ties by the smaller row id. Only the
// order of fp32 additions differs between the two, so scores agree to float
// tolerance and ids agree except among near-ties.
//
// Thread safety: a searcher is used by one thread at a time (the server's
// micro-batcher owns it); SetPartition/DropPartition must not race searches.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/half_float.h"
#include "storage/metric.h"

namespace engram::index {

inline constexpr uint32_t kNoRow = std::numeric_limits<uint32_t>::max();

// How a partition's vectors are held and scored.
enum class Precision { kFp16, kFp32 };

// Supplies rows [first, first + count) of a partition being stored: a
// pointer to count * dim floats, into the source's own memory or into
// `scratch` (room for count * dim floats) after filling it.
using RowSource = std::function<const float*(size_t first, size_t count, float* scratch)>;

// Rows per piece when a partition is read from a RowSource: 64 MB of fp32
// input (21,845 rows at 768-d), at least one row.
inline size_t PieceRows(size_t dim) {
  return std::max<size_t>(1, (size_t{64} << 20) / (sizeof(float) * std::max<size_t>(1, dim)));
}

// FloatToHalf / HalfToFloat: storage/half_float.h (engram::).

// Each query's best k rows, best first. A query with fewer than k eligible
// rows has its tail filled with (kNoRow, -infinity).
struct TopKBatch {
  size_t num_queries = 0;
  int k = 0;
  std::vector<uint32_t> rows;  // num_queries * k
  std::vector<float> scores;   // num_queries * k
};

// Limits shared by both implementations (validated identically).
inline constexpr int kMaxK = 1024;
inline constexpr size_t kMaxRerankCandidates = 4096;  // per query

class ExactBatchSearcher {
 public:
  virtual ~ExactBatchSearcher() = default;

  // "cpu" or "cuda".
  virtual std::string name() const = 0;

  // Host memory for `count` query floats or candidate rows that Rerank and
  // Scan read fastest (page-locked for the CUDA searcher, whose uploads from
  // it skip the driver's staging copy; plain memory for the CPU twin): a
  // caller that assembles a batch can build it here and pass the pointer.
  // Owned by the searcher and valid until the next call of the same method;
  // nullptr when none can be had (use any other memory then).
  virtual float* QueryStaging(size_t count) = 0;
  virtual uint32_t* CandidateStaging(size_t count) = 0;

  // Stores (replacing) a partition of `num_rows` vectors of `dim` floats,
  // held at `precision`, reading it piece by piece from `rows` (so that no
  // full fp32 copy of it has to exist; the CUDA searcher uploads each piece
  // while it prepares the next). INVALID_ARGUMENT for dim 0, non-finite
  // values or (fp16) values beyond fp16's range; RESOURCE_EXHAUSTED when the
  // device budget cannot hold it. A partition of that id is replaced only
  // when the new one is stored.
  virtual absl::Status SetPartitionFrom(uint64_t partition, Metric metric, Precision precision,
                                        size_t num_rows, size_t dim, const RowSource& rows) = 0;
  // The same from `num_rows` row-major vectors in memory.
  absl::Status SetPartition(uint64_t partition, Metric metric, Precision precision,
                            const float* vectors, size_t num_rows, size_t dim) {
    return SetPartitionFrom(
        partition, metric, precision, num_rows, dim,
        [vectors, dim](size_t first, size_t, float*) { return vectors + first * dim; });
  }
  // An fp16 partition.
  absl::Status SetPartition(uint64_t partition, Metric metric, const float* vectors,
                            size_t num_rows, size_t dim) {
    return SetPartition(partition, metric, Precision::kFp16, vectors, num_rows, dim);
  }
  virtual void DropPartition(uint64_t partition) = 0;

  // Appends `num_rows` rows to a stored partition (its metric, precision and
  // dimension), prepared as SetPartition would have, so a copy follows a
  // growing partition without being made again. NOT_FOUND for an unknown
  // partition, INVALID_ARGUMENT for bad values, RESOURCE_EXHAUSTED when the
  // budget cannot hold the grown partition; the partition is unchanged then.
  virtual absl::Status AppendRows(uint64_t partition, const float* vectors, size_t num_rows) = 0;

  // For each query i, scores the rows candidates[offsets[i] .. offsets[i+1])
  // and keeps the best k. Queries are `dim` floats each, row-major.
  virtual absl::StatusOr<TopKBatch> Rerank(uint64_t partition, const float* queries,
                                           size_t num_queries, const uint32_t* candidate_offsets,
                                           const uint32_t* candidates, int k) = 0;

  // For each query, the best k rows of the whole partition; if
  // `allowed_rows` is given (ceil(num_rows / 64) words, bit r of word r/64),
  // only rows whose bit is set.
  virtual absl::StatusOr<TopKBatch> Scan(uint64_t partition, const float* queries,
                                         size_t num_queries, int k,
                                         const uint64_t* allowed_rows) = 0;
};

std::unique_ptr<ExactBatchSearcher> MakeCpuExactBatchSearcher();

// The CUDA searcher when this build has CUDA and a GPU answers, else the CPU
// twin. `why` receives a one-line reason for the choice (for logs and Stats).
std::unique_ptr<ExactBatchSearcher> MakeExactBatchSearcher(size_t gpu_budget_bytes,
                                                           std::string* why);

}  // namespace engram::index
