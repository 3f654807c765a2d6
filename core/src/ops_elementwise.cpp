// Elementwise ops: type promotion, broadcasting, arithmetic, activations,
// comparisons, where and masked_fill, with their gradients.

#include <cmath>
#include <limits>

#include "dispatch.h"

namespace kiln {


// --- promotion and broadcasting ------------------------------------------------

namespace {

enum class Category { Bool, Integral, Floating };
Category category(DType t) {
  return t == kBool ? Category::Bool : is_floating(t) ? Category::Floating : Category::Integral;
}

// PyTorch's combine_categories: a lower tier only matters when it is of a higher category.
std::optional<DType> combine(std::optional<DType> higher, std::optional<DType> lower) {
  if (!higher) return lower;
  if (!lower) return higher;
  if (category(*higher) == Category::Floating) return higher;
  if (*higher == kBool || category(*lower) == Category::Floating) return promote_types(*higher, *lower);
  return higher;
}

void update(std::optional<DType>& tier, DType t) { tier = tier ? promote_types(*tier, t) : t; }

}  // namespace

DType promote_types(DType a, DType b) {
  if (a == b) return a;
  Category ca = category(a), cb = category(b);
  if (ca != cb) return ca > cb ? a : b;
  if (ca == Category::Floating) {
    if ((a == kBFloat16 && b == kFloat16) || (a == kFloat16 && b == kBFloat16)) return kFloat32;
    return element_size(a) >= element_size(b) ? a : b;
  }
  return element_size(a) >= element_size(b) ? a : b;
}

DType result_type(const Tensor& a, const Tensor& b) {
  std::optional<DType> dim_tier, zero_tier;
  update(a.dim() > 0 ? dim_tier : zero_tier, a.dtype());
  update(b.dim() > 0 ? dim_tier : zero_tier, b.dtype());
  return *combine(dim_tier, zero_tier);
}

DType result_type(const Tensor& a, Scalar b) {
  std::optional<DType> dim_tier, zero_tier, wrapped_tier;
  update(a.dim() > 0 ? dim_tier : zero_tier, a.dtype());
  update(wrapped_tier, b.default_dtype());
  return *combine(dim_tier, combine(zero_tier, wrapped_tier));
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t sa = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t sb = i < n - b.size() ? 1 : b[i - (n - b.size())];
    KILN_CHECK(sa == sb || sa == 1 || sb == 1, "[{}] shapes {} and {} cannot be broadcast together", op,
               shape_str(a), shape_str(b));
    out[i] = sa == 1 ? sb : sa;
  }
  return out;
}

// --- raw kernels (no recording) ---------------------------------------------------

namespace {

Tensor raw_binary(BinaryOp op, const Tensor& a, const Tensor& b, DType compute, DType out_dtype, const char* name) {
  detail::check_defined(a, name, "self");
  detail::check_defined(b, name, "other");
  detail::check_same_device(name, {a, b});
  Shape shape = broadcast_shapes(a.sizes(), b.sizes(), name);
  autograd::NoGradGuard no_grad;
  Tensor ac = a.to(compute).expand(shape), bc = b.to(compute).expand(shape);
  Tensor out = empty(shape, TensorOptions(out_dtype).device(a.device()));
  KILN_DISPATCH(a.device(), binary, op, out.buffer(), ac.buffer(), bc.buffer());
  return out;
}

Tensor raw_unary(UnaryOp op, const Tensor& x, DType dtype, double p0 = 0, double p1 = 0) {
  autograd::NoGradGuard no_grad;
  Tensor xc = x.to(dtype);
  Tensor out = empty(x.sizes(), TensorOptions(dtype).device(x.device()));
  KILN_DISPATCH(x.device(), unary, op, out.buffer(), xc.buffer(), p0, p1);
  return out;
}

// result_type of two operands, after checking both are defined.
DType promoted(const Tensor& a, const Tensor& b, const char* op) {
  detail::check_defined(a, op, "self");
  detail::check_defined(b, op, "other");
  return result_type(a, b);
}

// Float-only ops promote integer and bool inputs to float32, as PyTorch does.
DType float_dtype(const Tensor& x) { return is_floating(x.dtype()) ? x.dtype() : kFloat32; }

// A unary op with a backward written in terms of (g, x, out).
Tensor unary_op(UnaryOp op, const Tensor& x, const char* name, DType dtype,
                Tensor (*grad)(const Tensor& g, const Tensor& x, const Tensor& out), double p0 = 0,
                double p1 = 0) {
  detail::check_defined(x, name, "self");
  Tensor out = raw_unary(op, x, dtype, p0, p1);
  if (grad && autograd::any_requires_grad({x}))
    autograd::record(name, out, {x}, [sx = save(x, name), so = save(out, name), grad](const Tensor& g, const Needs&) {
      return Grads{grad(g, sx.get(), so.get())};
    });
  return out;
}

Tensor mask_of(const Tensor& m, DType t) { return m.to(t); }

}  // namespace

