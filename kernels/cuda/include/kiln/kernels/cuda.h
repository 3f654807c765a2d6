#pragma once
// The CUDA kernels and device runtime. Without CUDA (KILN_CUDA=OFF or no nvcc)
// every entry point raises "built without CUDA"; is_available() says which.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kiln/base/attention_geometry.h"
#include "kiln/base/buffer.h"
#include "kiln/base/gemm_options.h"
#include "kiln/base/op_kinds.h"
#include "kiln/base/optimizer_step.h"

namespace kiln::kernels::cuda {
#include "kiln/base/kernel_api.inc"

// The contract's attention and attention_backward through cuDNN's fused
// engines (settings().attention = AttentionBackend::Cudnn): bfloat16/float16
// padded batches or packed sequences (cuDNN's ragged layout), head dims up to
// 256 (cuDNN's backward on sm_80 stops at 128), causal only with Tq <= Tk
// (for packed sequences, in each: the caller checks).
// Raises "built without cuDNN" when kiln found no cuDNN.
void cudnn_attention(const Buffer& out, const Buffer& lse, const Buffer& q, const Buffer& k, const Buffer& v,
                     const AttentionGeometry& geometry, double scale);
void cudnn_attention_backward(const Buffer& dq, const Buffer& dk, const Buffer& dv, const Buffer& dout,
                              const Buffer& q, const Buffer& k, const Buffer& v, const Buffer& out, const Buffer& lse,
                              const AttentionGeometry& geometry, double scale);

// True when kiln was built with CUDA and a device is visible.
bool is_available();
int device_count();

// Makes `device` current for its scope (the launches of one op go to the
// device of its tensors).
class DeviceScope {
 public:
  explicit DeviceScope(int device);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  [[maybe_unused]] int prev_ = -1;  // unused without CUDA
};

// Stream-ordered allocation on `stream` (null: the device's current stream).
void* allocate(size_t nbytes, int device, void* stream = nullptr);
void deallocate(void* ptr, int device, void* stream = nullptr);
// Page-locked host memory: copies from and to it can be asynchronous.
void* allocate_host(size_t nbytes);
void deallocate_host(void* ptr);
// Copies nbytes between host and device memory in any direction on the current
// stream, ordered after the work already queued on both devices' current
// streams. Blocks until done unless `non_blocking` (then the caller keeps both
// buffers alive and synchronizes before reading host memory).
void memcpy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes,
            bool non_blocking = false);
void synchronize(int device);
// The device's memory pool: bytes in use, their peak, bytes reserved, their peak.
void memory_stats(int device, uint64_t out[4]);
// Starts the peaks over from the current values.
void reset_peak_memory(int device);

// Streams (opaque cudaStream_t) and events (opaque cudaEvent_t). The current
// stream is per thread and per device; it starts as CUDA's per-thread default
// stream. Pool streams live as long as the process.
void* default_stream();
void* pool_stream(int device, bool high_priority);
void* get_current_stream(int device);
void set_current_stream(int device, void* stream);
void stream_synchronize(int device, void* stream);
bool stream_query(int device, void* stream);
// `stream` waits (on the device, not the host) for the work queued so far on
// each of `others`, all streams of `device`.
void stream_wait_streams(int device, void* stream, const std::vector<void*>& others);
// `stream` of `device` waits for the work queued so far on `other` of
// `other_device`, the same GPU or another (the per-thread default stream names
// a different stream on each device).
void stream_wait_stream(int device, void* stream, int other_device, void* other);
// The stream on which another thread frees memory allocated on `stream`:
// CUDA's legacy default stream stands in for the per-thread default stream
// (which would name the freeing thread's own) and waits for it; others as they are.
void* stream_for_other_thread(void* stream);
void* event_create(int device, bool timing);
void event_destroy(void* event);
void event_record(int device, void* event, void* stream);
void stream_wait_event(int device, void* stream, void* event);
void event_synchronize(void* event);
bool event_query(void* event);
float event_elapsed_ms(void* start, void* end);
}  // namespace kiln::kernels::cuda
