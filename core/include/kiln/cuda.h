#pragma once
// What a program asks about CUDA: whether kiln can use a GPU here, how many,
// waiting for one to finish its work, and its memory pool's figures.

#include <cstdint>

namespace kiln::cuda {

// True when kiln was built with CUDA and a device is visible.
bool is_available();
int device_count();
// Blocks until every kernel queued on the device has finished.
void synchronize(int device = 0);

// kiln's stream-ordered memory pool on a device, in bytes: what tensors hold
// now and at most since the start (or the last reset), and what the pool has
// reserved from the driver (it keeps freed memory for reuse).
struct MemoryStats {
  uint64_t in_use = 0, peak_in_use = 0, reserved = 0, peak_reserved = 0;
};
MemoryStats memory_stats(int device = 0);
void reset_peak_memory_stats(int device = 0);

}  // namespace kiln::cuda
