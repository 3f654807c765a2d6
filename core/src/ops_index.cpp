// Joining, splitting and indexing: cat, stack, split, chunk, index_select,
// gather, scatter_add, embedding, one_hot, tril and triu.

#include "dispatch.h"

namespace kiln {


Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  KILN_CHECK(!tensors.empty(), "[cat] expects a non-empty list of tensors");
  for (const Tensor& t : tensors) detail::check_defined(t, "cat", "tensors");
  detail::check_same_device("cat", tensors);
  const Tensor& first = tensors[0];
  KILN_CHECK(first.dim() > 0, "[cat] zero-dimensional tensors cannot be concatenated");
  dim = wrap_dim(dim, first.dim(), "cat");
  DType t = first.dtype();
  Shape shape = first.sizes();
  shape[dim] = 0;
  std::vector<int64_t> lengths;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& x = tensors[i];
    t = promote_types(t, x.dtype());
    bool ok = x.dim() == first.dim();
    for (int64_t d = 0; ok && d < x.dim(); ++d) ok = d == dim || x.size(d) == first.size(d);
    KILN_CHECK(ok, "[cat] tensor {} has shape {}, expected {} except in dim {}", i, shape_str(x.sizes()),
               shape_str(first.sizes()), dim);
    shape[dim] += x.size(dim);
    lengths.push_back(x.size(dim));
  }
  Tensor out = empty(shape, TensorOptions(t).device(first.device()));
  {
    autograd::NoGradGuard no_grad;
    int64_t at = 0;
    for (const Tensor& x : tensors) {
      KILN_DISPATCH(out.device(), copy, out.narrow(dim, at, x.size(dim)).buffer(), x.buffer());
      at += x.size(dim);
    }
  }
  if (autograd::any_requires_grad(tensors))
    autograd::record("cat", out, tensors, [lengths, dim](const Tensor& g, const Needs& n) {
      Grads grads;
      int64_t at = 0;
      for (size_t i = 0; i < lengths.size(); ++i) {
        grads.push_back(n[i] ? g.narrow(dim, at, lengths[i]) : Tensor());
        at += lengths[i];
      }
      return grads;
    });
  return out;
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  KILN_CHECK(!tensors.empty(), "[stack] expects a non-empty list of tensors");
  dim = wrap_dim(dim, tensors[0].dim() + 1, "stack");
  std::vector<Tensor> parts;
  for (size_t i = 0; i < tensors.size(); ++i) {
    detail::check_defined(tensors[i], "stack", "tensors");
    KILN_CHECK(tensors[i].sizes() == tensors[0].sizes(), "[stack] tensor {} has shape {}, expected {}", i,
               shape_str(tensors[i].sizes()), shape_str(tensors[0].sizes()));
    parts.push_back(tensors[i].unsqueeze(dim));
  }
  return cat(parts, dim);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  detail::check_defined(x, "split", "self");
  dim = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    KILN_CHECK(s >= 0, "[split] negative size in {}", shape_str(sizes));
    total += s;
  }
  KILN_CHECK(total == x.size(dim), "[split] sizes {} sum to {} but dim {} has size {}", shape_str(sizes), total, dim,
             x.size(dim));
  std::vector<Tensor> parts;
  int64_t at = 0;
  for (int64_t s : sizes) {
    parts.push_back(x.narrow(dim, at, s));
    at += s;
  }
  return parts;
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  detail::check_defined(x, "split", "self");
  KILN_CHECK(split_size > 0, "[split] split_size must be positive, got {}", split_size);
  int64_t n = x.size(dim);
  std::vector<int64_t> sizes;
  for (int64_t at = 0; at < n; at += split_size) sizes.push_back(std::min(split_size, n - at));
  if (sizes.empty()) sizes.push_back(0);
  return split(x, sizes, dim);
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  detail::check_defined(x, "chunk", "self");
  KILN_CHECK(chunks > 0, "[chunk] chunks must be positive, got {}", chunks);
  int64_t n = x.size(dim);
  return split(x, std::max<int64_t>((n + chunks - 1) / chunks, 1), dim);
}

