// Device runtime: availability, stream-ordered allocation from each device's
// default memory pool (release threshold raised so freed blocks are reused,
// not returned to the driver, except to retry an allocation that failed),
// copies and synchronization.

#include <array>
#include <cstdint>
#include <mutex>
#include <vector>

#include "device_error.h"
#include "cuda_check.h"
#include "launch.h"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

void configure_pool_once(int device) {
  static std::mutex mu;
  static std::vector<bool> done;
  std::lock_guard<std::mutex> lock(mu);
  if (done.size() <= static_cast<size_t>(device)) done.resize(device + 1, false);
  if (done[device]) return;
  cudaMemPool_t pool;
  KILN_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t threshold = UINT64_MAX;
  KILN_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  done[device] = true;
}

}  // namespace

DeviceScope::DeviceScope(int device) {
  KILN_CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ == device) prev_ = -1;
  else KILN_CUDA_CHECK(cudaSetDevice(device));
}

DeviceScope::~DeviceScope() {
  if (prev_ >= 0) cudaSetDevice(prev_);
}

void fail(const char* op, const char* message) { KILN_FAIL("[{}] {}", op, message); }

DeviceError* device_error_flag() {
  // Freed at exit, before CUDA's own teardown (this object is made after CUDA
  // is up), so that a leak check finds nothing of kiln's left.
  struct Flags {
    std::mutex mu;
    std::array<DeviceError*, kMaxDevices> of{};
    ~Flags() {
      for (DeviceError* f : of)
        if (f) cudaFree(f);
    }
  };
  static Flags flags;
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(flags.mu);
  DeviceError*& flag = flags.of[device];
  if (!flag) {
    KILN_CUDA_CHECK(cudaMalloc(&flag, sizeof(DeviceError)));
    KILN_CUDA_CHECK(cudaMemset(flag, 0, sizeof(DeviceError)));
  }
  return flag;
}

namespace {
// After `stream` has been synchronized: raises the first device-side error
// and clears it. Read and cleared on that stream (the legacy stream would not
// wait for kiln's non-blocking pool streams); an error that another stream's
// kernel records meanwhile is raised at that stream's next synchronization.
void raise_device_error(cudaStream_t stream) {
  DeviceError host{};
  DeviceError* flag = device_error_flag();
  KILN_CUDA_CHECK(cudaMemcpyAsync(&host, flag, sizeof(host), cudaMemcpyDeviceToHost, stream));
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (host.code == 0) return;
  KILN_CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof(DeviceError), stream));
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  switch (host.code) {
    case kIndexOutOfRange:
      KILN_FAIL("[cuda] an index {} is out of range for a dimension of size {} (reported by a kernel)", host.value,
                host.bound);
    case kTargetOutOfRange:
      KILN_FAIL("[cross_entropy] a target {} is out of range for {} classes (reported by a kernel)", host.value,
                host.bound);
    case kIntegerDivisionByZero: KILN_FAIL("[div] integer division by zero (reported by a kernel)");
    default: KILN_FAIL("[cuda] a kernel reported error code {}", host.code);
  }
}

// Lets `device` read and write `peer`'s memory directly (once per pair), where the hardware can.
void enable_peer_access(int device, int peer) {
  static std::mutex mu;
  static std::array<std::array<bool, kMaxDevices>, kMaxDevices> tried{};
  std::lock_guard<std::mutex> lock(mu);
  if (tried[device][peer]) return;
  tried[device][peer] = true;
  int can = 0;
  if (cudaDeviceCanAccessPeer(&can, device, peer) != cudaSuccess || !can) {
    cudaGetLastError();
    return;  // copies are staged through the host instead
  }
  DeviceScope scope(device);
  if (cudaDeviceEnablePeerAccess(peer, 0) != cudaSuccess) cudaGetLastError();  // already enabled is fine
}
}  // namespace

void check_launch(const char* kernel) {
  cudaError_t err = cudaGetLastError();
  KILN_CHECK(err == cudaSuccess, "[cuda] launching {} failed: {}", kernel, cudaGetErrorString(err));
}

bool is_available() { return device_count() > 0; }

// Asked once: the visible devices do not change during a process, and every
// allocation checks its device against the count.
int device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky "no device" error
      return 0;
    }
    return n;
  }();
  return count;
}

