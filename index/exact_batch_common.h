// Host-side preparation and validation shared by the CPU twin and the CUDA
// searcher, so that both compute on bit-identical inputs (fp16 or fp32) and
// refuse the same bad requests with the same messages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "index/exact_batch.h"

namespace engram::index {

// A partition or a query batch as both implementations consume it.
struct HalfRows {
  size_t num_rows = 0;
  size_t dim = 0;
  std::vector<uint16_t> values;  // num_rows * dim fp16, row-major
  std::vector<float> norms;      // squared L2 norm of each fp16 row, in fp32
};

// The same for Precision::kFp32: values kept in fp32, norms over them.
struct FloatRows {
  size_t num_rows = 0;
  size_t dim = 0;
  std::vector<float> values;
  std::vector<float> norms;
};

// Rounds rows to fp16 (cosine: each row normalised in fp32 first; an all-zero
// row stays zero). INVALID_ARGUMENT for dim 0, non-finite values or values
// beyond fp16's range.
absl::StatusOr<HalfRows> PrepareRows(Metric metric, const float* rows, size_t num_rows, size_t dim,
                                     const char* what);
// The same without the rounding (cosine: normalised in fp32 with the same
// scale; norms summed like PrepareRows's).
absl::StatusOr<FloatRows> PrepareFloatRows(Metric metric, const float* rows, size_t num_rows,
                                           size_t dim, const char* what);

// The same into caller storage (`count` rows of `dim` values, `count`
// norms), for partitions prepared piece by piece; errors number the rows
// from `first_number`.
// fp16 values (uint16_t) or fp32 ones (float).
absl::Status PrepareRowsInto(Metric metric, const float* rows, size_t count, size_t dim,
                             const char* what, size_t first_number, uint16_t* values, float* norms);
absl::Status PrepareRowsInto(Metric metric, const float* rows, size_t count, size_t dim,
                             const char* what, size_t first_number, float* values, float* norms);

absl::Status ValidateK(int k);
// Offsets must start at 0, not decrease, hold at most kMaxRerankCandidates
// per query, and every candidate must be < num_rows. ValidateOffsets checks
// only the offsets (the CUDA searcher checks candidate rows in its kernel).
absl::Status ValidateOffsets(size_t num_queries, const uint32_t* offsets);
absl::Status ValidateCandidates(size_t num_queries, const uint32_t* offsets,
                                const uint32_t* candidates, size_t num_rows);

// The score of a row from its dot product with a query (see exact_batch.h).
inline float FinalScore(Metric metric, float dot, float row_norm, float query_norm) {
  return metric == Metric::kL2 ? -(row_norm - 2.0f * dot + query_norm) : dot;
}

// The result order: higher score first, then the smaller row.
inline bool Better(float score_a, uint32_t row_a, float score_b, uint32_t row_b) {
  return score_a > score_b || (score_a == score_b && row_a < row_b);
}

TopKBatch EmptyTopK(size_t num_queries, int k);

}  // namespace engram::index
