#pragma once
// Scratch device memory for one op: taken from kiln's pool on the current
// stream and handed back (stream-ordered) when it leaves scope, also when a
// launch check throws on the way. Host code only; .cu and .cpp files alike.

#include <cstddef>
#include <utility>

#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

// Bytes rounded up to 256: the pieces carved from one scratch allocation stay aligned.
inline size_t round_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Scratch memory (above); none for zero bytes.
class Scratch {
 public:
  Scratch() = default;
  Scratch(size_t bytes, int device) : device_(device), ptr_(bytes ? allocate(bytes, device) : nullptr) {}
  Scratch(Scratch&& o) noexcept : device_(o.device_), ptr_(o.ptr_) { o.ptr_ = nullptr; }
  Scratch& operator=(Scratch&& o) noexcept {
    std::swap(device_, o.device_);
    std::swap(ptr_, o.ptr_);
    return *this;
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (ptr_) deallocate(ptr_, device_);
  }
  // The memory (null for zero bytes), as T*.
  template <typename T = void>
  T* get() const {
    return static_cast<T*>(ptr_);
  }

 private:
  int device_ = 0;
  void* ptr_ = nullptr;
};

}  // namespace kiln::kernels::cuda
