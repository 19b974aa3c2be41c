// The CUDA implementation of ExactBatchSearcher (index/exact_batch.h).
//
// Partitions live on the device as fp16 rows plus fp32 squared norms, under
// a byte budget. Queries go up as fp32 and are rounded to fp16 on the device
// with the host's exact arithmetic (PrepareQueriesKernel), so the CPU twin
// sees the same bits; bad queries and out-of-range candidate rows raise an
// error bit that the host explains with the twin's message. Rerank: one block per query gathers its
// candidate rows (16-byte loads, one warp per candidate), scores them against the query held in
// shared memory and bitonic-sorts the scores in shared memory. Scan: cuBLAS GEMM (fp16 in, fp32
// accumulate) over tiles of rows gives a score matrix (bitmap filter and L2 correction applied when
// it is read). Top-k by threshold: the k-th best of the maxima of k or more row groups bounds the
// k-th best score from below (any k distinct rows do), so only scores at or above it survive a
// filter pass and get sorted (bitonic, 2048 per block, merge rounds). Groups are 1024 rows, a
// strided sample of at least 8k of them, when the tile is large enough (else 128 or 32 rows, all of
// them). All tiles run without a host round trip; afterwards, a tile where more scores than the
// survivor buffer holds tied at the threshold is computed again and sorted whole.
//
// cuBLAS is opened with dlopen (RTLD_LOCAL) when a GPU is found rather than
// linked: libcublasLt's ~94 KB of static TLS would be reserved in every
// thread of every process linking this library, and civetweb's 100 KB thread
// stacks (the Prometheus endpoint) can no longer be created then.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "index/exact_batch_common.h"
#include "index/gpu/cuda_exact_batch.h"

