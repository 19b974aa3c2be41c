#include "index/exact_batch_common.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"

namespace engram::index {
namespace {
constexpr float kMaxHalf = 65504.0f;

// values[i] * scale rounded to fp16 into `out`, and the fp16 values back as
// floats into `back`. The F16C path rounds exactly like FloatToHalf (nearest
// even; tests/unit/index/exact_batch_test.cc checks the two agree).
void ToHalfScalar(const float* values, float scale, size_t n, uint16_t* out, float* back) {
  for (size_t i = 0; i < n; ++i) {
    out[i] = FloatToHalf(values[i] * scale);
    back[i] = HalfToFloat(out[i]);
  }
}

__attribute__((target("avx2,f16c"))) void ToHalfF16c(const float* values, float scale, size_t n,
                                                     uint16_t* out, float* back) {
  __m256 factor = _mm256_set1_ps(scale);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i half = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(values + i), factor),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), half);
    _mm256_storeu_ps(back + i, _mm256_cvtph_ps(half));
  }
  ToHalfScalar(values + i, scale, n - i, out + i, back + i);
}

using ToHalfFunction = void (*)(const float*, float, size_t, uint16_t*, float*);
ToHalfFunction SelectToHalf() {
  static const ToHalfFunction kFunction = CpuHasAvx2AndF16c() ? ToHalfF16c : ToHalfScalar;
  return kFunction;
}
}  // namespace

namespace {

// Sums with 8 independent accumulators (8 dependency chains instead of one:
// the sums feed both implementations, so their order only has to be fixed).
template <typename Acc, typename T>
Acc SumOfSquares(const T* values, size_t n) {
  Acc partial[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) partial[j] += Acc(values[i + j]) * Acc(values[i + j]);
  }
  for (; i < n; ++i) partial[i % 8] += Acc(values[i]) * Acc(values[i]);
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

// Prepares input rows [first, last) of `rows` into the same rows of
// `values` / `norms` (uint16_t: rounded to fp16; float: kept in fp32); the
// first bad row's error, if any, naming it `number_offset` + its index.
template <typename Value>
absl::Status PrepareRange(Metric metric, const float* rows, size_t first, size_t last, size_t dim,
                          const char* what, size_t number_offset, Value* values, float* norms) {
  constexpr bool kHalf = std::is_same_v<Value, uint16_t>;
  std::vector<float> back(kHalf ? dim : 0);  // one row's fp16 values as floats
  for (size_t r = first; r < last; ++r) {
    const float* row = rows + r * dim;
    bool finite = true;
    for (size_t i = 0; i < dim; ++i) finite &= std::isfinite(row[i]);
    if (!finite) {
      for (size_t i = 0; i < dim; ++i) {
        if (!std::isfinite(row[i])) {
          return absl::InvalidArgumentError(absl::StrCat(what, " ", number_offset + r, " has ",
                                                         row[i], " at [", i,
                                                         "]; values must be finite"));
        }
      }
    }
    const double norm = SumOfSquares<double>(row, dim);
    float scale = (metric == Metric::kCosine && norm > 0) ? 1.0f / std::sqrt(norm) : 1.0f;
    if constexpr (!kHalf) {
      float* out = values + r * dim;
      for (size_t i = 0; i < dim; ++i) out[i] = row[i] * scale;
      norms[r] = SumOfSquares<float>(out, dim);
    } else {
      float largest = 0;
      for (size_t i = 0; i < dim; ++i) largest = std::max(largest, std::fabs(row[i] * scale));
      if (largest > kMaxHalf) {
        for (size_t i = 0; i < dim; ++i) {
          if (std::fabs(row[i] * scale) > kMaxHalf) {
            return absl::InvalidArgumentError(absl::StrCat(what, " ", number_offset + r, " has ",
                                                           row[i], " at [", i,
                                                           "]; beyond the fp16 range of +-65504"));
          }
        }
      }
      SelectToHalf()(row, scale, dim, values + r * dim, back.data());
      norms[r] = SumOfSquares<float>(back.data(), dim);
    }
  }
  return absl::OkStatus();
}

// All `count` rows, split over the hardware threads when there are many
// (a partition's copy, a big query batch); each row is prepared the same way
// wherever it runs.
template <typename Value>
absl::Status PrepareInto(Metric metric, const float* rows, size_t count, size_t dim,
                         const char* what, size_t number_offset, Value* values, float* norms) {
  if (dim == 0) return absl::InvalidArgumentError(absl::StrCat(what, " dimension is 0"));
  constexpr size_t kValuesPerThread = size_t{1} << 18;
  const size_t threads = std::clamp<size_t>(count * dim / kValuesPerThread, 1,
                                            std::max(1u, std::thread::hardware_concurrency()));
  if (threads == 1) {
    return PrepareRange(metric, rows, 0, count, dim, what, number_offset, values, norms);
  }
  std::vector<absl::Status> results(threads);
  std::vector<std::thread> workers;
  const size_t per_thread = (count + threads - 1) / threads;
  for (size_t t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const size_t first = std::min(count, t * per_thread);
      const size_t last = std::min(count, first + per_thread);
      results[t] = PrepareRange(metric, rows, first, last, dim, what, number_offset, values, norms);
    });
  }
  for (std::thread& worker : workers) worker.join();
  for (const absl::Status& result : results) {
    if (!result.ok()) return result;  // the lowest bad row
  }
  return absl::OkStatus();
}

