#pragma once
// Storage: one allocation shared by a tensor and all of its views. Carries the
// version counter that autograd uses to detect in-place changes to saved tensors.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kiln/base/device.h"

namespace kiln {

// One allocation (above).
class Storage {
 public:
  using Deleter = std::function<void(void*)>;  // frees wrapped memory

  // Allocates nbytes on device: 64-byte aligned host memory on the CPU, or
  // page-locked host memory when `pinned`; on CUDA, from the device's pool on
  // its current stream.
  static std::shared_ptr<Storage> allocate(size_t nbytes, Device device, bool pinned = false);
  // Wraps memory the caller owns; deleter (may be empty) runs when the last view dies.
  static std::shared_ptr<Storage> wrap(void* data, size_t nbytes, Device device, Deleter deleter);

  // Owns data: deleter runs at destruction (allocate and wrap build storages so).
  Storage(void* data, size_t nbytes, Device device, Deleter deleter)
      : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }       // the allocation's start
  size_t nbytes() const { return nbytes_; }  // its size
  Device device() const { return device_; }  // where it lives
  bool pinned() const { return pinned_; }        // page-locked host memory
  uint32_t version() const { return version_; }  // in-place changes so far
  void bump_version() { ++version_; }            // an in-place op calls it

  // CUDA memory used on a stream other than the one it was allocated on (a
  // communication stream): before it returns to the pool, the allocating
  // stream waits for the work queued on `stream` up to then.
  void record_stream(void* stream);

 private:
  void* data_;
  size_t nbytes_;
  Device device_;
  Deleter deleter_;
  uint32_t version_ = 0;
  bool pinned_ = false;
  void* stream_ = nullptr;  // the CUDA stream it was allocated on
  std::vector<void*> used_on_;
};

}  // namespace kiln
