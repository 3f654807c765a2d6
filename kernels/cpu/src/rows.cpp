// Row kernels on contiguous (rows, C) buffers: softmax, layer norm, RMS norm and
// cross-entropy, forward and backward. Parallel over rows. Row statistics
// (mean, rstd, logsumexp) are saved in float32 (float64 for float64 inputs).

#include <atomic>
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kiln/kernels/cpu.h"
#include "loops.h"
#include "vec_math.h"

namespace kiln::kernels::cpu {

namespace {

// float32 rows accumulate in double on the CPU, 16-bit rows in float.
template <typename T>
using row_acc_t = std::conditional_t<std::is_same_v<T, float>, double, acc_t<T>>;

template <typename T>
row_acc_t<T> load(const T* p, int64_t i) {
  return static_cast<row_acc_t<T>>(acc_t<T>(p[i]));
}

template <typename T, typename A>
void store(T* p, int64_t i, A v) {
  p[i] = T(static_cast<acc_t<T>>(v));
}

// Row statistics and parameter-gradient accumulators are float32, or float64
// for float64 inputs (gradcheck needs the precision).
inline double stat(const Buffer& b, int64_t i) {
  return b.dtype == DType::Float64 ? b.ptr<double>()[i] : b.ptr<float>()[i];
}
inline void set_stat(const Buffer& b, int64_t i, double v) {
  if (b.dtype == DType::Float64) b.ptr<double>()[i] = v;
  else b.ptr<float>()[i] = static_cast<float>(v);
}
inline void accumulate_param(const Buffer& b, int64_t i, double v) { set_stat(b, i, stat(b, i) + v); }

}  // namespace

namespace {

// One row of softmax (log: log_softmax) over its first `seen` columns, the rest masked.
template <typename T>
KILN_VECTOR_LOOP void softmax_row(T* yr, const T* xr, int64_t C, int64_t seen, bool log) {
  using F = acc_t<T>;
  using A = row_acc_t<T>;
  constexpr F kInf = std::numeric_limits<F>::infinity();
  F mx = row_max<F>(xr, seen);
  if (std::isinf(mx) && mx < 0) mx = 0;  // an all -inf row gives 0/0 = nan below, as PyTorch does
  auto e = [&](int64_t c) { return exp_of(F(xr[c]) - mx); };
  if (log) {
    const F lse = F(A(mx) + std::log(lane_sum<A>(seen, e)));
    for (int64_t c = 0; c < seen; ++c) yr[c] = T(F(xr[c]) - lse);
  } else if constexpr (std::is_same_v<T, F>) {
    // float rows keep each exponential in y, summed in a pass of its own
    // (a sum that also stores does not vectorize).
    for (int64_t c = 0; c < seen; ++c) yr[c] = e(c);
    const F inv = F(A(1) / lane_sum<A>(seen, [&](int64_t c) { return yr[c]; }));
    for (int64_t c = 0; c < seen; ++c) yr[c] *= inv;
  } else {
    // 16-bit rows would round a kept exponential: they compute it again.
    const F inv = F(A(1) / lane_sum<A>(seen, e));
    for (int64_t c = 0; c < seen; ++c) yr[c] = T(e(c) * inv);
  }
  for (int64_t c = seen; c < C; ++c) yr[c] = T(log ? -kInf : F(0));
}

}  // namespace

void softmax(const Buffer& y, const Buffer& x, bool log, int64_t causal_tq) {
  const int64_t rows = x.sizes[0], C = x.sizes[1];
  visit_floating(x.dtype, "softmax", [&](auto tag) {
    using T = decltype(tag);
    parallel_for(rows, C, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        // Columns [0, seen) take part; the causal mask leaves out the rest.
        const int64_t seen = causal_tq > 0 ? std::clamp<int64_t>(r % causal_tq + C - causal_tq + 1, 0, C) : C;
        softmax_row(y.ptr<T>() + r * C, x.ptr<T>() + r * C, C, seen, log);
      }
    });
  });
}

void cumsum(const Buffer& y, const Buffer& x, bool reverse) {
  const int64_t rows = x.sizes[0], C = x.sizes[1];
  visit_numeric(x.dtype, "cumsum", [&](auto tag) {
    using T = decltype(tag);
    parallel_for(rows, C, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* xr = x.ptr<T>() + r * C;
        T* yr = y.ptr<T>() + r * C;
        row_acc_t<T> running = 0;
        for (int64_t k = 0; k < C; ++k) {
          const int64_t c = reverse ? C - 1 - k : k;
          running += load(xr, c);
          store(yr, c, running);
        }
      }
    });
  });
}