// --- binary arithmetic ------------------------------------------------------------

Tensor add(const Tensor& a, const Tensor& b, Scalar alpha) {
  if (alpha.to_double() != 1.0) return add(a, b * alpha);
  DType t = promoted(a, b, "add");
  Tensor out = raw_binary(BinaryOp::Add, a, b, t, t, "add");
  if (autograd::any_requires_grad({a, b}))
    autograd::record("add", out, {a, b}, [](const Tensor& g, const Needs&) { return Grads{g, g}; });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  DType t = promoted(a, b, "sub");
  KILN_CHECK(t != kBool, "[sub] subtraction of bool tensors is not supported; use logical_xor-style ops");
  Tensor out = raw_binary(BinaryOp::Sub, a, b, t, t, "sub");
  if (autograd::any_requires_grad({a, b}))
    autograd::record("sub", out, {a, b}, [](const Tensor& g, const Needs& n) {
      return Grads{g, n[1] ? neg(g) : Tensor()};
    });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  DType t = promoted(a, b, "mul");
  Tensor out = raw_binary(BinaryOp::Mul, a, b, t, t, "mul");
  if (autograd::any_requires_grad({a, b})) {
    // Save only what the wanted gradients need (a.mul_(2) must not save a).
    auto sa = save(b.requires_grad() ? a : Tensor(), "mul");
    auto sb = save(a.requires_grad() ? b : Tensor(), "mul");
    autograd::record("mul", out, {a, b}, [sa, sb](const Tensor& g, const Needs& n) {
      return Grads{n[0] ? g * sb.get() : Tensor(), n[1] ? g * sa.get() : Tensor()};
    });
  }
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  DType t = promoted(a, b, "div");
  if (!is_floating(t)) t = kFloat32;
  Tensor out = raw_binary(BinaryOp::Div, a, b, t, t, "div");
  if (autograd::any_requires_grad({a, b})) {
    auto sa = save(b.requires_grad() ? a : Tensor(), "div");
    autograd::record("div", out, {a, b}, [sa, sb = save(b, "div")](const Tensor& g, const Needs& n) {
      const Tensor& bv = sb.get();
      return Grads{n[0] ? g / bv : Tensor(), n[1] ? neg(g) * sa.get() / (bv * bv) : Tensor()};
    });
  }
  return out;
}

Tensor pow(const Tensor& a, const Tensor& b) {
  DType t = promoted(a, b, "pow");
  Tensor out = raw_binary(BinaryOp::Pow, a, b, t, t, "pow");
  if (autograd::any_requires_grad({a, b}))
    autograd::record("pow", out, {a, b}, [sa = save(a, "pow"), sb = save(b, "pow"), so = save(out, "pow")](
                                             const Tensor& g, const Needs& n) {
      const Tensor &av = sa.get(), &bv = sb.get();
      return Grads{n[0] ? g * bv * pow(av, bv - 1) : Tensor(), n[1] ? g * so.get() * log(av) : Tensor()};
    });
  return out;
}

Tensor pow(const Tensor& a, Scalar exponent) {
  detail::check_defined(a, "pow", "self");
  if (!is_floating(a.dtype()))
    return pow(a, scalar_tensor(exponent, TensorOptions(result_type(a, exponent)).device(a.device())));
  double p = exponent.to_double();
  Tensor out = raw_unary(UnaryOp::PowScalar, a, a.dtype(), p);
  if (autograd::any_requires_grad({a}))
    autograd::record("pow", out, {a}, [sa = save(a, "pow"), p](const Tensor& g, const Needs&) {
      return Grads{g * p * pow(sa.get(), p - 1)};
    });
  return out;
}

