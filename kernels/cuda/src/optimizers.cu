// Fused optimizer updates: one pass over parameter, gradient and state, each
// element read and written once (AdamW: 16 bytes read + 12 written per float32
// parameter with a float32 gradient).

#include "common.cuh"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

template <typename P, typename G>
__global__ void adamw_kernel(int64_t n, P* p, const G* g, P* m, P* v, P decay, P b1, P b2, P step, P root_bc2, P eps) {
  KILN_GRID_STRIDE(i, n) {
    const P gi = P(load(g + i));
    const P mi = b1 * m[i] + (P(1) - b1) * gi;
    const P vi = b2 * v[i] + (P(1) - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step * (mi / (sqrt(vi) / root_bc2 + eps));
  }
}

template <typename P, typename G>
__global__ void lion_kernel(int64_t n, P* p, const G* g, P* m, P decay, P b1, P b2, P lr) {
  KILN_GRID_STRIDE(i, n) {
    const P gi = P(load(g + i));
    const P c = b1 * m[i] + (P(1) - b1) * gi;
    p[i] = p[i] * decay - lr * P((c > P(0)) - (c < P(0)));
    m[i] = b2 * m[i] + (P(1) - b2) * gi;
  }
}

}  // namespace

void adamw_update(const Buffer& p, const Buffer& g, const Buffer& m, const Buffer& v, const AdamWStep& s) {
  NvtxRange range("kiln::adamw_update");
  const int64_t n = p.numel();
  if (n == 0) return;
  visit_master(p.dtype, g.dtype, "adamw_update", [&](auto ptag, auto gtag) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    adamw_kernel<P, G><<<blocks_for(n), kThreads, 0, current_stream()>>>(
        n, p.ptr<P>(), g.ptr<G>(), m.ptr<P>(), v.ptr<P>(), P(1 - s.lr * s.weight_decay), P(s.beta1), P(s.beta2),
        P(s.lr / s.bias_correction1), P(sqrt(s.bias_correction2)), P(s.eps));
    check_launch("adamw_kernel");
  });
}

void lion_update(const Buffer& p, const Buffer& g, const Buffer& m, const LionStep& s) {
  NvtxRange range("kiln::lion_update");
  const int64_t n = p.numel();
  if (n == 0) return;
  visit_master(p.dtype, g.dtype, "lion_update", [&](auto ptag, auto gtag) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    lion_kernel<P, G><<<blocks_for(n), kThreads, 0, current_stream()>>>(
        n, p.ptr<P>(), g.ptr<G>(), m.ptr<P>(), P(1 - s.lr * s.weight_decay), P(s.beta1), P(s.beta2), P(s.lr));
    check_launch("lion_kernel");
  });
}

}  // namespace kiln::kernels::cuda
