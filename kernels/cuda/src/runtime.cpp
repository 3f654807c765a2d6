// Device runtime: availability, stream-ordered allocation from each device's
// default memory pool (release threshold raised so freed blocks are reused,
// not returned to the driver), copies and synchronization.

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
  static std::mutex mu;
  static std::vector<DeviceError*> flags;
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  if (flags.size() <= static_cast<size_t>(device)) flags.resize(device + 1, nullptr);
  if (!flags[device]) {
    KILN_CUDA_CHECK(cudaMalloc(&flags[device], sizeof(DeviceError)));
    KILN_CUDA_CHECK(cudaMemset(flags[device], 0, sizeof(DeviceError)));
  }
  return flags[device];
}

namespace {
// After a synchronization: raises the first device-side error and clears it.
void raise_device_error() {
  DeviceError host{};
  DeviceError* flag = device_error_flag();
  KILN_CUDA_CHECK(cudaMemcpy(&host, flag, sizeof(host), cudaMemcpyDeviceToHost));
  if (host.code == 0) return;
  KILN_CUDA_CHECK(cudaMemset(flag, 0, sizeof(DeviceError)));
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
  void* p = nullptr;
  cudaError_t err = cudaMallocAsync(&p, nbytes, stream ? static_cast<cudaStream_t>(stream) : current_stream());
  if (err != cudaSuccess) {
    cudaGetLastError();
    cudaMemPool_t pool;
    uint64_t used = 0, reserved = 0;
    if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
      cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used);
      cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved);
    }
    KILN_FAIL("[cuda allocate] could not allocate {} bytes on cuda:{}: {} (pool: {} bytes in use, {} reserved)",
              nbytes, device, cudaGetErrorString(err), used, reserved);
  }
  return p;
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
  // Between two GPUs the copy runs on the destination's stream: it first waits
  // for the work queued on the source's.
  if (dst_device.is_cuda() && src_device.is_cuda() && src_device.index != device)
    stream_wait_streams(device, stream, {get_current_stream(src_device.index)});
  KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, stream));
  if (non_blocking) return;
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  raise_device_error();
}

void synchronize(int device) {
  DeviceScope scope(device);
  KILN_CUDA_CHECK(cudaDeviceSynchronize());
  raise_device_error();
}

}  // namespace kiln::kernels::cuda
