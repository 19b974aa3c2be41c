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
// Scan's GEMM writes scores in tiles of at most `score_tile_bytes` (1 GiB
// holds a 256-query batch over 1M rows in one tile: on an H100 one tile took
// 2.2 ms where four 256 MiB tiles took 3.0 ms).
std::unique_ptr<ExactBatchSearcher> MakeCudaExactBatchSearcher(size_t budget_bytes,
                                                               std::string* why,
                                                               size_t score_tile_bytes = size_t{1}
                                                                                         << 30);

}  // namespace engram::index
