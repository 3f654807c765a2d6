// Fused attention on the CPU: the twin of the CUDA kernels, row by row in
// float64 (float32 and 16-bit inputs too), exact softmax from the row's
// logsumexp. Parallel over (batch, key/value head): each owns its dk, dv rows
// and the dq rows of its query heads, so the backward needs no atomics.

#include <cmath>
#include <limits>
#include <vector>

#include "kiln/kernels/cpu.h"
#include "loops.h"

namespace kiln::kernels::cpu {

namespace {

struct Geometry {
  int64_t B, Hq, Hkv, Tq, Tk, D;
  explicit Geometry(const Buffer& q, const Buffer& k)
      : B(q.sizes[0]), Hq(q.sizes[1]), Hkv(k.sizes[1]), Tq(q.sizes[2]), Tk(k.sizes[2]), D(q.sizes[3]) {}
  // The last key query i sees (-1: none).
  int64_t last_key(int64_t i, bool causal) const { return causal ? std::min(Tk - 1, i + Tk - Tq) : Tk - 1; }
};

template <typename T>
double at(const Buffer& b, int64_t i) {
  return double(acc_t<T>(b.ptr<T>()[i]));
}

template <typename T>
double dot(const Buffer& a, int64_t ai, const Buffer& b, int64_t bi, int64_t D) {
  double s = 0;
  for (int64_t d = 0; d < D; ++d) s += at<T>(a, ai + d) * at<T>(b, bi + d);
  return s;
}

}  // namespace

void attention(const Buffer& out, const Buffer& lse, const Buffer& q, const Buffer& k, const Buffer& v, bool causal,
               double scale) {
  const Geometry g(q, k);
  const int64_t group = g.Hq / g.Hkv;
  visit_floating(q.dtype, "attention", [&](auto tag) {
    using T = decltype(tag);
    parallel_for(g.B * g.Hq * g.Tq, g.Tk * g.D, [&](int64_t lo, int64_t hi) {
      std::vector<double> s(static_cast<size_t>(g.Tk)), o(static_cast<size_t>(g.D));
      for (int64_t row = lo; row < hi; ++row) {
        const int64_t bh = row / g.Tq, i = row % g.Tq, b = bh / g.Hq, h = bh % g.Hq;
        const int64_t kv = (b * g.Hkv + h / group) * g.Tk * g.D, last = g.last_key(i, causal);
        double m = -std::numeric_limits<double>::infinity(), l = 0;
        for (int64_t j = 0; j <= last; ++j) {
          s[j] = scale * dot<T>(q, row * g.D, k, kv + j * g.D, g.D);
          m = std::max(m, s[j]);
        }
        std::fill(o.begin(), o.end(), 0.0);
        for (int64_t j = 0; j <= last; ++j) {
          const double p = std::exp(s[j] - m);
          l += p;
          for (int64_t d = 0; d < g.D; ++d) o[d] += p * at<T>(v, kv + j * g.D + d);
        }
        for (int64_t d = 0; d < g.D; ++d) out.ptr<T>()[row * g.D + d] = T(acc_t<T>(last < 0 ? 0.0 : o[d] / l));
        const double row_lse = last < 0 ? -std::numeric_limits<double>::infinity() : m + std::log(l);
        if (lse.dtype == DType::Float64) lse.ptr<double>()[row] = row_lse;
        else lse.ptr<float>()[row] = static_cast<float>(row_lse);
      }
    });
  });
}

void attention_backward(const Buffer& dq, const Buffer& dk, const Buffer& dv, const Buffer& dout, const Buffer& q,
                        const Buffer& k, const Buffer& v, const Buffer& out, const Buffer& lse, bool causal,
                        double scale) {
  const Geometry g(q, k);
  const int64_t group = g.Hq / g.Hkv;
  visit_floating(q.dtype, "attention_backward", [&](auto tag) {
    using T = decltype(tag);
    auto row_lse = [&](int64_t row) {
      return lse.dtype == DType::Float64 ? lse.ptr<double>()[row] : double(lse.ptr<float>()[row]);
    };
    parallel_for(g.B * g.Hkv, g.Tq * g.Tk * g.D * group, [&](int64_t lo, int64_t hi) {
      std::vector<double> dkv(static_cast<size_t>(2 * g.Tk * g.D)), dqr(static_cast<size_t>(g.D));
      for (int64_t bk = lo; bk < hi; ++bk) {
        const int64_t b = bk / g.Hkv, hk = bk % g.Hkv, kv = bk * g.Tk * g.D;
        std::fill(dkv.begin(), dkv.end(), 0.0);
        double* dks = dkv.data();
        double* dvs = dkv.data() + g.Tk * g.D;
        for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
          for (int64_t i = 0; i < g.Tq; ++i) {
            const int64_t row = (b * g.Hq + h) * g.Tq + i, last = g.last_key(i, causal);
            const double L = row_lse(row), Di = dot<T>(dout, row * g.D, out, row * g.D, g.D);
            std::fill(dqr.begin(), dqr.end(), 0.0);
            for (int64_t j = 0; j <= last; ++j) {
              const double p = std::exp(scale * dot<T>(q, row * g.D, k, kv + j * g.D, g.D) - L);
              const double dp = dot<T>(dout, row * g.D, v, kv + j * g.D, g.D), ds = p * (dp - Di);
              for (int64_t d = 0; d < g.D; ++d) {
                dvs[j * g.D + d] += p * at<T>(dout, row * g.D + d);
                dks[j * g.D + d] += scale * ds * at<T>(q, row * g.D + d);
                dqr[d] += scale * ds * at<T>(k, kv + j * g.D + d);
              }
            }
            for (int64_t d = 0; d < g.D; ++d) dq.ptr<T>()[row * g.D + d] = T(acc_t<T>(dqr[d]));
          }
        for (int64_t e = 0; e < g.Tk * g.D; ++e) {
          dk.ptr<T>()[kv + e] = T(acc_t<T>(dks[e]));
          dv.ptr<T>()[kv + e] = T(acc_t<T>(dvs[e]));
        }
      }
    });
  });
}

}  // namespace kiln::kernels::cpu
