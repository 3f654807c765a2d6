#pragma once
// What a program asks of CUDA: whether kiln can use a GPU here, how many,
// streams and events to order work, waiting for a device, and its memory
// pool's figures.
//
// Every op runs on the current stream of its tensors' device, which is per
// thread and starts as CUDA's per-thread default stream. Work on two streams
// is ordered only by events (or Stream::wait); memory that one stream
// allocated and another uses must be announced with record_stream() so that
// it is not reused while the other stream still reads it.

#include <cstdint>
#include <memory>

namespace kiln {
class Tensor;
}

namespace kiln::cuda {

// True when kiln was built with CUDA and a device is visible.
bool is_available();
int device_count();
// Blocks until every kernel queued on the device has finished; raises a
// device-side error (an index out of range) recorded since the last check.
void synchronize(int device = 0);

class Event;

// A handle to a CUDA stream on one device (cheap to copy). New streams come
// from a per-device pool, as in PyTorch: 32 per priority, handed out in turn,
// alive for the whole process.
class Stream {
 public:
  // CUDA's per-thread default stream of `device`: where work goes unless told otherwise.
  static Stream default_stream(int device = 0);
  // A stream from the device's pool; high priority runs first when both are ready.
  static Stream from_pool(int device = 0, bool high_priority = false);

  int device() const { return device_; }  // the CUDA device's ordinal
  // The cudaStream_t, for a user's own kernels or libraries.
  void* handle() const { return handle_; }
  // Blocks the host until the work queued on this stream has finished.
  void synchronize() const;
  // True when all work queued on this stream has finished.
  bool query() const;
  // Later work on this stream waits (on the device) for `event`'s work.
  void wait(const Event& event) const;
  // Later work on this stream waits for the work queued on `other` so far.
  void wait(const Stream& other) const;

  bool operator==(const Stream& o) const { return handle_ == o.handle_ && device_ == o.device_; }  // the same stream

 private:
  Stream(void* handle, int device) : handle_(handle), device_(device) {}
  friend Stream current_stream(int device);
  void* handle_;
  int device_;
};

// This thread's current stream on `device`.
Stream current_stream(int device = 0);
// Makes `stream` this thread's current stream on its device.
void set_current_stream(const Stream& stream);

// Makes a stream current for its scope, then restores the previous one.
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& stream) : prev_(current_stream(stream.device())) { set_current_stream(stream); }  // current now
  ~StreamGuard() { set_current_stream(prev_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream prev_;
};

// A point in a stream's work (cheap to copy; copies share the event). Created
// on the device of the first stream it is recorded on.
class Event {
 public:
  explicit Event(bool enable_timing = false) : timing_(enable_timing) {}  // timing for elapsed_ms
  // Captures the work queued on `stream` so far.
  void record(const Stream& stream);
  // Blocks the host until the recorded work has finished (at once if never recorded).
  void synchronize() const;
  // True when the recorded work has finished (or nothing was recorded).
  bool query() const;
  // Milliseconds between this event and a later one (both recorded, timing enabled).
  float elapsed_ms(const Event& end) const;
  void* handle() const { return state_ ? state_->handle : nullptr; }
  int device() const { return state_ ? state_->device : -1; }

 private:
  struct State {
    void* handle;
    int device;
    ~State();
  };
  bool timing_;
  std::shared_ptr<State> state_;
};

// Announces that `stream` uses `tensor`'s memory (allocated on another stream):
// when the tensor dies, its memory returns to the pool only after the work
// queued on `stream` up to then.
void record_stream(const Tensor& tensor, const Stream& stream);

// kiln's stream-ordered memory pool on a device, in bytes: what tensors hold
// now and at most since the start (or the last reset), and what the pool has
// reserved from the driver (it keeps freed memory for reuse).
struct MemoryStats {
  uint64_t in_use = 0, peak_in_use = 0, reserved = 0, peak_reserved = 0;  // bytes, as above
};
MemoryStats memory_stats(int device = 0);
void reset_peak_memory_stats(int device = 0);

}  // namespace kiln::cuda