namespace {

void check_index(const Tensor& x, const Tensor& index, const char* op) {
  detail::check_defined(x, op, "self");
  detail::check_defined(index, op, "index");
  detail::check_same_device(op, {x, index});
  KILN_CHECK(index.dtype() == kInt64 || index.dtype() == kInt32, "[{}] index must be int32 or int64, got {}", op,
             describe(index));
}

}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  check_index(x, index, "index_select");
  KILN_CHECK(index.dim() <= 1, "[index_select] index must be 1-D, got {}", describe(index));
  KILN_CHECK(x.dim() > 0, "[index_select] cannot index a 0-dim tensor");
  dim = wrap_dim(dim, x.dim(), "index_select");
  Tensor idx = index.reshape({-1}).contiguous();
  Shape shape = x.sizes();
  shape[dim] = idx.numel();
  Tensor out = empty(shape, TensorOptions(x.dtype()).device(x.device()));
  KILN_DISPATCH(x.device(), index_select, out.buffer(), x.buffer(), static_cast<int>(dim), idx.buffer());
  if (autograd::any_requires_grad({x})) {
    Shape in_shape = x.sizes();
    autograd::record("index_select", out, {x}, [in_shape, dim, si = save(idx, "index_select")](const Tensor& g,
                                                                                              const Needs&) {
      Tensor gx = zeros(in_shape, TensorOptions(g.dtype()).device(g.device()));
      KILN_DISPATCH(g.device(), index_add, gx.buffer(), static_cast<int>(dim), si.get().buffer(), g.buffer());
      return Grads{gx};
    });
  }
  return out;
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  check_index(x, index, "gather");
  KILN_CHECK(index.dim() == x.dim(), "[gather] index {} must have as many dims as the input {}", describe(index),
             describe(x));
  dim = wrap_dim(dim, x.dim(), "gather");
  for (int64_t d = 0; d < x.dim(); ++d)
    KILN_CHECK(d == dim || index.size(d) <= x.size(d),
               "[gather] index {} is larger than the input {} in dim {}", describe(index), describe(x), d);
  Tensor out = empty(index.sizes(), TensorOptions(x.dtype()).device(x.device()));
  KILN_DISPATCH(x.device(), gather, out.buffer(), x.buffer(), static_cast<int>(dim), index.buffer());
  if (autograd::any_requires_grad({x})) {
    Shape in_shape = x.sizes();
    autograd::record("gather", out, {x}, [in_shape, dim, si = save(index, "gather")](const Tensor& g, const Needs&) {
      Tensor gx = zeros(in_shape, TensorOptions(g.dtype()).device(g.device()));
      KILN_DISPATCH(g.device(), scatter_add, gx.buffer(), static_cast<int>(dim), si.get().buffer(), g.buffer());
      return Grads{gx};
    });
  }
  return out;
}

namespace {

// scatter's and scatter_add's arguments checked; dim wrapped.
int64_t check_scatter(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src, const char* op) {
  check_index(x, index, op);
  KILN_CHECK(src.dtype() == x.dtype() && src.device() == x.device(),
             "[{}] src {} must have the input's dtype and device ({})", op, describe(src), describe(x));
  KILN_CHECK(index.sizes() == src.sizes(), "[{}] index {} must have src's shape {}", op, describe(index),
             describe(src));
  dim = wrap_dim(dim, x.dim(), op);
  KILN_CHECK(src.dim() == x.dim(), "[{}] src {} must have as many dims as the input {}", op, describe(src),
             describe(x));
  for (int64_t d = 0; d < x.dim(); ++d)
    KILN_CHECK(d == dim || src.size(d) <= x.size(d), "[{}] src {} is larger than the input {} in dim {}", op,
               describe(src), describe(x), d);
  return dim;
}

}  // namespace

