// Reductions over any set of dims, in one of three shapes: a block per output
// (threads stride over its reduced elements, then combine in shared memory);
// a thread per output when the outputs are many and contiguous in x (column
// sums: coalesced reads); and, for a few long sums, chunks of each spread over
// blocks, then added in order. Every order is fixed, so results do not depend
// on timing. float accumulation for 16-bit and 32-bit floats, double for
// float64, int64 for integers and bool.

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

// Outputs enough to give each its own thread (column reductions); outputs
// few enough that a long sum is split across blocks; the split's chunk.
constexpr int64_t kColumnOutputs = 1024, kFewOutputs = 64, kSumChunk = 1 << 14;

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

// Writes output ooff's result (Mean divides here).
template <typename T, typename A>
__device__ __forceinline__ void store_result(ReduceOp op, void* out, bool out_int64, int64_t ooff, A result,
                                             int64_t result_idx, int64_t n_red) {
  if (op == ReduceOp::Mean) result = result / static_cast<A>(n_red);
  if (op == ReduceOp::ArgMax || op == ReduceOp::ArgMin) static_cast<int64_t*>(out)[ooff] = result_idx;
  else if (out_int64) static_cast<int64_t*>(out)[ooff] = static_cast<int64_t>(result);
  else store(static_cast<T*>(out) + ooff, result);
}

// A block per output (or, with `partial`, per chunk of `chunk` reduced
// elements of an output, its sum written to partial[output * chunks + chunk]).
// Threads stride over the elements, then combine in shared memory in a fixed
// order.
template <typename T>
__global__ void reduce_kernel(ReduceGeometry g, ReduceOp op, const T* x, void* out, bool out_int64, int64_t correction,
                              int64_t chunk, reduce_acc_t<T>* partial) {
  using A = reduce_acc_t<T>;
  __shared__ A vals[kThreads];
  __shared__ int64_t idxs[kThreads];
  const int tid = threadIdx.x;
  const int64_t chunks = (g.n_red + chunk - 1) / chunk;
  for (int64_t w = blockIdx.x; w < g.n_out * chunks; w += gridDim.x) {
    const int64_t o = w / chunks, r_begin = w % chunks * chunk;
    const int64_t r_end = r_begin + chunk < g.n_red ? r_begin + chunk : g.n_red;
    int64_t xoff, ooff;
    g.output_offsets(o, xoff, ooff);
    const T* base = x + xoff;
    const bool extreme = op == ReduceOp::Max || op == ReduceOp::Min || op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
    const bool want_max = op == ReduceOp::Max || op == ReduceOp::ArgMax;
    A acc = 0;
    int64_t best = -1;
    for (int64_t r = r_begin + tid; r < r_end; r += blockDim.x) {
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
      if (partial) partial[w] = result;
      else store_result<T>(op, out, out_int64, ooff, result, result_idx, g.n_red);
    }
  }
}

// Adds each output's chunk sums in order (the second pass of a split sum).
template <typename T, typename A>
__global__ void sum_chunks_kernel(ReduceGeometry g, ReduceOp op, const A* partial, int64_t chunks, void* out,
                                  bool out_int64) {
  KILN_GRID_STRIDE(o, g.n_out) {
    int64_t xoff, ooff;
    g.output_offsets(o, xoff, ooff);
    A s = 0;
    for (int64_t c = 0; c < chunks; ++c) s += partial[o * chunks + c];
    store_result<T>(op, out, out_int64, ooff, s, 0, g.n_red);
  }
}

// A thread per output, walking its reduced elements in order: where the
// innermost kept dim is contiguous in x, neighbouring threads read
// neighbouring elements (a block per output would read them a stride apart).
template <typename T>
__global__ void reduce_columns_kernel(ReduceGeometry g, ReduceOp op, const T* x, void* out, bool out_int64,
                                      int64_t correction) {
  using A = reduce_acc_t<T>;
  const bool extreme = op == ReduceOp::Max || op == ReduceOp::Min || op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
  const bool want_max = op == ReduceOp::Max || op == ReduceOp::ArgMax;
  KILN_GRID_STRIDE(o, g.n_out) {
    int64_t xoff, ooff;
    g.output_offsets(o, xoff, ooff);
    // The reduced elements by an odometer over the reduced dims, in order.
    auto walk = [&](auto&& f) {
      int64_t idx[kMaxDims] = {};
      int64_t off = xoff;
      for (int64_t r = 0; r < g.n_red; ++r) {
        f(static_cast<A>(load(x + off)), r);
        g.next_reduced(idx, off);
      }
    };
    A acc = 0;
    int64_t best = -1;
    walk([&](A v, int64_t r) {
      if (!extreme) acc += v;
      else if (better(v, r, acc, best, want_max)) {
        acc = v;
        best = r;
      }
    });
    if (std::is_floating_point_v<A> && op == ReduceOp::Var) {
      const A mean = acc / static_cast<A>(g.n_red);
      A ss = 0;
      walk([&](A v, int64_t) { ss += (v - mean) * (v - mean); });
      const A denom = static_cast<A>(g.n_red - correction);
      acc = denom > A(0) ? ss / denom : quiet_nan<A>();
    }
    store_result<T>(op, out, out_int64, ooff, acc, best, g.n_red);
  }
}

}  // namespace

void reduce(ReduceOp op, const Buffer& out, const Buffer& x, uint32_t dims_mask, int64_t correction) {
  NvtxRange range("kiln::reduce");
  const ReduceGeometry g(out, x, dims_mask);
  if (g.n_out == 0) return;
  const bool out_int64 = out.dtype == DType::Int64;
  visit_dtype(x.dtype, "reduce", [&](auto tag) {
    using T = decltype(tag);
    using A = reduce_acc_t<T>;
    const bool inner_run = g.nr == 1 && g.rx[0] == 1;
    if (g.nk >= 1 && g.kx[g.nk - 1] == 1 && !inner_run && g.n_out >= kColumnOutputs) {
      launch("reduce_columns_kernel", reduce_columns_kernel<T>, blocks_for(g.n_out), kThreads, 0, g, op, x.ptr<T>(),
             out.data, out_int64, correction);
      return;
    }
    const int64_t whole = g.n_red > 0 ? g.n_red : 1;
    if ((op == ReduceOp::Sum || op == ReduceOp::Mean) && g.n_out < kFewOutputs && g.n_red >= 2 * kSumChunk) {
      // Few long sums: chunks of each over many blocks, then the chunks added in order.
      const int64_t chunks = (g.n_red + kSumChunk - 1) / kSumChunk;
      const Scratch partial(static_cast<size_t>(g.n_out * chunks) * sizeof(A), out.device.index);
      launch("reduce_kernel", reduce_kernel<T>, blocks_for(g.n_out * chunks, 1), kThreads, 0, g, op, x.ptr<T>(),
             out.data, out_int64, correction, kSumChunk, partial.get<A>());
      launch("sum_chunks_kernel", sum_chunks_kernel<T, A>, blocks_for(g.n_out), kThreads, 0, g, op,
             partial.get<const A>(), chunks, out.data, out_int64);
      return;
    }
    const int blocks = static_cast<int>(g.n_out < 65535 * 16 ? g.n_out : 65535 * 16);
    launch("reduce_kernel", reduce_kernel<T>, blocks, kThreads, 0, g, op, x.ptr<T>(), out.data, out_int64, correction,
           whole, static_cast<A*>(nullptr));
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
