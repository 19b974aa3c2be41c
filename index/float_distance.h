// Exact float32 similarity kernels for the final rerank and for ground truth
// (sample recall checks, benchmarks): inner product and squared L2 with
// AVX-512, AVX2/FMA or scalar code, chosen once at run time.
#pragma once

#include <cstddef>

namespace engram::index {

using FloatKernel = float (*)(const float* a, const float* b, size_t dim);

struct FloatKernels {
  FloatKernel inner_product;
  FloatKernel l2_squared;
  const char* name;
};

// The fastest kernels this CPU supports; scalar ones when allow_simd is false.
const FloatKernels& SelectFloatKernels(bool allow_simd = true);

}  // namespace engram::index
