#pragma once
// The host block cache behind Storage::allocate (see kiln/host_memory.h).

#include <cstddef>

namespace kiln::host_cache {

// A 64-byte aligned block of at least `bytes`; `block` receives its size, which release needs.
void* allocate(size_t bytes, size_t& block);
// Returns a block from allocate, of `block` bytes, to the cache or the system.
void release(void* p, size_t block);

}  // namespace kiln::host_cache
