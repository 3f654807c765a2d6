// Mixture-of-experts token dispatch (the CPU twins: kernels/cpu/src/moe.cpp).
// moe_gather and moe_combine run a thread per output element, neighbouring
// threads on neighbouring features of one row (coalesced); the gates'
// gradient runs a block per token, one block-wide dot product per choice.
// Nothing accumulates across threads through atomics: the results are
// deterministic. A bad index is reported through the device error flag.

#include "block_reduce.cuh"
#include "common.cuh"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

// out[r] = gate[c] * x[c / k] for c = row_choice[r].
template <typename T, typename W>
__global__ void moe_gather_kernel(T* out, const T* x, const int64_t* row_choice, const W* gates, int64_t R, int64_t C,
                                  int64_t choices, int64_t top_k, DeviceError* flag) {
  KILN_GRID_STRIDE(i, R * C) {
    const int64_t r = i / C, col = i % C, c = row_choice[r];
    if (c < 0 || c >= choices) {
      report(flag, kIndexOutOfRange, c, choices);
      continue;
    }
    const acc_t<T> v = load(x + c / top_k * C + col);
    store(out + i, gates ? v * static_cast<acc_t<T>>(gates[c]) : v);
  }
}

// out[t] = sum over j of gate[t, j] * rows[slot[t, j]], skipping dropped choices (-1).
template <typename T, typename W>
__global__ void moe_combine_kernel(T* out, const T* rows, const int64_t* slot, const W* gates, int64_t N, int64_t C,
                                   int64_t top_k, int64_t R, DeviceError* flag) {
  KILN_GRID_STRIDE(i, N * C) {
    const int64_t t = i / C, col = i % C;
    acc_t<T> acc = 0;
    for (int64_t j = 0; j < top_k; ++j) {
      const int64_t r = slot[t * top_k + j];
      if (r == -1) continue;
      if (r < 0 || r >= R) {
        report(flag, kIndexOutOfRange, r, R);
        continue;
      }
      const acc_t<T> v = load(rows + r * C + col);
      acc += gates ? static_cast<acc_t<T>>(gates[t * top_k + j]) * v : v;
    }
    store(out + i, acc);
  }
}

// dgates[t, j] = <rows[slot[t, j]], dout[t]>: a block per token.
template <typename T, typename W>
__global__ void moe_combine_weights_backward_kernel(W* dgates, const T* dout, const T* rows, const int64_t* slot,
                                                    int64_t C, int64_t top_k, int64_t R, DeviceError* flag) {
  const int64_t t = blockIdx.x;
  for (int64_t j = 0; j < top_k; ++j) {
    const int64_t r = slot[t * top_k + j];
    const bool valid = r >= 0 && r < R;
    if (!valid && r != -1 && threadIdx.x == 0) report(flag, kIndexOutOfRange, r, R);
    W dot = 0;
    if (valid)
      for (int64_t col = threadIdx.x; col < C; col += blockDim.x)
        dot += static_cast<W>(load(rows + r * C + col)) * static_cast<W>(load(dout + t * C + col));
    dot = block_sum(dot);
    if (threadIdx.x == 0) dgates[t * top_k + j] = dot;
  }
}

// Calls f with the gates' element type (float, or double beside float64 rows).
template <typename F>
void visit_gates(const Buffer& gates, DType rows, F&& f) {
  if ((gates.data ? gates.dtype : rows) == DType::Float64) f(double{});
  else f(float{});
}

}  // namespace

void moe_gather(const Buffer& out, const Buffer& x, const Buffer& row_choice, const Buffer& weights, int64_t top_k) {
  NvtxRange range("kiln::moe_gather");
  const int64_t R = out.sizes[0], C = out.sizes[1];
  if (R * C == 0) return;
  visit_floating(x.dtype, "moe_gather", [&](auto tag) {
    using T = decltype(tag);
    visit_gates(weights, x.dtype, [&](auto wtag) {
      using W = decltype(wtag);
      launch("moe_gather_kernel", moe_gather_kernel<T, W>, blocks_for(R * C), kThreads, 0, out.ptr<T>(), x.ptr<T>(),
             row_choice.ptr<int64_t>(), weights.ptr<W>(), R, C, x.sizes[0] * top_k, top_k, device_error_flag());
    });
  });
}

void moe_combine(const Buffer& out, const Buffer& rows, const Buffer& slot, const Buffer& weights) {
  NvtxRange range("kiln::moe_combine");
  const int64_t N = out.sizes[0], C = out.sizes[1];
  if (N * C == 0) return;
  visit_floating(out.dtype, "moe_combine", [&](auto tag) {
    using T = decltype(tag);
    visit_gates(weights, out.dtype, [&](auto wtag) {
      using W = decltype(wtag);
      launch("moe_combine_kernel", moe_combine_kernel<T, W>, blocks_for(N * C), kThreads, 0, out.ptr<T>(),
             rows.ptr<T>(), slot.ptr<int64_t>(), weights.ptr<W>(), N, C, slot.sizes[1], rows.sizes[0],
             device_error_flag());
    });
  });
}

void moe_combine_weights_backward(const Buffer& dweights, const Buffer& dout, const Buffer& rows, const Buffer& slot) {
  NvtxRange range("kiln::moe_combine_weights_backward");
  const int64_t N = dout.sizes[0], C = dout.sizes[1];
  if (N == 0) return;
  visit_floating(dout.dtype, "moe_combine_weights_backward", [&](auto tag) {
    using T = decltype(tag);
    visit_gates(dweights, dout.dtype, [&](auto wtag) {
      using W = decltype(wtag);
      launch("moe_combine_weights_backward_kernel", moe_combine_weights_backward_kernel<T, W>,
             dim3(static_cast<unsigned>(N)), 128, 0, dweights.ptr<W>(), dout.ptr<T>(), rows.ptr<T>(),
             slot.ptr<int64_t>(), C, slot.sizes[1], rows.sizes[0], device_error_flag());
    });
  });
}

}  // namespace kiln::kernels::cuda
