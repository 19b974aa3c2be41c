// The CUDA implementation of ExactBatchSearcher (index/exact_batch.h).
//
// Partitions live on the device as fp16 rows plus fp32 squared norms, under
// a byte budget. Queries go up as fp32 and are rounded to fp16 on the device
// with the host's exact arithmetic (PrepareQueriesKernel), so the CPU twin
// sees the same bits; bad queries and out-of-range candidate rows raise an
// error bit that the host explains with the twin's message. Results come
// back through page-locked memory with one synchronisation per call.
//
// Rerank: one block per query gathers its candidate rows (8 lanes and
// 16-byte loads per candidate), scores them against the query held in shared
// memory and bitonic-sorts the scores in shared memory.
//
// Scan: cuBLAS GEMM (fp16 in, fp32 accumulate) over tiles of rows gives a
// matrix of dot products (bitmap filter and L2 correction applied when it is
// read). For cosine the GEMM rounds the dots to fp16, which halves the bytes
// it writes and the filter reads back; the filter's threshold is then
// widened by fp16's rounding and the survivors are rescored exactly
// (RescoreKernel) before the sort. Top-k by threshold: the k-th best of the
// maxima of k or more row groups bounds the k-th best score from below (any
// k distinct rows do), so only scores at or above it survive a filter pass
// and get sorted (bitonic, up to 2048 per block, merge rounds). Groups are
// 1024 rows, a strided sample of at least 8k of them, when the tile is large
// enough (else 128 or 32 rows, all of them). All tiles run without a host
// round trip; afterwards, a tile where more scores than the survivor buffer
// holds passed the threshold is computed again in fp32 and sorted whole.
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
#include <cmath>
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
// RescoreKernel: 32 survivors per block, at most 8 blocks per query (a query
// has a few hundred survivors, usually).
constexpr int kRescoreThreads = 256;
constexpr int kRescoreBlocks = 8;

// Scan batches of cosine queries that get row-major fp16 dots (see
// RowFilterKernel).
constexpr int kRowMajorQueries = 64;
constexpr int kRowMajorMaxQueries = 1024;

__device__ __forceinline__ float ToFloat(float value) { return value; }
__device__ __forceinline__ float ToFloat(__half value) { return __half2float(value); }

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

// Sorts a block's first n pairs (n a power of two, at least k) and writes the
// best k to out[slot .. slot + k).
__device__ void SortAndKeepBest(float* scores, uint32_t* rows, int n, int k, size_t slot,
                                float* __restrict__ out_scores, uint32_t* __restrict__ out_rows) {
  __syncthreads();
  BitonicSort(scores, rows, n);
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
// With out_full given (fp32 partitions), the scaled values are written there
// unrounded and the norm summed over them (PrepareFloatRows); `out` is unused.
__global__ void PrepareQueriesKernel(const float* __restrict__ raw, int num_queries, int dim,
                                     int metric, __half* __restrict__ out,
                                     float* __restrict__ out_full, float* __restrict__ norms,
                                     uint32_t* __restrict__ errors) {
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
      float back = scaled;
      if (out_full != nullptr) {
        out_full[size_t(q) * dim + i] = scaled;
      } else {
        bad |= fabsf(scaled) > 65504.0f;
        const __half h = __float2half_rn(scaled);
        out[size_t(q) * dim + i] = h;
        back = __half2float(h);
      }
      half_partial = __fadd_rn(half_partial, __fmul_rn(back, back));
    }
  }
  const float half_norm = CombinePartials(half_partial);
  if (active && bad) atomicOr(errors, kBadQuery);
  if (active && lane == 0) norms[q] = half_norm;
}

// The dot product of row x with a query (floats in shared memory, or fp16
// values in global memory), summed by a group of `lanes` lanes of a warp,
// `sub` being this lane's place in it: 8 lanes with 16-byte row loads when
// `vectorized` (dim a multiple of a vector's elements), else 32 lanes, one
// element each. Every lane of the warp calls it (the shuffles); an inactive
// group adds nothing. Lane sub == 0 gets the sum. RerankKernel and
// RescoreKernel share it, so a rescored scan survivor gets exactly the score
// a rerank would give it.
template <typename Row, typename Query>
__device__ __forceinline__ float GroupDot(const Row* __restrict__ x,
                                          const Query* __restrict__ query, int dim, bool vectorized,
                                          int lanes, int sub, bool active) {
  constexpr int kPerVector = 16 / sizeof(Row);
  float sum = 0;
  if (active && vectorized) {
#pragma unroll 4
    for (int i = sub * kPerVector; i < dim; i += lanes * kPerVector) {
      const uint4 packed = *reinterpret_cast<const uint4*>(x + i);
      if constexpr (sizeof(Row) == sizeof(__half)) {
        float q[8];
        if constexpr (sizeof(Query) == sizeof(__half)) {  // one 16-byte load
          const uint4 query_packed = *reinterpret_cast<const uint4*>(query + i);
          const __half* h = reinterpret_cast<const __half*>(&query_packed);
#pragma unroll
          for (int e = 0; e < 8; ++e) q[e] = __half2float(h[e]);
        } else {
#pragma unroll
          for (int e = 0; e < 8; ++e) q[e] = query[i + e];
        }
        const __half2* h = reinterpret_cast<const __half2*>(&packed);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 f = __half22float2(h[j]);
          sum += q[2 * j] * f.x + q[2 * j + 1] * f.y;
        }
      } else {
        const float4 f = *reinterpret_cast<const float4*>(&packed);
        sum += ToFloat(query[i]) * f.x + ToFloat(query[i + 1]) * f.y;
        sum += ToFloat(query[i + 2]) * f.z + ToFloat(query[i + 3]) * f.w;
      }
    }
  } else if (active) {
    for (int i = sub; i < dim; i += lanes) sum += ToFloat(query[i]) * ToFloat(x[i]);
  }
  for (int offset = lanes / 2; offset > 0; offset >>= 1) {
    sum += __shfl_down_sync(0xffffffff, sum, offset, lanes);
  }
  return sum;
}

