// matmul with torch.matmul's semantics over one batched kernel.

#include "dispatch.h"
#include "kiln/settings.h"

namespace kiln {


namespace {

// a (..., m, k) @ b (..., k, n) with both of 2+ dims; batch dims broadcast.
Tensor batched_matmul(const Tensor& a, const Tensor& b) {
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  Shape batch = broadcast_shapes(Shape(a.sizes().begin(), a.sizes().end() - 2),
                                 Shape(b.sizes().begin(), b.sizes().end() - 2), "matmul");
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor out = empty(out_shape, TensorOptions(a.dtype()).device(a.device()));
  {
    autograd::NoGradGuard no_grad;
    int64_t nb = 1;  // batch elements, given outright: -1 cannot be inferred when a matrix is empty
    for (int64_t d : batch) nb *= d;
    auto as3 = [&](const Tensor& t, int64_t r, int64_t c) {
      Shape full = batch;
      full.push_back(r);
      full.push_back(c);
      return t.expand(full).reshape({nb, r, c});
    };
    KILN_DISPATCH(a.device(), matmul, out.reshape({nb, m, n}).buffer(), as3(a, m, k).buffer(), as3(b, k, n).buffer(),
                  GemmOptions{settings().allow_tf32, {}});
  }
  if (autograd::any_requires_grad({a, b}))
    autograd::record("matmul", out, {a, b}, [sa = save(a, "matmul"), sb = save(b, "matmul")](const Tensor& g,
                                                                                           const Needs& nd) {
      return Grads{nd[0] ? matmul(g, sb.get().transpose(-1, -2)) : Tensor(),
                   nd[1] ? matmul(sa.get().transpose(-1, -2), g) : Tensor()};
    });
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  detail::check_defined(a, "matmul", "self");
  detail::check_defined(b, "matmul", "other");
  detail::check_same_device("matmul", {a, b});
  KILN_CHECK(a.dim() >= 1 && b.dim() >= 1, "[matmul] both arguments need at least 1 dim, got {} and {}",
             describe(a), describe(b));
  KILN_CHECK(a.dtype() == b.dtype(), "[matmul] expects one dtype, got {} and {}", describe(a), describe(b));
  KILN_CHECK(a.size(-1) == b.size(b.dim() == 1 ? 0 : -2),
             "[matmul] shapes {} and {} cannot be multiplied ({} vs {} inner elements)", shape_str(a.sizes()),
             shape_str(b.sizes()), a.size(-1), b.size(b.dim() == 1 ? 0 : -2));
  Tensor a2 = a.dim() == 1 ? a.unsqueeze(0) : a;
  Tensor b2 = b.dim() == 1 ? b.unsqueeze(1) : b;
  Tensor out = batched_matmul(a2, b2);
  if (a.dim() == 1) out = out.squeeze(-2);
  if (b.dim() == 1) out = out.squeeze(-1);
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Activation activation) {
  detail::check_defined(x, "linear", "input");
  detail::check_defined(weight, "linear", "weight");
  detail::check_same_device("linear", {x, weight, bias});
  detail::check_floating(x, "linear");
  KILN_CHECK(x.dim() >= 1 && weight.dim() == 2 && x.size(-1) == weight.size(1) && x.dtype() == weight.dtype(),
             "[linear] expects input (..., in) and weight (out, in) of one dtype, got {} and {}", describe(x),
             describe(weight));
  KILN_CHECK(!bias.defined() || (bias.sizes() == Shape({weight.size(0)}) && bias.dtype() == x.dtype()),
             "[linear] bias must be ({}) of the input's dtype, got {}", weight.size(0), describe(bias));
  const int64_t in = weight.size(1), out_features = weight.size(0);
  Shape out_shape = x.sizes();
  out_shape.back() = out_features;
  const TensorOptions options = TensorOptions(x.dtype()).device(x.device());
  Tensor out = empty(out_shape, options);
  const bool grad = autograd::any_requires_grad({x, weight, bias});
  const bool gelu = activation == Activation::GeluTanh;
  // The GELU's input, which its backward needs.
  Tensor pre = gelu && grad ? empty(out_shape, options) : Tensor();
  Tensor b = bias.defined() ? bias.detach().contiguous() : Tensor();
  {
    autograd::NoGradGuard no_grad;
    // (rows, in) @ (in, out): the weight's transpose is a view cuBLASLt and BLAS read as is.
    const int64_t rows = out.numel() / std::max<int64_t>(out_features, 1);
    auto as_rows = [&](const Tensor& t) { return t.reshape({1, rows, out_features}).buffer(); };
    GemmOptions gemm{settings().allow_tf32, b.defined() ? b.buffer() : Buffer{}, gelu,
                     pre.defined() ? as_rows(pre) : Buffer{}};
    KILN_DISPATCH(x.device(), matmul, as_rows(out), x.detach().reshape({1, rows, in}).buffer(),
                  weight.detach().t().unsqueeze(0).buffer(), gemm);
  }
  if (grad)
    autograd::record("linear", out, {x, weight, bias},
                     [sx = save(x, "linear"), sw = save(weight, "linear"), pre, in, out_features](const Tensor& g,
                                                                                                   const Needs& nd) {
                       Tensor d = g;
                       if (pre.defined()) {  // through the GELU first
                         d = empty_like(pre);
                         KILN_DISPATCH(d.device(), binary, BinaryOp::GeluTanhGrad, d.buffer(), g.buffer(),
                                       pre.buffer());
                       }
                       Tensor d2 = d.reshape({-1, out_features});
                       return Grads{nd[0] ? matmul(d, sw.get()) : Tensor(),
                                    nd[1] ? matmul(d2.t(), sx.get().reshape({-1, in})) : Tensor(),
                                    nd[2] ? sum(d2, {0}) : Tensor()};
                     });
  return out;
}

}  // namespace kiln
