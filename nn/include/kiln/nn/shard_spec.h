#pragma once
// How a parameter is split across the ranks of a tensor-parallel group, so
// that the whole model's state (checkpoints, the state a layout-independent
// tool reads) converts to and from any layout.
//
// Along `dim`, each segment (the segments' sizes add up to the full size
// along dim; one segment by default) is cut into equal parts, and rank r holds
// part r of every segment, in order: a fused q/k/v projection has three
// segments, so each rank keeps whole heads of each. dim < 0: every rank holds
// the whole tensor.
//
// A vocabulary table is padded for fast kernels and an even split: `valid`
// is its real extent along dim and `padded` the extent the layout holds
// (every rank's part together). The full tensor has the real extent only;
// take() pads it with zeros, assemble() drops the padding.

#include <cstdint>
#include <vector>

#include "kiln/tensor.h"

namespace kiln::nn {

// How one parameter splits across ranks (above).
struct ShardSpec {
  int64_t dim = -1;               // the dim split; -1: replicated
  std::vector<int64_t> segments;  // empty: one segment, the whole dim
  int64_t valid = -1;             // >= 0: the real extent along dim (a single segment)
  int64_t padded = -1;            // with valid: the extent with padding
  // Split across the expert-parallel group (whole experts along dim 0), not
  // the tensor-parallel one.
  bool experts = false;

  bool replicated() const { return dim < 0; }  // every rank holds it whole
  // Rank `rank`'s part of full.
  Tensor take(const Tensor& full, int rank, int ranks) const;
  // The full tensor from every rank's part (in rank order).
  Tensor assemble(const std::vector<Tensor>& parts) const;
};

}  // namespace kiln::nn
