#include "kiln/cuda.h"

#include "dispatch.h"

namespace kiln::cuda {

bool is_available() { return kernels::cuda::is_available(); }
int device_count() { return kernels::cuda::device_count(); }
void synchronize(int device) { kernels::cuda::synchronize(device); }

Stream Stream::default_stream(int device) {
  KILN_CHECK(device >= 0 && device < device_count(), "[cuda stream] cuda:{} does not exist ({} devices visible)",
             device, device_count());
  return Stream(kernels::cuda::default_stream(), device);
}

Stream Stream::from_pool(int device, bool high_priority) {
  return Stream(kernels::cuda::pool_stream(device, high_priority), device);
}

void Stream::synchronize() const { kernels::cuda::stream_synchronize(device_, handle_); }
bool Stream::query() const { return kernels::cuda::stream_query(device_, handle_); }

void Stream::wait(const Event& event) const {
  if (!event.handle()) return;
  KILN_CHECK(event.device() == device_, "[stream wait] an event recorded on cuda:{} cannot order a stream on cuda:{}",
             event.device(), device_);
  kernels::cuda::stream_wait_event(device_, handle_, event.handle());
}

void Stream::wait(const Stream& other) const {
  KILN_CHECK(other.device_ == device_, "[stream wait] a stream on cuda:{} waits for one on cuda:{}: record an "
             "Event on the other device's stream instead", device_, other.device_);
  kernels::cuda::stream_wait_streams(device_, handle_, {other.handle_});
}

Stream current_stream(int device) { return Stream(kernels::cuda::get_current_stream(device), device); }

void set_current_stream(const Stream& stream) { kernels::cuda::set_current_stream(stream.device(), stream.handle()); }

Event::State::~State() { kernels::cuda::event_destroy(handle); }

void Event::record(const Stream& stream) {
  if (!state_) state_ = std::make_shared<State>(State{kernels::cuda::event_create(stream.device(), timing_),
                                                      stream.device()});
  KILN_CHECK(state_->device == stream.device(), "[event record] the event belongs to cuda:{}, the stream to cuda:{}",
             state_->device, stream.device());
  kernels::cuda::event_record(stream.device(), state_->handle, stream.handle());
}

void Event::synchronize() const {
  if (state_) kernels::cuda::event_synchronize(state_->handle);
}

bool Event::query() const { return !state_ || kernels::cuda::event_query(state_->handle); }

float Event::elapsed_ms(const Event& end) const {
  KILN_CHECK(state_ && end.state_, "[event elapsed_ms] both events must have been recorded");
  KILN_CHECK(timing_ && end.timing_, "[event elapsed_ms] both events need enable_timing = true");
  return kernels::cuda::event_elapsed_ms(state_->handle, end.state_->handle);
}

void record_stream(const Tensor& tensor, const Stream& stream) {
  KILN_CHECK(tensor.defined() && tensor.device().is_cuda() && tensor.device().index == stream.device(),
             "[record_stream] needs a tensor on the stream's device cuda:{}; got {}", stream.device(),
             tensor.defined() ? describe(tensor) : std::string("an undefined tensor"));
  tensor.storage()->record_stream(stream.handle());
}

MemoryStats memory_stats(int device) {
  uint64_t v[4] = {};
  kernels::cuda::memory_stats(device, v);
  return {v[0], v[1], v[2], v[3]};
}

void reset_peak_memory_stats(int device) { kernels::cuda::reset_peak_memory(device); }

}  // namespace kiln::cuda