namespace engram::index {
namespace {

#define ENGRAM_CUDA_RETURN_IF_ERROR(call)                                               \
  do {                                                                                  \
    cudaError_t error = (call);                                                         \
    if (error != cudaSuccess) {                                                         \
      return absl::InternalError(absl::StrCat(#call, ": ", cudaGetErrorString(error))); \
    }                                                                                   \
  } while (0)

#define ENGRAM_CUBLAS_RETURN_IF_ERROR(call)                                        \
  do {                                                                             \
    cublasStatus_t status = (call);                                                \
    if (status != CUBLAS_STATUS_SUCCESS) {                                         \
      return absl::InternalError(absl::StrCat(#call, ": cuBLAS status ", status)); \
    }                                                                              \
  } while (0)

// The four cuBLAS entry points used, resolved from the dlopened library.
struct CublasApi {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  // The C entry point (the header also declares a C++ overload).
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const void*, const void*, cudaDataType, int, const void*, cudaDataType,
                            int, const void*, void*, cudaDataType, int, cublasComputeType_t,
                            cublasGemmAlgo_t) = nullptr;
};

// The API, or nullptr with the reason in `why` when given (loaded once per
// process).
const CublasApi* LoadCublas(std::string* why) {
  static std::string error;
  static const CublasApi* api = []() -> const CublasApi* {
    void* library = nullptr;
    // The loader's search path first, then the toolkit this was built with.
    for (const char* name : {"libcublas.so.13", "libcublas.so", ENGRAM_CUBLAS_FALLBACK_PATH}) {
      library = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (library != nullptr) break;
    }
    if (library == nullptr) {
      const char* reason = dlerror();
      error = absl::StrCat("cannot load cuBLAS (", reason ? reason : "libcublas.so.13", ")");
      return nullptr;
    }
    static CublasApi loaded;
    loaded.create = reinterpret_cast<decltype(loaded.create)>(dlsym(library, "cublasCreate_v2"));
    loaded.destroy = reinterpret_cast<decltype(loaded.destroy)>(dlsym(library, "cublasDestroy_v2"));
    loaded.set_stream =
        reinterpret_cast<decltype(loaded.set_stream)>(dlsym(library, "cublasSetStream_v2"));
    loaded.gemm_ex = reinterpret_cast<decltype(loaded.gemm_ex)>(dlsym(library, "cublasGemmEx"));
    if (!loaded.create || !loaded.destroy || !loaded.set_stream || !loaded.gemm_ex) {
      error = "cuBLAS lacks an expected entry point";
      return nullptr;
    }
    return &loaded;
  }();
  if (api == nullptr && why != nullptr) *why = error;
  return api;
}

constexpr int kSortThreads = 1024;
constexpr int kChunk = 2048;  // scores sorted per block in Scan's top-k
constexpr int kRerankThreads = 256;

__device__ __forceinline__ bool DeviceBetter(float sa, uint32_t ra, float sb, uint32_t rb) {
  return sa > sb || (sa == sb && ra < rb);
}

__device__ __forceinline__ float DeviceScore(int metric, float dot, float row_norm,
                                             float query_norm) {
  return metric == static_cast<int>(Metric::kL2) ? -(row_norm - 2.0f * dot + query_norm) : dot;
}

// Sorts n (a power of two) pairs best-first; all threads of the block call it.
__device__ void BitonicSort(float* scores, uint32_t* rows, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < (n >> 1); i += blockDim.x) {
        int lo = 2 * stride * (i / stride) + (i % stride);
        int hi = lo + stride;
        bool best_first = (lo & size) == 0;
        bool swap = best_first ? DeviceBetter(scores[hi], rows[hi], scores[lo], rows[lo])
                               : DeviceBetter(scores[lo], rows[lo], scores[hi], rows[hi]);
        if (swap) {
          float s = scores[lo];
          scores[lo] = scores[hi];
          scores[hi] = s;
          uint32_t r = rows[lo];
          rows[lo] = rows[hi];
          rows[hi] = r;
        }
      }
      __syncthreads();
    }
  }
}

// Sorts a block's kChunk pairs and writes the best k to out[slot .. slot + k).
__device__ void SortAndKeepBest(float* scores, uint32_t* rows, int k, size_t slot,
                                float* __restrict__ out_scores, uint32_t* __restrict__ out_rows) {
  __syncthreads();
  BitonicSort(scores, rows, kChunk);
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    out_scores[slot + i] = scores[i];
    out_rows[slot + i] = rows[i];
  }
}

// Error bits a kernel raises; the host then reruns its own checks for the
// exact message (the CPU twin's).
constexpr uint32_t kBadQuery = 1;      // a non-finite value, or beyond fp16 after scaling
constexpr uint32_t kBadCandidate = 2;  // a candidate row outside the partition

// Rounds queries to fp16 on the device with exactly the host's arithmetic
// (PrepareRows in index/exact_batch_common.cc): the squared norm in double
// over 8 partial sums (partial j adds elements j, j + 8, ... in order), the
// cosine scale float(1 / sqrt(norm)), the product rounded to nearest even,
// the fp16 values' squared norm in float over 8 partial sums, both combined
// as ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)); every operation
// explicitly rounded (no fused multiply-adds), so both twins see the same
// bits. Eight threads per query, one per partial sum.
constexpr int kPrepareLanes = 8;

template <typename T>
__device__ __forceinline__ T CombinePartials(T partial) {
  T p[kPrepareLanes];
#pragma unroll
  for (int t = 0; t < kPrepareLanes; ++t) p[t] = __shfl_sync(0xffffffff, partial, t, kPrepareLanes);
  if constexpr (sizeof(T) == sizeof(double)) {
    return __dadd_rn(__dadd_rn(__dadd_rn(p[0], p[1]), __dadd_rn(p[2], p[3])),
                     __dadd_rn(__dadd_rn(p[4], p[5]), __dadd_rn(p[6], p[7])));
  } else {
    return __fadd_rn(__fadd_rn(__fadd_rn(p[0], p[1]), __fadd_rn(p[2], p[3])),
                     __fadd_rn(__fadd_rn(p[4], p[5]), __fadd_rn(p[6], p[7])));
  }
}

// blockDim.x must be a multiple of 32 (whole warps take part in the shuffles).
__global__ void PrepareQueriesKernel(const float* __restrict__ raw, int num_queries, int dim,
                                     int metric, __half* __restrict__ out,
                                     float* __restrict__ norms, uint32_t* __restrict__ errors) {
  const int lane = threadIdx.x % kPrepareLanes;
  const int q = blockIdx.x * (blockDim.x / kPrepareLanes) + threadIdx.x / kPrepareLanes;
  const bool active = q < num_queries;
  const float* row = raw + size_t(active ? q : 0) * dim;
  bool bad = false;
  double partial = 0;
  if (active) {
    for (int i = lane; i < dim; i += kPrepareLanes) {
      const float x = row[i];
      bad |= !isfinite(x);
      partial = __dadd_rn(partial, __dmul_rn(double(x), double(x)));
    }
  }
  const double norm = CombinePartials(partial);
  const float scale = (metric == static_cast<int>(Metric::kCosine) && norm > 0)
                          ? __double2float_rn(__ddiv_rn(1.0, __dsqrt_rn(norm)))
                          : 1.0f;
  float half_partial = 0;
  if (active) {
    for (int i = lane; i < dim; i += kPrepareLanes) {
      const float scaled = __fmul_rn(row[i], scale);
      bad |= fabsf(scaled) > 65504.0f;
      const __half h = __float2half_rn(scaled);
      out[size_t(q) * dim + i] = h;
      const float back = __half2float(h);
      half_partial = __fadd_rn(half_partial, __fmul_rn(back, back));
    }
  }
  const float half_norm = CombinePartials(half_partial);
  if (active && bad) atomicOr(errors, kBadQuery);
  if (active && lane == 0) norms[q] = half_norm;
}

__global__ void RerankKernel(const __half* __restrict__ vectors, const float* __restrict__ norms,
                             int dim, int metric, const __half* __restrict__ queries,
                             const float* __restrict__ query_norms,
                             const uint32_t* __restrict__ offsets,
                             const uint32_t* __restrict__ candidates, uint32_t num_rows, int k,
                             int sort_size, uint32_t* __restrict__ out_rows,
                             float* __restrict__ out_scores, uint32_t* __restrict__ errors) {
  extern __shared__ float shared[];
  float* query = shared;
  float* scores = query + dim;
  uint32_t* rows = reinterpret_cast<uint32_t*>(scores + sort_size);
  const int q = blockIdx.x;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    query[i] = __half2float(queries[size_t(q) * dim + i]);
  }
  const uint32_t begin = offsets[q];
  const int count = static_cast<int>(offsets[q + 1] - begin);
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const bool vectorized = (dim % 8) == 0;
  for (int c = warp; c < count; c += warps) {
    const uint32_t row = candidates[begin + c];
    if (row >= num_rows) {
      if (lane == 0) {
        atomicOr(errors, kBadCandidate);
        scores[c] = -INFINITY;
        rows[c] = kNoRow;
      }
      continue;
    }
    const __half* x = vectors + size_t(row) * dim;
    float sum = 0;
    if (vectorized) {
      for (int i = lane * 8; i < dim; i += 256) {
        uint4 packed = *reinterpret_cast<const uint4*>(x + i);
        const __half2* h = reinterpret_cast<const __half2*>(&packed);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          float2 f = __half22float2(h[j]);
          sum += query[i + 2 * j] * f.x + query[i + 2 * j + 1] * f.y;
        }
      }
    } else {
      for (int i = lane; i < dim; i += 32) sum += query[i] * __half2float(x[i]);
    }
    for (int offset = 16; offset > 0; offset >>= 1)
      sum += __shfl_down_sync(0xffffffff, sum, offset);
    if (lane == 0) {
      scores[c] = DeviceScore(metric, sum, norms[row], query_norms[q]);
      rows[c] = row;
    }
  }
  for (int c = count + threadIdx.x; c < sort_size; c += blockDim.x) {
    scores[c] = -INFINITY;
    rows[c] = kNoRow;
  }
  __syncthreads();
  BitonicSort(scores, rows, sort_size);
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    bool valid = i < count;
    out_rows[size_t(q) * k + i] = valid ? rows[i] : kNoRow;
    out_scores[size_t(q) * k + i] = valid ? scores[i] : -INFINITY;
  }
}

