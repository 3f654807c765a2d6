// Launchers of the tensor-core attention kernels (attention_mma.cuh).

#include "attention_mma.cuh"
#include "attention_mma.h"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

MmaShape mma_shape(const Buffer& q, const Buffer& k, bool causal, double scale) {
  return {q.sizes[1], k.sizes[1], q.sizes[2], k.sizes[2], causal, static_cast<float>(scale),
          static_cast<float>(scale) * kLog2e};
}

// Calls f(T tag, D constant) for the operands' dtype and head dim.
template <typename F>
void with_mma_types(const Buffer& q, F&& f) {
  auto with_d = [&](auto tag) {
    if (q.sizes[3] == 64) f(tag, std::integral_constant<int, 64>{});
    else f(tag, std::integral_constant<int, 128>{});
  };
  if (q.dtype == DType::BFloat16) with_d(BFloat16{});
  else with_d(Half{});
}

// Lets `kernel` use `bytes` of dynamic shared memory (past the 48 KiB default).
template <typename Kernel>
void reserve_shared(Kernel kernel, size_t bytes, const char* op) {
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)) !=
      cudaSuccess)
    fail(op, "cannot reserve the kernel's shared memory");
}

dim3 grid_of(int64_t heads, int64_t rows) {
  return dim3(static_cast<unsigned>(heads), static_cast<unsigned>((rows + kBlockRows - 1) / kBlockRows));
}

}  // namespace

bool attention_mma_applies(const Buffer& q, const Buffer& k, const Buffer& v, const Buffer& out) {
  if (q.dtype != DType::BFloat16 && q.dtype != DType::Float16) return false;
  if (q.sizes[3] != 64 && q.sizes[3] != 128) return false;
  return aligned16(q.data) && aligned16(k.data) && aligned16(v.data) && aligned16(out.data);
}

void attention_mma_forward(const Buffer& out, const Buffer& lse, const Buffer& q, const Buffer& k, const Buffer& v,
                           bool causal, double scale) {
  const MmaShape s = mma_shape(q, k, causal, scale);
  with_mma_types(q, [&](auto tag, auto d) {
    using T = decltype(tag);
    constexpr int kD = decltype(d)::value;
    constexpr size_t bytes = kv_shared_bytes<kD>(sizeof(T));
    reserve_shared(attention_mma_forward_kernel<T, kD>, bytes, "attention");
    launch("attention_mma_forward_kernel", attention_mma_forward_kernel<T, kD>, grid_of(q.sizes[0] * s.Hq, s.Tq),
           kThreadsPerBlock, bytes, out.ptr<T>(), lse.ptr<float>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), s);
  });
}

void attention_mma_backward(const Buffer& dq, const Buffer& dk, const Buffer& dv, const Buffer& dout,
                            const Buffer& q, const Buffer& k, const Buffer& v, const Buffer& lse, const float* delta,
                            bool causal, double scale) {
  const MmaShape s = mma_shape(q, k, causal, scale);
  const int64_t B = q.sizes[0];
  with_mma_types(q, [&](auto tag, auto d) {
    using T = decltype(tag);
    constexpr int kD = decltype(d)::value;
    constexpr size_t dq_bytes = kv_shared_bytes<kD>(sizeof(T));
    reserve_shared(attention_mma_dq_kernel<T, kD>, dq_bytes, "attention_backward");
    launch("attention_mma_dq_kernel", attention_mma_dq_kernel<T, kD>, grid_of(B * s.Hq, s.Tq), kThreadsPerBlock,
           dq_bytes, dq.ptr<T>(), dout.ptr<T>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), lse.ptr<float>(), delta, s);
    constexpr size_t bytes = dkv_shared_bytes<kD>(sizeof(T));
    reserve_shared(attention_mma_dkv_kernel<T, kD>, bytes, "attention_backward");
    launch("attention_mma_dkv_kernel", attention_mma_dkv_kernel<T, kD>, grid_of(B * s.Hkv, s.Tk), kThreadsPerBlock,
           bytes, dk.ptr<T>(), dv.ptr<T>(), dout.ptr<T>(), q.ptr<T>(), k.ptr<T>(), v.ptr<T>(), lse.ptr<float>(), delta,
           s);
  });
}

}  // namespace kiln::kernels::cuda
