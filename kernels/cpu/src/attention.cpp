// Fused attention on the CPU: the twin of the CUDA kernels, row by row in
// float64 (float32 and 16-bit inputs too), exact softmax from the row's
// logsumexp, ALiBi's bias computed per score. Parallel over (batch,
// key/value head): each owns its dk, dv rows and the dq rows of its query
// heads, so the backward needs no atomics.

#include <cmath>
#include <limits>
#include <vector>

#include "kiln/kernels/cpu.h"
#include "loops.h"

namespace kiln::kernels::cpu {

namespace {

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

void attention(const Buffer& out, const Buffer& lse, const Buffer& q, const Buffer& k, const Buffer& v,
               const AttentionGeometry& g, double scale) {
  const int64_t D = g.head_dim;
  visit_floating(q.dtype, "attention", [&](auto tag) {
    using T = decltype(tag);
    // One task per (sequence, head, query), over the longest sequence's queries.
    parallel_for(g.batch * g.heads_q * g.Tq, g.Tk * D, [&](int64_t lo, int64_t hi) {
      std::vector<double> s(static_cast<size_t>(g.Tk)), o(static_cast<size_t>(D));
      for (int64_t task = lo; task < hi; ++task) {
        const int64_t bh = task / g.Tq, i = task % g.Tq;
        const AttentionSequence seq = g.sequence(bh / g.heads_q, bh % g.heads_q);
        if (i >= seq.Tq) continue;
        const int64_t row = seq.query(i), last = seq.last_key(i);
        double m = -std::numeric_limits<double>::infinity(), l = 0;
        for (int64_t j = 0; j <= last; ++j) {
          s[j] = scale * dot<T>(q, row * D, k, seq.key(j) * D, D) + seq.bias(i, j);
          m = std::max(m, s[j]);
        }
        std::fill(o.begin(), o.end(), 0.0);
        for (int64_t j = 0; j <= last; ++j) {
          const double p = std::exp(s[j] - m);
          l += p;
          for (int64_t d = 0; d < D; ++d) o[d] += p * at<T>(v, seq.key(j) * D + d);
        }
        for (int64_t d = 0; d < D; ++d) out.ptr<T>()[row * D + d] = T(acc_t<T>(last < 0 ? 0.0 : o[d] / l));
        const double row_lse = last < 0 ? -std::numeric_limits<double>::infinity() : m + std::log(l);
        if (lse.dtype == DType::Float64) lse.ptr<double>()[row] = row_lse;
        else lse.ptr<float>()[row] = static_cast<float>(row_lse);
      }
    });
  });
}

void attention_backward(const Buffer& dq, const Buffer& dk, const Buffer& dv, const Buffer& dout, const Buffer& q,
                        const Buffer& k, const Buffer& v, const Buffer& out, const Buffer& lse,
                        const AttentionGeometry& g, double scale) {
  const int64_t D = g.head_dim, group = g.group();
  visit_floating(q.dtype, "attention_backward", [&](auto tag) {
    using T = decltype(tag);
    auto row_lse = [&](int64_t row) {
      return lse.dtype == DType::Float64 ? lse.ptr<double>()[row] : double(lse.ptr<float>()[row]);
    };
    parallel_for(g.batch * g.heads_kv, g.Tq * g.Tk * D * group, [&](int64_t lo, int64_t hi) {
      std::vector<double> dkv(static_cast<size_t>(2 * g.Tk * D)), dqr(static_cast<size_t>(D));
      for (int64_t bk = lo; bk < hi; ++bk) {
        const int64_t b = bk / g.heads_kv, hk = bk % g.heads_kv;
        std::fill(dkv.begin(), dkv.end(), 0.0);
        double* dks = dkv.data();
        double* dvs = dkv.data() + g.Tk * D;
        for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
          const AttentionSequence seq = g.sequence(b, h);
          for (int64_t i = 0; i < seq.Tq; ++i) {
            const int64_t row = seq.query(i), last = seq.last_key(i);
            const double L = row_lse(row), Di = dot<T>(dout, row * D, out, row * D, D);
            std::fill(dqr.begin(), dqr.end(), 0.0);
            for (int64_t j = 0; j <= last; ++j) {
              const int64_t key = seq.key(j) * D;
              const double p = std::exp(scale * dot<T>(q, row * D, k, key, D) + seq.bias(i, j) - L);
              const double dp = dot<T>(dout, row * D, v, key, D), ds = p * (dp - Di);
              for (int64_t d = 0; d < D; ++d) {
                dvs[j * D + d] += p * at<T>(dout, row * D + d);
                dks[j * D + d] += scale * ds * at<T>(q, row * D + d);
                dqr[d] += scale * ds * at<T>(k, key + d);
              }
            }
            for (int64_t d = 0; d < D; ++d) dq.ptr<T>()[row * D + d] = T(acc_t<T>(dqr[d]));
          }
        }
        const AttentionSequence keys = g.sequence(b, hk * group);  // the group's kv head
        for (int64_t j = 0; j < keys.Tk; ++j)
          for (int64_t d = 0; d < D; ++d) {
            dk.ptr<T>()[keys.key(j) * D + d] = T(acc_t<T>(dks[j * D + d]));
            dv.ptr<T>()[keys.key(j) * D + d] = T(acc_t<T>(dvs[j * D + d]));
          }
      }
    });
  });
}

}  // namespace kiln::kernels::cpu
