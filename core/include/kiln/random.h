#pragma once
// Generator: a Philox4x32-10 stream (seed, offset). Each draw of n elements
// takes ceil(n / 4) counter blocks from the offset, so a saved (seed, offset)
// replays exactly, and CPU and CUDA draw the same numbers.

#include <cstdint>

#include "kiln/base/philox.h"

namespace kiln {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t offset) { offset_ = offset; }
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

}  // namespace kiln
