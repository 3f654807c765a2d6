#include "kiln/nn/shard_spec.h"

#include "kiln/ops.h"

namespace kiln::nn {

namespace {
std::vector<int64_t> segments_of(const ShardSpec& spec, int64_t full) {
  return spec.segments.empty() ? std::vector<int64_t>{full} : spec.segments;
}
}  // namespace

Tensor ShardSpec::take(const Tensor& whole, int rank, int ranks) const {
  if (replicated()) return whole;
  KILN_CHECK(dim < whole.dim(), "[ShardSpec] dim {} for a tensor of shape [{}]", dim, fmt::join(whole.sizes(), ", "));
  Tensor full = whole;
  if (valid >= 0 && padded > valid) {
    KILN_CHECK(full.size(dim) == valid, "[ShardSpec] expects {} real entries along dim {}, got a tensor of shape [{}]",
               valid, dim, fmt::join(full.sizes(), ", "));
    Shape pad = full.sizes();
    pad[static_cast<size_t>(dim)] = padded - valid;
    full = cat({full, zeros(pad, TensorOptions(full.dtype()).device(full.device()))}, dim);
  }
  std::vector<Tensor> parts;
  int64_t at = 0;
  for (int64_t seg : segments_of(*this, full.size(dim))) {
    KILN_CHECK(seg % ranks == 0, "[ShardSpec] a segment of {} along dim {} does not divide among {} ranks", seg, dim,
               ranks);
    parts.push_back(full.narrow(dim, at + rank * (seg / ranks), seg / ranks));
    at += seg;
  }
  KILN_CHECK(at == full.size(dim), "[ShardSpec] segments add up to {}, the tensor has {} along dim {}", at,
             full.size(dim), dim);
  return (parts.size() == 1 ? parts[0] : cat(parts, dim)).contiguous();
}

Tensor ShardSpec::assemble(const std::vector<Tensor>& parts) const {
  if (replicated()) return parts.at(0);
  const int64_t ranks = static_cast<int64_t>(parts.size()), local = parts.at(0).size(dim);
  std::vector<Tensor> pieces;
  int64_t at = 0;  // offset within each rank's part
  for (int64_t seg : segments_of(*this, local * ranks)) {
    for (const Tensor& p : parts) pieces.push_back(p.narrow(dim, at, seg / ranks));
    at += seg / ranks;
  }
  Tensor full = pieces.size() == 1 ? pieces[0] : cat(pieces, dim);
  return valid >= 0 && valid < full.size(dim) ? full.narrow(dim, 0, valid).contiguous() : full;
}

}  // namespace kiln::nn