void argsort(const Buffer& indices, const Buffer& x, bool descending) {
  const int64_t rows = x.sizes[0], C = x.sizes[1];
  visit_numeric(x.dtype, "sort", [&](auto tag) {
    using T = decltype(tag);
    parallel_for(rows, C * 8, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* xr = x.ptr<T>() + r * C;
        int64_t* order = indices.ptr<int64_t>() + r * C;
        std::iota(order, order + C, int64_t{0});
        // NaN above every number, as PyTorch orders it.
        auto before = [&](int64_t i, int64_t j) {
          const auto a = load(xr, i), c = load(xr, j);
          if constexpr (std::is_floating_point_v<decltype(a)>)
            if (std::isnan(a) || std::isnan(c))
              return descending ? std::isnan(a) && !std::isnan(c) : !std::isnan(a) && std::isnan(c);
          return descending ? a > c : a < c;
        };
        std::stable_sort(order, order + C, before);
      }
    });
  });
}

namespace {

// One row of softmax's backward: y (g - <g, y>); log_softmax's: g - exp(y) sum(g).
template <typename T>
KILN_VECTOR_LOOP void softmax_backward_row(T* dr, const T* gr, const T* yr, int64_t C, bool log) {
  using F = acc_t<T>;
  using A = row_acc_t<T>;
  if (log) {
    const F total = F(lane_sum<A>(C, [&](int64_t c) { return F(gr[c]); }));
    for (int64_t c = 0; c < C; ++c) dr[c] = T(F(gr[c]) - exp_of(F(yr[c])) * total);
  } else {
    const F dot = F(lane_sum<A>(C, [&](int64_t c) { return A(gr[c]) * A(yr[c]); }));
    for (int64_t c = 0; c < C; ++c) dr[c] = T(F(yr[c]) * (F(gr[c]) - dot));
  }
}

}  // namespace

void softmax_backward(const Buffer& dx, const Buffer& dy, const Buffer& y, bool log) {
  const int64_t rows = y.sizes[0], C = y.sizes[1];
  visit_floating(y.dtype, "softmax_backward", [&](auto tag) {
    using T = decltype(tag);
    parallel_for(rows, C, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r)
        softmax_backward_row(dx.ptr<T>() + r * C, dy.ptr<T>() + r * C, y.ptr<T>() + r * C, C, log);
    });
  });
}

namespace {

// A norm's weight or bias as F values (C of them), or empty when absent.
template <typename F>
std::vector<F> param_values(const Buffer& b, int64_t C) {
  std::vector<F> out;
  if (!b.data) return out;
  out.resize(static_cast<size_t>(C));
  visit_floating(b.dtype, "norm", [&](auto t) {
    for (int64_t c = 0; c < C; ++c) out[static_cast<size_t>(c)] = static_cast<F>(acc_t<decltype(t)>(b.ptr<decltype(t)>()[c]));
  });
  return out;
}

// One row of a norm: y = xhat w + b (w, b null: absent), its mean and rstd out.
template <bool kCentered, typename T, typename F, typename A>
KILN_VECTOR_LOOP void norm_row(T* yr, const T* xr, int64_t C, const F* w, const F* b, A eps, A& m, A& rs) {
  m = 0;
  if constexpr (kCentered) m = lane_sum<A>(C, [&](int64_t c) { return A(xr[c]); }) / static_cast<A>(C);
  const A v = lane_sum<A>(C, [&](int64_t c) { return (A(xr[c]) - m) * (A(xr[c]) - m); });
  rs = A(1) / std::sqrt(v / static_cast<A>(C) + eps);
  if (!w) {
    for (int64_t c = 0; c < C; ++c) yr[c] = T(F((A(xr[c]) - m) * rs));
  } else if (!b) {
    for (int64_t c = 0; c < C; ++c) yr[c] = T(F((A(xr[c]) - m) * rs) * w[c]);
  } else {
    for (int64_t c = 0; c < C; ++c) yr[c] = T(F((A(xr[c]) - m) * rs) * w[c] + b[c]);
  }
}

// One row of a norm's dx, from the means of g w and of g w xhat; with
// kParams, the row's g xhat and g are also added into dw and db.
template <bool kCentered, bool kParams, typename T, typename F, typename A>
KILN_VECTOR_LOOP void norm_backward_row(T* dr, A* dw, A* db, const T* gr, const T* xr, int64_t C, const F* w, A m,
                                        A rs) {
  const A mean_g = kCentered ? lane_sum<A>(C, [&](int64_t c) { return A(F(gr[c]) * w[c]); }) / static_cast<A>(C) : A(0);
  const A mean_gx =
      lane_sum<A>(C, [&](int64_t c) { return A(F(gr[c]) * w[c]) * (A(xr[c]) - m) * rs; }) / static_cast<A>(C);
  for (int64_t c = 0; c < C; ++c) {
    const A xhat = (A(xr[c]) - m) * rs;
    dr[c] = T(F((A(F(gr[c]) * w[c]) - mean_g - xhat * mean_gx) * rs));
    if constexpr (kParams) {
      dw[c] += A(gr[c]) * xhat;
      db[c] += A(gr[c]);
    }
  }
}

// A norm's backward splits its rows into this many chunks (fewer when there
// are fewer rows), each with its own dw and db, added in chunk order: the
// sums do not depend on the thread count, and dy and x are read once.
constexpr int64_t kNormChunks = 64;

// LayerNorm (kCentered) and RMSNorm share everything but the mean: RMSNorm is
// LayerNorm with the mean fixed at zero and no bias. Statistics and xhat in
// A, the affine part in F.
template <bool kCentered>
void norm_forward(const Buffer& y, const Buffer& mean, const Buffer& rstd, const Buffer& x, const Buffer& residual,
                  const Buffer& sum, const Buffer& w, const Buffer& b, double eps, const char* op) {
  const int64_t rows = x.sizes[0], C = x.sizes[1];
  visit_floating(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using F = acc_t<T>;
    using A = row_acc_t<T>;
    std::vector<F> wv = param_values<F>(w, C);
    const std::vector<F> bv = param_values<F>(b, C);
    if (wv.empty() && !bv.empty()) wv.assign(static_cast<size_t>(C), F(1));
    parallel_for(rows, C, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const T* xr = x.ptr<T>() + r * C;
        if (residual.data) {  // normalize sum = x + residual, written first
          T* sr = sum.ptr<T>() + r * C;
          const T* rr = residual.ptr<T>() + r * C;
          for (int64_t c = 0; c < C; ++c) sr[c] = T(F(xr[c]) + F(rr[c]));
          xr = sr;
        }
        A m, rs;
        norm_row<kCentered>(y.ptr<T>() + r * C, xr, C, wv.empty() ? nullptr : wv.data(),
                            bv.empty() ? nullptr : bv.data(), static_cast<A>(eps), m, rs);
        if constexpr (kCentered) set_stat(mean, r, m);
        set_stat(rstd, r, rs);
      }
    });
  });
}

