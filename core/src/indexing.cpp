// Tensor::index and index_put_: libtorch's index lists, as views where they can be.

#include "kiln/indexing.h"

#include <vector>

#include "dispatch.h"

namespace kiln {

namespace {

using indexing::EllipsisIndex;
using indexing::NoneIndex;
using indexing::Slice;

const Tensor* tensor_index(const TensorIndex& i) { return std::get_if<Tensor>(&i.value()); }

// The dims of the indexed tensor an entry uses up.
int64_t dims_used(const TensorIndex& i) {
  if (std::holds_alternative<int64_t>(i.value()) || std::holds_alternative<Slice>(i.value())) return 1;
  const Tensor* t = tensor_index(i);
  return t ? (t->dtype() == kBool ? t->dim() : 1) : 0;
}

Tensor apply(const Tensor& x, const std::vector<TensorIndex>& indices, const char* op) {
  int64_t named = 0, ellipses = 0;
  for (const TensorIndex& i : indices) {
    named += dims_used(i);
    ellipses += std::holds_alternative<EllipsisIndex>(i.value());
  }
  KILN_CHECK(ellipses <= 1, "[{}] at most one Ellipsis, got {}", op, ellipses);
  KILN_CHECK(named <= x.dim(), "[{}] {} indices for a tensor of {} dims ({})", op, named, x.dim(), describe(x));
  Tensor out = x;
  int64_t d = 0;  // the dim of `out` the next entry applies to
  bool picked = false;
  for (const TensorIndex& i : indices) {
    const auto& v = i.value();
    if (const int64_t* k = std::get_if<int64_t>(&v)) {
      out = out.select(d, *k);
    } else if (const Slice* s = std::get_if<Slice>(&v)) {
      out = out.slice(d, s->start.value_or(0), s->stop.value_or(out.size(d)), s->step);
      ++d;
    } else if (std::holds_alternative<NoneIndex>(v)) {
      out = out.unsqueeze(d++);
    } else if (std::holds_alternative<EllipsisIndex>(v)) {
      d += x.dim() - named;
    } else {
      const Tensor& t = std::get<Tensor>(v);
      KILN_CHECK(t.dtype() != kBool, "[{}] a bool tensor selects a varying number of entries: index_put_ takes one "
                 "as its last index (a masked write); to read, use masked_fill or where", op);
      KILN_CHECK(t.dim() == 1 && (t.dtype() == kInt64 || t.dtype() == kInt32),
                 "[{}] a tensor index must be 1-D int64 or int32, got {}", op, describe(t));
      KILN_CHECK(!picked, "[{}] one tensor index at most (index_select it dim by dim)", op);
      picked = true;
      out = index_select(out, d++, t.to(out.device()));
    }
  }
  return out;
}

}  // namespace

Tensor Tensor::index(std::initializer_list<TensorIndex> indices) const {
  check_defined("index");
  return apply(*this, indices, "index");
}

Tensor& Tensor::index_put_(std::initializer_list<TensorIndex> indices, const Tensor& value) {
  check_defined("index_put_");
  std::vector<TensorIndex> list(indices);
  Tensor mask, rows;
  if (!list.empty() && tensor_index(list.back())) {
    (tensor_index(list.back())->dtype() == kBool ? mask : rows) = *tensor_index(list.back());
    list.pop_back();
  }
  for (const TensorIndex& i : list)
    KILN_CHECK(!tensor_index(i), "[index_put_] takes integers, Slices, None, Ellipsis and a last tensor index (int "
               "positions along a dim or a bool mask); a tensor index before others would write into a copy");
  if (rows.defined()) {
    // x[..., rows] = value: the rows' positions along the next dim, written by scatter.
    KILN_CHECK(rows.dim() == 1 && (rows.dtype() == kInt64 || rows.dtype() == kInt32),
               "[index_put_] a tensor index must be 1-D int64 or int32 (or a bool mask), got {}", describe(rows));
    list.push_back(indexing::Slice());
    Tensor view = apply(*this, list, "index_put_");
    int64_t named = 0, d = 0;  // d: the view's dim the Slice kept, after those the entries before it keep
    for (const TensorIndex& i : list) named += dims_used(i);
    for (size_t k = 0; k + 1 < list.size(); ++k) {
      const auto& v = list[k].value();
      if (std::holds_alternative<Slice>(v) || std::holds_alternative<NoneIndex>(v)) ++d;
      if (std::holds_alternative<EllipsisIndex>(v)) d += dim() - named;
    }
    Shape target = view.sizes();
    target[static_cast<size_t>(d)] = rows.numel();
    Shape along(target.size(), 1);
    along[static_cast<size_t>(d)] = rows.numel();
    Tensor index = rows.to(view.device(), kInt64).view(along).expand(target).contiguous();
    view.copy_(scatter(view, d, index, value.to(view.device(), view.dtype()).expand(target).contiguous()));
    return *this;
  }
  Tensor view = apply(*this, list, "index_put_");
  if (!mask.defined()) {
    view.copy_(value);
    return *this;
  }
  const int64_t lead = view.dim() - mask.dim();
  KILN_CHECK(lead >= 0 && Shape(view.sizes().begin() + lead, view.sizes().end()) == mask.sizes(),
             "[index_put_] the mask {} must match the trailing dims of the indexed view {}", describe(mask),
             describe(view));
  view.copy_(where(mask.to(view.device()), value.to(view.device(), view.dtype()), view));
  return *this;
}

Tensor& Tensor::index_put_(std::initializer_list<TensorIndex> indices, Scalar value) {
  check_defined("index_put_");
  return index_put_(indices, scalar_tensor(value, TensorOptions(dtype()).device(device())));
}

}  // namespace kiln
