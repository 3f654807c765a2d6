#pragma once
// How a row kernel's threads walk a row of C elements: 16 bytes at a time
// (Pack<T>) when every row the kernel touches allows it, one element at a
// time otherwise. A thread gets the same columns on every pass, so a kernel
// may read back what the same thread wrote without a barrier.

#include <initializer_list>
#include <type_traits>

#include "common.cuh"

namespace kiln::kernels::cuda {

template <typename T>
struct RowAccess {
  static constexpr int V = Pack<T>::size;
  int64_t C;
  bool vec;  // C % V == 0 and every row pointer 16-byte aligned (host: packs_fit)

  // f(c, in0[c], in1[c]...) for this thread's columns c < limit, values in the compute type.
  template <typename F, typename... In>
  __device__ __forceinline__ void read(int64_t limit, F&& f, const In*... in) const {
    static_assert((std::is_same_v<In, T> && ...), "a row's operands share its dtype");
    if (vec) {
      for (int64_t p = threadIdx.x; p * V < limit; p += blockDim.x) {
        const int64_t c0 = p * V;
        apply_packs(limit - c0, c0, f, reinterpret_cast<const Pack<In>*>(in)[p]...);
      }
    } else {
      for (int64_t c = threadIdx.x; c < limit; c += blockDim.x) f(c, load(in + c)...);
    }
  }

  // out[c] = f(c, in0[c], in1[c]...) for this thread's columns of the row.
  template <typename F, typename... In>
  __device__ __forceinline__ void map(T* out, F&& f, const In*... in) const {
    static_assert((std::is_same_v<In, T> && ...), "a row's operands share its dtype");
    if (vec) {
      for (int64_t p = threadIdx.x; p * V < C; p += blockDim.x) {
        Pack<T> result;
        fill_pack(result, p * V, f, reinterpret_cast<const Pack<In>*>(in)[p]...);
        reinterpret_cast<Pack<T>*>(out)[p] = result;
      }
    } else {
      for (int64_t c = threadIdx.x; c < C; c += blockDim.x) store(out + c, f(c, load(in + c)...));
    }
  }

 private:
  // The packs are taken by value: one 16-byte load each.
  template <typename F, typename... P>
  __device__ __forceinline__ static void apply_packs(int64_t left, int64_t c0, F& f, P... packs) {
#pragma unroll
    for (int k = 0; k < V; ++k)
      if (k < left) f(c0 + k, load(&packs.v[k])...);
  }
  template <typename F, typename... P>
  __device__ __forceinline__ static void fill_pack(Pack<T>& out, int64_t c0, F& f, P... packs) {
#pragma unroll
    for (int k = 0; k < V; ++k) store(&out.v[k], f(c0 + k, load(&packs.v[k])...));
  }
};

// Whether rows of C elements of T laid out from these pointers all take 16-byte packs.
template <typename T>
bool packs_fit(int64_t C, std::initializer_list<const void*> rows) {
  if (C % Pack<T>::size != 0) return false;
  for (const void* p : rows)
    if (p && !aligned16(p)) return false;
  return true;
}

}  // namespace kiln::kernels::cuda
