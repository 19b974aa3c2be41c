// Factory of the CUDA ExactBatchSearcher (index/exact_batch.h); compiled only
// when the build found nvcc (ENGRAM_HAVE_CUDA).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "index/exact_batch.h"

namespace engram::index {

// nullptr (with the reason in `why`) when no GPU answers; the device memory
// for partitions is limited to `budget_bytes`. Scratch space comes on top:
// Scan's GEMM writes scores in tiles of at most `score_tile_bytes`.
std::unique_ptr<ExactBatchSearcher> MakeCudaExactBatchSearcher(size_t budget_bytes,
                                                               std::string* why,
                                                               size_t score_tile_bytes = size_t{256}
                                                                                         << 20);

}  // namespace engram::index
