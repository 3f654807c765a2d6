// Launchers of the tensor-core attention kernels (attention_mma.cuh).

#include <array>
#include <mutex>

#include "attention_mma.cuh"
#include "attention_mma.h"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

MmaShape mma_shape(const AttentionGeometry& g, double scale) {
  return {g, static_cast<float>(scale), static_cast<float>(scale) * kLog2e};
}

// Calls f(T tag, D constant) for the operands' dtype and head dim.
template <typename F>
void with_mma_types(const Buffer& q, int64_t head_dim, F&& f) {
  auto with_d = [&](auto tag) {
    if (head_dim == 64) f(tag, std::integral_constant<int, 64>{});
    else f(tag, std::integral_constant<int, 128>{});
  };
  if (q.dtype == DType::BFloat16) with_d(BFloat16{});
  else with_d(Half{});
}

// Lets kKernel use kBytes of dynamic shared memory (past the 48 KiB
// default): once per device, not at every launch.
template <auto kKernel, size_t kBytes>
void reserve_shared(const char* op) {
  static std::array<std::once_flag, kMaxDevices> once;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) fail(op, "cannot tell the current device");
  std::call_once(once[device], [&] {
    if (cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kBytes)) !=
        cudaSuccess)
      fail(op, "cannot reserve the kernel's shared memory");
  });
}

dim3 grid_of(int64_t heads, int64_t rows) {
  return dim3(static_cast<unsigned>(heads), static_cast<unsigned>((rows + kBlockRows - 1) / kBlockRows));
}

}  // namespace

bool attention_mma_applies(const AttentionGeometry& g, const Buffer& q, const Buffer& k, const Buffer& v,
                           const Buffer& out) {
  if (q.dtype != DType::BFloat16 && q.dtype != DType::Float16) return false;
  if (g.slopes) return false;  // ALiBi runs in the SIMT kernels
  if (g.head_dim != 64 && g.head_dim != 128) return false;
  return aligned16(q.data) && aligned16(k.data) && aligned16(v.data) && aligned16(out.data);
}

void attention_mma_forward(const Buffer& out, const Buffer& lse, const Buffer& q, const Buffer& k, const Buffer& v,
                           const AttentionGeometry& g, double scale) {
  const MmaShape s = mma_shape(g, scale);
  with_mma_types(q, g.head_dim, [&](auto tag, auto d) {
    using T = decltype(tag);
    constexpr int kD = decltype(d)::value;
    constexpr size_t bytes = kv_shared_bytes<kD>(sizeof(T));
    reserve_shared<attention_mma_forward_kernel<T, kD>, bytes>("attention");
    launch("attention_mma_forward_kernel", attention_mma_forward_kernel<T, kD>, grid_of(g.batch * g.heads_q, g.Tq),
           kThreadsPerBlock, bytes, out.ptr<T>(), lse.ptr<float>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), s);
  });
}

void attention_mma_backward(const Buffer& dq, const Buffer& dk, const Buffer& dv, const Buffer& dout,
                            const Buffer& q, const Buffer& k, const Buffer& v, const Buffer& lse, const float* delta,
                            const AttentionGeometry& g, double scale) {
  const MmaShape s = mma_shape(g, scale);
  with_mma_types(q, g.head_dim, [&](auto tag, auto d) {
    using T = decltype(tag);
    constexpr int kD = decltype(d)::value;
    constexpr size_t dq_bytes = kv_shared_bytes<kD>(sizeof(T));
    reserve_shared<attention_mma_dq_kernel<T, kD>, dq_bytes>("attention_backward");
    launch("attention_mma_dq_kernel", attention_mma_dq_kernel<T, kD>, grid_of(g.batch * g.heads_q, g.Tq),
           kThreadsPerBlock, dq_bytes, dq.ptr<T>(), dout.ptr<T>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), lse.ptr<float>(),
           delta, s);
    constexpr size_t bytes = dkv_shared_bytes<kD>(sizeof(T));
    reserve_shared<attention_mma_dkv_kernel<T, kD>, bytes>("attention_backward");
    launch("attention_mma_dkv_kernel", attention_mma_dkv_kernel<T, kD>, grid_of(g.batch * g.heads_kv, g.Tk),
           kThreadsPerBlock, bytes, dk.ptr<T>(), dv.ptr<T>(), dout.ptr<T>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(),
           lse.ptr<float>(), delta, s);
  });
}

}  // namespace kiln::kernels::cuda