// Scan merge round: each query has `length` (score, row) pairs (only the first
// lengths[q] valid when `lengths` is given); block (group, query) sorts
// kChunk of them and writes its best k at slot (query, out_first + group) of
// an output with out_groups slots per query.
__global__ void MergeTopKKernel(const float* __restrict__ in_scores,
                                const uint32_t* __restrict__ in_rows, int length,
                                const uint32_t* __restrict__ lengths, int k, int out_groups,
                                int out_first, float* __restrict__ out_scores,
                                uint32_t* __restrict__ out_rows) {
  __shared__ float scores[kChunk];
  __shared__ uint32_t rows[kChunk];
  const int group = blockIdx.x, q = blockIdx.y;
  const int valid_length = lengths == nullptr ? length : min(length, int(lengths[q]));
  for (int i = threadIdx.x; i < kChunk; i += blockDim.x) {
    int index = group * kChunk + i;
    bool valid = index < valid_length;
    scores[i] = valid ? in_scores[size_t(q) * length + index] : -INFINITY;
    rows[i] = valid ? in_rows[size_t(q) * length + index] : kNoRow;
  }
  SortAndKeepBest(scores, rows, k, (size_t(q) * out_groups + out_first + group) * k, out_scores,
                  out_rows);
}

// The score of element `local` of a GEMM tile column, or -inf when the row
// is filtered out or past the tile.
__device__ __forceinline__ float TileScore(const float* column, int local, int tile_rows,
                                           uint32_t row_base, int metric, const float* norms,
                                           float query_norm, const uint64_t* allowed) {
  if (local >= tile_rows) return -INFINITY;
  uint32_t global = row_base + local;
  if (allowed != nullptr && !((allowed[global >> 6] >> (global & 63)) & 1)) return -INFINITY;
  const float dot = column[local];
  // Norms are read only for L2 (the other metrics' score is the dot product).
  return metric == static_cast<int>(Metric::kL2) ? -(norms[global] - 2.0f * dot + query_norm) : dot;
}

// Rows each warp covers in the wide group-max and filter kernels: 4 per lane,
// lane + 32 * j, so every load instruction reads 32 consecutive floats.
constexpr int kWarpRows = 128;

// Scan threshold, step 1 (wide): the best score of each group of
// kWarpRows * kGroupWarps consecutive rows of each query's tile column. With
// kGroupWarps == 1 a warp is a group (8 groups per 256-thread block);
// otherwise the block (kGroupWarps warps) is one group, and only every
// group_stride-th group of the tile is evaluated.
template <int kGroupWarps>
__global__ void WideGroupMaxKernel(const float* __restrict__ dots, int tile_rows, uint32_t row_base,
                                   int metric, const float* __restrict__ norms,
                                   const float* __restrict__ query_norms,
                                   const uint64_t* __restrict__ allowed, int groups,
                                   int group_stride, float* __restrict__ group_scores,
                                   uint32_t* __restrict__ group_ids) {
  const int q = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // Which kWarpRows rows: with kGroupWarps > 1, group g covers the rows of
  // group g * group_stride (a strided sample of the tile).
  const int chunk = kGroupWarps > 1 ? blockIdx.x * group_stride * kGroupWarps + warp
                                    : blockIdx.x * (blockDim.x >> 5) + warp;
  const float* column = dots + size_t(q) * tile_rows;
  const float query_norm = query_norms[q];
  float best = -INFINITY;
#pragma unroll
  for (int j = 0; j < kWarpRows / 32; ++j) {
    best = fmaxf(best, TileScore(column, chunk * kWarpRows + lane + 32 * j, tile_rows, row_base,
                                 metric, norms, query_norm, allowed));
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    best = fmaxf(best, __shfl_xor_sync(0xffffffff, best, offset));
  }
  int group = chunk;
  if constexpr (kGroupWarps > 1) {
    __shared__ float warp_best[32];
    if (lane == 0) warp_best[warp] = best;
    __syncthreads();
    if (warp != 0) return;
    best = lane < kGroupWarps ? warp_best[lane] : -INFINITY;
    for (int offset = 16; offset > 0; offset >>= 1) {
      best = fmaxf(best, __shfl_xor_sync(0xffffffff, best, offset));
    }
    group = blockIdx.x;
  }
  if (lane == 0 && group < groups) {
    group_scores[size_t(q) * groups + group] = best;
    group_ids[size_t(q) * groups + group] = group;
  }
}

