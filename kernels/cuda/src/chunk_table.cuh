#pragma once
// Multi-tensor kernels: the host cuts a list of tensors into chunks (a small
// struct each), uploads the table, and launches one block per chunk.

#include <vector>

#include "common.cuh"
#include "kiln/kernels/cuda.h"

namespace kiln::kernels::cuda {

constexpr int64_t kChunkElements = 1 << 16;

// The table on the device, freed (stream-ordered) when the returned scratch
// goes. Copies from pageable memory stage the host data before returning.
template <typename Chunk>
Scratch upload(const std::vector<Chunk>& chunks, int device, const char* op) {
  const size_t bytes = chunks.size() * sizeof(Chunk);
  Scratch table(bytes, device);
  if (cudaMemcpyAsync(table.get(), chunks.data(), bytes, cudaMemcpyHostToDevice, current_stream()) != cudaSuccess)
    fail(op, "cannot copy the chunk table to the device");
  return table;
}

}  // namespace kiln::kernels::cuda