namespace {
Tensor extremum(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  DType t = promoted(a, b, name);
  Tensor out = raw_binary(op, a, b, t, t, name);
  if (autograd::any_requires_grad({a, b})) {
    bool is_max = op == BinaryOp::Maximum;
    autograd::record(name, out, {a, b}, [sa = save(a, name), sb = save(b, name), is_max](const Tensor& g,
                                                                                         const Needs&) {
      const Tensor &av = sa.get(), &bv = sb.get();
      DType t = g.dtype();
      // Ties split the gradient evenly, as PyTorch does.
      Tensor half_tie = mask_of(av == bv, t) * 0.5;
      Tensor a_wins = mask_of(is_max ? av > bv : av < bv, t) + half_tie;
      Tensor b_wins = mask_of(is_max ? bv > av : bv < av, t) + half_tie;
      return Grads{g * a_wins, g * b_wins};
    });
  }
  return out;
}
}  // namespace

Tensor maximum(const Tensor& a, const Tensor& b) { return extremum(BinaryOp::Maximum, a, b, "maximum"); }
Tensor minimum(const Tensor& a, const Tensor& b) { return extremum(BinaryOp::Minimum, a, b, "minimum"); }

// --- unary --------------------------------------------------------------------------

Tensor neg(const Tensor& x) {
  detail::check_defined(x, "neg", "self");
  KILN_CHECK(x.dtype() != kBool, "[neg] negation of a bool tensor is not supported; use logical_not");
  return unary_op(UnaryOp::Neg, x, "neg", x.dtype(), [](const Tensor& g, const Tensor&, const Tensor&) {
    return neg(g);
  });
}

Tensor abs(const Tensor& x) {
  detail::check_defined(x, "abs", "self");
  return unary_op(UnaryOp::Abs, x, "abs", x.dtype(), [](const Tensor& g, const Tensor& v, const Tensor&) {
    return g * sign(v);
  });
}

Tensor sign(const Tensor& x) {
  detail::check_defined(x, "sign", "self");
  return unary_op(UnaryOp::Sign, x, "sign", x.dtype(), [](const Tensor& g, const Tensor&, const Tensor&) {
    return zeros_like(g);
  });
}

Tensor exp(const Tensor& x) {
  detail::check_defined(x, "exp", "self");
  return unary_op(UnaryOp::Exp, x, "exp", float_dtype(x), [](const Tensor& g, const Tensor&, const Tensor& y) {
    return g * y;
  });
}

Tensor log(const Tensor& x) {
  detail::check_defined(x, "log", "self");
  return unary_op(UnaryOp::Log, x, "log", float_dtype(x), [](const Tensor& g, const Tensor& v, const Tensor&) {
    return g / v;
  });
}

Tensor sqrt(const Tensor& x) {
  detail::check_defined(x, "sqrt", "self");
  return unary_op(UnaryOp::Sqrt, x, "sqrt", float_dtype(x), [](const Tensor& g, const Tensor&, const Tensor& y) {
    return g * 0.5 / y;
  });
}

Tensor rsqrt(const Tensor& x) {
  detail::check_defined(x, "rsqrt", "self");
  return unary_op(UnaryOp::Rsqrt, x, "rsqrt", float_dtype(x), [](const Tensor& g, const Tensor&, const Tensor& y) {
    return g * -0.5 * y * y * y;
  });
}

Tensor tanh(const Tensor& x) {
  detail::check_defined(x, "tanh", "self");
  return unary_op(UnaryOp::Tanh, x, "tanh", float_dtype(x), [](const Tensor& g, const Tensor&, const Tensor& y) {
    return g * (1.0 - y * y);
  });
}

Tensor sin(const Tensor& x) {
  return unary_op(UnaryOp::Sin, x, "sin", float_dtype(x), [](const Tensor& g, const Tensor& v, const Tensor&) {
    return g * cos(v);
  });
}

Tensor cos(const Tensor& x) {
  return unary_op(UnaryOp::Cos, x, "cos", float_dtype(x), [](const Tensor& g, const Tensor& v, const Tensor&) {
    return -g * sin(v);
  });
}

namespace {
// Integers are whole already (a copy, as PyTorch returns); the gradient is zero everywhere.
Tensor rounding(UnaryOp op, const Tensor& x, const char* name) {
  detail::check_defined(x, name, "self");
  if (!is_floating(x.dtype())) return x.clone();
  return unary_op(op, x, name, x.dtype(), [](const Tensor& g, const Tensor&, const Tensor&) { return zeros_like(g); });
}
}  // namespace

Tensor floor(const Tensor& x) { return rounding(UnaryOp::Floor, x, "floor"); }
Tensor ceil(const Tensor& x) { return rounding(UnaryOp::Ceil, x, "ceil"); }
Tensor round(const Tensor& x) { return rounding(UnaryOp::Round, x, "round"); }