// Scan threshold, step 1: the maximum of every 32 consecutive rows of each
// query's tile column (one warp per group).
__global__ void GroupMaxKernel(const float* __restrict__ dots, int tile_rows, uint32_t row_base,
                               int metric, const float* __restrict__ norms,
                               const float* __restrict__ query_norms,
                               const uint64_t* __restrict__ allowed, int groups,
                               float* __restrict__ group_scores, uint32_t* __restrict__ group_ids) {
  const int q = blockIdx.y;
  const int local = blockIdx.x * blockDim.x + threadIdx.x;
  float score = TileScore(dots + size_t(q) * tile_rows, local, tile_rows, row_base, metric, norms,
                          query_norms[q], allowed);
  for (int offset = 16; offset > 0; offset >>= 1) {
    score = fmaxf(score, __shfl_xor_sync(0xffffffff, score, offset));
  }
  const int group = local >> 5;
  if ((threadIdx.x & 31) == 0 && group < groups) {
    group_scores[size_t(q) * groups + group] = score;
    group_ids[size_t(q) * groups + group] = group;
  }
}

// Scan threshold, step 2: keeps every element at least as good as the k-th
// best group maximum (a lower bound of the k-th best element, since the k
// best group maxima are k distinct elements). Survivors beyond `capacity`
// are counted but not stored; the caller then falls back to sorting.
// Each warp filters kWarpRows rows (4 per lane, coalesced).
__global__ void FilterKernel(const float* __restrict__ dots, int tile_rows, uint32_t row_base,
                             int metric, const float* __restrict__ norms,
                             const float* __restrict__ query_norms,
                             const uint64_t* __restrict__ allowed,
                             const float* __restrict__ thresholds, int k, int capacity,
                             uint32_t* __restrict__ counts, float* __restrict__ out_scores,
                             uint32_t* __restrict__ out_rows) {
  const int q = blockIdx.y;
  const int lane = threadIdx.x & 31;
  const int chunk = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const float* column = dots + size_t(q) * tile_rows;
  const float query_norm = query_norms[q];
  const float threshold = thresholds[size_t(q) * k + k - 1];
#pragma unroll
  for (int j = 0; j < kWarpRows / 32; ++j) {
    const int local = chunk * kWarpRows + lane + 32 * j;
    float score = TileScore(column, local, tile_rows, row_base, metric, norms, query_norm, allowed);
    if (score == -INFINITY || score < threshold) continue;
    uint32_t position = atomicAdd(&counts[q], 1u);
    if (position < uint32_t(capacity)) {
      out_scores[size_t(q) * capacity + position] = score;
      out_rows[size_t(q) * capacity + position] = row_base + local;
    }
  }
}

// Scan fallback (when too many scores tie at the threshold): block (chunk, query) sorts kChunk
// scores of one query's column of the GEMM tile and writes its best k to `out` at slot (query,
// first_chunk + chunk).
__global__ void TileTopKKernel(const float* __restrict__ dots, int tile_rows, uint32_t row_base,
                               int metric, const float* __restrict__ norms,
                               const float* __restrict__ query_norms,
                               const uint64_t* __restrict__ allowed, int k, int first_chunk,
                               int chunks_per_query, float* __restrict__ out_scores,
                               uint32_t* __restrict__ out_rows) {
  __shared__ float scores[kChunk];
  __shared__ uint32_t rows[kChunk];
  const int chunk = blockIdx.x, q = blockIdx.y;
  const float* column = dots + size_t(q) * tile_rows;
  for (int i = threadIdx.x; i < kChunk; i += blockDim.x) {
    int local = chunk * kChunk + i;
    float score =
        TileScore(column, local, tile_rows, row_base, metric, norms, query_norms[q], allowed);
    scores[i] = score;
    rows[i] = score == -INFINITY ? kNoRow : row_base + local;
  }
  SortAndKeepBest(scores, rows, k, (size_t(q) * chunks_per_query + first_chunk + chunk) * k,
                  out_scores, out_rows);
}

// A growable device buffer.
template <typename T>
class DeviceBuffer {
 public:
  ~DeviceBuffer() { cudaFree(data_); }
  absl::Status Reserve(size_t count) {
    if (count <= capacity_) return absl::OkStatus();
    cudaFree(data_);
    data_ = nullptr;
    capacity_ = 0;
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMalloc(&data_, count * sizeof(T)));
    capacity_ = count;
    return absl::OkStatus();
  }
  T* get() const { return data_; }

 private:
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

// (score, row) pairs on the device.
struct PairBuffer {
  absl::Status Reserve(size_t count) {
    if (auto s = scores.Reserve(count); !s.ok()) return s;
    return rows.Reserve(count);
  }
  DeviceBuffer<float> scores;
  DeviceBuffer<uint32_t> rows;
};

struct DevicePartition {
  Metric metric = Metric::kCosine;
  size_t num_rows = 0, dim = 0, bytes = 0;
  __half* vectors = nullptr;
  float* norms = nullptr;
};

