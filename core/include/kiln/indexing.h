#pragma once
// What Tensor::index and index_put_ take, as libtorch spells it:
//
//   using namespace kiln::indexing;
//   Tensor row = x.index({0});                        // x[0]
//   Tensor last = x.index({Ellipsis, -1});            // x[..., -1]
//   Tensor every_other = x.index({Slice(), Slice(None, None, 2)});  // x[:, ::2]
//   x.index_put_({Slice(1, None), 0}, 0.0);           // x[1:, 0] = 0

#include <cstdint>
#include <optional>
#include <variant>

#include "kiln/tensor.h"

namespace kiln {
namespace indexing {

// The types of None and Ellipsis.
struct NoneIndex {};
struct EllipsisIndex {};
// A new dim of size 1 (in a Slice: the bound left open).
inline constexpr NoneIndex None{};
// The dims no other index names.
inline constexpr EllipsisIndex Ellipsis{};

// start:stop:step; an open bound is None (or left out). Negative bounds count from the end.
struct Slice {
  // Slice() is the whole dim, Slice(1) from 1 on, Slice(None, -1) all but the last.
  Slice(std::optional<int64_t> start = std::nullopt, std::optional<int64_t> stop = std::nullopt, int64_t step = 1)
      : start(start), stop(stop), step(step) {}
  // None for an open bound.
  Slice(NoneIndex, std::optional<int64_t> stop = std::nullopt, int64_t step = 1) : Slice(std::nullopt, stop, step) {}
  Slice(std::optional<int64_t> start, NoneIndex, int64_t step = 1) : Slice(start, std::nullopt, step) {}
  Slice(NoneIndex, NoneIndex, int64_t step = 1) : Slice(std::nullopt, std::nullopt, step) {}
  std::optional<int64_t> start, stop;  // nullopt: open
  int64_t step;                        // positive
};

}  // namespace indexing

// One entry of an index list: an integer, a Slice, None, Ellipsis or a tensor.
class TensorIndex {
 public:
  // Implicit from each kind, as libtorch's, so that x.index({Slice(), 0}) reads as x[:, 0].
  TensorIndex(int64_t i) : v_(i) {}  // NOLINT(google-explicit-constructor): as libtorch
  TensorIndex(int i) : v_(static_cast<int64_t>(i)) {}  // NOLINT
  TensorIndex(indexing::Slice s) : v_(s) {}            // NOLINT
  TensorIndex(indexing::NoneIndex n) : v_(n) {}        // NOLINT
  TensorIndex(indexing::EllipsisIndex e) : v_(e) {}    // NOLINT
  TensorIndex(Tensor t) : v_(std::move(t)) {}          // NOLINT

  // Which kind of index this is, and its value.
  const std::variant<int64_t, indexing::Slice, indexing::NoneIndex, indexing::EllipsisIndex, Tensor>& value() const {
    return v_;
  }

 private:
  std::variant<int64_t, indexing::Slice, indexing::NoneIndex, indexing::EllipsisIndex, Tensor> v_;
};

}  // namespace kiln