Tensor sigmoid(const Tensor& x) {
  detail::check_defined(x, "sigmoid", "self");
  return unary_op(UnaryOp::Sigmoid, x, "sigmoid", float_dtype(x),
                  [](const Tensor& g, const Tensor&, const Tensor& y) { return g * y * (1.0 - y); });
}

Tensor relu(const Tensor& x) {
  detail::check_defined(x, "relu", "self");
  if (!is_floating(x.dtype())) return clamp(x, 0, std::nullopt);
  return unary_op(UnaryOp::Relu, x, "relu", x.dtype(), [](const Tensor& g, const Tensor&, const Tensor& y) {
    return g * mask_of(y > 0, g.dtype());
  });
}

Tensor gelu(const Tensor& x, std::string_view approximate) {
  detail::check_defined(x, "gelu", "self");
  KILN_CHECK(approximate == "none" || approximate == "tanh", "[gelu] approximate must be 'none' or 'tanh', got '{}'",
             approximate);
  if (approximate == "tanh")
    return unary_op(UnaryOp::GeluTanh, x, "gelu", float_dtype(x), [](const Tensor& g, const Tensor& v, const Tensor&) {
      return raw_binary(BinaryOp::GeluTanhGrad, g, v, g.dtype(), g.dtype(), "gelu_backward");
    });
  return unary_op(UnaryOp::GeluErf, x, "gelu", float_dtype(x), [](const Tensor& g, const Tensor& v, const Tensor&) {
    return raw_binary(BinaryOp::GeluErfGrad, g, v, g.dtype(), g.dtype(), "gelu_backward");
  });
}

Tensor silu(const Tensor& x) {
  detail::check_defined(x, "silu", "self");
  return unary_op(UnaryOp::Silu, x, "silu", float_dtype(x), [](const Tensor& g, const Tensor& v, const Tensor&) {
    return raw_binary(BinaryOp::SiluGrad, g, v, g.dtype(), g.dtype(), "silu_backward");
  });
}

Tensor clamp(const Tensor& x, std::optional<Scalar> min, std::optional<Scalar> max) {
  detail::check_defined(x, "clamp", "self");
  KILN_CHECK(min || max, "[clamp] at least one of min and max must be given");
  KILN_CHECK(x.dtype() != kBool, "[clamp] does not support bool tensors");
  double lo = min ? min->to_double() : -std::numeric_limits<double>::infinity();
  double hi = max ? max->to_double() : std::numeric_limits<double>::infinity();
  Tensor out = raw_unary(UnaryOp::Clamp, x, x.dtype(), lo, hi);
  if (autograd::any_requires_grad({x}))
    autograd::record("clamp", out, {x}, [sx = save(x, "clamp"), lo, hi](const Tensor& g, const Needs&) {
      const Tensor& v = sx.get();
      return Grads{g * mask_of(logical_and(v >= lo, v <= hi), g.dtype())};
    });
  return out;
}

// --- comparisons, where -------------------------------------------------------------

namespace {
Tensor compare(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  return raw_binary(op, a, b, promoted(a, b, name), kBool, name);
}
// s as a 0-dim tensor of the dtype it takes beside `like` in op.
Tensor wrap(const Tensor& like, Scalar s, const char* op) {
  detail::check_defined(like, op, "self");
  return scalar_tensor(s, TensorOptions(result_type(like, s)).device(like.device()));
}
}  // namespace

Tensor eq(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Eq, a, b, "eq"); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Ne, a, b, "ne"); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Lt, a, b, "lt"); }
Tensor le(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Le, a, b, "le"); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Gt, a, b, "gt"); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Ge, a, b, "ge"); }
Tensor logical_and(const Tensor& a, const Tensor& b) { return compare(BinaryOp::LogicalAnd, a, b, "logical_and"); }
Tensor logical_or(const Tensor& a, const Tensor& b) { return compare(BinaryOp::LogicalOr, a, b, "logical_or"); }
Tensor logical_not(const Tensor& x) { return compare(BinaryOp::Eq, x, wrap(x, 0, "logical_not"), "logical_not"); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  detail::check_defined(cond, "where", "condition");
  detail::check_defined(a, "where", "input");
  detail::check_defined(b, "where", "other");
  detail::check_same_device("where", {cond, a, b});
  KILN_CHECK(cond.dtype() == kBool, "[where] condition must be a bool tensor, got {}", describe(cond));
  DType t = promoted(a, b, "where");
  Shape shape = broadcast_shapes(broadcast_shapes(cond.sizes(), a.sizes(), "where"), b.sizes(), "where");
  Tensor out = empty(shape, TensorOptions(t).device(a.device()));
  {
    autograd::NoGradGuard no_grad;
    KILN_DISPATCH(a.device(), where, out.buffer(), cond.expand(shape).buffer(), a.to(t).expand(shape).buffer(),
                  b.to(t).expand(shape).buffer());
  }
  if (autograd::any_requires_grad({a, b}))
    autograd::record("where", out, {cond, a, b}, [sc = save(cond, "where")](const Tensor& g, const Needs& n) {
      const Tensor& c = sc.get();
      Tensor zero = zeros({}, TensorOptions(g.dtype()).device(g.device()));
      return Grads{Tensor(), n[1] ? where(c, g, zero) : Tensor(), n[2] ? where(c, zero, g) : Tensor()};
    });
  return out;
}