int NextPowerOfTwo(int n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

class CudaExactBatchSearcher final : public ExactBatchSearcher {
 public:
  CudaExactBatchSearcher(size_t budget_bytes, size_t score_tile_bytes, cudaStream_t stream,
                         cublasHandle_t cublas)
      : budget_bytes_(budget_bytes),
        score_tile_bytes_(score_tile_bytes),
        stream_(stream),
        cublas_(cublas) {}
  ~CudaExactBatchSearcher() override {
    for (auto& [id, partition] : partitions_) Free(partition);
    cublas_api_->destroy(cublas_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda"; }

  absl::Status SetPartition(uint64_t partition_id, Metric metric, const float* vectors,
                            size_t num_rows, size_t dim) override {
    absl::StatusOr<HalfRows> rows = PrepareRows(metric, vectors, num_rows, dim, "row");
    if (!rows.ok()) return rows.status();
    size_t bytes = rows->values.size() * sizeof(__half) + rows->norms.size() * sizeof(float);
    size_t replaced = partitions_.contains(partition_id) ? partitions_[partition_id].bytes : 0;
    if (used_bytes_ - replaced + bytes > budget_bytes_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("partition of ", bytes, " bytes does not fit the GPU budget (",
                       used_bytes_ - replaced, " of ", budget_bytes_, " bytes in use)"));
    }
    DevicePartition partition{metric, num_rows, dim, bytes};
    ENGRAM_CUDA_RETURN_IF_ERROR(
        cudaMalloc(&partition.vectors, std::max<size_t>(1, rows->values.size()) * 2));
    ENGRAM_CUDA_RETURN_IF_ERROR(
        cudaMalloc(&partition.norms, std::max<size_t>(1, num_rows) * sizeof(float)));
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpy(partition.vectors, rows->values.data(),
                                           rows->values.size() * 2, cudaMemcpyHostToDevice));
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpy(partition.norms, rows->norms.data(),
                                           num_rows * sizeof(float), cudaMemcpyHostToDevice));
    DropPartition(partition_id);
    partitions_[partition_id] = partition;
    used_bytes_ += bytes;
    return absl::OkStatus();
  }

  void DropPartition(uint64_t partition_id) override {
    auto it = partitions_.find(partition_id);
    if (it == partitions_.end()) return;
    used_bytes_ -= it->second.bytes;
    Free(it->second);
    partitions_.erase(it);
  }

  absl::StatusOr<TopKBatch> Rerank(uint64_t partition_id, const float* queries, size_t num_queries,
                                   const uint32_t* offsets, const uint32_t* candidates,
                                   int k) override {
    absl::StatusOr<const DevicePartition*> partition = Find(partition_id);
    if (!partition.ok()) return partition.status();
    const DevicePartition& p = **partition;
    if (absl::Status s = ValidateK(k); !s.ok()) return s;
    if (absl::Status s = ValidateOffsets(num_queries, offsets); !s.ok()) return s;
    if (absl::Status s = UploadQueries(p, queries, num_queries); !s.ok()) return s;
    TopKBatch out = EmptyTopK(num_queries, k);
    if (num_queries == 0) return out;
    uint32_t total = offsets[num_queries];
    int most = 0;
    for (size_t q = 0; q < num_queries; ++q) {
      most = std::max<int>(most, static_cast<int>(offsets[q + 1] - offsets[q]));
    }
    int sort_size = NextPowerOfTwo(std::max(most, k));
    if (auto s = offsets_.Reserve(num_queries + 1); !s.ok()) return s;
    if (auto s = candidates_.Reserve(std::max<uint32_t>(1, total)); !s.ok()) return s;
    if (auto s = PrepareOutput(num_queries, k); !s.ok()) return s;
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(offsets_.get(), offsets,
                                                (num_queries + 1) * sizeof(uint32_t),
                                                cudaMemcpyHostToDevice, stream_));
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        candidates_.get(), candidates, total * sizeof(uint32_t), cudaMemcpyHostToDevice, stream_));
    size_t shared_bytes = p.dim * sizeof(float) + size_t(sort_size) * 8;
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
        RerankKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes)));
    RerankKernel<<<num_queries, kRerankThreads, shared_bytes, stream_>>>(
        p.vectors, p.norms, static_cast<int>(p.dim), static_cast<int>(p.metric),
        query_values_.get(), query_norms_.get(), offsets_.get(), candidates_.get(),
        static_cast<uint32_t>(p.num_rows), k, sort_size, out_rows_.get(), out_scores_.get(),
        errors_.get());
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    absl::StatusOr<TopKBatch> result = Download(std::move(out));
    if (!result.ok()) return result;
    if (last_errors_ != 0) {
      if (absl::Status s = ExplainErrors(p, queries, num_queries); !s.ok()) return s;
      if (absl::Status s = ValidateCandidates(num_queries, offsets, candidates, p.num_rows);
          !s.ok()) {
        return s;
      }
      return absl::InternalError("the rerank kernel reported an error the host cannot explain");
    }
    return result;
  }

  absl::StatusOr<TopKBatch> Scan(uint64_t partition_id, const float* queries, size_t num_queries,
                                 int k, const uint64_t* allowed_rows) override {
    absl::StatusOr<const DevicePartition*> partition = Find(partition_id);
    if (!partition.ok()) return partition.status();
    const DevicePartition& p = **partition;
    if (absl::Status s = ValidateK(k); !s.ok()) return s;
    if (absl::Status s = UploadQueries(p, queries, num_queries); !s.ok()) return s;
    TopKBatch out = EmptyTopK(num_queries, k);
    if (num_queries == 0) return out;
    if (p.num_rows == 0) {
      // Nothing to scan, but the queries must still be valid.
      ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(&last_errors_, errors_.get(), sizeof(uint32_t),
                                                  cudaMemcpyDeviceToHost, stream_));
      ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
      if (last_errors_ != 0) return ExplainErrors(p, queries, num_queries);
      return out;
    }
    const uint64_t* allowed = nullptr;
    if (allowed_rows != nullptr) {
      size_t words = (p.num_rows + 63) / 64;
      if (auto s = allowed_.Reserve(words); !s.ok()) return s;
      ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(allowed_.get(), allowed_rows, words * 8,
                                                  cudaMemcpyHostToDevice, stream_));
      allowed = allowed_.get();
    }
    const int nq = static_cast<int>(num_queries);
    size_t tile_rows = std::max<size_t>(
        kChunk, (score_tile_bytes_ / (sizeof(float) * num_queries)) / kChunk * kChunk);
    tile_rows = std::min(tile_rows, p.num_rows);
    const int tiles = static_cast<int>((p.num_rows + tile_rows - 1) / tile_rows);
    const int capacity = std::max(kChunk, 8 * k);
    const int max_groups = static_cast<int>((tile_rows + 31) / 32);
    if (auto s = dots_.Reserve(tile_rows * num_queries); !s.ok()) return s;
    if (auto s = groups_.Reserve(size_t(max_groups) * num_queries); !s.ok()) return s;
    if (auto s = thresholds_.Reserve(size_t(k) * num_queries); !s.ok()) return s;
    if (auto s = survivors_.Reserve(size_t(capacity) * num_queries); !s.ok()) return s;
    if (auto s = tile_best_.Reserve(size_t(tiles) * k * num_queries); !s.ok()) return s;
    if (auto s = final_.Reserve(size_t(k) * num_queries); !s.ok()) return s;
    if (auto s = counts_.Reserve(size_t(tiles) * num_queries); !s.ok()) return s;
    ENGRAM_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(counts_.get(), 0, size_t(tiles) * num_queries * sizeof(uint32_t), stream_));
    const float one = 1.0f, zero = 0.0f;
    auto gemm = [&](size_t r0, int rows) -> absl::Status {
      // dots (rows x nq, column-major) = X_tile (rows x dim) * Q^T.
      ENGRAM_CUBLAS_RETURN_IF_ERROR(cublas_api_->gemm_ex(
          cublas_, CUBLAS_OP_T, CUBLAS_OP_N, rows, nq, static_cast<int>(p.dim), &one,
          p.vectors + r0 * p.dim, CUDA_R_16F, static_cast<int>(p.dim), query_values_.get(),
          CUDA_R_16F, static_cast<int>(p.dim), &zero, dots_.get(), CUDA_R_32F, rows,
          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      return absl::OkStatus();
    };
    // Pass 1, every tile, without a host round trip: GEMM, a threshold, the
    // scores at or above it, their best k.
    for (int tile = 0; tile < tiles; ++tile) {
      const size_t r0 = size_t(tile) * tile_rows;
      const int rows = static_cast<int>(std::min(tile_rows, p.num_rows - r0));
      if (auto s = gemm(r0, rows); !s.ok()) return s;
      // Threshold per query: the k-th best of the maxima of some groups of
      // rows, a lower bound of the k-th best score. Wider groups and fewer of
      // them (a strided sample: any k distinct rows bound it) are cheaper to
      // find but looser, so enough are kept for a few k survivors.
      int groups;
      if (rows >= 4 * k * kWarpRows * 8) {
        const int all_groups = (rows + kWarpRows * 8 - 1) / (kWarpRows * 8);
        groups = std::min(all_groups, std::max(8 * k, 64));
        WideGroupMaxKernel<8><<<dim3(groups, nq), 256, 0, stream_>>>(
            dots_.get(), rows, static_cast<uint32_t>(r0), static_cast<int>(p.metric), p.norms,
            query_norms_.get(), allowed, groups, all_groups / groups, groups_.scores.get(),
            groups_.rows.get());
      } else if (rows >= 4 * k * kWarpRows) {
        groups = (rows + kWarpRows - 1) / kWarpRows;
        WideGroupMaxKernel<1><<<dim3((groups + 7) / 8, nq), 256, 0, stream_>>>(
            dots_.get(), rows, static_cast<uint32_t>(r0), static_cast<int>(p.metric), p.norms,
            query_norms_.get(), allowed, groups, 1, groups_.scores.get(), groups_.rows.get());
      } else {
        groups = (rows + 31) / 32;
        GroupMaxKernel<<<dim3((rows + 255) / 256, nq), 256, 0, stream_>>>(
            dots_.get(), rows, static_cast<uint32_t>(r0), static_cast<int>(p.metric), p.norms,
            query_norms_.get(), allowed, groups, groups_.scores.get(), groups_.rows.get());
      }
      ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
      if (auto s = ReduceToK(groups_, groups, nullptr, k, nq, thresholds_, 1, 0); !s.ok()) {
        return s;
      }
      uint32_t* tile_counts = counts_.get() + size_t(tile) * num_queries;
      FilterKernel<<<dim3((rows + kWarpRows * 8 - 1) / (kWarpRows * 8), nq), 256, 0, stream_>>>(
          dots_.get(), rows, static_cast<uint32_t>(r0), static_cast<int>(p.metric), p.norms,
          query_norms_.get(), allowed, thresholds_.scores.get(), k, capacity, tile_counts,
          survivors_.scores.get(), survivors_.rows.get());
      ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
      // One tile: its best k are the answer.
      if (auto s = ReduceToK(survivors_, capacity, tile_counts, k, nq,
                             tiles == 1 ? final_ : tile_best_, tiles, tile);
          !s.ok()) {
        return s;
      }
    }
    // One round trip: how many survived in each tile.
    std::vector<uint32_t> counts(size_t(tiles) * num_queries);
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(counts.data(), counts_.get(),
                                                counts.size() * sizeof(uint32_t),
                                                cudaMemcpyDeviceToHost, stream_));
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    // Pass 2, rare: where more than `capacity` scores tied at or above the
    // threshold, the survivors were cut short; sort that tile whole instead.
    for (int tile = 0; tile < tiles; ++tile) {
      auto first = counts.begin() + size_t(tile) * num_queries;
      if (*std::max_element(first, first + num_queries) <= uint32_t(capacity)) continue;
      const size_t r0 = size_t(tile) * tile_rows;
      const int rows = static_cast<int>(std::min(tile_rows, p.num_rows - r0));
      if (auto s = gemm(r0, rows); !s.ok()) return s;
      int chunks = (rows + kChunk - 1) / kChunk;
      if (auto s = chunk_best_.Reserve(size_t(chunks) * k * num_queries); !s.ok()) return s;
      TileTopKKernel<<<dim3(chunks, nq), kSortThreads, 0, stream_>>>(
          dots_.get(), rows, static_cast<uint32_t>(r0), static_cast<int>(p.metric), p.norms,
          query_norms_.get(), allowed, k, 0, chunks, chunk_best_.scores.get(),
          chunk_best_.rows.get());
      ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
      if (auto s = ReduceToK(chunk_best_, chunks * k, nullptr, k, nq,
                             tiles == 1 ? final_ : tile_best_, tiles, tile);
          !s.ok()) {
        return s;
      }
    }
    if (tiles > 1) {
      if (auto s = ReduceToK(tile_best_, tiles * k, nullptr, k, nq, final_, 1, 0); !s.ok()) {
        return s;
      }
    }
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.rows.data(), final_.rows.get(),
                                                num_queries * k * sizeof(uint32_t),
                                                cudaMemcpyDeviceToHost, stream_));
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.scores.data(), final_.scores.get(),
                                                num_queries * k * sizeof(float),
                                                cudaMemcpyDeviceToHost, stream_));
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(&last_errors_, errors_.get(), sizeof(uint32_t),
                                                cudaMemcpyDeviceToHost, stream_));
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    if (last_errors_ != 0) {
      if (absl::Status s = ExplainErrors(p, queries, num_queries); !s.ok()) return s;
      return absl::InternalError("the scan kernels reported an error the host cannot explain");
    }
    return out;
  }

 private:
  // Reduces each query's `length` pairs in `in` (the first lengths[q] valid
  // when given) to its best k, written at slot (query, out_first) of `out`,
  // which has out_groups slots of k per query. Sorts kChunk pairs per block
  // and round, through the two scratch buffers.
  absl::Status ReduceToK(PairBuffer& in, int length, const uint32_t* lengths, int k, int nq,
                         PairBuffer& out, int out_groups, int out_first) {
    const float* in_scores = in.scores.get();
    const uint32_t* in_rows = in.rows.get();
    for (int round = 0;; ++round) {
      int groups = (length + kChunk - 1) / kChunk;
      bool last = groups == 1;
      PairBuffer& target = last ? out : scratch_[round % 2];
      if (!last) {
        if (auto s = target.Reserve(size_t(groups) * k * nq); !s.ok()) return s;
      }
      MergeTopKKernel<<<dim3(groups, nq), kSortThreads, 0, stream_>>>(
          in_scores, in_rows, length, round == 0 ? lengths : nullptr, k, last ? out_groups : groups,
          last ? out_first : 0, target.scores.get(), target.rows.get());
      ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
      if (last) return absl::OkStatus();
      in_scores = target.scores.get();
      in_rows = target.rows.get();
      length = groups * k;
    }
  }

  static void Free(DevicePartition& partition) {
    cudaFree(partition.vectors);
    cudaFree(partition.norms);
  }

  absl::StatusOr<const DevicePartition*> Find(uint64_t partition_id) const {
    auto it = partitions_.find(partition_id);
    if (it == partitions_.end()) {
      return absl::NotFoundError(absl::StrCat("partition ", partition_id, " is not loaded"));
    }
    return &it->second;
  }

  // Uploads the raw queries and rounds them to fp16 on the device
  // (PrepareQueriesKernel); clears the error bits of this call.
  absl::Status UploadQueries(const DevicePartition& p, const float* queries, size_t num_queries) {
    if (auto s = errors_.Reserve(1); !s.ok()) return s;
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(errors_.get(), 0, sizeof(uint32_t), stream_));
    last_errors_ = 0;
    const size_t values = num_queries * p.dim;
    if (auto s = raw_queries_.Reserve(std::max<size_t>(1, values)); !s.ok()) return s;
    if (auto s = query_values_.Reserve(std::max<size_t>(1, values)); !s.ok()) return s;
    if (auto s = query_norms_.Reserve(std::max<size_t>(1, num_queries)); !s.ok()) return s;
    if (num_queries == 0) return absl::OkStatus();
    // From pageable memory the call returns once the source was staged, so
    // the caller's buffer is free again without a synchronisation.
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(raw_queries_.get(), queries, values * sizeof(float),
                                                cudaMemcpyHostToDevice, stream_));
    const int threads = 128, per_block = threads / kPrepareLanes;
    PrepareQueriesKernel<<<static_cast<int>((num_queries + per_block - 1) / per_block), threads, 0,
                           stream_>>>(raw_queries_.get(), static_cast<int>(num_queries),
                                      static_cast<int>(p.dim), static_cast<int>(p.metric),
                                      query_values_.get(), query_norms_.get(), errors_.get());
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return absl::OkStatus();
  }

  // After a kernel raised kBadQuery: the host's message for the bad query
  // (PrepareRows finds it), or OK when the queries are fine.
  absl::Status ExplainErrors(const DevicePartition& p, const float* queries, size_t num_queries) {
    if ((last_errors_ & kBadQuery) == 0) return absl::OkStatus();
    absl::StatusOr<HalfRows> half = PrepareRows(p.metric, queries, num_queries, p.dim, "query");
    if (!half.ok()) return half.status();
    return absl::InternalError("the device rejected a query the host accepts");
  }

  // Output buffers are poisoned (all ones: NaN scores) so that an unwritten
  // slot shows up in the results instead of passing as stale data.
  absl::Status PrepareOutput(size_t num_queries, int k) {
    size_t count = std::max<size_t>(1, num_queries * k);
    if (auto s = out_rows_.Reserve(count); !s.ok()) return s;
    if (auto s = out_scores_.Reserve(count); !s.ok()) return s;
    ENGRAM_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(out_rows_.get(), 0xff, count * sizeof(uint32_t), stream_));
    ENGRAM_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(out_scores_.get(), 0xff, count * sizeof(float), stream_));
    return absl::OkStatus();
  }

  absl::StatusOr<TopKBatch> Download(TopKBatch out) {
    size_t count = out.num_queries * out.k;
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(&last_errors_, errors_.get(), sizeof(uint32_t),
                                                cudaMemcpyDeviceToHost, stream_));
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.rows.data(), out_rows_.get(),
                                                count * sizeof(uint32_t), cudaMemcpyDeviceToHost,
                                                stream_));
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.scores.data(), out_scores_.get(),
                                                count * sizeof(float), cudaMemcpyDeviceToHost,
                                                stream_));
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return out;
  }

  const size_t budget_bytes_;
  const size_t score_tile_bytes_;
  size_t used_bytes_ = 0;
  cudaStream_t stream_;
  cublasHandle_t cublas_;
  const CublasApi* cublas_api_ = LoadCublas(nullptr);  // loaded by the factory already
  absl::flat_hash_map<uint64_t, DevicePartition> partitions_;
  DeviceBuffer<float> raw_queries_;
  DeviceBuffer<__half> query_values_;
  DeviceBuffer<float> query_norms_;
  DeviceBuffer<uint32_t> errors_;  // kBad* bits of the current call
  uint32_t last_errors_ = 0;       // read back with the results
  DeviceBuffer<uint32_t> offsets_, candidates_, out_rows_;
  DeviceBuffer<float> out_scores_, dots_;
  DeviceBuffer<uint64_t> allowed_;
  DeviceBuffer<uint32_t> counts_;
  // Scan: group maxima, thresholds, threshold survivors, fallback chunk
  // winners, per-tile and final best k, and ReduceToK's ping-pong scratch.
  PairBuffer groups_, thresholds_, survivors_, chunk_best_, tile_best_, final_, scratch_[2];
};

}  // namespace

