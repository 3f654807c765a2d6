#include "kiln/storage.h"

#include <algorithm>
#include <thread>

#include "host_cache.h"
#include "kiln/base/error.h"
#include "kiln/kernels/cuda.h"

namespace kiln {

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, Device device, bool pinned) {
  size_t bytes = std::max<size_t>(nbytes, 1);
  if (device.is_cpu() && pinned) {
    auto s = std::make_shared<Storage>(kernels::cuda::allocate_host(bytes), nbytes, device,
                                       [](void* q) { kernels::cuda::deallocate_host(q); });
    s->pinned_ = true;
    return s;
  }
  KILN_CHECK(!pinned, "[allocate] pinned memory is host memory; asked for it on {}", device.str());
  if (device.is_cpu()) {
    size_t block = 0;
    void* p = host_cache::allocate(bytes, block);
    return std::make_shared<Storage>(p, nbytes, device, [block](void* q) { host_cache::release(q, block); });
  }
  const int index = device.index;
  void* stream = kernels::cuda::get_current_stream(index);
  void* p = kernels::cuda::allocate(bytes, index, stream);
  // Freed on its stream; from another thread, on a stream that still follows it.
  auto s = std::make_shared<Storage>(p, nbytes, device, [index, stream, owner = std::this_thread::get_id()](void* q) {
    kernels::cuda::deallocate(
        q, index, std::this_thread::get_id() == owner ? stream : kernels::cuda::stream_for_other_thread(stream));
  });
  s->stream_ = stream;
  return s;
}

std::shared_ptr<Storage> Storage::wrap(void* data, size_t nbytes, Device device, Deleter deleter) {
  return std::make_shared<Storage>(data, nbytes, device, std::move(deleter));
}

void Storage::record_stream(void* stream) {
  KILN_CHECK(device_.is_cuda(), "[record_stream] only CUDA memory is stream-ordered; this storage is on {}",
             device_.str());
  if (stream != stream_ && std::find(used_on_.begin(), used_on_.end(), stream) == used_on_.end())
    used_on_.push_back(stream);
}

Storage::~Storage() {
  if (stream_ && !used_on_.empty()) {
    try {
      kernels::cuda::stream_wait_streams(device_.index, stream_, used_on_);
    } catch (const Error&) {
      // The context is gone (process exit): nothing can reuse the memory any more.
    }
  }
  if (deleter_) deleter_(data_);
}

}  // namespace kiln
