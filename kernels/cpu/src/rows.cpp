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

// Reads an optional float-typed parameter buffer (weight or bias).
template <typename A>
A param(const Buffer& b, int64_t i, A fallback) {
  if (!b.data) return fallback;
  return visit_floating(b.dtype, "norm", [&](auto t) -> A {
    return static_cast<A>(acc_t<decltype(t)>(b.ptr<decltype(t)>()[i]));
  });
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

void softmax(const Buffer& y, const Buffer& x, bool log, int64_t causal_tq) {
  const int64_t rows = x.sizes[0], C = x.sizes[1];
  visit_floating(x.dtype, "softmax", [&](auto tag) {
    using T = decltype(tag);
    using A = row_acc_t<T>;
    constexpr A kInf = std::numeric_limits<A>::infinity();
    parallel_for(rows, C, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* xr = x.ptr<T>() + r * C;
        T* yr = y.ptr<T>() + r * C;
        // Columns [0, seen) take part; the causal mask leaves out the rest.
        const int64_t seen = causal_tq > 0 ? std::clamp<int64_t>(r % causal_tq + C - causal_tq + 1, 0, C) : C;
        A mx = -kInf;
        for (int64_t c = 0; c < seen; ++c) mx = std::max(mx, load(xr, c));
        if (std::isinf(mx) && mx < 0) mx = 0;  // an all -inf row gives 0/0 = nan below, as PyTorch does
        A sum = 0;
        for (int64_t c = 0; c < seen; ++c) sum += std::exp(load(xr, c) - mx);
        A lse = mx + std::log(sum);
        for (int64_t c = 0; c < seen; ++c)
          store(yr, c, log ? load(xr, c) - lse : std::exp(load(xr, c) - mx) / sum);
        for (int64_t c = seen; c < C; ++c) store(yr, c, log ? -kInf : A(0));
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

void softmax_backward(const Buffer& dx, const Buffer& dy, const Buffer& y, bool log) {
  const int64_t rows = y.sizes[0], C = y.sizes[1];
  visit_floating(y.dtype, "softmax_backward", [&](auto tag) {
    using T = decltype(tag);
    using A = row_acc_t<T>;
    parallel_for(rows, C, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* yr = y.ptr<T>() + r * C;
        const T* gr = dy.ptr<T>() + r * C;
        T* dr = dx.ptr<T>() + r * C;
        A dot = 0;
        for (int64_t c = 0; c < C; ++c) dot += log ? load(gr, c) : load(gr, c) * load(yr, c);
        for (int64_t c = 0; c < C; ++c) {
          // softmax: y (g - <g, y>); log_softmax: g - exp(y) sum(g)
          A v = log ? load(gr, c) - std::exp(load(yr, c)) * dot : load(yr, c) * (load(gr, c) - dot);
          store(dr, c, v);
        }
      }
    });
  });
}

namespace {

// LayerNorm (kCentered) and RMSNorm share everything but the mean: RMSNorm is
// LayerNorm with the mean fixed at zero and no bias.
template <bool kCentered>
void norm_forward(const Buffer& y, const Buffer& mean, const Buffer& rstd, const Buffer& x, const Buffer& residual,
                  const Buffer& sum, const Buffer& w, const Buffer& b, double eps, const char* op) {
  const int64_t rows = x.sizes[0], C = x.sizes[1];
  visit_floating(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    using A = row_acc_t<T>;
    parallel_for(rows, C, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const T* xr = x.ptr<T>() + r * C;
        if (residual.data) {  // normalize sum = x + residual, written first
          T* sr = sum.ptr<T>() + r * C;
          const T* rr = residual.ptr<T>() + r * C;
          for (int64_t c = 0; c < C; ++c) store(sr, c, load(xr, c) + load(rr, c));
          xr = sr;
        }
        T* yr = y.ptr<T>() + r * C;
        A m = 0;
        if constexpr (kCentered) {
          for (int64_t c = 0; c < C; ++c) m += load(xr, c);
          m /= static_cast<A>(C);
        }
        A v = 0;
        for (int64_t c = 0; c < C; ++c) v += (load(xr, c) - m) * (load(xr, c) - m);
        A rs = A(1) / std::sqrt(v / static_cast<A>(C) + static_cast<A>(eps));
        for (int64_t c = 0; c < C; ++c)
          store(yr, c, (load(xr, c) - m) * rs * param<A>(w, c, A(1)) + param<A>(b, c, A(0)));
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
    using A = row_acc_t<T>;
    auto row_mean = [&](int64_t r) { return kCentered ? static_cast<A>(stat(mean, r)) : A(0); };
    // dx rows in parallel; dw and db summed over rows serially (deterministic).
    parallel_for(rows, C, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const T* xr = x.ptr<T>() + r * C;
        const T* gr = dy.ptr<T>() + r * C;
        T* dr = dx.ptr<T>() + r * C;
        A m = row_mean(r), rs = static_cast<A>(stat(rstd, r));
        A mean_g = 0, mean_gx = 0;  // means of g*w and g*w*xhat
        for (int64_t c = 0; c < C; ++c) {
          A gw = load(gr, c) * param<A>(w, c, A(1));
          mean_g += gw;
          mean_gx += gw * (load(xr, c) - m) * rs;
        }
        mean_g = kCentered ? mean_g / static_cast<A>(C) : A(0);
        mean_gx /= static_cast<A>(C);
        for (int64_t c = 0; c < C; ++c) {
          A xhat = (load(xr, c) - m) * rs;
          store(dr, c, (load(gr, c) * param<A>(w, c, A(1)) - mean_g - xhat * mean_gx) * rs);
        }
      }
    });
    if (!dw.data && !db.data) return;
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x.ptr<T>() + r * C;
      const T* gr = dy.ptr<T>() + r * C;
      A m = row_mean(r), rs = static_cast<A>(stat(rstd, r));
      for (int64_t c = 0; c < C; ++c) {
        if (dw.data) accumulate_param(dw, c, load(gr, c) * (load(xr, c) - m) * rs);
        if (db.data) accumulate_param(db, c, load(gr, c));
      }
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
      using A = row_acc_t<T>;
      parallel_for(rows, C, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          const T* xr = logits.ptr<T>() + r * C;
          A mx = -std::numeric_limits<A>::infinity();
          for (int64_t c = 0; c < C; ++c) mx = std::max(mx, load(xr, c));
          A sum = 0;
          for (int64_t c = 0; c < C; ++c) sum += std::exp(load(xr, c) - mx);
          A l = mx + std::log(sum);
          set_stat(lse, r, l);
          store(loss.ptr<T>(), r, tg[r] == ignore_index ? A(0) : l - load(xr, int64_t(tg[r])) + A(z_loss) * l * l);
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
      using A = row_acc_t<T>;
      parallel_for(rows, C, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          const T* xr = logits.ptr<T>() + r * C;
          T* dr = dlogits.ptr<T>() + r * C;
          bool ignored = tg[r] == ignore_index;
          A g = ignored ? A(0) : load(dloss.ptr<T>(), r);
          A l = static_cast<A>(stat(lse, r));
          A stretch = 1 + 2 * A(z_loss) * l;  // the z term's gradient: 2 z lse softmax
          for (int64_t c = 0; c < C; ++c) {
            A p = stretch * std::exp(load(xr, c) - l);
            store(dr, c, ignored ? A(0) : g * (p - (c == int64_t(tg[r]) ? A(1) : A(0))));
          }
        }
      });
    });
  });
}

}  // namespace kiln::kernels::cpu