std::unique_ptr<ExactBatchSearcher> MakeCudaExactBatchSearcher(size_t budget_bytes,
                                                               std::string* why,
                                                               size_t score_tile_bytes) {
  int devices = 0;
  cudaError_t error = cudaGetDeviceCount(&devices);
  if (error != cudaSuccess || devices == 0) {
    *why = absl::StrCat("no usable GPU (",
                        error != cudaSuccess ? cudaGetErrorString(error) : "0 devices", ")");
    return nullptr;
  }
  cudaDeviceProp properties;
  if (cudaGetDeviceProperties(&properties, 0) != cudaSuccess) {
    *why = "cannot read GPU 0's properties";
    return nullptr;
  }
  cudaStream_t stream;
  if (cudaStreamCreate(&stream) != cudaSuccess) {
    *why = "cannot create a CUDA stream";
    return nullptr;
  }
  const CublasApi* api = LoadCublas(why);
  if (api == nullptr) {
    cudaStreamDestroy(stream);
    return nullptr;
  }
  cublasHandle_t cublas;
  if (api->create(&cublas) != CUBLAS_STATUS_SUCCESS) {
    cudaStreamDestroy(stream);
    *why = "cannot create a cuBLAS handle";
    return nullptr;
  }
  api->set_stream(cublas, stream);
  *why = absl::StrCat("GPU 0: ", properties.name, ", budget ", budget_bytes >> 20, " MiB");
  return std::make_unique<CudaExactBatchSearcher>(budget_bytes, score_tile_bytes, stream, cublas);
}

}  // namespace engram::index