Tensor where(const Tensor& cond, const Tensor& a, Scalar b) { return where(cond, a, wrap(a, b, "where")); }
Tensor where(const Tensor& cond, Scalar a, const Tensor& b) { return where(cond, wrap(b, a, "where"), b); }

Tensor masked_fill(const Tensor& x, const Tensor& mask, Scalar value) {
  detail::check_defined(x, "masked_fill", "self");
  detail::check_defined(mask, "masked_fill", "mask");
  KILN_CHECK(mask.dtype() == kBool, "[masked_fill] mask must be a bool tensor, got {}", describe(mask));
  KILN_CHECK(broadcast_shapes(x.sizes(), mask.sizes(), "masked_fill") == x.sizes(),
             "[masked_fill] mask of shape {} does not broadcast to the input's shape {}", shape_str(mask.sizes()),
             shape_str(x.sizes()));
  return where(mask, scalar_tensor(value, TensorOptions(x.dtype()).device(x.device())), x);
}

// --- operators ----------------------------------------------------------------------

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator+(const Tensor& a, Scalar b) { return add(a, wrap(a, b, "add")); }
Tensor operator-(const Tensor& a, Scalar b) { return sub(a, wrap(a, b, "sub")); }
Tensor operator*(const Tensor& a, Scalar b) { return mul(a, wrap(a, b, "mul")); }
Tensor operator/(const Tensor& a, Scalar b) { return div(a, wrap(a, b, "div")); }
Tensor operator+(Scalar a, const Tensor& b) { return add(wrap(b, a, "add"), b); }
Tensor operator-(Scalar a, const Tensor& b) { return sub(wrap(b, a, "sub"), b); }
Tensor operator*(Scalar a, const Tensor& b) { return mul(wrap(b, a, "mul"), b); }
Tensor operator/(Scalar a, const Tensor& b) { return div(wrap(b, a, "div"), b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator==(const Tensor& a, const Tensor& b) { return eq(a, b); }
Tensor operator!=(const Tensor& a, const Tensor& b) { return ne(a, b); }
Tensor operator<(const Tensor& a, const Tensor& b) { return lt(a, b); }
Tensor operator<=(const Tensor& a, const Tensor& b) { return le(a, b); }
Tensor operator>(const Tensor& a, const Tensor& b) { return gt(a, b); }
Tensor operator>=(const Tensor& a, const Tensor& b) { return ge(a, b); }
Tensor operator==(const Tensor& a, Scalar b) { return eq(a, wrap(a, b, "eq")); }
Tensor operator!=(const Tensor& a, Scalar b) { return ne(a, wrap(a, b, "ne")); }
Tensor operator<(const Tensor& a, Scalar b) { return lt(a, wrap(a, b, "lt")); }
Tensor operator<=(const Tensor& a, Scalar b) { return le(a, wrap(a, b, "le")); }
Tensor operator>(const Tensor& a, Scalar b) { return gt(a, wrap(a, b, "gt")); }
Tensor operator>=(const Tensor& a, Scalar b) { return ge(a, wrap(a, b, "ge")); }

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (a.sizes() != b.sizes()) return false;
  autograd::NoGradGuard no_grad;
  Tensor x = a.to(kCPU, kFloat64).contiguous(), y = b.to(kCPU, kFloat64).contiguous();
  const double *px = x.data_ptr<double>(), *py = y.data_ptr<double>();
  for (int64_t i = 0; i < x.numel(); ++i)
    if (!(std::abs(px[i] - py[i]) <= atol + rtol * std::abs(py[i]))) return false;
  return true;
}

}  // namespace kiln
