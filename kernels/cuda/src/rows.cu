// Row kernels on contiguous (rows, C) buffers: softmax, LayerNorm, RMSNorm and
// cross-entropy, forward and backward. One block per row, 16-byte accesses
// where the rows allow (RowAccess), block-wide sums through warp shuffles. Row statistics (mean, rstd, logsumexp) are float32,
// float64 for float64 inputs. Parameter gradients are summed in two phases
// (per-block partials, then a fixed-order sum), so they are deterministic.

#include <cfloat>

#include "block_reduce.cuh"
#include "common.cuh"
#include "row_access.cuh"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

template <typename T>
using row_acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// An optional parameter (weight or bias) of any floating dtype.
struct Param {
  const void* ptr;
  DType dtype;
  template <typename A>
  __device__ A at(int64_t i, A fallback) const {
    if (!ptr) return fallback;
    switch (dtype) {
      case DType::BFloat16: return A(load(static_cast<const BFloat16*>(ptr) + i));
      case DType::Float16: return A(load(static_cast<const Half*>(ptr) + i));
      case DType::Float64: return A(static_cast<const double*>(ptr)[i]);
      default: return A(static_cast<const float*>(ptr)[i]);
    }
  }
};

Param param(const Buffer& b) { return {b.data, b.dtype}; }

// --- softmax ---------------------------------------------------------------------

// Two reads of the row: the maximum and the sum together (each thread's sum
// rescaled when its maximum grows, then combined over the block), then the
// output. With causal_tq, columns past the row's last key are left out.
template <typename T>
__global__ void softmax_kernel(T* y, const T* x, RowAccess<T> row, bool log_space, int64_t causal_tq) {
  using A = row_acc_t<T>;
  const int64_t r = blockIdx.x, C = row.C;
  const T* xr = x + r * C;
  int64_t seen = C;
  if (causal_tq > 0) {
    seen = r % causal_tq + C - causal_tq + 1;
    seen = seen < 0 ? 0 : (seen > C ? C : seen);
  }
  A mx = -INFINITY, sum = 0;
  row.read(seen, [&](int64_t, A v) {
    if (v == A(-INFINITY)) return;  // adds nothing
    if (v > mx) {
      sum *= exp(mx - v);
      mx = v;
    }
    sum += exp(v - mx);
  }, xr);
  A m = block_max(mx);
  if (isinf(m) && m < 0) m = 0;  // an all -inf row gives nan, as on the CPU
  sum = block_sum(mx == A(-INFINITY) ? A(0) : sum * exp(mx - m));
  const A lse = m + log(sum);
  row.map(y + r * C, [&](int64_t c, A v) {
    if (c >= seen) return log_space ? A(-INFINITY) : A(0);
    return log_space ? v - lse : exp(v - m) / sum;
  }, xr);
}

// One warp per row, 32 columns at a time: a warp-wide inclusive scan of each
// chunk (Hillis-Steele over shuffles) plus the total of the chunks before it.
template <typename T>
__global__ void cumsum_kernel(T* y, const T* x, int64_t rows, int64_t C, bool reverse) {
  using A = std::conditional_t<std::is_integral_v<T>, T, row_acc_t<T>>;
  const int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (r >= rows) return;  // whole warps: every lane of a warp has the same row
  const T* xr = x + r * C;
  T* yr = y + r * C;
  A before = 0;
  for (int64_t first = 0; first < C; first += 32) {
    const int64_t k = first + lane, c = reverse ? C - 1 - k : k;
    A v = k < C ? A(load(xr + c)) : A(0);
    for (int offset = 1; offset < 32; offset <<= 1) {
      const A up = __shfl_up_sync(0xffffffffu, v, offset);
      if (lane >= offset) v += up;
    }
    if (k < C) store(yr + c, before + v);
    before += __shfl_sync(0xffffffffu, v, 31);
  }
}

template <typename T>
__global__ void softmax_backward_kernel(T* dx, const T* dy, const T* y, RowAccess<T> row, bool log_space) {
  using A = row_acc_t<T>;
  const int64_t off = blockIdx.x * row.C;
  A dot = 0;
  row.read(row.C, [&](int64_t, A g, A v) { dot += log_space ? g : g * v; }, dy + off, y + off);
  dot = block_sum(dot);
  row.map(dx + off, [&](int64_t, A g, A v) { return log_space ? g - exp(v) * dot : v * (g - dot); }, dy + off,
          y + off);
}

// --- LayerNorm / RMSNorm -----------------------------------------------------------

