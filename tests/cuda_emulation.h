#pragma once
// Runs the device code of kiln's CUDA kernels on the CPU, so that machines
// without a GPU execute them: one block at a time, one fiber per CUDA thread,
// all on the calling OS thread. A fiber runs until it meets a barrier
// (__syncthreads for the block, a shuffle, ldmatrix or mma.sync for its warp),
// then the next one runs; a barrier opens once every live thread it waits for
// has reached it. mma.sync is computed from the fragment layout the PTX ISA
// documents for m16n8k16. Shared memory is static storage (one block runs at
// a time).
//
// Stricter than the hardware where a bug would otherwise hide:
// - a data race between the threads of a block (a write and another
//   thread's access to the same address with no barrier between them, in
//   shared or global memory) fails the launch when the kernel files are
//   built with ThreadSanitizer (KILN_EMULATION_RACECHECK: the barriers and
//   atomics tell it what orders what), as compute-sanitizer's racecheck does;
// - without it, the fibers still run in a pseudo-random order drawn afresh
//   between barriers, so such a thread reads stale bytes in some blocks;
// - dynamic shared memory starts every block as NaN bytes (0xFF), and a
//   cp.async lands only at the cp.async.wait_group that covers its group
//   (its destination holds NaN bytes until then);
// - the threads meeting at one __syncthreads must have called it from the
//   same place (a barrier that some live threads skip fails);
// - a warp exchange that some lanes of the warp never reach (they returned,
//   or wait at __syncthreads) fails instead of hanging;
// - launches are checked against the device's limits: 1024 threads per
//   block, grid y and z up to 65535, and dynamic shared memory past 48 KiB
//   only with cudaFuncAttributeMaxDynamicSharedMemorySize set (227 KiB at most).
// A breach raises std::runtime_error from the launch.
//
// Include it after any other header and before the kernels' code
// (tests/emulated compiles whole kernel files with it); launch() in
// common.cuh then hands kernels to kiln_emulation::launch.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kiln/base/half.h"

#define KILN_CUDA_EMULATION 1
#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)
#define KILN_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(kiln_emulation::block().dynamic.data())

inline uint3 threadIdx, blockIdx;  // of the fiber running
inline dim3 blockDim, gridDim;