// Scores candidate rows against each query and keeps the best k: block q
// takes candidates[offsets[q] .. offsets[q + 1]). Eight lanes per candidate
// with 16-byte loads (a warp for odd dims); scores bitonic-sorted in shared
// memory (max_sort slots, a power of two at least as large as any list and
// k).
// Row: __half or float (the partition's precision); queries come as fp16
// values (`queries`) or fp32 ones (`full_queries`) to match.
template <typename Row>
__global__ void RerankKernel(const Row* __restrict__ vectors, const float* __restrict__ norms,
                             int dim, int metric, const __half* __restrict__ queries,
                             const float* __restrict__ full_queries,
                             const float* __restrict__ query_norms,
                             const uint32_t* __restrict__ offsets,
                             const uint32_t* __restrict__ candidates, uint32_t num_rows, int k,
                             int max_sort, uint32_t* __restrict__ out_rows,
                             float* __restrict__ out_scores, uint32_t* __restrict__ errors) {
  extern __shared__ float shared[];
  float* query = shared;
  float* scores = query + dim;
  uint32_t* rows = reinterpret_cast<uint32_t*>(scores + max_sort);
  const int q = blockIdx.x;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    query[i] = full_queries != nullptr ? full_queries[size_t(q) * dim + i]
                                       : __half2float(queries[size_t(q) * dim + i]);
  }
  const uint32_t begin = offsets[q];
  const int count = static_cast<int>(offsets[q + 1] - begin);
  int sort_size = 1;
  while (sort_size < max(count, k)) sort_size <<= 1;
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  // 8 lanes per candidate (4 in flight per warp) when GroupDot can use
  // 16-byte loads, else the whole warp.
  const bool vectorized = (dim % (16 / sizeof(Row))) == 0;
  const int lanes = vectorized ? 8 : 32;
  const int per_warp = 32 / lanes, sub = lane % lanes;
  const bool l2 = metric == static_cast<int>(Metric::kL2);
  for (int c0 = warp * per_warp; c0 < count; c0 += warps * per_warp) {  // warp-uniform
    const int c = c0 + lane / lanes;
    const bool active = c < count;
    const uint32_t row = active ? candidates[begin + c] : 0;
    const bool valid = active && row < num_rows;
    const float sum =
        GroupDot(vectors + size_t(row) * dim, query, dim, vectorized, lanes, sub, valid);
    if (active && sub == 0) {
      if (!valid) atomicOr(errors, kBadCandidate);
      // Norms are read only for L2 (the other metrics score the dot product).
      scores[c] = !valid ? -INFINITY
                  : l2   ? DeviceScore(metric, sum, norms[row], query_norms[q])
                         : sum;
      rows[c] = valid ? row : kNoRow;
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

// Scan with fp16 dots (cosine: the score is the dot product): the exact
// scores of query q's first min(counts[q], capacity) threshold survivors,
// written over their fp16-rounded ones in survivor slots q * capacity + i.
// GroupDot per survivor, as in RerankKernel; kRescoreThreads / 8 survivors per block at a time,
// grid (at most kRescoreBlocks, queries).
__global__ void RescoreKernel(const __half* __restrict__ vectors, int dim,
                              const __half* __restrict__ queries,
                              const uint32_t* __restrict__ counts, int capacity,
                              const uint32_t* __restrict__ rows, float* __restrict__ scores) {
  const int q = blockIdx.y;
  const int count = min(static_cast<int>(counts[q]), capacity);
  const bool vectorized = (dim % 8) == 0;
  const int lanes = vectorized ? 8 : 32;
  const int per_block = blockDim.x / lanes;
  const int sub = threadIdx.x % lanes;
  // Block-uniform loop: whole warps take part in GroupDot's shuffles.
  for (int first = blockIdx.x * per_block; first < count; first += gridDim.x * per_block) {
    const int i = first + threadIdx.x / lanes;
    const bool active = i < count;
    const size_t slot = size_t(q) * capacity + i;
    const uint32_t row = active ? rows[slot] : 0;
    const float sum = GroupDot(vectors + size_t(row) * dim, queries + size_t(q) * dim, dim,
                               vectorized, lanes, sub, active);
    if (active && sub == 0) scores[slot] = sum;
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
  // Only as many slots as this block has pairs (or k) take part in the sort.
  const int valid_here = max(0, min(kChunk, valid_length - group * kChunk));
  int n = 1;
  while (n < max(valid_here, k)) n <<= 1;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    int index = group * kChunk + i;
    bool valid = i < valid_here;
    scores[i] = valid ? in_scores[size_t(q) * length + index] : -INFINITY;
    rows[i] = valid ? in_rows[size_t(q) * length + index] : kNoRow;
  }
  SortAndKeepBest(scores, rows, n, k, (size_t(q) * out_groups + out_first + group) * k, out_scores,
                  out_rows);
}

// The GEMM writes each query's scores of a tile as one column of this many
// elements (at least the tile's rows, a multiple of 8), so that every column
// starts 16-byte aligned for the filter's vector loads.
__host__ __device__ __forceinline__ size_t ScoreColumnStride(int tile_rows) {
  return (size_t(tile_rows) + 7) & ~size_t{7};
}

// The score of partition row `global` given its dot product with the query,
// or -inf when the row is filtered out.
__device__ __forceinline__ float ScoreOf(float dot, uint32_t global, int metric, const float* norms,
                                         float query_norm, const uint64_t* allowed) {
  if (allowed != nullptr && !((allowed[global >> 6] >> (global & 63)) & 1)) return -INFINITY;
  // Norms are read only for L2 (the other metrics' score is the dot product).
  return metric == static_cast<int>(Metric::kL2) ? -(norms[global] - 2.0f * dot + query_norm) : dot;
}

// The score of element `local` of a GEMM tile column (Dot: float, or __half
// when the GEMM rounded its fp32 sums to fp16), or -inf when the row is
// filtered out or past the tile.
template <typename Dot>
__device__ __forceinline__ float TileScore(const Dot* column, int local, int tile_rows,
                                           uint32_t row_base, int metric, const float* norms,
                                           float query_norm, const uint64_t* allowed) {
  if (local >= tile_rows) return -INFINITY;
  return ScoreOf(ToFloat(column[local]), row_base + local, metric, norms, query_norm, allowed);
}

// Scan threshold, step 1, large tiles: the best score of each of `groups`
// sampled groups of kSampleGroupRows consecutive rows (group g starts at row
// g * group_stride * kSampleGroupRows of the tile), one block per (group,
// query) and one 16-byte vector of dots per thread.
constexpr int kSampleGroupRows = 1024;

template <typename Dot>
__global__ void SampledGroupMaxKernel(const Dot* __restrict__ dots, int tile_rows,
                                      uint32_t row_base, int metric,
                                      const float* __restrict__ norms,
                                      const float* __restrict__ query_norms,
                                      const uint64_t* __restrict__ allowed, int groups,
                                      int group_stride, float* __restrict__ group_scores,
                                      uint32_t* __restrict__ group_ids) {
  constexpr int kPerVector = 16 / sizeof(Dot);
  const int q = blockIdx.y, group = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const Dot* column = dots + size_t(q) * ScoreColumnStride(tile_rows);
  const int first = group * group_stride * kSampleGroupRows + threadIdx.x * kPerVector;
  float best = -INFINITY;
  if (first < tile_rows) {  // columns are padded to whole vectors
    const uint4 packed = *reinterpret_cast<const uint4*>(column + first);
    const Dot* values = reinterpret_cast<const Dot*>(&packed);
    const float query_norm = query_norms[q];
#pragma unroll
    for (int e = 0; e < kPerVector; ++e) {
      if (first + e < tile_rows) {
        best = fmaxf(best, ScoreOf(ToFloat(values[e]), row_base + first + e, metric, norms,
                                   query_norm, allowed));
      }
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    best = fmaxf(best, __shfl_xor_sync(0xffffffff, best, offset));
  }
  __shared__ float warp_best[32];
  if (lane == 0) warp_best[warp] = best;
  __syncthreads();
  if (warp != 0) return;
  best = lane < int(blockDim.x >> 5) ? warp_best[lane] : -INFINITY;
  for (int offset = 16; offset > 0; offset >>= 1) {
    best = fmaxf(best, __shfl_xor_sync(0xffffffff, best, offset));
  }
  if (lane == 0) {
    group_scores[size_t(q) * groups + group] = best;
    group_ids[size_t(q) * groups + group] = group;
  }
}

// Rows each warp covers in WideGroupMaxKernel: 4 per lane, lane + 32 * j.
constexpr int kWarpRows = 128;

// Scan threshold, step 1, mid-sized tiles: the best score of each group of
// kWarpRows consecutive rows of each query's tile column, one warp per group
// (8 groups per 256-thread block).
template <typename Dot>
__global__ void WideGroupMaxKernel(const Dot* __restrict__ dots, int tile_rows, uint32_t row_base,
                                   int metric, const float* __restrict__ norms,
                                   const float* __restrict__ query_norms,
                                   const uint64_t* __restrict__ allowed, int groups,
                                   float* __restrict__ group_scores,
                                   uint32_t* __restrict__ group_ids) {
  const int q = blockIdx.y;
  const int lane = threadIdx.x & 31;
  const int group = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const Dot* column = dots + size_t(q) * ScoreColumnStride(tile_rows);
  const float query_norm = query_norms[q];
  float best = -INFINITY;
#pragma unroll
  for (int j = 0; j < kWarpRows / 32; ++j) {
    best = fmaxf(best, TileScore(column, group * kWarpRows + lane + 32 * j, tile_rows, row_base,
                                 metric, norms, query_norm, allowed));
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    best = fmaxf(best, __shfl_xor_sync(0xffffffff, best, offset));
  }
  if (lane == 0 && group < groups) {
    group_scores[size_t(q) * groups + group] = best;
    group_ids[size_t(q) * groups + group] = group;
  }
}

// Scan threshold, step 1: the maximum of every 32 consecutive rows of each
// query's tile column (one warp per group).
template <typename Dot>
__global__ void GroupMaxKernel(const Dot* __restrict__ dots, int tile_rows, uint32_t row_base,
                               int metric, const float* __restrict__ norms,
                               const float* __restrict__ query_norms,
                               const uint64_t* __restrict__ allowed, int groups,
                               float* __restrict__ group_scores, uint32_t* __restrict__ group_ids) {
  const int q = blockIdx.y;
  const int local = blockIdx.x * blockDim.x + threadIdx.x;
  float score = TileScore(dots + size_t(q) * ScoreColumnStride(tile_rows), local, tile_rows,
                          row_base, metric, norms, query_norms[q], allowed);
  for (int offset = 16; offset > 0; offset >>= 1) {
    score = fmaxf(score, __shfl_xor_sync(0xffffffff, score, offset));
  }
  const int group = local >> 5;
  if ((threadIdx.x & 31) == 0 && group < groups) {
    group_scores[size_t(q) * groups + group] = score;
    group_ids[size_t(q) * groups + group] = group;
  }
}

// The spacing of fp16 values at |x| (2^-24 below the normal range).
__device__ __forceinline__ float HalfUlp(float x) {
  int exponent;
  frexpf(fabsf(x), &exponent);  // |x| = m * 2^exponent, m in [0.5, 1)
  return ldexpf(1.0f, max(exponent - 11, -24));
}

// A threshold over exact scores as a limit over fp16-rounded dots: lowered by
// 4 fp16 ulps and `slack` (see FilterKernel for why that cannot lose a row).
__device__ __forceinline__ float WidenForHalfDots(float threshold, float slack) {
  return threshold - (4 * HalfUlp(threshold) + slack);
}

// Each FilterKernel thread reads kFilterVectors 16-byte vectors of dots
// (32 fp16 or 16 fp32 values), all loads issued before any is used.
constexpr int kFilterVectors = 4;
constexpr int kFilterThreads = 256;

// Scan threshold, step 2: keeps every element at least as good as the k-th
// best group maximum (a lower bound of the k-th best element, since the k
// best group maxima are k distinct elements). Survivors beyond `capacity`
// are counted but not stored; the caller then falls back to sorting.
//
// With fp16 dots (cosine only, |dot| <= ~1) the survivors are rescored
// exactly afterwards, so the filter must not lose a row whose exact score
// reaches the k-th best: the k rows behind the threshold T have exact
// scores >= T - ulp/2 - e, and a row at least that good has an fp16 dot
// >= T - ulp - 2e, where ulp is fp16's spacing near T and e bounds the
// difference between two fp32 summation orders (`slack` = 2e). The filter
// keeps everything at or above T - 4 ulp - slack, a margin wide enough for
// a binade change too.
template <typename Dot>
__global__ void FilterKernel(const Dot* __restrict__ dots, int tile_rows, uint32_t row_base,
                             int metric, const float* __restrict__ norms,
                             const float* __restrict__ query_norms,
                             const uint64_t* __restrict__ allowed,
                             const float* __restrict__ thresholds, int k, float slack, int capacity,
                             uint32_t* __restrict__ counts, float* __restrict__ out_scores,
                             uint32_t* __restrict__ out_rows) {
  constexpr int kPerVector = 16 / sizeof(Dot);
  const int q = blockIdx.y;
  const Dot* column = dots + size_t(q) * ScoreColumnStride(tile_rows);
  const float query_norm = query_norms[q];
  float threshold = thresholds[size_t(q) * k + k - 1];
  if constexpr (sizeof(Dot) == sizeof(__half)) threshold = WidenForHalfDots(threshold, slack);
  const bool l2 = metric == static_cast<int>(Metric::kL2);
  // Vector v of this block covers rows first + v * kFilterThreads * kPerVector + [0, kPerVector).
  const int first = (blockIdx.x * kFilterVectors * kFilterThreads + threadIdx.x) * kPerVector;
  uint4 packed[kFilterVectors];
#pragma unroll
  for (int v = 0; v < kFilterVectors; ++v) {
    const int local = first + v * kFilterThreads * kPerVector;
    // Columns are padded to whole vectors (ScoreColumnStride).
    packed[v] = local < tile_rows ? *reinterpret_cast<const uint4*>(column + local) : uint4{};
  }
#pragma unroll
  for (int v = 0; v < kFilterVectors; ++v) {
    const int local = first + v * kFilterThreads * kPerVector;
    if (local >= tile_rows) break;
    const Dot* values = reinterpret_cast<const Dot*>(&packed[v]);
    if (!l2) {
      // Cosine and inner product score the dot itself: most vectors fall
      // below the threshold whole.
      float best = ToFloat(values[0]);
#pragma unroll
      for (int e = 1; e < kPerVector; ++e) best = fmaxf(best, ToFloat(values[e]));
      if (best < threshold) continue;
    }
#pragma unroll
    for (int e = 0; e < kPerVector; ++e) {
      const int row = local + e;
      if (row >= tile_rows) break;
      const uint32_t global = row_base + row;
      const float dot = ToFloat(values[e]);
      const float score = l2 ? -(norms[global] - 2.0f * dot + query_norm) : dot;
      if (score < threshold || score == -INFINITY) continue;
      if (allowed != nullptr && !((allowed[global >> 6] >> (global & 63)) & 1)) continue;
      uint32_t position = atomicAdd(&counts[q], 1u);
      if (position < uint32_t(capacity)) {
        out_scores[size_t(q) * capacity + position] = score;
        out_rows[size_t(q) * capacity + position] = global;
      }
    }
  }
}

// Scan, large cosine batches: the GEMM may instead write the fp16 dots row
// by row (dots[r * ld + q], ld = ScoreColumnStride(nq)); cuBLAS runs that
// orientation faster once a batch has dozens of queries (1M x 768 rows, 256
// queries on an H100: 0.72 instead of 0.76 ms). The two kernels below are
// SampledGroupMaxKernel and FilterKernel for that layout, cosine only.

// Block g: the best dot of each query over the rows of sampled group g.
// Thread t reads 8 queries' dots (column vector t % (ld / 8)) of every
// (blockDim.x / (ld / 8))-th row; blockDim.x is a multiple of ld / 8.
__global__ void RowSampledGroupMaxKernel(const __half* __restrict__ dots, int ld, int nq,
                                         int tile_rows, uint32_t row_base,
                                         const uint64_t* __restrict__ allowed, int groups,
                                         int group_stride, float* __restrict__ group_scores,
                                         uint32_t* __restrict__ group_ids) {
  extern __shared__ float partial[];  // [row lane][ld]
  const int vectors = ld / 8, column = threadIdx.x % vectors, row_lane = threadIdx.x / vectors;
  const int row_lanes = blockDim.x / vectors;
  const int start = blockIdx.x * group_stride * kSampleGroupRows;
  const int end = min(start + kSampleGroupRows, tile_rows);
  float best[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) best[e] = -INFINITY;
#pragma unroll 4
  for (int r = start + row_lane; r < end; r += row_lanes) {
    const uint32_t global = row_base + r;
    if (allowed != nullptr && !((allowed[global >> 6] >> (global & 63)) & 1)) continue;
    const uint4 packed = *reinterpret_cast<const uint4*>(dots + size_t(r) * ld + column * 8);
    const __half* values = reinterpret_cast<const __half*>(&packed);
#pragma unroll
    for (int e = 0; e < 8; ++e) best[e] = fmaxf(best[e], __half2float(values[e]));
  }
#pragma unroll
  for (int e = 0; e < 8; ++e) partial[row_lane * ld + column * 8 + e] = best[e];
  __syncthreads();
  for (int q = threadIdx.x; q < nq; q += blockDim.x) {
    float m = -INFINITY;
    for (int lane = 0; lane < row_lanes; ++lane) m = fmaxf(m, partial[lane * ld + q]);
    group_scores[size_t(q) * groups + blockIdx.x] = m;
    group_ids[size_t(q) * groups + blockIdx.x] = blockIdx.x;
  }
}

// Each query's filter limit: its threshold widened as FilterKernel does for
// fp16 dots.
__global__ void LimitsKernel(const float* __restrict__ thresholds, int nq, int k, float slack,
                             float* __restrict__ limits) {
  const int q = blockIdx.x * blockDim.x + threadIdx.x;
  if (q >= nq) return;
  const float threshold = thresholds[size_t(q) * k + k - 1];
  limits[q] = WidenForHalfDots(threshold, slack);
}

// FilterKernel for row-major fp16 dots. Thread t always reads the same 8
// queries (column vector t % (ld / 8), their limits held in registers) of
// kFilterVectors rows, (blockDim.x / (ld / 8)) rows apart; blockDim.x is a
// multiple of ld / 8. All loads are issued first.
__global__ void RowFilterKernel(const __half* __restrict__ dots, int ld, int nq, int tile_rows,
                                uint32_t row_base, const uint64_t* __restrict__ allowed,
                                const float* __restrict__ limits, int capacity,
                                uint32_t* __restrict__ counts, float* __restrict__ out_scores,
                                uint32_t* __restrict__ out_rows) {
  const int vectors = ld / 8, column = threadIdx.x % vectors;
  const int row_lanes = blockDim.x / vectors;
  const int first_row = blockIdx.x * row_lanes * kFilterVectors + threadIdx.x / vectors;
  uint4 packed[kFilterVectors];
#pragma unroll
  for (int j = 0; j < kFilterVectors; ++j) {
    const int row = first_row + j * row_lanes;
    packed[j] = row < tile_rows
                    ? *reinterpret_cast<const uint4*>(dots + size_t(row) * ld + column * 8)
                    : uint4{};
  }
  float limit[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int q = column * 8 + e;
    limit[e] = q < nq ? limits[q] : INFINITY;
  }
#pragma unroll
  for (int j = 0; j < kFilterVectors; ++j) {
    const int row = first_row + j * row_lanes;
    if (row >= tile_rows) break;
    const __half* values = reinterpret_cast<const __half*>(&packed[j]);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float dot = __half2float(values[e]);
      const int q = column * 8 + e;
      // Padding columns (q >= nq) hold whatever the buffer held: never kept.
      if (!(dot >= limit[e]) || q >= nq) continue;
      const uint32_t global = row_base + row;
      if (allowed != nullptr && !((allowed[global >> 6] >> (global & 63)) & 1)) continue;
      uint32_t position = atomicAdd(&counts[q], 1u);
      if (position < uint32_t(capacity)) {
        out_scores[size_t(q) * capacity + position] = dot;
        out_rows[size_t(q) * capacity + position] = global;
      }
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
  const float* column = dots + size_t(q) * ScoreColumnStride(tile_rows);
  for (int i = threadIdx.x; i < kChunk; i += blockDim.x) {
    int local = chunk * kChunk + i;
    float score =
        TileScore(column, local, tile_rows, row_base, metric, norms, query_norms[q], allowed);
    scores[i] = score;
    rows[i] = score == -INFINITY ? kNoRow : row_base + local;
  }
  SortAndKeepBest(scores, rows, kChunk, k, (size_t(q) * chunks_per_query + first_chunk + chunk) * k,
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

// Page-locked host memory, grown as needed: copies between it and the device
// are asynchronous and run at the bus's full speed (copies from pageable
// memory go through the driver's staging buffers).
class PinnedBuffer {
 public:
  ~PinnedBuffer() { cudaFreeHost(data_); }
  absl::Status Reserve(size_t bytes) {
    if (bytes <= capacity_) return absl::OkStatus();
    cudaFreeHost(data_);
    data_ = nullptr;
    capacity_ = 0;
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&data_, bytes, cudaHostAllocDefault));
    capacity_ = bytes;
    return absl::OkStatus();
  }
  void* get() const { return data_; }

 private:
  void* data_ = nullptr;
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
  Precision precision = Precision::kFp16;
  size_t num_rows = 0, dim = 0, bytes = 0;
  size_t capacity = 0;        // rows the buffers hold (AppendRows grows them)
  __half* vectors = nullptr;  // fp16 partitions
  float* full = nullptr;      // fp32 partitions
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
    for (cudaEvent_t event : piece_uploaded_) {
      if (event != nullptr) cudaEventDestroy(event);
    }
    cublas_api_->destroy(cublas_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda"; }

  float* QueryStaging(size_t count) override {
    if (!query_staging_.Reserve(std::max<size_t>(1, count) * sizeof(float)).ok()) return nullptr;
    return static_cast<float*>(query_staging_.get());
  }
  uint32_t* CandidateStaging(size_t count) override {
    if (!candidate_staging_.Reserve(std::max<size_t>(1, count) * sizeof(uint32_t)).ok()) {
      return nullptr;
    }
    return static_cast<uint32_t*>(candidate_staging_.get());
  }

  absl::Status SetPartitionFrom(uint64_t partition_id, Metric metric, Precision precision,
                                size_t num_rows, size_t dim, const RowSource& rows) override {
    if (dim == 0) return absl::InvalidArgumentError("row dimension is 0");
    return precision == Precision::kFp16
               ? Store<uint16_t>(partition_id, metric, precision, num_rows, dim, rows)
               : Store<float>(partition_id, metric, precision, num_rows, dim, rows);
  }

  void DropPartition(uint64_t partition_id) override {
    auto it = partitions_.find(partition_id);
    if (it == partitions_.end()) return;
    used_bytes_ -= it->second.bytes;
    Free(it->second);
    partitions_.erase(it);
  }

  absl::Status AppendRows(uint64_t partition_id, const float* vectors, size_t num_rows) override {
    auto it = partitions_.find(partition_id);
    if (it == partitions_.end()) {
      return absl::NotFoundError(absl::StrCat("partition ", partition_id, " is not loaded"));
    }
    DevicePartition& p = it->second;
    if (p.precision == Precision::kFp16) {
      absl::StatusOr<HalfRows> rows = PrepareRows(p.metric, vectors, num_rows, p.dim, "row");
      if (!rows.ok()) return rows.status();
      return Append(p, reinterpret_cast<void*&>(p.vectors), rows->values, rows->norms);
    }
    absl::StatusOr<FloatRows> rows = PrepareFloatRows(p.metric, vectors, num_rows, p.dim, "row");
    if (!rows.ok()) return rows.status();
    return Append(p, reinterpret_cast<void*&>(p.full), rows->values, rows->norms);
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
    if (absl::Status s = LaunchRerank(p, static_cast<int>(num_queries), k, sort_size,
                                      std::clamp(NextPowerOfTwo(most), 256, 1024));
        !s.ok()) {
      return s;
    }
    if (absl::Status s = Download(out_rows_.get(), out_scores_.get(), out); !s.ok()) return s;
    if (last_errors_ != 0) {
      if (absl::Status s = ExplainErrors(p, queries, num_queries); !s.ok()) return s;
      if (absl::Status s = ValidateCandidates(num_queries, offsets, candidates, p.num_rows);
          !s.ok()) {
        return s;
      }
      return absl::InternalError("the rerank kernel reported an error the host cannot explain");
    }
    return out;
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
    // Cosine scores lie in [-1, 1]: over fp16 rows the GEMM may round them to
    // fp16, which halves the score matrix it writes and the filter reads back
    // (at 256 queries over 1M rows, 512 MB instead of 1 GB); the threshold
    // survivors are then rescored exactly (RescoreKernel). Inner product and
    // L2 scores have no bound that fp16 could hold, and fp32 partitions
    // (fp32 GEMM) keep fp32 dots too.
    const bool half_dots = p.metric == Metric::kCosine && p.precision == Precision::kFp16;
    const size_t dot_bytes = half_dots ? sizeof(__half) : sizeof(float);
    size_t tile_rows =
        std::max<size_t>(kChunk, (score_tile_bytes_ / (dot_bytes * num_queries)) / kChunk * kChunk);
    tile_rows = std::min(tile_rows, p.num_rows);
    const int tiles = static_cast<int>((p.num_rows + tile_rows - 1) / tile_rows);
    const int capacity = std::max(kChunk, 8 * k);
    const int max_groups = static_cast<int>((tile_rows + 31) / 32);
    // The rare whole-tile sort (pass 2) needs fp32 scores: it computes a tile
    // in parts that fit the score buffer as fp32.
    const size_t part_rows =
        std::max<size_t>(kChunk, tile_rows * dot_bytes / sizeof(float) / kChunk * kChunk);
    // Row-major fp16 dots (RowFilterKernel) for cosine batches of
    // kRowMajorQueries and more over one tile large enough for a sampled
    // threshold.
    const bool row_major = half_dots && nq >= kRowMajorQueries && nq <= kRowMajorMaxQueries &&
                           tiles == 1 && p.num_rows >= size_t(4) * k * kSampleGroupRows;
    if (auto s = dots_.Reserve(std::max(
            {ScoreColumnStride(tile_rows) * num_queries * dot_bytes / sizeof(float),
             ScoreColumnStride(part_rows) * num_queries,
             row_major ? tile_rows * ScoreColumnStride(nq) * dot_bytes / sizeof(float) : 0}));
        !s.ok()) {
      return s;
    }
    if (auto s = groups_.Reserve(size_t(max_groups) * num_queries); !s.ok()) return s;
    if (auto s = thresholds_.Reserve(size_t(k) * num_queries); !s.ok()) return s;
    if (auto s = survivors_.Reserve(size_t(capacity) * num_queries); !s.ok()) return s;
    if (auto s = tile_best_.Reserve(size_t(tiles) * k * num_queries); !s.ok()) return s;
    if (auto s = final_.Reserve(size_t(k) * num_queries); !s.ok()) return s;
    if (auto s = counts_.Reserve(size_t(tiles) * num_queries); !s.ok()) return s;
    ENGRAM_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(counts_.get(), 0, size_t(tiles) * num_queries * sizeof(uint32_t), stream_));
    const float one = 1.0f, zero = 0.0f;
    auto gemm = [&](size_t r0, int rows, bool half) -> absl::Status {
      if (half && row_major) {
        // dots (nq x rows, column-major: row by row) = Q (nq x dim) * X_tile^T.
        ENGRAM_CUBLAS_RETURN_IF_ERROR(cublas_api_->gemm_ex(
            cublas_, CUBLAS_OP_T, CUBLAS_OP_N, nq, rows, static_cast<int>(p.dim), &one,
            query_values_.get(), CUDA_R_16F, static_cast<int>(p.dim), p.vectors + r0 * p.dim,
            CUDA_R_16F, static_cast<int>(p.dim), &zero, dots_.get(), CUDA_R_16F,
            static_cast<int>(ScoreColumnStride(nq)), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        return absl::OkStatus();
      }
      // dots (rows x nq, column-major) = X_tile (rows x dim) * Q^T; fp32
      // partitions multiply in plain fp32 (CUBLAS_COMPUTE_32F never uses TF32).
      const bool full = p.precision == Precision::kFp32;
      const void* x = full ? static_cast<const void*>(p.full + r0 * p.dim)
                           : static_cast<const void*>(p.vectors + r0 * p.dim);
      const void* queries = full ? static_cast<const void*>(query_full_.get())
                                 : static_cast<const void*>(query_values_.get());
      const cudaDataType input = full ? CUDA_R_32F : CUDA_R_16F;
      ENGRAM_CUBLAS_RETURN_IF_ERROR(cublas_api_->gemm_ex(
          cublas_, CUBLAS_OP_T, CUBLAS_OP_N, rows, nq, static_cast<int>(p.dim), &one, x, input,
          static_cast<int>(p.dim), queries, input, static_cast<int>(p.dim), &zero, dots_.get(),
          half ? CUDA_R_16F : CUDA_R_32F, static_cast<int>(ScoreColumnStride(rows)),
          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      return absl::OkStatus();
    };
    // Twice the worst-case difference between two fp32 summation orders of a
    // cosine dot product (|q| = |x| = 1, up to ~2 dim roundings of 2^-24).
    const float slack = std::ldexp(static_cast<float>(p.dim), -21);
    // Pass 1, every tile, without a host round trip: GEMM, a threshold, the
    // scores at or above it, their best k.
    for (int tile = 0; tile < tiles; ++tile) {
      const size_t r0 = size_t(tile) * tile_rows;
      const int rows = static_cast<int>(std::min(tile_rows, p.num_rows - r0));
      if (auto s = gemm(r0, rows, half_dots); !s.ok()) return s;
      uint32_t* tile_counts = counts_.get() + size_t(tile) * num_queries;
      PairBuffer& best = tiles == 1 ? final_ : tile_best_;
      // The survivors' best k: fp16 dots are rescored from the vectors, fp32
      // scores are sorted as they are.
      auto select = [&]() -> absl::Status {
        if (!half_dots) {
          if (auto s = FilterTile(p, dots_.get(), rows, r0, nq, k, slack, capacity, allowed,
                                  tile_counts);
              !s.ok()) {
            return s;
          }
          return ReduceToK(survivors_, capacity, tile_counts, k, nq, best, tiles, tile);
        }
        const auto* half = reinterpret_cast<const __half*>(dots_.get());
        if (auto s = row_major ? FilterRowMajorTile(half, rows, r0, nq, k, slack, capacity, allowed,
                                                    tile_counts)
                               : FilterTile(p, half, rows, r0, nq, k, slack, capacity, allowed,
                                            tile_counts);
            !s.ok()) {
          return s;
        }
        const int per_block = kRescoreThreads / ((p.dim % 8) == 0 ? 8 : 32);
        RescoreKernel<<<dim3(std::min(kRescoreBlocks, (capacity + per_block - 1) / per_block), nq),
                        kRescoreThreads, 0, stream_>>>(
            p.vectors, static_cast<int>(p.dim), query_values_.get(), tile_counts, capacity,
            survivors_.rows.get(), survivors_.scores.get());
        ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
        return ReduceToK(survivors_, capacity, tile_counts, k, nq, best, tiles, tile);
      };
      if (auto s = select(); !s.ok()) return s;
    }
    // The tiles' best k merged and copied back with the survivor counts: one
    // round trip when no tile overflowed.
    auto merge_and_download = [&](std::vector<uint32_t>* counts) -> absl::Status {
      if (tiles > 1) {
        if (auto s = ReduceToK(tile_best_, tiles * k, nullptr, k, nq, final_, 1, 0); !s.ok()) {
          return s;
        }
      }
      return Download(final_.rows.get(), final_.scores.get(), out, counts_.get(), counts);
    };
    std::vector<uint32_t> counts(size_t(tiles) * num_queries);
    if (auto s = merge_and_download(&counts); !s.ok()) return s;
    if (last_errors_ != 0) {
      if (absl::Status s = ExplainErrors(p, queries, num_queries); !s.ok()) return s;
      return absl::InternalError("the scan kernels reported an error the host cannot explain");
    }
    // Pass 2, rare: where more than `capacity` scores tied at or above the
    // threshold, the survivors were cut short; sort that tile whole instead,
    // from fp32 scores.
    bool redone = false;
    for (int tile = 0; tile < tiles; ++tile) {
      auto first = counts.begin() + size_t(tile) * num_queries;
      if (*std::max_element(first, first + num_queries) <= uint32_t(capacity)) continue;
      redone = true;
      const size_t r0 = size_t(tile) * tile_rows;
      const size_t rows = std::min(tile_rows, p.num_rows - r0);
      const int chunks = static_cast<int>((rows + kChunk - 1) / kChunk);
      if (auto s = chunk_best_.Reserve(size_t(chunks) * k * num_queries); !s.ok()) return s;
      for (size_t part = 0; part < rows; part += part_rows) {
        const int part_size = static_cast<int>(std::min(part_rows, rows - part));
        if (auto s = gemm(r0 + part, part_size, false); !s.ok()) return s;
        TileTopKKernel<<<dim3((part_size + kChunk - 1) / kChunk, nq), kSortThreads, 0, stream_>>>(
            dots_.get(), part_size, static_cast<uint32_t>(r0 + part), static_cast<int>(p.metric),
            p.norms, query_norms_.get(), allowed, k, static_cast<int>(part / kChunk), chunks,
            chunk_best_.scores.get(), chunk_best_.rows.get());
        ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
      }
      if (auto s = ReduceToK(chunk_best_, chunks * k, nullptr, k, nq,
                             tiles == 1 ? final_ : tile_best_, tiles, tile);
          !s.ok()) {
        return s;
      }
    }
    if (redone) {
      if (auto s = merge_and_download(nullptr); !s.ok()) return s;
    }
    return out;
  }

 private:
  // SetPartitionFrom with Value = uint16_t (fp16 bits) or float. The pieces
  // are prepared into two page-locked buffers in turn, each uploaded
  // asynchronously while the next is read and prepared.
  template <typename Value>
  absl::Status Store(uint64_t partition_id, Metric metric, Precision precision, size_t num_rows,
                     size_t dim, const RowSource& rows) {
    const size_t bytes = num_rows * (dim * sizeof(Value) + sizeof(float));
    const size_t replaced =
        partitions_.contains(partition_id) ? partitions_[partition_id].bytes : 0;
    if (used_bytes_ - replaced + bytes > budget_bytes_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("partition of ", bytes, " bytes does not fit the GPU budget (",
                       used_bytes_ - replaced, " of ", budget_bytes_, " bytes in use)"));
    }
    DevicePartition partition{metric, precision, num_rows, dim, bytes, num_rows};
    void* device_values = nullptr;
    const size_t piece_rows = std::min(num_rows, PieceRows(dim));
    const size_t piece_values = piece_rows * dim;
    auto copy = [&]() -> absl::Status {
      ENGRAM_CUDA_RETURN_IF_ERROR(
          cudaMalloc(&device_values, std::max<size_t>(1, num_rows * dim * sizeof(Value))));
      (precision == Precision::kFp16 ? reinterpret_cast<void*&>(partition.vectors)
                                     : reinterpret_cast<void*&>(partition.full)) = device_values;
      ENGRAM_CUDA_RETURN_IF_ERROR(
          cudaMalloc(&partition.norms, std::max<size_t>(1, num_rows) * sizeof(float)));
      if (piece_scratch_.size() < piece_values) piece_scratch_.resize(piece_values);
      for (int b = 0; b < 2; ++b) {
        if (auto s = pieces_[b].Reserve(piece_values * sizeof(Value) + piece_rows * sizeof(float));
            !s.ok()) {
          return s;
        }
        if (piece_uploaded_[b] == nullptr) {
          ENGRAM_CUDA_RETURN_IF_ERROR(
              cudaEventCreateWithFlags(&piece_uploaded_[b], cudaEventDisableTiming));
        }
      }
      for (size_t first = 0, piece = 0; first < num_rows; first += piece_rows, ++piece) {
        const size_t count = std::min(piece_rows, num_rows - first);
        const int b = static_cast<int>(piece % 2);
        // The buffer's previous upload must be done before it is refilled.
        ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(piece_uploaded_[b]));
        auto* values = static_cast<Value*>(pieces_[b].get());
        auto* norms = reinterpret_cast<float*>(values + piece_values);
        const float* input = rows(first, count, piece_scratch_.data());
        if (absl::Status s =
                PrepareRowsInto(metric, input, count, dim, "row", first, values, norms);
            !s.ok()) {
          return s;
        }
        ENGRAM_CUDA_RETURN_IF_ERROR(
            cudaMemcpyAsync(static_cast<Value*>(device_values) + first * dim, values,
                            count * dim * sizeof(Value), cudaMemcpyHostToDevice, stream_));
        ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(partition.norms + first, norms,
                                                    count * sizeof(float), cudaMemcpyHostToDevice,
                                                    stream_));
        ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventRecord(piece_uploaded_[b], stream_));
      }
      ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
      return absl::OkStatus();
    };
    if (absl::Status s = copy(); !s.ok()) {
      cudaStreamSynchronize(stream_);  // no upload may still read the pieces or write the buffers
      Free(partition);
      return s;
    }
    DropPartition(partition_id);
    partitions_[partition_id] = partition;
    used_bytes_ += bytes;
    return absl::OkStatus();
  }

  // Appends prepared rows to `p`, whose values live in `device_values`.
  // Buffers that are too small are replaced by ones with room for 1/8 more
  // rows (within the budget), so a partition that keeps growing is copied
  // on the device a logarithmic number of times.
  template <typename Value>
  absl::Status Append(DevicePartition& p, void*& device_values, const std::vector<Value>& values,
                      const std::vector<float>& norms) {
    const size_t count = norms.size();
    if (count == 0) return absl::OkStatus();
    const size_t row_bytes = p.dim * sizeof(Value) + sizeof(float);
    const size_t needed = p.num_rows + count;
    if (needed > p.capacity) {
      size_t capacity = std::max(needed, p.capacity + p.capacity / 8);
      if (used_bytes_ - p.bytes + capacity * row_bytes > budget_bytes_) capacity = needed;
      const size_t bytes = capacity * row_bytes;
      if (used_bytes_ - p.bytes + bytes > budget_bytes_) {
        return absl::ResourceExhaustedError(
            absl::StrCat("partition of ", bytes, " bytes does not fit the GPU budget (",
                         used_bytes_ - p.bytes, " of ", budget_bytes_, " bytes in use)"));
      }
      void* grown_values = nullptr;
      float* grown_norms = nullptr;
      auto grow = [&]() -> absl::Status {
        ENGRAM_CUDA_RETURN_IF_ERROR(cudaMalloc(&grown_values, capacity * p.dim * sizeof(Value)));
        ENGRAM_CUDA_RETURN_IF_ERROR(cudaMalloc(&grown_norms, capacity * sizeof(float)));
        ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpy(grown_values, device_values,
                                               p.num_rows * p.dim * sizeof(Value),
                                               cudaMemcpyDeviceToDevice));
        ENGRAM_CUDA_RETURN_IF_ERROR(
            cudaMemcpy(grown_norms, p.norms, p.num_rows * sizeof(float), cudaMemcpyDeviceToDevice));
        return absl::OkStatus();
      };
      if (absl::Status s = grow(); !s.ok()) {
        cudaFree(grown_values);
        cudaFree(grown_norms);
        return s;
      }
      cudaFree(device_values);
      cudaFree(p.norms);
      device_values = grown_values;
      p.norms = grown_norms;
      used_bytes_ = used_bytes_ - p.bytes + bytes;
      p.bytes = bytes;
      p.capacity = capacity;
    }
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpy(static_cast<Value*>(device_values) + p.num_rows * p.dim,
                                           values.data(), values.size() * sizeof(Value),
                                           cudaMemcpyHostToDevice));
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpy(p.norms + p.num_rows, norms.data(),
                                           count * sizeof(float), cudaMemcpyHostToDevice));
    p.num_rows = needed;
    return absl::OkStatus();
  }

  // Scan, per tile: a threshold per query from group maxima of the tile's
  // dots (Dot: float or __half), then FilterKernel's survivors into
  // survivors_ and their number into counts.
  template <typename Dot>
  absl::Status FilterTile(const DevicePartition& p, const Dot* dots, int rows, size_t r0, int nq,
                          int k, float slack, int capacity, const uint64_t* allowed,
                          uint32_t* counts) {
    const auto base = static_cast<uint32_t>(r0);
    const int metric = static_cast<int>(p.metric);
    // Threshold per query: the k-th best of the maxima of some groups of
    // rows, a lower bound of the k-th best score. Wider groups and fewer of
    // them (a strided sample: any k distinct rows bound it) are cheaper to
    // find but looser, so enough are kept for a few k survivors.
    int groups;
    if (rows >= 4 * k * kSampleGroupRows) {
      const int all_groups = (rows + kSampleGroupRows - 1) / kSampleGroupRows;
      groups = std::min(all_groups, std::max(8 * k, 64));
      SampledGroupMaxKernel<<<dim3(groups, nq), kSampleGroupRows * sizeof(Dot) / 16, 0, stream_>>>(
          dots, rows, base, metric, p.norms, query_norms_.get(), allowed, groups,
          all_groups / groups, groups_.scores.get(), groups_.rows.get());
    } else if (rows >= 4 * k * kWarpRows) {
      groups = (rows + kWarpRows - 1) / kWarpRows;
      WideGroupMaxKernel<<<dim3((groups + 7) / 8, nq), 256, 0, stream_>>>(
          dots, rows, base, metric, p.norms, query_norms_.get(), allowed, groups,
          groups_.scores.get(), groups_.rows.get());
    } else {
      groups = (rows + 31) / 32;
      GroupMaxKernel<<<dim3((rows + 255) / 256, nq), 256, 0, stream_>>>(
          dots, rows, base, metric, p.norms, query_norms_.get(), allowed, groups,
          groups_.scores.get(), groups_.rows.get());
    }
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    if (auto s = ReduceToK(groups_, groups, nullptr, k, nq, thresholds_, 1, 0); !s.ok()) return s;
    const int rows_per_block = kFilterVectors * kFilterThreads * 16 / sizeof(Dot);
    FilterKernel<<<dim3((rows + rows_per_block - 1) / rows_per_block, nq), kFilterThreads, 0,
                   stream_>>>(dots, rows, base, metric, p.norms, query_norms_.get(), allowed,
                              thresholds_.scores.get(), k, slack, capacity, counts,
                              survivors_.scores.get(), survivors_.rows.get());
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return absl::OkStatus();
  }

  // FilterTile for row-major fp16 dots (cosine): thresholds from sampled
  // group maxima, widened into limits_, then RowFilterKernel.
  absl::Status FilterRowMajorTile(const __half* dots, int rows, size_t r0, int nq, int k,
                                  float slack, int capacity, const uint64_t* allowed,
                                  uint32_t* counts) {
    const int ld = static_cast<int>(ScoreColumnStride(nq)), vectors = ld / 8;
    const int all_groups = (rows + kSampleGroupRows - 1) / kSampleGroupRows;
    const int groups = std::min(all_groups, std::max(8 * k, 64));
    const int group_threads = vectors * std::max(1, 1024 / vectors);
    RowSampledGroupMaxKernel<<<groups, group_threads,
                               size_t(group_threads / vectors) * ld * sizeof(float), stream_>>>(
        dots, ld, nq, rows, static_cast<uint32_t>(r0), allowed, groups, all_groups / groups,
        groups_.scores.get(), groups_.rows.get());
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    if (auto s = ReduceToK(groups_, groups, nullptr, k, nq, thresholds_, 1, 0); !s.ok()) return s;
    if (auto s = limits_.Reserve(nq); !s.ok()) return s;
    LimitsKernel<<<(nq + 255) / 256, 256, 0, stream_>>>(thresholds_.scores.get(), nq, k, slack,
                                                        limits_.get());
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    const int filter_threads = vectors * std::max(1, kFilterThreads / vectors);
    const int rows_per_block = filter_threads / vectors * kFilterVectors;
    RowFilterKernel<<<(rows + rows_per_block - 1) / rows_per_block, filter_threads, 0, stream_>>>(
        dots, ld, nq, rows, static_cast<uint32_t>(r0), allowed, limits_.get(), capacity, counts,
        survivors_.scores.get(), survivors_.rows.get());
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return absl::OkStatus();
  }

  // RerankKernel over the uploaded queries, `threads` per block (a multiple
  // of 32, at most 1024): 8 lanes score a candidate, so threads / 8
  // candidates of a query are in flight at once.
  absl::Status LaunchRerank(const DevicePartition& p, int nq, int k, int max_sort, int threads) {
    const size_t shared_bytes = p.dim * sizeof(float) + size_t(max_sort) * 8;
    auto launch = [&](auto kernel, const auto* vectors, const float* full_queries) {
      cudaError_t error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(shared_bytes));
      if (error != cudaSuccess) return error;
      kernel<<<nq, threads, shared_bytes, stream_>>>(
          vectors, p.norms, static_cast<int>(p.dim), static_cast<int>(p.metric),
          query_values_.get(), full_queries, query_norms_.get(), offsets_.get(), candidates_.get(),
          static_cast<uint32_t>(p.num_rows), k, max_sort, out_rows_.get(), out_scores_.get(),
          errors_.get());
      return cudaGetLastError();
    };
    ENGRAM_CUDA_RETURN_IF_ERROR(p.precision == Precision::kFp16
                                    ? launch(RerankKernel<__half>, p.vectors, nullptr)
                                    : launch(RerankKernel<float>, p.full, query_full_.get()));
    return absl::OkStatus();
  }

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
      // A block sorts at most min(length, kChunk) pairs (fewer when `lengths`
      // says so); a bitonic step pairs them up, one pair per thread.
      const int threads = std::clamp(NextPowerOfTwo(std::min(length, kChunk)) / 2, 32, 256);
      MergeTopKKernel<<<dim3(groups, nq), threads, 0, stream_>>>(
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
    cudaFree(partition.full);
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
    const bool full = p.precision == Precision::kFp32;
    if (full) {
      if (auto s = query_full_.Reserve(std::max<size_t>(1, values)); !s.ok()) return s;
    }
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
                                      query_values_.get(), full ? query_full_.get() : nullptr,
                                      query_norms_.get(), errors_.get());
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return absl::OkStatus();
  }

  // After a kernel raised kBadQuery: the host's message for the bad query
  // (PrepareRows finds it), or OK when the queries are fine.
  absl::Status ExplainErrors(const DevicePartition& p, const float* queries, size_t num_queries) {
    if ((last_errors_ & kBadQuery) == 0) return absl::OkStatus();
    if (p.precision == Precision::kFp32) {
      absl::StatusOr<FloatRows> full =
          PrepareFloatRows(p.metric, queries, num_queries, p.dim, "query");
      if (!full.ok()) return full.status();
    } else {
      absl::StatusOr<HalfRows> half = PrepareRows(p.metric, queries, num_queries, p.dim, "query");
      if (!half.ok()) return half.status();
    }
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

  // Waits for the call's work and copies back its error bits (last_errors_),
  // the best k of each query from `rows` / `scores` into `out` and, when
  // given, `counts->size()` values from `device_counts`: all through one
  // page-locked buffer, with one synchronisation.
  absl::Status Download(const uint32_t* rows, const float* scores, TopKBatch& out,
                        const uint32_t* device_counts = nullptr,
                        std::vector<uint32_t>* counts = nullptr) {
    const size_t results = out.num_queries * out.k;
    const size_t num_counts = counts != nullptr ? counts->size() : 0;
    if (auto s = download_.Reserve((1 + num_counts + 2 * results) * 4); !s.ok()) return s;
    auto* host_errors = static_cast<uint32_t*>(download_.get());
    uint32_t* host_counts = host_errors + 1;
    uint32_t* host_rows = host_counts + num_counts;
    auto* host_scores = reinterpret_cast<float*>(host_rows + results);
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_errors, errors_.get(), sizeof(uint32_t),
                                                cudaMemcpyDeviceToHost, stream_));
    if (num_counts > 0) {
      ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_counts, device_counts, num_counts * 4,
                                                  cudaMemcpyDeviceToHost, stream_));
    }
    if (results > 0) {
      ENGRAM_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(host_rows, rows, results * 4, cudaMemcpyDeviceToHost, stream_));
      ENGRAM_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(host_scores, scores, results * 4, cudaMemcpyDeviceToHost, stream_));
    }
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    last_errors_ = *host_errors;
    std::copy(host_counts, host_counts + num_counts, counts->begin());
    std::copy(host_rows, host_rows + results, out.rows.begin());
    std::copy(host_scores, host_scores + results, out.scores.begin());
    return absl::OkStatus();
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
  DeviceBuffer<float> query_full_;  // fp32 partitions' queries
  DeviceBuffer<float> query_norms_;
  DeviceBuffer<uint32_t> errors_;  // kBad* bits of the current call
  uint32_t last_errors_ = 0;       // read back with the results
  DeviceBuffer<uint32_t> offsets_, candidates_, out_rows_;
  DeviceBuffer<float> out_scores_, dots_;
  DeviceBuffer<uint64_t> allowed_;
  DeviceBuffer<uint32_t> counts_;
  DeviceBuffer<float> limits_;  // RowFilterKernel's widened thresholds
  PinnedBuffer download_;       // Download's landing area
  // SetPartitionFrom: the pieces' page-locked buffers, the events that say
  // their uploads are done, and the source's scratch memory.
  PinnedBuffer pieces_[2];
  cudaEvent_t piece_uploaded_[2] = {nullptr, nullptr};
  std::vector<float> piece_scratch_;
  PinnedBuffer query_staging_, candidate_staging_;  // QueryStaging, CandidateStaging
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
