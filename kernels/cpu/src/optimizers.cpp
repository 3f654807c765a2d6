// Fused optimizer updates on the CPU: the twins of the CUDA kernels.

#include <cmath>

#include "kiln/kernels/cpu.h"
#include "loops.h"

namespace kiln::kernels::cpu {

namespace {

// Writes the updated parameters [lo, hi) into their low-precision copy, if any.
template <typename P>
void write_copy(const Buffer& copy, const P* p, int64_t lo, int64_t hi) {
  if (!copy.data) return;
  visit_floating(copy.dtype, "optimizer copy", [&](auto ctag) {
    using C = decltype(ctag);
    C* c = copy.ptr<C>();
    for (int64_t i = lo; i < hi; ++i) c[i] = C(p[i]);
  });
}

// AdamW on elements [0, n) of one parameter.
template <typename P, typename G>
KILN_VECTOR_LOOP void adamw_run(P* __restrict pp, P* __restrict mp, P* __restrict vp, const G* __restrict gp,
                                int64_t n, P decay, P b1, P b2, P step, P root_bc2, P eps) {
  for (int64_t i = 0; i < n; ++i) {
    const P gi = P(acc_t<G>(gp[i]));
    pp[i] *= decay;
    mp[i] = b1 * mp[i] + (P(1) - b1) * gi;
    vp[i] = b2 * vp[i] + (P(1) - b2) * gi * gi;
    pp[i] -= step * (mp[i] / (std::sqrt(vp[i]) / root_bc2 + eps));
  }
}

void adamw_one(const Buffer& p, const Buffer& g, const Buffer& m, const Buffer& v, const Buffer& copy,
               const AdamWStep& s) {
  visit_master(p.dtype, g.dtype, "adamw_update", [&](auto ptag, auto gtag) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    P* pp = p.ptr<P>();
    P* mp = m.ptr<P>();
    P* vp = v.ptr<P>();
    const G* gp = g.ptr<G>();
    const P decay = P(1 - s.lr * s.weight_decay), b1 = P(s.beta1), b2 = P(s.beta2), step = P(s.lr / s.bias_correction1);
    const P root_bc2 = P(std::sqrt(s.bias_correction2)), eps = P(s.eps);
    parallel_for(p.numel(), 8, [&](int64_t lo, int64_t hi) {
      adamw_run(pp + lo, mp + lo, vp + lo, gp + lo, hi - lo, decay, b1, b2, step, root_bc2, eps);
      write_copy(copy, pp, lo, hi);
    });
  });
}

void lion_one(const Buffer& p, const Buffer& g, const Buffer& m, const Buffer& copy, const LionStep& s) {
  visit_master(p.dtype, g.dtype, "lion_update", [&](auto ptag, auto gtag) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    P* pp = p.ptr<P>();
    P* mp = m.ptr<P>();
    const G* gp = g.ptr<G>();
    const P decay = P(1 - s.lr * s.weight_decay), b1 = P(s.beta1), b2 = P(s.beta2), lr = P(s.lr);
    parallel_for(p.numel(), 8, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const P gi = P(acc_t<G>(gp[i]));
        const P c = b1 * mp[i] + (P(1) - b1) * gi;
        pp[i] = pp[i] * decay - lr * P((c > 0) - (c < 0));
        mp[i] = b2 * mp[i] + (P(1) - b2) * gi;
      }
      write_copy(copy, pp, lo, hi);
    });
  });
}

}  // namespace

void adamw_update(const std::vector<Buffer>& p, const std::vector<Buffer>& g, const std::vector<Buffer>& m,
                  const std::vector<Buffer>& v, const std::vector<Buffer>& copy, const AdamWStep& step) {
  for (size_t i = 0; i < p.size(); ++i) adamw_one(p[i], g[i], m[i], v[i], copy[i], step);
}

void lion_update(const std::vector<Buffer>& p, const std::vector<Buffer>& g, const std::vector<Buffer>& m,
                 const std::vector<Buffer>& copy, const LionStep& step) {
  for (size_t i = 0; i < p.size(); ++i) lion_one(p[i], g[i], m[i], copy[i], step);
}

}  // namespace kiln::kernels::cpu
