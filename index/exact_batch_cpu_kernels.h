// The CPU twin's dot-product kernels, exposed so tests can check the SIMD
// path against the scalar one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "index/exact_batch.h"

namespace engram::index {

// Dot product of fp32 query values with one fp16 row, accumulated in fp32.
using DotFunction = float (*)(const float* query, const uint16_t* row, size_t dim);
float DotScalar(const float* query, const uint16_t* row, size_t dim);
float DotAvx2(const float* query, const uint16_t* row, size_t dim);  // needs AVX2+FMA+F16C
// The fastest kernel this CPU supports (scalar when allow_simd is false).
DotFunction SelectDot(bool allow_simd);
// fp32 rows (Precision::kFp32) use the index's inner product kernels
// (index/float_distance.h).

// A CPU twin that never uses SIMD.
std::unique_ptr<ExactBatchSearcher> MakeScalarCpuExactBatchSearcherForTest();

}  // namespace engram::index