template <bool kCentered>
void norm_backward(const Buffer& dx, const Buffer& dw, const Buffer& db, const Buffer& dy, const Buffer& x,
                   const Buffer& w, const Buffer& mean, const Buffer& rstd, const char* op) {
  const int64_t rows = x.sizes[0], C = x.sizes[1];
  visit_floating(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using F = acc_t<T>;
    using A = row_acc_t<T>;
    std::vector<F> wv = param_values<F>(w, C);
    if (wv.empty()) wv.assign(static_cast<size_t>(C), F(1));
    auto row_mean = [&](int64_t r) { return kCentered ? static_cast<A>(stat(mean, r)) : A(0); };
    auto rows_of = [&](int64_t lo, int64_t hi, A* dwp, A* dbp, auto params) {
      for (int64_t r = lo; r < hi; ++r)
        norm_backward_row<kCentered, decltype(params)::value>(dx.ptr<T>() + r * C, dwp, dbp, dy.ptr<T>() + r * C,
                                                              x.ptr<T>() + r * C, C, wv.data(), row_mean(r),
                                                              static_cast<A>(stat(rstd, r)));
    };
    if (!dw.data && !db.data) {
      parallel_for(rows, C, [&](int64_t lo, int64_t hi) { rows_of(lo, hi, nullptr, nullptr, std::false_type{}); });
      return;
    }
    const int64_t chunks = std::clamp<int64_t>(rows, 1, kNormChunks);
    std::vector<A> partial(static_cast<size_t>(chunks * 2 * C), A(0));  // per chunk: dw's C sums, then db's
    parallel_for(chunks, rows / chunks * C, [&](int64_t lo, int64_t hi) {
      for (int64_t k = lo; k < hi; ++k) {
        A* p = partial.data() + k * 2 * C;
        rows_of(rows * k / chunks, rows * (k + 1) / chunks, p, p + C, std::true_type{});
      }
    });
    for (int64_t c = 0; c < C; ++c) {
      A sw = 0, sb = 0;
      for (int64_t k = 0; k < chunks; ++k) {
        sw += partial[static_cast<size_t>(k * 2 * C + c)];
        sb += partial[static_cast<size_t>(k * 2 * C + C + c)];
      }
      if (dw.data) accumulate_param(dw, c, static_cast<double>(sw));
      if (db.data) accumulate_param(db, c, static_cast<double>(sb));
    }
  });
}

}  // namespace