void check_device(int device, const char* op) {
  KILN_CHECK(device >= 0 && device < device_count() && device < kMaxDevices,
             "[{}] cuda:{} does not exist ({} devices visible)", op, device, device_count());
}

void* allocate(size_t nbytes, int device, void* stream) {
  check_device(device, "cuda allocate");
  DeviceScope scope(device);
  configure_pool_once(device);
  const cudaStream_t s = stream ? static_cast<cudaStream_t>(stream) : current_stream();
  void* p = nullptr;
  cudaError_t err = cudaMallocAsync(&p, nbytes, s);
  if (err == cudaSuccess) return p;
  cudaGetLastError();
  cudaMemPool_t pool;
  KILN_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  if (err == cudaErrorMemoryAllocation) {
    // The pool keeps freed blocks for reuse, and cuDNN, NCCL and cuBLAS
    // allocate beside it: let the device finish, hand the free blocks back to
    // the driver, and try once more.
    cudaDeviceSynchronize();
    cudaMemPoolTrimTo(pool, 0);
    err = cudaMallocAsync(&p, nbytes, s);
    if (err == cudaSuccess) return p;
    cudaGetLastError();
  }
  uint64_t used = 0, reserved = 0;
  cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used);
  cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved);
  size_t free_bytes = 0, total = 0;
  cudaMemGetInfo(&free_bytes, &total);
  KILN_FAIL("[cuda allocate] out of memory: could not allocate {} bytes on cuda:{} ({}; kiln's pool: {} bytes in use, "
            "{} reserved; the device: {} of {} bytes free)",
            nbytes, device, cudaGetErrorString(err), used, reserved, free_bytes, total);
}

void memory_stats(int device, uint64_t out[4]) {
  check_device(device, "cuda memory_stats");
  configure_pool_once(device);
  cudaMemPool_t pool;
  KILN_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  const cudaMemPoolAttr attrs[4] = {cudaMemPoolAttrUsedMemCurrent, cudaMemPoolAttrUsedMemHigh,
                                    cudaMemPoolAttrReservedMemCurrent, cudaMemPoolAttrReservedMemHigh};
  for (int i = 0; i < 4; ++i) KILN_CUDA_CHECK(cudaMemPoolGetAttribute(pool, attrs[i], &out[i]));
}

void reset_peak_memory(int device) {
  check_device(device, "cuda reset_peak_memory");
  cudaMemPool_t pool;
  KILN_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t zero = 0;  // the high-water marks restart from the current values
  KILN_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero));
  KILN_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &zero));
}

void deallocate(void* ptr, int device, void* stream) {
  int prev = 0;  // never throws: destructors call it
  if (cudaGetDevice(&prev) != cudaSuccess) return;
  if (prev != device) cudaSetDevice(device);
  cudaFreeAsync(ptr, stream ? static_cast<cudaStream_t>(stream) : current_stream());
  if (prev != device) cudaSetDevice(prev);
}

void* allocate_host(size_t nbytes) {
  void* p = nullptr;
  cudaError_t err = cudaHostAlloc(&p, nbytes, cudaHostAllocDefault);
  if (err != cudaSuccess) {
    cudaGetLastError();
    KILN_FAIL("[pinned allocate] could not allocate {} bytes of page-locked host memory: {}", nbytes,
              cudaGetErrorString(err));
  }
  return p;
}

void deallocate_host(void* ptr) { cudaFreeHost(ptr); }

void memcpy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes, bool non_blocking) {
  if (nbytes == 0) return;
  const int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
  DeviceScope scope(device);
  cudaStream_t stream = current_stream();
  // Between two GPUs the copy runs on the destination's stream, after the
  // work queued on the source's; the source's later work (a free of the
  // source) waits for the copy in turn.
  const bool peer = dst_device.is_cuda() && src_device.is_cuda() && src_device.index != device;
  if (peer) {
    enable_peer_access(device, src_device.index);
    stream_wait_stream(device, stream, src_device.index, get_current_stream(src_device.index));
  }
  KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, stream));
  if (peer) stream_wait_stream(src_device.index, get_current_stream(src_device.index), device, stream);
  if (non_blocking) return;
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  raise_device_error(stream);
}

void synchronize(int device) {
  DeviceScope scope(device);
  KILN_CUDA_CHECK(cudaDeviceSynchronize());
  raise_device_error(current_stream());
}

}  // namespace kiln::kernels::cuda
