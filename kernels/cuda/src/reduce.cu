// Reductions over any set of dims: one block per output element. Threads
// stride over the reduced elements (offsets from the reduced dims' sizes and
// strides), then combine in shared memory in a fixed order, so results do not
// depend on timing. float accumulation for 16-bit and 32-bit floats, double
// for float64, int64 for integers and bool.

#include <cfloat>

#include "block_reduce.cuh"
#include "chunk_table.cuh"
#include "common.cuh"
#include "kiln/base/reduce_geometry.h"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

template <typename T>
using reduce_acc_t = std::conditional_t<std::is_same_v<T, double>, double,
                     std::conditional_t<std::is_floating_point_v<acc_t<T>>, float, int64_t>>;

template <typename A>
__device__ __forceinline__ A quiet_nan() {
  if constexpr (std::is_floating_point_v<A>) return A(NAN);
  else return A(0);  // integer reductions have no variance
}

template <typename A>
__device__ __forceinline__ bool is_nan(A v) {
  if constexpr (std::is_floating_point_v<A>) return isnan(v);
  else return false;
}

// Whether (a, ia) should replace (b, ib) as the extreme: NaN wins, then the
// larger (smaller) value, then the first index.
template <typename A>
__device__ __forceinline__ bool better(A a, int64_t ia, A b, int64_t ib, bool want_max) {
  if (ia < 0) return false;
  if (ib < 0) return true;
  bool na = is_nan(a), nb = is_nan(b);
  if (na || nb) return na && (!nb || ia < ib);
  if (a == b) return ia < ib;
  return want_max ? a > b : a < b;
}

template <typename T>
__global__ void reduce_kernel(ReduceGeometry g, ReduceOp op, const T* x, void* out, bool out_int64, int64_t correction) {
  using A = reduce_acc_t<T>;
  __shared__ A vals[kThreads];
  __shared__ int64_t idxs[kThreads];
  const int tid = threadIdx.x;
  for (int64_t o = blockIdx.x; o < g.n_out; o += gridDim.x) {
    int64_t xoff, ooff;
    g.output_offsets(o, xoff, ooff);
    const T* base = x + xoff;
    const bool extreme = op == ReduceOp::Max || op == ReduceOp::Min || op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
    const bool want_max = op == ReduceOp::Max || op == ReduceOp::ArgMax;
    A acc = 0;
    int64_t best = -1;
    for (int64_t r = tid; r < g.n_red; r += blockDim.x) {
      A v = static_cast<A>(load(base + g.reduced_offset(r)));
      if (extreme) {
        if (better(v, r, acc, best, want_max)) {
          acc = v;
          best = r;
        }
      } else {
        acc += v;
      }
    }
    vals[tid] = acc;
    idxs[tid] = best;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (tid < s) {
        if (extreme) {
          if (better(vals[tid + s], idxs[tid + s], vals[tid], idxs[tid], want_max)) {
            vals[tid] = vals[tid + s];
            idxs[tid] = idxs[tid + s];
          }
        } else {
          vals[tid] += vals[tid + s];
        }
      }
      __syncthreads();
    }
    A result = vals[0];
    int64_t result_idx = idxs[0];
    __syncthreads();
    if (std::is_floating_point_v<A> && op == ReduceOp::Var) {
      // Second pass: squared deviations from the mean.
      const A mean = result / static_cast<A>(g.n_red);
      A ss = 0;
      for (int64_t r = tid; r < g.n_red; r += blockDim.x) {
        A d = static_cast<A>(load(base + g.reduced_offset(r))) - mean;
        ss += d * d;
      }
      vals[tid] = ss;
      __syncthreads();
      for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) vals[tid] += vals[tid + s];
        __syncthreads();
      }
      const A denom = static_cast<A>(g.n_red - correction);
      result = denom > A(0) ? vals[0] / denom : quiet_nan<A>();
      __syncthreads();
    }
    if (tid == 0) {
      if (op == ReduceOp::Mean) result = result / static_cast<A>(g.n_red);
      if (op == ReduceOp::ArgMax || op == ReduceOp::ArgMin) static_cast<int64_t*>(out)[ooff] = result_idx;
      else if (out_int64) static_cast<int64_t*>(out)[ooff] = static_cast<int64_t>(result);
      else store(static_cast<T*>(out) + ooff, result);
    }
  }
}

}  // namespace

