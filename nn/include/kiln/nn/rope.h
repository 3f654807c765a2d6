#pragma once
// Rotary position embedding's settings and its cos/sin tables, computed
// once per (positions, head size, settings, dtype, device) and kept.

#include <optional>
#include <utility>

#include "kiln/tensor.h"

namespace kiln::nn {

// Llama 3's RoPE frequency scaling: wavelengths longer than the original
// context / low_freq_factor are slowed by `factor`, those shorter than
// original / high_freq_factor kept, the ones between interpolated.
struct RopeScaling {
  double factor = 8.0;                    // the slowdown of the long wavelengths
  double low_freq_factor = 1.0;           // the long wavelengths' bound
  double high_freq_factor = 4.0;          // the short wavelengths' bound
  int64_t original_max_positions = 8192;  // the context the model was trained at
  bool operator==(const RopeScaling&) const = default;  // every field alike
};

// Rotary positions: the base, Llama 3's frequency scaling, and how many of a head's features rotate.
struct RopeSpec {
  double theta = 10000.0;              // the base of the wavelengths
  std::optional<RopeScaling> scaling;  // none: unscaled
  // How many of each head's features rotate (the first ones; even): 0 for
  // all of them, fewer for GPT-NeoX's partial rotary (rotary_pct), the rest
  // passing as they are.
  int64_t dims = 0;
  bool operator==(const RopeSpec&) const = default;  // every field alike
};

// The inverse frequency of each rotated pair i < head_dim / 2, scaled as the spec says.
std::vector<double> rope_inverse_frequencies(int64_t head_dim, const RopeSpec& spec);

// cos and sin (positions, head_dim / 2) for positions [first, first + count),
// in dtype on device, for kiln::rope(x, cos, sin). Computed in float64 the
// first time a length is asked for, then served from a cache.
std::pair<Tensor, Tensor> rope_tables(int64_t first, int64_t count, int64_t head_dim, const RopeSpec& spec,
                                      DType dtype, Device device);

// x (B, H, T, D) rotated as kiln::rope does, each row at its own positions
// (B, T) int64: rows that start at different offsets (left-padded batches).
Tensor rope_at(const Tensor& x, const Tensor& positions, const RopeSpec& spec);

}  // namespace kiln::nn