template <typename T, bool kCentered>
__global__ void norm_kernel(T* y, row_acc_t<T>* mean, row_acc_t<T>* rstd, const T* x, const T* residual, T* sum,
                            Param w, Param b, RowAccess<T> row, double eps) {
  using A = row_acc_t<T>;
  const int64_t C = row.C, off = blockIdx.x * C;
  if (residual) {
    // sum = x + residual, then normalized in x's place. Each thread reads back
    // only the elements it wrote (RowAccess keeps its columns), so no barrier.
    row.map(sum + off, [](int64_t, A a, A r) { return a + r; }, x + off, residual + off);
    x = sum;
  }
  A m = 0;
  if constexpr (kCentered) {
    row.read(C, [&](int64_t, A v) { m += v; }, x + off);
    m = block_sum(m) / A(C);
  }
  A var = 0;
  row.read(C, [&](int64_t, A v) { var += (v - m) * (v - m); }, x + off);
  const A rs = A(1) / sqrt(block_sum(var) / A(C) + A(eps));
  row.map(y + off, [&](int64_t c, A v) { return (v - m) * rs * w.at<A>(c, A(1)) + b.at<A>(c, A(0)); }, x + off);
  if (threadIdx.x == 0) {
    if constexpr (kCentered) mean[blockIdx.x] = m;
    rstd[blockIdx.x] = rs;
  }
}

template <typename T, bool kCentered>
__global__ void norm_backward_kernel(T* dx, const T* dy, const T* x, Param w, const row_acc_t<T>* mean,
                                     const row_acc_t<T>* rstd, RowAccess<T> row) {
  using A = row_acc_t<T>;
  const int64_t C = row.C, off = blockIdx.x * C;
  const A m = kCentered ? mean[blockIdx.x] : A(0), rs = rstd[blockIdx.x];
  A mean_g = 0, mean_gx = 0;  // means of g*w and g*w*xhat
  row.read(C, [&](int64_t c, A g, A v) {
    const A gw = g * w.at<A>(c, A(1));
    mean_g += gw;
    mean_gx += gw * (v - m) * rs;
  }, dy + off, x + off);
  mean_g = kCentered ? block_sum(mean_g) / A(C) : A(0);
  mean_gx = block_sum(mean_gx) / A(C);
  row.map(dx + off, [&](int64_t c, A g, A v) {
    return (g * w.at<A>(c, A(1)) - mean_g - (v - m) * rs * mean_gx) * rs;
  }, dy + off, x + off);
}

// Phase 1: block p sums rows p, p + P, ... into partial[p][c] (dw) and
// partial[P + p][c] (db).
template <typename T, bool kCentered>
__global__ void norm_param_partials(row_acc_t<T>* partial, const T* dy, const T* x, const row_acc_t<T>* mean,
                                    const row_acc_t<T>* rstd, int64_t rows, int64_t C) {
  using A = row_acc_t<T>;
  const int64_t P = gridDim.x;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    A dw = 0, db = 0;
    for (int64_t r = blockIdx.x; r < rows; r += P) {
      A g = A(load(dy + r * C + c));
      A m = kCentered ? mean[r] : A(0);
      dw += g * (A(load(x + r * C + c)) - m) * rstd[r];
      db += g;
    }
    partial[blockIdx.x * C + c] = dw;
    partial[(P + blockIdx.x) * C + c] = db;
  }
}

// Phase 2: out[c] += sum over p of partial[p][c], in order of p.
template <typename A>
__global__ void sum_partials(A* out, const A* partial, int64_t P, int64_t C) {
  KILN_GRID_STRIDE(c, C) {
    A s = 0;
    for (int64_t p = 0; p < P; ++p) s += partial[p * C + c];
    out[c] += s;
  }
}

// --- cross-entropy -----------------------------------------------------------------

template <typename T, typename I>
__global__ void cross_entropy_kernel(T* loss, row_acc_t<T>* lse, const T* logits, const I* target, RowAccess<T> row,
                                     int64_t ignore_index, row_acc_t<T> z_loss, DeviceError* flag) {
  using A = row_acc_t<T>;
  const int64_t r = blockIdx.x, C = row.C;
  const T* xr = logits + r * C;
  A mx = -INFINITY;
  row.read(C, [&](int64_t, A v) { mx = fmax(mx, v); }, xr);
  mx = block_max(mx);
  A sum = 0;
  row.read(C, [&](int64_t, A v) { sum += exp(v - mx); }, xr);
  sum = block_sum(sum);
  if (threadIdx.x == 0) {
    const A l = mx + log(sum);
    lse[r] = l;
    const int64_t t = target[r];
    if (t == ignore_index) {
      store(loss + r, A(0));
    } else if (t < 0 || t >= C) {
      report(flag, kTargetOutOfRange, t, C);
      store(loss + r, A(NAN));
    } else {
      store(loss + r, l - A(load(xr + t)) + z_loss * l * l);
    }
  }
}

