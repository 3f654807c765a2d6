// The tensor-core attention kernels (kernels/cuda/src/attention_mma.cuh) run
// on the CPU through cuda_emulation.h, against the float64 reference: their
// tiling, masking, online softmax, backward and fragment layouts are checked
// on machines without a GPU (the gpu label runs them on the hardware).

#include <cmath>

#include "helpers.h"

#include "cuda_emulation.h"

#include "attention_mma.cuh"

using namespace kiln;
using kt::values;
namespace kc = kiln::kernels::cuda;

namespace {

struct Case {
  int64_t B, Hq, Hkv, Tq, Tk;
  bool causal;
};

dim3 grid_of(int64_t heads, int64_t rows) {
  return dim3(static_cast<unsigned>(heads), static_cast<unsigned>((rows + kc::kBlockRows - 1) / kc::kBlockRows));
}

// Forward and backward of one case through the emulated kernels, compared with
// the composed attention in float64 on the same rounded inputs.
template <typename T, int D>
void check(const Case& c, Generator& gen) {
  const DType dt = dtype_of<T>();
  INFO(dtype_name(dt) << " D " << D << " B " << c.B << " Hq " << c.Hq << " Hkv " << c.Hkv << " Tq " << c.Tq << " Tk "
                      << c.Tk << " causal " << c.causal);
  Tensor q = randn({c.B, c.Hq, c.Tq, D}, gen, dt), k = randn({c.B, c.Hkv, c.Tk, D}, gen, dt);
  Tensor v = randn({c.B, c.Hkv, c.Tk, D}, gen, dt), dout = randn({c.B, c.Hq, c.Tq, D}, gen, dt);
  const double scale = 1.0 / std::sqrt(double(D));
  const kc::MmaShape s{c.Hq, c.Hkv, c.Tq, c.Tk, c.causal, float(scale), float(scale) * kc::kLog2e};

  Tensor out = empty(q.sizes(), dt), lse = empty({c.B, c.Hq, c.Tq});
  kiln_emulation::launch(grid_of(c.B * c.Hq, c.Tq), kc::kThreadsPerBlock, 0, [&] {
    kc::attention_mma_forward_kernel<T, D>(out.data_ptr<T>(), lse.data_ptr<float>(), q.data_ptr<T>(),
                                           k.data_ptr<T>(), v.data_ptr<T>(), s);
  });
  std::vector<Tensor> ref = {q.to(kFloat64).requires_grad_(), k.to(kFloat64).requires_grad_(),
                             v.to(kFloat64).requires_grad_()};
  AttentionOutput r = scaled_dot_product_attention_with_lse(ref[0], ref[1], ref[2], {.causal = c.causal});
  const double tol = dt == kBFloat16 ? 3e-2 : 4e-3;
  KT_CHECK_CLOSE(out, values(r.out), tol);
  std::vector<double> lr = values(r.lse), le = values(lse);
  for (size_t i = 0; i < lr.size(); ++i) {
    if (std::isinf(lr[i])) CHECK((std::isinf(le[i]) && le[i] < 0));
    else CHECK(le[i] == Approx(lr[i]).margin(2e-2));
  }

  sum(r.out * dout.to(kFloat64)).backward();
  Tensor delta = sum(dout.to(kFloat32) * out.to(kFloat32), {-1});  // (B, Hq, Tq)
  Tensor dq = empty(q.sizes(), dt), dk = empty(k.sizes(), dt), dv = empty(v.sizes(), dt);
  kiln_emulation::launch(grid_of(c.B * c.Hq, c.Tq), kc::kThreadsPerBlock, 0, [&] {
    kc::attention_mma_dq_kernel<T, D>(dq.data_ptr<T>(), dout.data_ptr<T>(), q.data_ptr<T>(), k.data_ptr<T>(),
                                      v.data_ptr<T>(), lse.data_ptr<float>(), delta.data_ptr<float>(), s);
  });
  kiln_emulation::launch(grid_of(c.B * c.Hkv, c.Tk), kc::kThreadsPerBlock, kc::dkv_shared_bytes<D>(sizeof(T)), [&] {
    kc::attention_mma_dkv_kernel<T, D>(dk.data_ptr<T>(), dv.data_ptr<T>(), dout.data_ptr<T>(), q.data_ptr<T>(),
                                       k.data_ptr<T>(), v.data_ptr<T>(), lse.data_ptr<float>(),
                                       delta.data_ptr<float>(), s);
  });
  const Tensor grads[3] = {dq, dk, dv};
  for (int i = 0; i < 3; ++i) {
    INFO("gradient of " << "qkv"[i]);
    KT_CHECK_CLOSE(grads[i], values(ref[i].grad()), 2 * tol);
  }
}

}  // namespace

TEST_CASE("tensor-core attention, emulated: ragged lengths, GQA, causal with more or fewer queries than keys") {
  Generator gen(31);
  for (bool causal : {false, true}) {
    check<BFloat16, 64>({1, 2, 1, 70, 45, causal}, gen);   // Tq > Tk: causal rows that see no key
    check<BFloat16, 64>({2, 1, 1, 20, 130, causal}, gen);  // decoding-like: few queries, many keys
  }
  check<BFloat16, 64>({1, 4, 2, 64, 64, true}, gen);       // whole tiles, two query heads per kv head
  check<Half, 128>({1, 1, 1, 33, 65, true}, gen);
}
