#pragma once
// kiln's cache of host memory. A CPU tensor of 256 KiB or more keeps its block
// for reuse when it dies, so that a training loop, which frees and asks for
// the same sizes every step, stops paying the kernel to map and zero fresh
// pages (a third of a softmax's forward and backward time without it). A
// request takes a cached block at most 1/8 larger. The cache is bounded
// (1 GiB by default): past the bound, the blocks unused the longest are
// freed. It is emptied and the request retried before an allocation is refused. Builds with
// AddressSanitizer leave it off, so that a use after free is still caught.
//
//   kiln::empty_host_cache();           // hand the cached blocks back to the system
//   kiln::set_host_cache_limit(0);      // cache nothing from now on

#include <cstdint>

namespace kiln {

// Whether freed blocks are cached at all: not under AddressSanitizer.
bool host_cache_enabled();
// Bytes held in cached blocks (free for reuse, not in any tensor).
uint64_t host_cache_bytes();
// The most bytes the cache may hold (the longest unused blocks are freed past it, now and later).
void set_host_cache_limit(uint64_t bytes);
// Frees every cached block.
void empty_host_cache();
// The machine's physical memory in bytes: what a model's size is checked against before it is allocated.
uint64_t physical_host_memory();

}  // namespace kiln