template <typename T, typename I>
__global__ void cross_entropy_backward_kernel(T* dlogits, const T* dloss, const T* logits, const I* target,
                                              const row_acc_t<T>* lse, RowAccess<T> row, int64_t ignore_index,
                                              row_acc_t<T> z_loss) {
  using A = row_acc_t<T>;
  const int64_t r = blockIdx.x, C = row.C;
  const int64_t t = target[r];
  const bool ignored = t == ignore_index || t < 0 || t >= C;
  const A g = ignored ? A(0) : A(load(dloss + r)), l = lse[r];
  const A stretch = 1 + 2 * z_loss * l;  // the z term's gradient: 2 z lse softmax
  row.map(dlogits + r * C, [&](int64_t c, A v) {
    return ignored ? A(0) : g * (stretch * exp(v - l) - (c == t ? A(1) : A(0)));
  }, logits + r * C);
}

// f(T{}, I{}) with the logits' floating type and the targets' index type.
template <typename F>
void visit_logits_target(const Buffer& logits, const Buffer& target, const char* op, F&& f) {
  visit_index(target.dtype, op, [&](auto itag) { visit_floating(logits.dtype, op, [&](auto tag) { f(tag, itag); }); });
}

// Rows are grid blocks; more than 2^31 - 1 rows would need a loop.
unsigned grid(int64_t rows) { return static_cast<unsigned>(rows); }

template <bool kCentered>
void norm_forward(const Buffer& y, const Buffer& mean, const Buffer& rstd, const Buffer& x, const Buffer& residual,
                  const Buffer& sum, const Buffer& w, const Buffer& b, double eps, const char* op) {
  NvtxRange range(op);
  const int64_t rows = x.sizes[0], C = x.sizes[1];
  if (rows == 0) return;
  visit_floating(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = row_acc_t<T>;
    const RowAccess<T> row{C, packs_fit<T>(C, {y.data, x.data, residual.data, sum.data})};
    launch(op, norm_kernel<T, kCentered>, grid(rows), kThreads, 0, y.ptr<T>(), static_cast<A*>(mean.data),
           rstd.ptr<A>(), x.ptr<T>(), residual.ptr<T>(), sum.ptr<T>(), param(w), param(b), row, eps);
  });
}

template <bool kCentered>
void norm_backward(const Buffer& dx, const Buffer& dw, const Buffer& db, const Buffer& dy, const Buffer& x,
                   const Buffer& w, const Buffer& mean, const Buffer& rstd, const char* op) {
  NvtxRange range(op);
  const int64_t rows = x.sizes[0], C = x.sizes[1];
  if (rows == 0) return;
  visit_floating(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = row_acc_t<T>;
    const A* mean_p = static_cast<const A*>(mean.data);
    const RowAccess<T> row{C, packs_fit<T>(C, {dx.data, dy.data, x.data})};
    launch(op, norm_backward_kernel<T, kCentered>, grid(rows), kThreads, 0, dx.ptr<T>(), dy.ptr<T>(), x.ptr<T>(),
           param(w), mean_p, rstd.ptr<A>(), row);
    if (!dw.data && !db.data) return;
    const int64_t P = rows < 256 ? rows : 256;
    const Scratch scratch(static_cast<size_t>(2 * P * C) * sizeof(A), dx.device.index);
    A* partial = scratch.get<A>();
    launch("norm_param_partials", norm_param_partials<T, kCentered>, static_cast<unsigned>(P), kThreads, 0, partial,
           dy.ptr<T>(), x.ptr<T>(), mean_p, rstd.ptr<A>(), rows, C);
    if (dw.data) launch("sum_partials", sum_partials<A>, blocks_for(C), kThreads, 0, dw.ptr<A>(), partial, P, C);
    if (db.data)
      launch("sum_partials", sum_partials<A>, blocks_for(C), kThreads, 0, db.ptr<A>(), partial + P * C, P, C);
  });
}

}  // namespace

void softmax(const Buffer& y, const Buffer& x, bool log, int64_t causal_tq) {
  NvtxRange range("kiln::softmax");
  const int64_t rows = x.sizes[0], C = x.sizes[1];
  if (rows == 0) return;
  visit_floating(x.dtype, "softmax", [&](auto tag) {
    using T = decltype(tag);
    const RowAccess<T> row{C, packs_fit<T>(C, {y.data, x.data})};
    launch("softmax_kernel", softmax_kernel<T>, grid(rows), kThreads, 0, y.ptr<T>(), x.ptr<T>(), row, log, causal_tq);
  });
}

