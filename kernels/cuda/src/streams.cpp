// Streams and events. Each thread has a current stream per device (CUDA's
// per-thread default stream until set); kernels, copies and allocations go to
// it. Extra streams come from a per-device pool, as in PyTorch: 32 per
// priority handed out in turn and never destroyed, so a storage freed on the
// stream it was allocated on never meets a dead stream.

#include <array>
#include <atomic>
#include <mutex>
#include <vector>

#include "cuda_check.h"
#include "launch.h"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

namespace {

constexpr int kPoolSize = 32;

// A query's answer: true when the work is done, false while it is not; other errors raise.
bool finished(cudaError_t err, const char* call) {
  if (err == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  KILN_CHECK(err == cudaSuccess, "[cuda] {} failed: {} ({})", call, cudaGetErrorString(err), cudaGetErrorName(err));
  return true;
}

struct StreamPool {
  std::once_flag created;
  std::array<cudaStream_t, kPoolSize> streams[2]{};  // [low, high] priority
  std::atomic<unsigned> next[2]{};
};

StreamPool& pool(int device) {
  static std::array<StreamPool, kMaxDevices> pools;
  StreamPool& p = pools[device];
  std::call_once(p.created, [&] {
    DeviceScope scope(device);
    int least = 0, greatest = 0;  // numerically greatest priority is the lowest
    KILN_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    for (int high = 0; high < 2; ++high)
      for (cudaStream_t& s : p.streams[high])
        KILN_CUDA_CHECK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, high ? greatest : least));
  });
  return p;
}

thread_local std::array<cudaStream_t, kMaxDevices> tls_current{};

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
cudaEvent_t as_event(void* e) { return static_cast<cudaEvent_t>(e); }

}  // namespace

cudaStream_t current_stream() {
  int device = 0;
  cudaGetDevice(&device);
  cudaStream_t s = device < kMaxDevices ? tls_current[device] : nullptr;
  return s ? s : cudaStreamPerThread;
}

void* default_stream() { return cudaStreamPerThread; }

void* pool_stream(int device, bool high_priority) {
  check_device(device, "cuda stream");
  StreamPool& p = pool(device);
  unsigned i = p.next[high_priority].fetch_add(1) % kPoolSize;
  return p.streams[high_priority][i];
}

void* get_current_stream(int device) {
  check_device(device, "cuda current_stream");
  cudaStream_t s = tls_current[device];
  return s ? s : cudaStreamPerThread;
}

void set_current_stream(int device, void* stream) {
  check_device(device, "cuda set_current_stream");
  tls_current[device] = stream == cudaStreamPerThread ? nullptr : as_stream(stream);
}

void stream_synchronize(int device, void* stream) {
  DeviceScope scope(device);
  KILN_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));
}

bool stream_query(int device, void* stream) {
  DeviceScope scope(device);
  return finished(cudaStreamQuery(as_stream(stream)), "cudaStreamQuery");
}

void stream_wait_stream(int device, void* stream, int other_device, void* other) {
  if (other_device == device && other == stream) return;
  cudaEvent_t e;
  {
    DeviceScope scope(other_device);  // an event belongs to the device it is recorded on
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    KILN_CUDA_CHECK(cudaEventRecord(e, as_stream(other)));
  }
  DeviceScope scope(device);
  const cudaError_t waited = cudaStreamWaitEvent(as_stream(stream), e, 0);
  cudaEventDestroy(e);  // released once it has completed
  KILN_CHECK(waited == cudaSuccess, "[cuda] a stream of cuda:{} could not wait for one of cuda:{}: {}", device,
             other_device, cudaGetErrorString(waited));
}

void stream_wait_streams(int device, void* stream, const std::vector<void*>& others) {
  for (void* other : others) stream_wait_stream(device, stream, device, other);
}

void* stream_for_other_thread(void* stream) { return stream == cudaStreamPerThread ? cudaStreamLegacy : stream; }

void* event_create(int device, bool timing) {
  check_device(device, "cuda event");
  DeviceScope scope(device);
  cudaEvent_t e;
  KILN_CUDA_CHECK(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
  return e;
}

void event_destroy(void* event) { cudaEventDestroy(as_event(event)); }  // never throws: destructors call it

void event_record(int device, void* event, void* stream) {
  DeviceScope scope(device);
  KILN_CUDA_CHECK(cudaEventRecord(as_event(event), as_stream(stream)));
}

void stream_wait_event(int device, void* stream, void* event) {
  DeviceScope scope(device);
  KILN_CUDA_CHECK(cudaStreamWaitEvent(as_stream(stream), as_event(event), 0));
}

void event_synchronize(void* event) { KILN_CUDA_CHECK(cudaEventSynchronize(as_event(event))); }

bool event_query(void* event) { return finished(cudaEventQuery(as_event(event)), "cudaEventQuery"); }

float event_elapsed_ms(void* start, void* end) {
  float ms = 0;
  KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, as_event(start), as_event(end)));
  return ms;
}

}  // namespace kiln::kernels::cuda