void reduce(ReduceOp op, const Buffer& out, const Buffer& x, uint32_t dims_mask, int64_t correction) {
  NvtxRange range("kiln::reduce");
  const ReduceGeometry g(out, x, dims_mask);
  if (g.n_out == 0) return;
  visit_dtype(x.dtype, "reduce", [&](auto tag) {
    using T = decltype(tag);
    const int blocks = static_cast<int>(g.n_out < 65535 * 16 ? g.n_out : 65535 * 16);
    launch("reduce_kernel", reduce_kernel<T>, blocks, kThreads, 0, g, op, x.ptr<T>(), out.data,
           out.dtype == DType::Int64, correction);
  });
}

namespace {

// squared_norms: the tensors cut into chunks, one block per chunk writing its
// partial sum, then one thread per tensor adding its chunks' partials in order
// (deterministic).

struct NormChunk {
  const void* data;
  int64_t n;
  DType dtype;
};

// In float64 throughout, as the CPU twin: squares of float32 values summed in
// float32 would drift from it by a few 1e-8 over a chunk.
template <typename T>
__device__ double chunk_squares(const T* p, int64_t n) {
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const double v = double(load(p + i));
    acc += v * v;
  }
  return block_sum(acc);
}

__global__ void norm_chunks_kernel(const NormChunk* chunks, double* partial) {
  const NormChunk c = chunks[blockIdx.x];
  double s = 0;
  switch (c.dtype) {
    case DType::Float32: s = chunk_squares(static_cast<const float*>(c.data), c.n); break;
    case DType::Float64: s = chunk_squares(static_cast<const double*>(c.data), c.n); break;
    case DType::BFloat16: s = chunk_squares(static_cast<const BFloat16*>(c.data), c.n); break;
    case DType::Float16: s = chunk_squares(static_cast<const Half*>(c.data), c.n); break;
    default: break;
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void norm_tensors_kernel(double* out, const int64_t* first_chunk, const double* partial, int64_t tensors) {
  KILN_GRID_STRIDE(t, tensors) {
    double s = 0;
    for (int64_t c = first_chunk[t]; c < first_chunk[t + 1]; ++c) s += partial[c];
    out[t] = s;
  }
}

}  // namespace

void squared_norms(const Buffer& out, const std::vector<Buffer>& xs) {
  NvtxRange range("kiln::squared_norms");
  const int64_t tensors = static_cast<int64_t>(xs.size());
  if (tensors == 0) return;
  std::vector<NormChunk> chunks;
  std::vector<int64_t> first{0};
  for (const Buffer& x : xs) {
    if (!(x.dtype == DType::Float32 || x.dtype == DType::Float64 || x.dtype == DType::BFloat16 ||
          x.dtype == DType::Float16))
      fail("squared_norms", "expects floating tensors");
    const size_t element = element_size(x.dtype);
    for (int64_t at = 0; at < x.numel(); at += kChunkElements)
      chunks.push_back({static_cast<const char*>(x.data) + at * static_cast<int64_t>(element),
                        x.numel() - at < kChunkElements ? x.numel() - at : kChunkElements, x.dtype});
    first.push_back(static_cast<int64_t>(chunks.size()));
  }
  const int device = out.device.index;
  const Scratch dev_first = upload(first, device, "squared_norms");
  const Scratch partial((chunks.size() + 1) * sizeof(double), device);  // freed stream-ordered, after the kernels
  if (!chunks.empty()) {
    const Scratch dev_chunks = upload(chunks, device, "squared_norms");
    launch("norm_chunks_kernel", norm_chunks_kernel, static_cast<unsigned>(chunks.size()), kThreads, 0,
           dev_chunks.get<NormChunk>(), partial.get<double>());
  }
  launch("norm_tensors_kernel", norm_tensors_kernel, blocks_for(tensors), kThreads, 0, out.ptr<double>(),
         dev_first.get<int64_t>(), partial.get<double>(), tensors);
}

}  // namespace kiln::kernels::cuda