void cumsum(const Buffer& y, const Buffer& x, bool reverse) {
  NvtxRange range("kiln::cumsum");
  const int64_t rows = x.sizes[0], C = x.sizes[1];
  if (rows == 0) return;
  visit_numeric(x.dtype, "cumsum", [&](auto tag) {
    using T = decltype(tag);
    constexpr int kWarps = kThreads / 32;
    launch("cumsum_kernel", cumsum_kernel<T>, static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0,
           y.ptr<T>(), x.ptr<T>(), rows, C, reverse);
  });
}

void softmax_backward(const Buffer& dx, const Buffer& dy, const Buffer& y, bool log) {
  NvtxRange range("kiln::softmax_backward");
  const int64_t rows = y.sizes[0], C = y.sizes[1];
  if (rows == 0) return;
  visit_floating(y.dtype, "softmax_backward", [&](auto tag) {
    using T = decltype(tag);
    const RowAccess<T> row{C, packs_fit<T>(C, {dx.data, dy.data, y.data})};
    launch("softmax_backward_kernel", softmax_backward_kernel<T>, grid(rows), kThreads, 0, dx.ptr<T>(), dy.ptr<T>(),
           y.ptr<T>(), row, log);
  });
}

void layer_norm(const Buffer& y, const Buffer& mean, const Buffer& rstd, const Buffer& x, const Buffer& residual,
                const Buffer& sum, const Buffer& w, const Buffer& b, double eps) {
  norm_forward<true>(y, mean, rstd, x, residual, sum, w, b, eps, "kiln::layer_norm");
}

void layer_norm_backward(const Buffer& dx, const Buffer& dw, const Buffer& db, const Buffer& dy, const Buffer& x,
                         const Buffer& w, const Buffer& mean, const Buffer& rstd) {
  norm_backward<true>(dx, dw, db, dy, x, w, mean, rstd, "kiln::layer_norm_backward");
}

void rms_norm(const Buffer& y, const Buffer& rstd, const Buffer& x, const Buffer& residual, const Buffer& sum,
              const Buffer& w, double eps) {
  norm_forward<false>(y, Buffer{}, rstd, x, residual, sum, w, Buffer{}, eps, "kiln::rms_norm");
}

void rms_norm_backward(const Buffer& dx, const Buffer& dw, const Buffer& dy, const Buffer& x, const Buffer& w,
                       const Buffer& rstd) {
  norm_backward<false>(dx, dw, Buffer{}, dy, x, w, Buffer{}, rstd, "kiln::rms_norm_backward");
}

void cross_entropy(const Buffer& loss, const Buffer& lse, const Buffer& logits, const Buffer& target,
                   int64_t ignore_index, double z_loss) {
  NvtxRange range("kiln::cross_entropy");
  const int64_t rows = logits.sizes[0], C = logits.sizes[1];
  if (rows == 0) return;
  visit_logits_target(logits, target, "cross_entropy", [&](auto tag, auto itag) {
    using T = decltype(tag);
    using I = decltype(itag);
    const RowAccess<T> row{C, packs_fit<T>(C, {logits.data})};
    launch("cross_entropy_kernel", cross_entropy_kernel<T, I>, grid(rows), kThreads, 0, loss.ptr<T>(),
           lse.ptr<row_acc_t<T>>(), logits.ptr<T>(), target.ptr<I>(), row, ignore_index,
           static_cast<row_acc_t<T>>(z_loss), device_error_flag());
  });
}

void cross_entropy_backward(const Buffer& dlogits, const Buffer& dloss, const Buffer& logits, const Buffer& target,
                            const Buffer& lse, int64_t ignore_index, double z_loss) {
  NvtxRange range("kiln::cross_entropy_backward");
  const int64_t rows = logits.sizes[0], C = logits.sizes[1];
  if (rows == 0) return;
  visit_logits_target(logits, target, "cross_entropy_backward", [&](auto tag, auto itag) {
    using T = decltype(tag);
    using I = decltype(itag);
    const RowAccess<T> row{C, packs_fit<T>(C, {dlogits.data, logits.data})};
    launch("cross_entropy_backward_kernel", cross_entropy_backward_kernel<T, I>, grid(rows), kThreads, 0,
           dlogits.ptr<T>(), dloss.ptr<T>(), logits.ptr<T>(), target.ptr<I>(), lse.ptr<row_acc_t<T>>(), row,
           ignore_index, static_cast<row_acc_t<T>>(z_loss));
  });
}

}  // namespace kiln::kernels::cuda