namespace kiln_emulation {

struct MmaLane {
  uint32_t a[4], b[2];
};

// cp.async: the source read now, the destination poisoned until its group lands.
struct PendingCopy {
  void* dst;
  std::array<std::byte, 16> bytes;
  size_t size;
};

// A thread's copies in flight.
struct CopyQueue {
  std::vector<PendingCopy> open;                // not yet committed
  std::vector<std::vector<PendingCopy>> groups;  // committed, oldest first
};

// The running block: the slots its warps exchange through, and the state of
// its threads' copies.
struct Block {
  explicit Block(unsigned threads, size_t dynamic_bytes)
      : exchange(threads / 32), mma(threads / 32), copies(threads), dynamic(dynamic_bytes, std::byte{0xFF}) {}
  std::vector<std::array<uint64_t, 32>> exchange;
  std::vector<std::array<MmaLane, 32>> mma;
  std::vector<CopyQueue> copies;
  std::vector<std::byte> dynamic;
  std::string error;  // the first breach, raised once the block is done
  // The __syncthreads call site of the phase under way, as line and file
  // name's address in one word (0: none yet).
  uint64_t site = 0;
};

inline Block* running = nullptr;
inline Block& block() { return *running; }
inline unsigned lane() { return threadIdx.x % 32; }
inline unsigned warp() { return threadIdx.x / 32; }

// Suspends the running fiber until its warp's barrier opens (scheduler.cpp).
void warp_sync();
// Suspends it until the block's barrier opens; every live thread must arrive
// from the same call site.
void block_sync(const std::source_location& site);

// Runs kernel() for every thread of every block of the grid (x-dimension
// threads; blocks in order). A thread that returns early is no longer waited
// for by __syncthreads. The grid loop is compiled once (scheduler.cpp); each
// kernel adds only its call.
void run_grid(dim3 grid, unsigned threads, size_t dynamic_bytes, void (*body)(void*), void* kernel);

// The launch limits: raises unless the device would start this launch
// (`function` identifies the kernel for its shared-memory attribute).
void check_launch_limits(dim3 grid, unsigned threads, size_t dynamic_bytes, const void* function);

template <typename Kernel>
void launch(dim3 grid, unsigned threads, size_t dynamic_bytes, const void* function, Kernel&& kernel) {
  using K = std::remove_reference_t<Kernel>;
  check_launch_limits(grid, threads, dynamic_bytes, function);
  run_grid(grid, threads, dynamic_bytes, [](void* k) { (*static_cast<K*>(k))(); }, &kernel);
}

// cudaFuncSetAttribute: only the dynamic shared-memory limit is kept.
cudaError_t func_set_attribute(const void* function, cudaFuncAttribute attribute, int value);

inline void cp_async(void* shared, const void* global, size_t size, bool valid) {
  PendingCopy copy{shared, {}, size};
  if (valid) std::memcpy(copy.bytes.data(), global, size);  // zeros otherwise, as the hardware fills
  std::memset(shared, 0xFF, size);
  block().copies[threadIdx.x].open.push_back(copy);
}
inline void cp_async_commit() {
  CopyQueue& mine = block().copies[threadIdx.x];
  mine.groups.push_back(std::move(mine.open));
  mine.open.clear();
}
// cp.async.wait_group: lands all but the `pending` newest committed groups.
inline void cp_async_wait(int pending) {
  auto& groups = block().copies[threadIdx.x].groups;
  while (static_cast<int>(groups.size()) > pending) {
    for (const PendingCopy& c : groups.front()) std::memcpy(c.dst, c.bytes.data(), c.size);
    groups.erase(groups.begin());
  }
}

// An element of a packed pair of 16-bit floats as float.
template <typename T>
float half_of(uint32_t reg, int which) {
  const uint16_t bits = static_cast<uint16_t>(which ? reg >> 16 : reg & 0xffffu);
  T v;
  v.bits = bits;
  return static_cast<float>(v);
}

}  // namespace kiln_emulation

// A barrier of the block's live threads, all arriving from one call site.
inline void __syncthreads(const std::source_location& site = std::source_location::current()) {
  kiln_emulation::block_sync(site);
}

namespace kiln_emulation {
// Every lane posts v; each gets the value of lane `source` (its own v when source is past the warp).
template <typename V>
V warp_exchange(V v, unsigned source) {
  static_assert(sizeof(V) <= sizeof(uint64_t));
  auto& slots = block().exchange[warp()];
  std::memcpy(&slots[lane()], &v, sizeof(V));
  warp_sync();
  V out = v;
  if (source < 32) std::memcpy(&out, &slots[source], sizeof(V));
  warp_sync();
  return out;
}
}  // namespace kiln_emulation

template <typename V>
V __shfl_xor_sync(unsigned, V v, int lane_mask) {
  return kiln_emulation::warp_exchange(v, kiln_emulation::lane() ^ static_cast<unsigned>(lane_mask));
}

template <typename V>
V __shfl_down_sync(unsigned, V v, unsigned delta) {
  return kiln_emulation::warp_exchange(v, kiln_emulation::lane() + delta);
}

// Below lane 0 the source wraps past the warp: the lane keeps its own value, as on CUDA.
template <typename V>
V __shfl_up_sync(unsigned, V v, unsigned delta) {
  return kiln_emulation::warp_exchange(v, kiln_emulation::lane() - delta);
}

template <typename V>
V __shfl_sync(unsigned, V v, int source) {
  return kiln_emulation::warp_exchange(v, static_cast<unsigned>(source));
}

namespace kiln_emulation {
// Atomics need no lock (one fiber runs at a time), but the race check must
// see them ordered: each is an acquire and a release of its address.
void atomic_begin(void* address);
void atomic_end(void* address);
}  // namespace kiln_emulation