void layer_norm(const Buffer& y, const Buffer& mean, const Buffer& rstd, const Buffer& x, const Buffer& residual,
                const Buffer& sum, const Buffer& w, const Buffer& b, double eps) {
  norm_forward<true>(y, mean, rstd, x, residual, sum, w, b, eps, "layer_norm");
}

void layer_norm_backward(const Buffer& dx, const Buffer& dw, const Buffer& db, const Buffer& dy, const Buffer& x,
                         const Buffer& w, const Buffer& mean, const Buffer& rstd) {
  norm_backward<true>(dx, dw, db, dy, x, w, mean, rstd, "layer_norm_backward");
}

void rms_norm(const Buffer& y, const Buffer& rstd, const Buffer& x, const Buffer& residual, const Buffer& sum,
              const Buffer& w, double eps) {
  norm_forward<false>(y, Buffer{}, rstd, x, residual, sum, w, Buffer{}, eps, "rms_norm");
}

void rms_norm_backward(const Buffer& dx, const Buffer& dw, const Buffer& dy, const Buffer& x, const Buffer& w,
                       const Buffer& rstd) {
  norm_backward<false>(dx, dw, Buffer{}, dy, x, w, Buffer{}, rstd, "rms_norm_backward");
}

namespace {

// The logsumexp of a row.
template <typename T>
KILN_VECTOR_LOOP row_acc_t<T> logsumexp_row(const T* xr, int64_t C) {
  using F = acc_t<T>;
  const F mx = row_max<F>(xr, C);
  return row_acc_t<T>(mx) + std::log(lane_sum<row_acc_t<T>>(C, [&](int64_t c) { return exp_of(F(xr[c]) - mx); }));
}

// dr[c] = scale exp(xr[c] - shift).
template <typename T>
KILN_VECTOR_LOOP void scaled_exp_row(T* dr, const T* xr, int64_t C, acc_t<T> shift, acc_t<T> scale) {
  for (int64_t c = 0; c < C; ++c) dr[c] = T(scale * exp_of(acc_t<T>(xr[c]) - shift));
}

}  // namespace

void cross_entropy(const Buffer& loss, const Buffer& lse, const Buffer& logits, const Buffer& target,
                   int64_t ignore_index, double z_loss) {
  const int64_t rows = logits.sizes[0], C = logits.sizes[1];
  visit_index(target.dtype, "cross_entropy", [&](auto itag) {
    using I = decltype(itag);
    const I* tg = target.ptr<I>();
    for (int64_t r = 0; r < rows; ++r)
      KILN_CHECK(tg[r] == ignore_index || (tg[r] >= 0 && tg[r] < C),
                 "[cross_entropy] target {} at row {} is out of range for {} classes", int64_t(tg[r]), r, C);
    visit_floating(logits.dtype, "cross_entropy", [&](auto tag) {
      using T = decltype(tag);
      using F = acc_t<T>;
      using A = row_acc_t<T>;
      parallel_for(rows, C, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          const T* xr = logits.ptr<T>() + r * C;
          const A l = logsumexp_row(xr, C);
          set_stat(lse, r, l);
          loss.ptr<T>()[r] = T(static_cast<F>(tg[r] == ignore_index ? A(0) : l - A(xr[tg[r]]) + A(z_loss) * l * l));
        }
      });
    });
  });
}

void cross_entropy_backward(const Buffer& dlogits, const Buffer& dloss, const Buffer& logits, const Buffer& target,
                            const Buffer& lse, int64_t ignore_index, double z_loss) {
  const int64_t rows = logits.sizes[0], C = logits.sizes[1];
  visit_index(target.dtype, "cross_entropy_backward", [&](auto itag) {
    using I = decltype(itag);
    const I* tg = target.ptr<I>();
    visit_floating(logits.dtype, "cross_entropy_backward", [&](auto tag) {
      using T = decltype(tag);
      using F = acc_t<T>;
      parallel_for(rows, C, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          const T* xr = logits.ptr<T>() + r * C;
          T* dr = dlogits.ptr<T>() + r * C;
          if (tg[r] == ignore_index) {
            std::fill(dr, dr + C, T(F(0)));
            continue;
          }
          const F g = F(dloss.ptr<T>()[r]);
          const double l = stat(lse, r);
          // softmax, stretched by the z term's gradient 2 z lse softmax
          const F stretch = F(1 + 2 * z_loss * l), lf = F(l);
          // read before the row is written: dlogits may be logits itself (linear_cross_entropy)
          const F at_target = g * (stretch * exp_of(F(xr[tg[r]]) - lf) - F(1));
          scaled_exp_row(dr, xr, C, lf, g * stretch);
          dr[tg[r]] = T(at_target);
        }
      });
    });
  });
}

}  // namespace kiln::kernels::cpu
