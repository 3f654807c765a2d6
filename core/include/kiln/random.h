#pragma once
// Generator: a Philox4x32-10 stream (seed, offset). Each draw of n elements
// takes ceil(n / 4) counter blocks from the offset, so a saved (seed, offset)
// replays exactly, and CPU and CUDA draw the same numbers.

#include <cstdint>

#include "kiln/base/philox.h"

namespace kiln {

// A counter-based (Philox) random stream: a seed and an offset; draws reserve counter blocks.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}  // at offset 0
  // The stream's state; saving both and restoring them replays the draws.
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t offset) { offset_ = offset; }
  // Restarts the stream at seed, offset 0.
  void manual_seed(uint64_t seed) {
    seed_ = seed;
    offset_ = 0;
  }
  // Reserves the counter blocks for n elements; returns the offset to draw at.
  uint64_t reserve(uint64_t n) {
    uint64_t at = offset_;
    offset_ += (n + 3) / 4;
    return at;
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// The process-wide default generator used when none is passed (seed 0 until
// manual_seed).
Generator& default_generator();
void manual_seed(uint64_t seed);

// The generator of row `row` of step `step`'s whole batch: what a row draws
// (its corruption, its samples) depends on its place in the batch, not on how
// many data-parallel replicas share the batch.
inline Generator row_generator(uint64_t seed, int64_t step, int64_t row) {
  return Generator(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(step) * 0x100000001B3ull +
                   static_cast<uint64_t>(row) + 1);
}

}  // namespace kiln
