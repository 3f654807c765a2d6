// Front-ends of the fused optimizer updates.

#include "dispatch.h"

namespace kiln {

namespace {

void check_update(const char* op, const Tensor& p, const Tensor& g, const std::vector<Tensor>& state) {
  detail::check_defined(p, op, "param");
  detail::check_defined(g, op, "grad");
  KILN_CHECK(p.dtype() == kFloat32 || p.dtype() == kFloat64,
             "[{}] parameters must be float32 or float64 master weights, got {} (for low-precision compute keep "
             "float32 parameters and cast activations: GPTConfig::compute_dtype)",
             op, describe(p));
  KILN_CHECK(p.is_contiguous(), "[{}] the parameter must be contiguous, got strides {}", op, shape_str(p.strides()));
  detail::check_floating(g, op);
  KILN_CHECK(g.sizes() == p.sizes(), "[{}] gradient {} does not match parameter {}", op, describe(g), describe(p));
  std::vector<Tensor> all = state;
  all.push_back(p);
  all.push_back(g);
  detail::check_same_device(op, all);
  for (const Tensor& s : state) {
    detail::check_defined(s, op, "state");
    KILN_CHECK(s.dtype() == p.dtype() && s.sizes() == p.sizes() && s.is_contiguous(),
               "[{}] optimizer state {} must be contiguous with the parameter's shape and dtype ({})", op, describe(s),
               describe(p));
  }
}

}  // namespace

void adamw_update_(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWStep& step) {
  check_update("adamw_update", p, g, {m, v});
  Tensor gc = g.contiguous();
  KILN_DISPATCH(p.device(), adamw_update, p.buffer(), gc.buffer(), m.buffer(), v.buffer(), step);
  for (Tensor* t : {&p, &m, &v}) t->storage()->bump_version();
}

void lion_update_(Tensor& p, const Tensor& g, Tensor& m, const LionStep& step) {
  check_update("lion_update", p, g, {m});
  Tensor gc = g.contiguous();
  KILN_DISPATCH(p.device(), lion_update, p.buffer(), gc.buffer(), m.buffer(), step);
  for (Tensor* t : {&p, &m}) t->storage()->bump_version();
}

}  // namespace kiln
