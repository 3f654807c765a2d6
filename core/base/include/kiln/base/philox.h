#pragma once
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3").
// kiln's layout: element i of a random tensor drawn at generator offset `offset`
// takes lane i % 4 of philox(key = seed, counter = {offset + i / 4, draw}), where
// `draw` numbers the uniforms one element needs (two for a normal). Any device
// and any split of the tensor therefore draws the same numbers.

#include <cmath>
#include <cstdint>

#include "kiln/base/macros.h"

namespace kiln::philox {

// Four 32-bit words: a counter or an output.
struct Block {
  uint32_t v[4];  // v[0] lowest
};

// The raw generator: 128-bit counter, 64-bit key, ten rounds.
KILN_HOST_DEVICE inline Block philox4x32_10(Block counter, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t c0 = counter.v[0], c1 = counter.v[1], c2 = counter.v[2], c3 = counter.v[3];
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return Block{{c0, c1, c2, c3}};
}

// kiln's use of it: counter = {block (64 bits), draw, 0}, key = seed.
KILN_HOST_DEVICE inline Block philox4x32_10(uint64_t seed, uint64_t block, uint32_t draw) {
  Block counter{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), draw, 0u}};
  return philox4x32_10(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// The raw 32 bits for element i.
KILN_HOST_DEVICE inline uint32_t bits(uint64_t seed, uint64_t offset, uint64_t i, uint32_t draw = 0) {
  return philox4x32_10(seed, offset + i / 4, draw).v[i % 4];
}

// Uniform in [0, 1) from 32 random bits, 24 of them kept (exact in float32).
KILN_HOST_DEVICE inline float uniform_of(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }

// Standard normal by Box-Muller from two draws' bits of one element.
KILN_HOST_DEVICE inline float normal_of(uint32_t bits0, uint32_t bits1) {
  const float u1 = (static_cast<float>(bits0 >> 8) + 1.0f) * (1.0f / 16777216.0f);  // (0, 1]
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * uniform_of(bits1));
}

// Uniform in [0, 1) for element i.
KILN_HOST_DEVICE inline float uniform(uint64_t seed, uint64_t offset, uint64_t i, uint32_t draw = 0) {
  return uniform_of(bits(seed, offset, i, draw));
}

// Standard normal for element i, from its draws 0 and 1.
KILN_HOST_DEVICE inline float normal(uint64_t seed, uint64_t offset, uint64_t i) {
  return normal_of(bits(seed, offset, i, 0), bits(seed, offset, i, 1));
}

// Counter blocks consumed by a tensor of n elements.
KILN_HOST_DEVICE inline uint64_t blocks(uint64_t n) { return (n + 3) / 4; }

}  // namespace kiln::philox
