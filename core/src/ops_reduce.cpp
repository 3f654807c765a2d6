// Reductions: sum, mean, max/min, argmax/argmin, var, logsumexp, sum_to.

#include <limits>

#include "dispatch.h"

namespace kiln {


namespace {

// Bit d set for each reduced dim; an empty dims list reduces all of them.
uint32_t reduce_mask(const Tensor& x, const Shape& dims, const char* op) {
  if (dims.empty()) return x.dim() == 0 ? 0u : (1u << x.dim()) - 1u;
  uint32_t mask = 0;
  for (int64_t d : dims) {
    int64_t w = wrap_dim(d, x.dim(), op);
    if (x.dim() == 0) continue;
    KILN_CHECK(!(mask & (1u << w)), "[{}] dim {} appears twice in {}", op, w, shape_str(dims));
    mask |= 1u << w;
  }
  return mask;
}

Shape kept_shape(const Shape& in, uint32_t mask, bool keepdim) {
  Shape out;
  for (size_t d = 0; d < in.size(); ++d) {
    if (!(mask & (1u << d))) out.push_back(in[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

Shape mask_dims(uint32_t mask, size_t ndim) {
  Shape dims;
  for (size_t d = 0; d < ndim; ++d)
    if (mask & (1u << d)) dims.push_back(static_cast<int64_t>(d));
  return dims;
}

int64_t reduced_count(const Shape& in, uint32_t mask) {
  int64_t n = 1;
  for (size_t d = 0; d < in.size(); ++d)
    if (mask & (1u << d)) n *= in[d];
  return n;
}

Tensor raw_reduce(ReduceOp op, const Tensor& x, uint32_t mask, DType out_dtype, bool keepdim,
                  int64_t correction = 0) {
  autograd::NoGradGuard no_grad;
  Tensor out = empty(kept_shape(x.sizes(), mask, true), TensorOptions(out_dtype).device(x.device()));
  KILN_DISPATCH(x.device(), reduce, op, out.buffer(), x.buffer(), mask, correction);
  return keepdim ? out : out.view(kept_shape(x.sizes(), mask, false));
}

// A reduced gradient broadcast back over the input's shape.
Tensor expand_back(const Tensor& g, const Shape& in_shape, uint32_t mask) {
  return g.reshape(kept_shape(in_shape, mask, true)).expand(in_shape);
}

void check_nonempty(const Tensor& x, uint32_t mask, const char* op) {
  KILN_CHECK(reduced_count(x.sizes(), mask) > 0, "[{}] cannot reduce over an empty dimension of shape {}", op,
             shape_str(x.sizes()));
}

Tensor extremum(ReduceOp op, const Tensor& x, uint32_t mask, bool keepdim, const char* name) {
  detail::check_defined(x, name, "self");
  check_nonempty(x, mask, name);
  Tensor out = raw_reduce(op, x, mask, x.dtype(), keepdim);
  if (autograd::any_requires_grad({x})) {
    Shape in_shape = x.sizes();
    autograd::record(name, out, {x}, [sx = save(x, name), so = save(out, name), in_shape, mask](const Tensor& g,
                                                                                                const Needs&) {
      // Ties share the gradient evenly (PyTorch's amax/amin rule).
      Tensor hit = (sx.get() == expand_back(so.get(), in_shape, mask)).to(g.dtype());
      Tensor count = sum(hit, mask_dims(mask, in_shape.size()), true);
      return Grads{expand_back(g, in_shape, mask) * hit / count};
    });
  }
  return out;
}

}  // namespace

Tensor sum(const Tensor& x, const Shape& dims, bool keepdim) {
  detail::check_defined(x, "sum", "self");
  uint32_t mask = reduce_mask(x, dims, "sum");
  DType t = is_floating(x.dtype()) ? x.dtype() : kInt64;
  Tensor out = raw_reduce(ReduceOp::Sum, x, mask, t, keepdim);
  if (autograd::any_requires_grad({x})) {
    Shape in_shape = x.sizes();
    autograd::record("sum", out, {x}, [in_shape, mask](const Tensor& g, const Needs&) {
      return Grads{expand_back(g, in_shape, mask)};
    });
  }
  return out;
}
Tensor sum(const Tensor& x) { return sum(x, {}, false); }

Tensor mean(const Tensor& x, const Shape& dims, bool keepdim) {
  detail::check_defined(x, "mean", "self");
  detail::check_floating(x, "mean");
  uint32_t mask = reduce_mask(x, dims, "mean");
  Tensor out = raw_reduce(ReduceOp::Mean, x, mask, x.dtype(), keepdim);
  if (autograd::any_requires_grad({x})) {
    Shape in_shape = x.sizes();
    double n = static_cast<double>(reduced_count(in_shape, mask));
    autograd::record("mean", out, {x}, [in_shape, mask, n](const Tensor& g, const Needs&) {
      return Grads{expand_back(g, in_shape, mask) / n};
    });
  }
  return out;
}
Tensor mean(const Tensor& x) { return mean(x, {}, false); }

Tensor max(const Tensor& x) { return extremum(ReduceOp::Max, x, reduce_mask(x, {}, "max"), false, "max"); }
Tensor min(const Tensor& x) { return extremum(ReduceOp::Min, x, reduce_mask(x, {}, "min"), false, "min"); }
Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
  return extremum(ReduceOp::Max, x, reduce_mask(x, {dim}, "max"), keepdim, "max");
}
Tensor min(const Tensor& x, int64_t dim, bool keepdim) {
  return extremum(ReduceOp::Min, x, reduce_mask(x, {dim}, "min"), keepdim, "min");
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  detail::check_defined(x, "argmax", "self");
  uint32_t mask = reduce_mask(x, {dim}, "argmax");
  check_nonempty(x, mask, "argmax");
  return raw_reduce(ReduceOp::ArgMax, x, mask, kInt64, keepdim);
}
Tensor argmax(const Tensor& x) { return argmax(x.detach().reshape({-1}), 0, false); }

Tensor argmin(const Tensor& x, int64_t dim, bool keepdim) {
  detail::check_defined(x, "argmin", "self");
  uint32_t mask = reduce_mask(x, {dim}, "argmin");
  check_nonempty(x, mask, "argmin");
  return raw_reduce(ReduceOp::ArgMin, x, mask, kInt64, keepdim);
}

Tensor var(const Tensor& x, const Shape& dims, int64_t correction, bool keepdim) {
  detail::check_defined(x, "var", "self");
  detail::check_floating(x, "var");
  KILN_CHECK(correction >= 0, "[var] correction must be non-negative, got {}", correction);
  uint32_t mask = reduce_mask(x, dims, "var");
  Tensor out = raw_reduce(ReduceOp::Var, x, mask, x.dtype(), keepdim, correction);
  if (autograd::any_requires_grad({x})) {
    Shape in_shape = x.sizes();
    Shape rdims = mask_dims(mask, in_shape.size());
    double denom = static_cast<double>(reduced_count(in_shape, mask) - correction);
    autograd::record("var", out, {x}, [sx = save(x, "var"), in_shape, mask, rdims, denom](const Tensor& g,
                                                                                          const Needs&) {
      const Tensor& v = sx.get();
      return Grads{expand_back(g, in_shape, mask) * (v - mean(v, rdims, true)) * (2.0 / denom)};
    });
  }
  return out;
}

Tensor logsumexp(const Tensor& x, int64_t dim, bool keepdim) {
  detail::check_defined(x, "logsumexp", "self");
  detail::check_floating(x, "logsumexp");
  Tensor m = max(x.detach(), dim, true);
  m = masked_fill(m, m == -std::numeric_limits<double>::infinity(), 0.0);  // all -inf rows stay -inf
  Tensor out = log(sum(exp(x - m), {dim}, true)) + m;
  return keepdim ? out : out.squeeze(dim);
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.sizes() == shape) return x;
  KILN_CHECK(broadcast_shapes(x.sizes(), shape, "sum_to") == x.sizes(),
             "[sum_to] shape {} cannot be summed down to {}", shape_str(x.sizes()), shape_str(shape));
  size_t lead = x.sizes().size() - shape.size();
  Shape dims;
  for (size_t d = 0; d < x.sizes().size(); ++d)
    if (d < lead || (shape[d - lead] == 1 && x.sizes()[d] != 1)) dims.push_back(static_cast<int64_t>(d));
  return dims.empty() ? x.reshape(shape) : sum(x, dims, true).reshape(shape);
}

Tensor squared_norms(const std::vector<Tensor>& tensors) {
  KILN_CHECK(!tensors.empty(), "[squared_norms] needs at least one tensor");
  std::vector<Tensor> kept;  // contiguous views, alive until the kernel has read them
  std::vector<Buffer> buffers;
  for (const Tensor& t : tensors) {
    detail::check_defined(t, "squared_norms", "tensor");
    detail::check_floating(t, "squared_norms");
    kept.push_back(t.detach().contiguous());
    buffers.push_back(kept.back().buffer());
  }
  detail::check_same_device("squared_norms", kept);
  Tensor out = empty({static_cast<int64_t>(kept.size())}, TensorOptions(kFloat64).device(kept[0].device()));
  KILN_DISPATCH(out.device(), squared_norms, out.buffer(), buffers);
  return out;
}

}  // namespace kiln
