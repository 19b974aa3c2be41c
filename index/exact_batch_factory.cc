#include "index/exact_batch.h"

#ifdef ENGRAM_HAVE_CUDA
#include "index/gpu/cuda_exact_batch.h"
#endif

namespace engram::index {

std::unique_ptr<ExactBatchSearcher> MakeExactBatchSearcher(size_t gpu_budget_bytes,
                                                           std::string* why) {
#ifdef ENGRAM_HAVE_CUDA
  std::string gpu_why;
  if (auto gpu = MakeCudaExactBatchSearcher(gpu_budget_bytes, &gpu_why)) {
    *why = "cuda: " + gpu_why;
    return gpu;
  }
  *why = "cpu: " + gpu_why;
#else
  *why = "cpu: built without CUDA";
#endif
  return MakeCpuExactBatchSearcher();
}

}  // namespace engram::index
