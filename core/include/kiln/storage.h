#pragma once
// Storage: one allocation shared by a tensor and all of its views. Carries the
// version counter that autograd uses to detect in-place changes to saved tensors.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "kiln/base/device.h"

namespace kiln {

class Storage {
 public:
  using Deleter = std::function<void(void*)>;

  // Allocates nbytes on device (64-byte aligned on the CPU).
  static std::shared_ptr<Storage> allocate(size_t nbytes, Device device);
  // Wraps memory the caller owns; deleter (may be empty) runs when the last view dies.
  static std::shared_ptr<Storage> wrap(void* data, size_t nbytes, Device device, Deleter deleter);

  Storage(void* data, size_t nbytes, Device device, Deleter deleter)
      : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}
  ~Storage() {
    if (deleter_) deleter_(data_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  uint32_t version() const { return version_; }
  void bump_version() { ++version_; }

 private:
  void* data_;
  size_t nbytes_;
  Device device_;
  Deleter deleter_;
  uint32_t version_ = 0;
};

}  // namespace kiln