template <typename Rows>
absl::StatusOr<Rows> PrepareAll(Metric metric, const float* rows, size_t num_rows, size_t dim,
                                const char* what) {
  if (dim == 0) return absl::InvalidArgumentError(absl::StrCat(what, " dimension is 0"));
  Rows out;
  out.num_rows = num_rows;
  out.dim = dim;
  out.values.resize(num_rows * dim);
  out.norms.resize(num_rows);
  if (absl::Status s =
          PrepareInto(metric, rows, num_rows, dim, what, 0, out.values.data(), out.norms.data());
      !s.ok()) {
    return s;
  }
  return out;
}

}  // namespace

absl::StatusOr<HalfRows> PrepareRows(Metric metric, const float* rows, size_t num_rows, size_t dim,
                                     const char* what) {
  return PrepareAll<HalfRows>(metric, rows, num_rows, dim, what);
}

absl::Status PrepareRowsInto(Metric metric, const float* rows, size_t count, size_t dim,
                             const char* what, size_t first_number, uint16_t* values,
                             float* norms) {
  return PrepareInto(metric, rows, count, dim, what, first_number, values, norms);
}

absl::Status PrepareRowsInto(Metric metric, const float* rows, size_t count, size_t dim,
                             const char* what, size_t first_number, float* values, float* norms) {
  return PrepareInto(metric, rows, count, dim, what, first_number, values, norms);
}

absl::StatusOr<FloatRows> PrepareFloatRows(Metric metric, const float* rows, size_t num_rows,
                                           size_t dim, const char* what) {
  return PrepareAll<FloatRows>(metric, rows, num_rows, dim, what);
}

absl::Status ValidateK(int k) {
  if (k <= 0 || k > kMaxK) {
    return absl::InvalidArgumentError(absl::StrCat("k is ", k, "; must be in 1..", kMaxK));
  }
  return absl::OkStatus();
}

absl::Status ValidateOffsets(size_t num_queries, const uint32_t* offsets) {
  if (num_queries > 0 && offsets[0] != 0) {
    return absl::InvalidArgumentError("candidate_offsets[0] must be 0");
  }
  for (size_t q = 0; q < num_queries; ++q) {
    if (offsets[q + 1] < offsets[q]) {
      return absl::InvalidArgumentError(absl::StrCat("candidate_offsets decrease at ", q + 1));
    }
    if (offsets[q + 1] - offsets[q] > kMaxRerankCandidates) {
      return absl::InvalidArgumentError(
          absl::StrCat("query ", q, " has ", offsets[q + 1] - offsets[q],
                       " candidates; the limit is ", kMaxRerankCandidates));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateCandidates(size_t num_queries, const uint32_t* offsets,
                                const uint32_t* candidates, size_t num_rows) {
  if (absl::Status s = ValidateOffsets(num_queries, offsets); !s.ok()) return s;
  for (size_t q = 0; q < num_queries; ++q) {
    for (uint32_t c = offsets[q]; c < offsets[q + 1]; ++c) {
      if (candidates[c] >= num_rows) {
        return absl::InvalidArgumentError(absl::StrCat("query ", q, " candidate row ",
                                                       candidates[c], " is outside the ", num_rows,
                                                       " rows of the partition"));
      }
    }
  }
  return absl::OkStatus();
}

TopKBatch EmptyTopK(size_t num_queries, int k) {
  TopKBatch out;
  out.num_queries = num_queries;
  out.k = k;
  out.rows.assign(num_queries * k, kNoRow);
  out.scores.assign(num_queries * k, -std::numeric_limits<float>::infinity());
  return out;
}

}  // namespace engram::index