inline int atomicCAS(int* address, int compare, int value) {
  kiln_emulation::atomic_begin(address);
  const int old = *address;
  if (old == compare) *address = value;
  kiln_emulation::atomic_end(address);
  return old;
}

// CUDA's math functions are overloaded for float in the global namespace.
using std::ceil, std::cos, std::erf, std::exp, std::exp2, std::fabs, std::floor, std::fmax, std::fmin, std::isinf,
    std::isnan, std::log, std::pow, std::rint, std::sin, std::sqrt, std::tanh;
inline float rsqrt(float x) { return 1.f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }

template <typename V, typename A>
V atomicAdd(V* address, A value) {
  kiln_emulation::atomic_begin(address);
  const V old = *address;
  if constexpr (std::is_same_v<V, __nv_bfloat16>) *address = __float2bfloat16_rn(__bfloat162float(old) + float(value));
  else if constexpr (std::is_same_v<V, __half>) *address = __float2half_rn(__half2float(old) + float(value));
  else *address = old + static_cast<V>(value);
  kiln_emulation::atomic_end(address);
  return old;
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: every lane posts its
// fragments, then computes its four outputs. PTX ISA, per lane (g = lane / 4,
// t = lane % 4): A (row, k) is in lane 4 (row % 8) + (k % 8) / 2, register
// (row >= 8) + 2 (k >= 8), half k % 2; B (k, n) in lane 4 n + (k % 8) / 2,
// register (k >= 8), half k % 2; C (row, n) in lane 4 (row % 8) + n / 2,
// register 2 (row >= 8) + n % 2.
template <typename T>
void emulated_mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  using kiln_emulation::half_of;
  using E = std::conditional_t<std::is_same_v<T, kiln::BFloat16>, kiln::BFloat16, kiln::Half>;
  auto& lanes = kiln_emulation::block().mma[kiln_emulation::warp()];
  const unsigned me = kiln_emulation::lane();
  std::memcpy(lanes[me].a, a, sizeof(lanes[me].a));
  lanes[me].b[0] = b0;
  lanes[me].b[1] = b1;
  kiln_emulation::warp_sync();
  float d[4];
  for (int i = 0; i < 4; ++i) {
    const int row = static_cast<int>(me / 4) + 8 * (i / 2), n = 2 * static_cast<int>(me % 4) + (i % 2);
    float sum = c[i];
    for (int k = 0; k < 16; ++k) {
      const auto& al = lanes[4 * (row % 8) + (k % 8) / 2];
      const auto& bl = lanes[4 * n + (k % 8) / 2];
      sum += half_of<E>(al.a[(row >= 8) + 2 * (k >= 8)], k % 2) * half_of<E>(bl.b[k >= 8], k % 2);
    }
    d[i] = sum;
  }
  kiln_emulation::warp_sync();
  for (int i = 0; i < 4; ++i) c[i] = d[i];
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8j .. 8j + 7 post
// the row addresses of matrix j; lane l takes, of each matrix j, the elements
// (l / 4, 2 (l % 4)) and (l / 4, 2 (l % 4) + 1), transposed with trans.
inline void emulated_ldmatrix_x4(uint32_t (&r)[4], const void* row, bool trans) {
  auto& slots = kiln_emulation::block().exchange[kiln_emulation::warp()];
  const unsigned me = kiln_emulation::lane();
  std::memcpy(&slots[me], &row, sizeof(row));
  kiln_emulation::warp_sync();
  auto element = [&](int matrix, int i, int j) {
    const uint16_t* p;
    std::memcpy(&p, &slots[8 * matrix + i], sizeof(p));
    return static_cast<uint32_t>(p[j]);
  };
  const int a = static_cast<int>(me / 4), b = 2 * static_cast<int>(me % 4);
  for (int m = 0; m < 4; ++m)
    r[m] = trans ? element(m, b, a) | element(m, b + 1, a) << 16 : element(m, a, b) | element(m, a, b + 1) << 16;
  kiln_emulation::warp_sync();
}
