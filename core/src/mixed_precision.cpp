// cast_cached: a parameter's low-precision copy, kept with the parameter and
// refreshed when the parameter's storage or version changes (the fused
// optimizer updates refresh it themselves, ops_optim.cpp).

#include "dispatch.h"

namespace kiln {

Tensor cast_cached(const Tensor& param, DType dtype) {
  detail::check_defined(param, "cast_cached", "param");
  if (param.dtype() == dtype) return param;
  if (!param.is_leaf() || !param.is_contiguous()) return param.to(dtype);
  std::unique_ptr<ComputeCopy>& copy = param.impl()->compute_copy;
  if (!copy || copy->data.dtype() != dtype || copy->data.device() != param.device() ||
      copy->data.sizes() != param.sizes())
    copy = std::make_unique<ComputeCopy>(ComputeCopy{empty(param.sizes(), TensorOptions(dtype).device(param.device()))});
  const Storage* source = param.storage().get();
  if (copy->source != source || copy->version != source->version()) {
    KILN_DISPATCH(param.device(), copy, copy->data.buffer(), param.buffer());
    copy->data.storage()->bump_version();
    copy->source = source;
    copy->version = source->version();
  }
  Tensor out = copy->data.detach();
  if (autograd::any_requires_grad({param})) {
    const DType param_dtype = param.dtype();
    autograd::record("cast_cached", out, {param}, [param_dtype](const Tensor& g, const autograd::Needs&) {
      return autograd::Grads{g.to(param_dtype)};
    });
  }
  return out;
}

}  // namespace kiln
