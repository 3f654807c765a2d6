#pragma once
// Building blocks of the CPU kernels: dispatch over dtypes, and one strided
// N-operand loop that coalesces dimensions and parallelizes the outer ones.

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

#include "kiln/base/buffer.h"
#include "kiln/base/error.h"
#include "kiln/base/half.h"
#include "kiln/base/strided.h"
#include "kiln/base/visit.h"
#include "kiln/kernels/cpu.h"
#include "thread_pool.h"

namespace kiln::kernels::cpu {

// The type arithmetic runs in: float for the 16-bit floats, else the type itself.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, BFloat16> || std::is_same_v<T, Half>, float, T>;

template <typename T>
inline constexpr bool is_float_v = std::is_floating_point_v<acc_t<T>>;

constexpr int64_t kParallelGrain = 32768;

// A loop compiled twice, for x86-64-v3 (AVX2, FMA) and for the baseline,
// the CPU picking one when the library loads (GCC's function
// multiversioning), and flattened (every call inlined) so that it
// vectorizes: twice the vector width where the CPU has AVX2. Both round
// alike (the kernels are built without FMA contraction).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KILN_VECTOR_LOOP __attribute__((flatten, target_clones("arch=x86-64-v3", "default")))
#else
#define KILN_VECTOR_LOOP __attribute__((flatten))
#endif

// Visits every element of bufs[0]'s shape (all bufs share it, strides may differ):
// body(offsets, n, inner_strides) handles a run of n elements, where operand j's
// run starts at element offset offsets[j] and steps by inner_strides[j].
// Runs serially when `serial` (an accumulation with possible collisions).
template <size_t N, typename F>
void for_each(const std::array<const Buffer*, N>& bufs, F&& body, bool serial = false) {
  const Buffer* ptrs[N];
  for (size_t j = 0; j < N; ++j) ptrs[j] = bufs[j];
  const auto it = StridedIndex<static_cast<int>(N)>::make(ptrs);
  const int64_t total = bufs[0]->numel();
  if (total == 0) return;
  std::array<int64_t, N> inner{};
  int64_t n_inner = 1;
  if (it.ndim > 0) {
    n_inner = it.sizes[it.ndim - 1];
    for (size_t j = 0; j < N; ++j) inner[j] = it.strides[j][it.ndim - 1];
  }
  const int64_t n_outer = total / n_inner;
  // Elements [b, e) of run o.
  auto run = [&](int64_t o, int64_t b, int64_t e) {
    std::array<int64_t, N> off{};
    it.offsets(o, off.data(), /*skip=*/it.ndim > 0 ? 1 : 0);
    for (size_t j = 0; j < N; ++j) off[j] += b * inner[j];
    body(off, e - b, inner);
  };
  const int64_t threads = !serial && total >= kParallelGrain ? num_threads() : 1;
  if (threads > 1 && n_outer >= threads) {
    parallel_tasks(threads, [&](int64_t p) {
      for (int64_t o = p * n_outer / threads; o < (p + 1) * n_outer / threads; ++o) run(o, 0, n_inner);
    });
  } else if (threads > 1) {
    // Fewer runs than threads (a contiguous tensor is one run): each run in pieces.
    const int64_t pieces = (threads + n_outer - 1) / n_outer;
    parallel_tasks(n_outer * pieces, [&](int64_t t) {
      const int64_t o = t / pieces, p = t % pieces;
      run(o, p * n_inner / pieces, (p + 1) * n_inner / pieces);
    });
  } else {
    for (int64_t o = 0; o < n_outer; ++o) run(o, 0, n_inner);
  }
}

// Runs f(begin, end) over [0, n) split across threads when the work is large.
// The split depends only on n and the thread count: results are the same
// from run to run.
template <typename F>
void parallel_for(int64_t n, int64_t work_per_item, F&& f) {
  const int64_t threads = n * work_per_item >= kParallelGrain && n > 1 ? num_threads() : 1;
  if (threads > 1) {
    const int64_t chunk = (n + threads - 1) / threads;
    parallel_tasks((n + chunk - 1) / chunk, [&](int64_t t) { f(t * chunk, std::min(n, (t + 1) * chunk)); });
  } else {
    f(0, n);
  }
}

}  // namespace kiln::kernels::cpu