Tensor scatter(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  dim = check_scatter(x, dim, index, src, "scatter");
  Tensor out = x.detach().clone();
  KILN_DISPATCH(x.device(), scatter, out.buffer(), static_cast<int>(dim), index.buffer(), src.detach().buffer());
  if (autograd::any_requires_grad({x, src}))
    autograd::record("scatter", out, {x, src}, [dim, si = save(index, "scatter")](const Tensor& g, const Needs&) {
      // x's gradient where nothing was written over it; src's where each element went.
      Tensor gx = g.clone();
      Tensor nothing = zeros(si.get().sizes(), TensorOptions(g.dtype()).device(g.device()));
      KILN_DISPATCH(g.device(), scatter, gx.buffer(), static_cast<int>(dim), si.get().buffer(), nothing.buffer());
      return Grads{gx, gather(g, dim, si.get())};
    });
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  dim = check_scatter(x, dim, index, src, "scatter_add");
  Tensor out = x.detach().clone();
  KILN_DISPATCH(x.device(), scatter_add, out.buffer(), static_cast<int>(dim), index.buffer(), src.buffer());
  if (autograd::any_requires_grad({x, src}))
    autograd::record("scatter_add", out, {x, src}, [dim, si = save(index, "scatter_add")](const Tensor& g, const Needs&) {
      return Grads{g, gather(g, dim, si.get())};
    });
  return out;
}

Tensor one_hot(const Tensor& indices, int64_t num_classes) {
  detail::check_defined(indices, "one_hot", "indices");
  KILN_CHECK(indices.dtype() == kInt64 || indices.dtype() == kInt32, "[one_hot] indices {} must be int64 or int32",
             describe(indices));
  if (indices.numel() > 0) {
    const int64_t low = min(indices).item<int64_t>(), high = max(indices).item<int64_t>();
    KILN_CHECK(low >= 0, "[one_hot] indices must be >= 0, found {}", low);
    if (num_classes < 0) num_classes = high + 1;
    KILN_CHECK(high < num_classes, "[one_hot] index {} is out of range for {} classes", high, num_classes);
  }
  KILN_CHECK(num_classes >= 0, "[one_hot] num_classes must be given for an empty tensor");
  Shape shape = indices.sizes();
  shape.push_back(1);
  return eq(indices.to(kInt64).view(shape), arange(num_classes, TensorOptions(kInt64).device(indices.device())))
      .to(kInt64);
}

namespace {
// Keeps entries whose column - row is within the bound the triangle sets.
Tensor triangle(const Tensor& x, int64_t diagonal, bool lower, const char* name) {
  detail::check_defined(x, name, "self");
  KILN_CHECK(x.dim() >= 2, "[{}] needs at least 2 dims, got {}", name, describe(x));
  const TensorOptions at = TensorOptions(kInt64).device(x.device());
  const Tensor offset = arange(x.size(-1), at) - arange(x.size(-2), at).view({-1, 1});  // column - row
  return where(lower ? offset <= diagonal : offset >= diagonal, x, 0);
}
}  // namespace

Tensor tril(const Tensor& x, int64_t diagonal) { return triangle(x, diagonal, true, "tril"); }
Tensor triu(const Tensor& x, int64_t diagonal) { return triangle(x, diagonal, false, "triu"); }

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  check_index(weight, indices, "embedding");
  KILN_CHECK(weight.dim() == 2, "[embedding] weight must be 2-D (num_embeddings, dim), got {}", describe(weight));
  Shape shape = indices.sizes();
  shape.push_back(weight.size(1));
  try {
    return index_select(weight, 0, indices.reshape({-1})).view(shape);
  } catch (const Error& e) {  // the kernel names index_select: say which call of the user's it was
    KILN_FAIL("[embedding] indices {} into weight {}: {}", describe(indices), describe(weight), e.what());
  }
}

}  // namespace kiln
