// Neural-network functions: softmax, log_softmax, layer_norm, rms_norm,
// cross_entropy, dropout, and the reference scaled-dot-product attention.

#include <cmath>
#include <limits>

#include <fmt/ranges.h>

#include "dispatch.h"
#include "kiln/settings.h"

namespace kiln {


namespace {

// t (contiguous) seen by a row kernel as (rows, C).
Buffer rows_view(const Tensor& t, int64_t C) {
  Buffer b = t.buffer();
  b.ndim = 2;
  b.sizes[0] = C == 0 ? 0 : t.numel() / C;
  b.sizes[1] = C;
  b.strides[0] = C;
  b.strides[1] = 1;
  return b;
}

// Row statistics are float32, or float64 for float64 inputs.
DType stat_dtype(DType t) { return t == kFloat64 ? kFloat64 : kFloat32; }

// causal_tq: 0, or the query length of (..., Tq, Tk) scores along the last dim (causal_softmax).
Tensor softmax_impl(const Tensor& x, int64_t dim, bool log, const char* name, int64_t causal_tq = 0) {
  detail::check_defined(x, name, "self");
  detail::check_floating(x, name);
  dim = wrap_dim(dim, x.dim(), name);
  const int64_t last = std::max<int64_t>(x.dim() - 1, 0);
  const int64_t C = x.dim() == 0 ? 1 : x.size(dim);
  Tensor xt = x.detach().movedim(dim, last).contiguous();
  Tensor yt = empty_like(xt);
  if (xt.numel() > 0) KILN_DISPATCH(x.device(), softmax, rows_view(yt, C), rows_view(xt, C), log, causal_tq);
  Tensor out = dim == last ? yt : yt.movedim(last, dim);
  if (autograd::any_requires_grad({x}))
    autograd::record(name, out, {x}, [sy = save(yt, name), dim, last, C, log](const Tensor& g, const Needs&) {
      Tensor gt = g.movedim(dim, last).contiguous();
      Tensor dx = empty_like(gt);
      if (gt.numel() > 0)
        KILN_DISPATCH(g.device(), softmax_backward, rows_view(dx, C), rows_view(gt, C), rows_view(sy.get(), C), log);
      return Grads{dim == last ? dx : dx.movedim(last, dim)};
    });
  return out;
}

// Checks x's trailing dims and the parameters against normalized_shape; returns C.
int64_t check_norm(const Tensor& x, const Shape& normalized_shape, const std::vector<Tensor>& params,
                   const char* op) {
  detail::check_defined(x, op, "input");
  detail::check_floating(x, op);
  detail::check_same_device(op, {x, params[0], params.size() > 1 ? params[1] : Tensor()});
  int64_t n = static_cast<int64_t>(normalized_shape.size());
  bool ok = n >= 1 && x.dim() >= n;
  for (int64_t i = 0; ok && i < n; ++i) ok = x.size(x.dim() - n + i) == normalized_shape[i];
  KILN_CHECK(ok, "[{}] normalized_shape {} does not match the trailing dims of the input {}", op,
             shape_str(normalized_shape), describe(x));
  for (const Tensor& p : params)
    if (p.defined())
      KILN_CHECK(p.sizes() == normalized_shape && is_floating(p.dtype()),
                 "[{}] weight/bias {} must be floating with shape normalized_shape {}", op, describe(p),
                 shape_str(normalized_shape));
  return shape_numel(normalized_shape);
}

// A zeroed parameter-gradient accumulator of C elements when needed, in the
// row-statistics dtype; the autograd node casts it to the parameter's dtype.
Tensor param_grad(bool needed, int64_t C, const Tensor& x) {
  return needed ? zeros({C}, TensorOptions(stat_dtype(x.dtype())).device(x.device())) : Tensor();
}

// The accumulator viewed with the parameter's shape.
Tensor shaped(const Tensor& g, const Shape& shape) { return g.defined() ? g.view(shape) : g; }

}  // namespace

namespace {
// The row kernel's running sum along dim, not recorded.
Tensor running_sum(const Tensor& x, int64_t dim, bool reverse) {
  const int64_t last = x.dim() - 1, C = x.size(dim);
  Tensor xt = x.movedim(dim, last).contiguous();
  Tensor yt = empty_like(xt);
  if (xt.numel() > 0) KILN_DISPATCH(x.device(), cumsum, rows_view(yt, C), rows_view(xt, C), reverse);
  return dim == last ? yt : yt.movedim(last, dim);
}
}  // namespace

Tensor cumsum(const Tensor& x, int64_t dim) {
  detail::check_defined(x, "cumsum", "self");
  if (x.dim() == 0) return cumsum(x.reshape({1}), dim).reshape({});
  dim = wrap_dim(dim, x.dim(), "cumsum");
  Tensor out = running_sum(is_floating(x.dtype()) ? x.detach() : x.detach().to(kInt64), dim, false);
  if (autograd::any_requires_grad({x}))
    autograd::record("cumsum", out, {x}, [dim](const Tensor& g, const Needs&) {
      return Grads{running_sum(g, dim, true)};
    });
  return out;
}

Tensor argsort(const Tensor& x, int64_t dim, bool descending) {
  detail::check_defined(x, "sort", "self");
  KILN_CHECK(x.dtype() != kBool, "[sort] does not sort bool tensors: convert them first");
  if (x.dim() == 0) return zeros({}, TensorOptions(kInt64).device(x.device()));
  dim = wrap_dim(dim, x.dim(), "sort");
  const int64_t last = x.dim() - 1, C = x.size(dim);
  const bool narrow = x.dtype() == kBFloat16 || x.dtype() == kFloat16;  // sorted as float32: exact, same order
  Tensor xt = (narrow ? x.detach().to(kFloat32) : x.detach()).movedim(dim, last).contiguous();
  Tensor indices = empty(xt.sizes(), TensorOptions(kInt64).device(x.device()));
  if (xt.numel() > 0) KILN_DISPATCH(x.device(), argsort, rows_view(indices, C), rows_view(xt, C), descending);
  return dim == last ? indices : indices.movedim(last, dim).contiguous();
}

std::pair<Tensor, Tensor> sort(const Tensor& x, int64_t dim, bool descending) {
  Tensor indices = argsort(x, dim, descending);
  if (x.dim() == 0) return {x.clone(), indices};
  return {gather(x, dim, indices), indices};
}

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false, "softmax"); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, true, "log_softmax"); }

Tensor causal_softmax(const Tensor& scores) {
  detail::check_defined(scores, "causal_softmax", "scores");
  KILN_CHECK(scores.dim() >= 2, "[causal_softmax] expects scores (..., Tq, Tk), got {}", describe(scores));
  return softmax_impl(scores, -1, false, "causal_softmax", std::max<int64_t>(scores.size(-2), 1));
}

namespace {

// The norms' front-end: y = norm(x), or with a residual y = norm(x + residual)
// and *sum = x + residual from the same kernel (two autograd nodes: the sum's,
// passing its gradient to both addends, and y's, whose gradient with respect to
// the sum reaches them too).
Tensor norm_impl(bool centered, const Tensor& x, const Tensor& residual, Tensor* sum, const Shape& normalized_shape,
                 const Tensor& weight, const Tensor& bias, double eps) {
  const char* op = residual.defined() ? (centered ? "add_layer_norm" : "add_rms_norm")
                                      : (centered ? "layer_norm" : "rms_norm");
  const int64_t C = check_norm(x, normalized_shape, {weight, bias}, op);
  Tensor xc = x.detach().contiguous(), rc, normed;
  if (residual.defined()) {
    detail::check_same_device(op, {x, residual});
    KILN_CHECK(residual.sizes() == x.sizes() && residual.dtype() == x.dtype(),
               "[{}] the residual {} must match the input {}", op, describe(residual), describe(x));
    rc = residual.detach().contiguous();
    normed = empty_like(xc);
  }
  Tensor y = empty_like(xc);
  const int64_t rows = xc.numel() / std::max<int64_t>(C, 1);
  TensorOptions stat = TensorOptions(stat_dtype(x.dtype())).device(x.device());
  Tensor mean = centered ? empty({rows}, stat) : Tensor(), rstd = empty({rows}, stat);
  const Buffer r_buf = rc.defined() ? rows_view(rc, C) : Buffer{}, s_buf = rc.defined() ? rows_view(normed, C) : Buffer{};
  if (centered)
    KILN_DISPATCH(x.device(), layer_norm, rows_view(y, C), mean.buffer(), rstd.buffer(), rows_view(xc, C), r_buf,
                  s_buf, buffer_or_null(weight), buffer_or_null(bias), eps);
  else
    KILN_DISPATCH(x.device(), rms_norm, rows_view(y, C), rstd.buffer(), rows_view(xc, C), r_buf, s_buf,
                  buffer_or_null(weight), eps);
  const Tensor& input = residual.defined() ? normed : xc;  // what was normalized
  const bool grads = autograd::any_requires_grad({x, residual, weight, bias});
  if (residual.defined()) {
    *sum = normed;
    if (autograd::any_requires_grad({x, residual}))
      autograd::record("add", *sum, {x, residual}, [](const Tensor& g, const Needs&) { return Grads{g, g}; });
  }
  if (grads)
    autograd::record(op, y, {x, residual, weight, bias},
                     [centered, sx = save(input, op), sw = save(weight, op), sm = save(mean, op), sr = save(rstd, op),
                      C, normalized_shape](const Tensor& g, const Needs& n) {
                       const Tensor& w = sw.get();
                       Tensor gc = g.contiguous();
                       Tensor dx = empty_like(gc);
                       Tensor dw = param_grad(n[2], C, gc), db = param_grad(n[3], C, gc);
                       if (centered)
                         KILN_DISPATCH(g.device(), layer_norm_backward, rows_view(dx, C), buffer_or_null(dw),
                                       buffer_or_null(db), rows_view(gc, C), rows_view(sx.get(), C),
                                       buffer_or_null(w), sm.get().buffer(), sr.get().buffer());
                       else
                         KILN_DISPATCH(g.device(), rms_norm_backward, rows_view(dx, C), buffer_or_null(dw),
                                       rows_view(gc, C), rows_view(sx.get(), C), buffer_or_null(w),
                                       sr.get().buffer());
                       // The sum's gradient goes to both addends (the residual's slot is unused without one).
                       return Grads{dx, dx, shaped(dw, normalized_shape), shaped(db, normalized_shape)};
                     });
  return y;
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps) {
  return norm_impl(true, x, Tensor(), nullptr, normalized_shape, weight, bias, eps);
}

Tensor rms_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, double eps) {
  return norm_impl(false, x, Tensor(), nullptr, normalized_shape, weight, Tensor(), eps);
}

std::pair<Tensor, Tensor> add_layer_norm(const Tensor& x, const Tensor& residual, const Shape& normalized_shape,
                                         const Tensor& weight, const Tensor& bias, double eps) {
  detail::check_defined(residual, "add_layer_norm", "residual");
  Tensor sum;
  Tensor y = norm_impl(true, x, residual, &sum, normalized_shape, weight, bias, eps);
  return {sum, y};
}

std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& residual, const Shape& normalized_shape,
                                       const Tensor& weight, double eps) {
  detail::check_defined(residual, "add_rms_norm", "residual");
  Tensor sum;
  Tensor y = norm_impl(false, x, residual, &sum, normalized_shape, weight, Tensor(), eps);
  return {sum, y};
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index, Reduction reduction,
                     double z_loss) {
  detail::check_defined(logits, "cross_entropy", "input");
  detail::check_defined(target, "cross_entropy", "target");
  detail::check_same_device("cross_entropy", {logits, target});
  detail::check_floating(logits, "cross_entropy");
  KILN_CHECK(target.dtype() == kInt64 || target.dtype() == kInt32,
             "[cross_entropy] target must hold int32/int64 class indices, got {}", describe(target));
  KILN_CHECK(logits.dim() >= 1, "[cross_entropy] input must have a class dim, got {}", describe(logits));
  KILN_CHECK(z_loss >= 0, "[cross_entropy] z_loss must be >= 0, got {}", z_loss);
  // Class dim: 0 for an unbatched (C,) input, else 1 (as PyTorch).
  const int64_t class_dim = logits.dim() == 1 ? 0 : 1;
  const int64_t C = logits.size(class_dim);
  Shape expected = logits.sizes();
  expected.erase(expected.begin() + class_dim);
  KILN_CHECK(target.sizes() == expected, "[cross_entropy] target {} does not match input {}: expected shape {}",
             describe(target), describe(logits), shape_str(expected));
  Tensor rows = logits.movedim(class_dim, -1).reshape({-1, C});
  Tensor tg = target.reshape({-1}).contiguous();
  const int64_t n = tg.numel();
  Tensor losses = empty({n}, TensorOptions(logits.dtype()).device(logits.device()));
  Tensor lse = empty({n}, TensorOptions(stat_dtype(logits.dtype())).device(logits.device()));
  Tensor rc = rows.detach().contiguous();
  if (n > 0)
    KILN_DISPATCH(logits.device(), cross_entropy, losses.buffer(), lse.buffer(), rows_view(rc, C), tg.buffer(),
                  ignore_index, z_loss);
  if (autograd::any_requires_grad({rows}))
    autograd::record("cross_entropy", losses, {rows},
                     [sx = save(rc, "cross_entropy"), st = save(tg, "cross_entropy"), sl = save(lse, "cross_entropy"),
                      C, ignore_index, z_loss](const Tensor& g, const Needs&) {
                       Tensor dx = empty_like(sx.get());
                       Tensor gc = g.contiguous();
                       if (dx.numel() > 0)
                         KILN_DISPATCH(g.device(), cross_entropy_backward, rows_view(dx, C), gc.buffer(),
                                       rows_view(sx.get(), C), st.get().buffer(), sl.get().buffer(), ignore_index,
                                       z_loss);
                       return Grads{dx};
                     });
  switch (reduction) {
    case Reduction::None: return losses.view(expected);
    case Reduction::Sum: return sum(losses);
    case Reduction::Mean: return sum(losses) / sum(tg != ignore_index).to(logits.dtype());
  }
  KILN_FAIL("[cross_entropy] unknown reduction");
}

Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& target, int64_t ignore_index,
                            int64_t chunk_rows, double z_loss) {
  detail::check_defined(x, "linear_cross_entropy", "input");
  detail::check_defined(weight, "linear_cross_entropy", "weight");
  detail::check_defined(target, "linear_cross_entropy", "target");
  detail::check_same_device("linear_cross_entropy", {x, weight, target});
  detail::check_floating(x, "linear_cross_entropy");
  KILN_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1) && x.dtype() == weight.dtype(),
             "[linear_cross_entropy] expects x (N, C) and weight (V, C) of one dtype, got {} and {}", describe(x),
             describe(weight));
  KILN_CHECK((target.dtype() == kInt64 || target.dtype() == kInt32) && target.sizes() == Shape({x.size(0)}),
             "[linear_cross_entropy] target must hold N = {} int32/int64 class indices, got {}", x.size(0),
             describe(target));
  KILN_CHECK(chunk_rows >= 0 && z_loss >= 0, "[linear_cross_entropy] chunk_rows ({}) and z_loss ({}) must be >= 0",
             chunk_rows, z_loss);
  const int64_t N = x.size(0), V = weight.size(0);
  const DType acc = stat_dtype(x.dtype());
  const TensorOptions acc_opts = TensorOptions(acc).device(x.device());
  if (chunk_rows == 0) chunk_rows = std::max<int64_t>(1, (int64_t(1) << 25) / std::max<int64_t>(V, 1));
  const bool grads = autograd::any_requires_grad({x, weight});
  const bool want_dx = grads && x.requires_grad(), want_dw = grads && weight.requires_grad();
  Tensor xd = x.detach(), w = weight.detach().contiguous(), tg = target.contiguous();
  Tensor dx = want_dx ? empty_like(xd) : Tensor();
  Tensor dw = want_dw ? zeros({V, x.size(1)}, acc_opts) : Tensor();
  Tensor total = zeros({}, acc_opts);
  {
    NoGradGuard no_grad;
    for (int64_t lo = 0; lo < N; lo += chunk_rows) {
      const int64_t n = std::min(chunk_rows, N - lo);
      Tensor xc = xd.narrow(0, lo, n).contiguous(), tc = tg.narrow(0, lo, n);
      Tensor logits = matmul(xc, w.t()).contiguous();  // (n, V): the only logits alive
      Tensor losses = empty({n}, TensorOptions(x.dtype()).device(x.device())), lse = empty({n}, acc_opts);
      KILN_DISPATCH(x.device(), cross_entropy, losses.buffer(), lse.buffer(), rows_view(logits, V), tc.buffer(),
                    ignore_index, z_loss);
      total = total + sum(losses.to(acc));
      if (!grads) continue;
      // The chunk's logits become d(sum of its losses)/dlogits, in place.
      Tensor ones_ = ones({n}, TensorOptions(x.dtype()).device(x.device()));
      KILN_DISPATCH(x.device(), cross_entropy_backward, rows_view(logits, V), ones_.buffer(), rows_view(logits, V),
                    tc.buffer(), lse.buffer(), ignore_index, z_loss);
      if (want_dx) dx.narrow(0, lo, n).copy_(matmul(logits, w));
      if (want_dw) dw.add_(matmul(logits.t(), xc).to(acc));
    }
  }
  Tensor count = maximum(sum(tg != ignore_index).to(acc), ones({}, acc_opts));
  Tensor loss = total / count;
  if (grads)
    autograd::record("linear_cross_entropy", loss, {x, weight},
                     [dx, dw, count, xdtype = x.dtype()](const Tensor& g, const Needs&) {
                       Tensor scale = g / count;  // d(mean)/d(sum) times the incoming gradient
                       return Grads{dx.defined() ? dx * scale.to(xdtype) : Tensor(),
                                    dw.defined() ? (dw * scale).to(xdtype) : Tensor()};
                     });
  return loss;
}

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  detail::check_defined(gate, "swiglu", "gate");
  detail::check_defined(up, "swiglu", "up");
  detail::check_same_device("swiglu", {gate, up});
  detail::check_floating(gate, "swiglu");
  KILN_CHECK(gate.sizes() == up.sizes() && gate.dtype() == up.dtype(),
             "[swiglu] gate and up must share shape and dtype, got {} and {}", describe(gate), describe(up));
  Tensor g = gate.detach().contiguous(), u = up.detach().contiguous();
  Tensor out = empty_like(g);
  KILN_DISPATCH(gate.device(), swiglu, out.buffer(), g.buffer(), u.buffer());
  if (autograd::any_requires_grad({gate, up}))
    autograd::record("swiglu", out, {gate, up},
                     [sg = save(g, "swiglu"), su = save(u, "swiglu")](const Tensor& grad, const Needs&) {
                       Tensor d = grad.contiguous(), dg = empty_like(sg.get()), du = empty_like(su.get());
                       KILN_DISPATCH(d.device(), swiglu_backward, dg.buffer(), du.buffer(), d.buffer(),
                                     sg.get().buffer(), su.get().buffer());
                       return Grads{dg, du};
                     });
  return out;
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  detail::check_defined(x, "dropout", "input");
  detail::check_floating(x, "dropout");
  KILN_CHECK(p >= 0.0 && p <= 1.0, "[dropout] probability must be in [0, 1], got {}", p);
  if (!training || p == 0.0) return x;
  if (p == 1.0) return x * 0.0;
  Tensor keep = rand(x.sizes(), gen, TensorOptions(kFloat32).device(x.device())) >= p;
  return x * (keep.to(x.dtype()) * (1.0 / (1.0 - p)));
}

Tensor dropout(const Tensor& x, double p, bool training) { return dropout(x, p, training, default_generator()); }

Tensor rope(const Tensor& x, int64_t offset, double theta) {
  detail::check_defined(x, "rope", "input");
  detail::check_floating(x, "rope");
  KILN_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "[rope] expects (B, H, T, D) with even D, got {}", describe(x));
  KILN_CHECK(offset >= 0 && theta > 0, "[rope] offset ({}) must be >= 0 and theta ({}) > 0", offset, theta);
  const int64_t T = x.size(2), half = x.size(3) / 2;
  // cos and sin of each position and frequency (T, D/2), computed in float64.
  std::vector<double> c(static_cast<size_t>(T * half)), s(c.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(t + offset) * std::pow(theta, -static_cast<double>(i) / half);
      c[t * half + i] = std::cos(angle);
      s[t * half + i] = std::sin(angle);
    }
  const TensorOptions table = TensorOptions(stat_dtype(x.dtype())).device(x.device());
  return rope(x, tensor(c, table).view({T, half}), tensor(s, table).view({T, half}));
}

Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  detail::check_defined(x, "rope", "input");
  detail::check_floating(x, "rope");
  KILN_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "[rope] expects (B, H, T, D) with even D, got {}", describe(x));
  const Shape table{x.size(2), x.size(3) / 2};
  KILN_CHECK(cos.defined() && sin.defined() && cos.sizes() == table && sin.sizes() == table &&
                 cos.dtype() == stat_dtype(x.dtype()) && sin.dtype() == cos.dtype(),
             "[rope] expects cos and sin tables of shape [{}] in {} for x {}, got {} and {}", fmt::join(table, ", "),
             stat_dtype(x.dtype()), describe(x), cos.defined() ? describe(cos) : "undefined",
             sin.defined() ? describe(sin) : "undefined");
  detail::check_same_device("rope", {x, cos, sin});
  Tensor cos_t = cos.contiguous(), sin_t = sin.contiguous();
  Tensor xc = x.detach().contiguous(), out = empty_like(xc);
  KILN_DISPATCH(x.device(), rope, out.buffer(), xc.buffer(), cos_t.buffer(), sin_t.buffer(), false);
  if (autograd::any_requires_grad({x}))
    autograd::record("rope", out, {x}, [cos_t, sin_t](const Tensor& g, const Needs&) {
      Tensor gc = g.contiguous(), dx = empty_like(gc);  // the rotation's transpose: rotate back
      KILN_DISPATCH(g.device(), rope, dx.buffer(), gc.buffer(), cos_t.buffer(), sin_t.buffer(), true);
      return Grads{dx};
    });
  return out;
}

namespace {

// Which implementation settings().attention picks for q and v (head dim D).
enum class AttentionImpl { Composed, Fused, Cudnn };

AttentionImpl attention_impl(const Tensor& q, const Tensor& v, int64_t D, const char* op) {
  const AttentionBackend backend = settings().attention;
  if (backend == AttentionBackend::Cudnn) {
    KILN_CHECK(q.device().is_cuda(), "[{}] the cuDNN backend runs on CUDA tensors, got {}", op, describe(q));
    KILN_CHECK(v.size(-1) == D, "[{}] the cuDNN backend needs value's head dim equal to query's, got {} and {}", op,
               describe(q), describe(v));
    return AttentionImpl::Cudnn;
  }
  // The fused kernels take head dims up to 256, v's equal to q's.
  if (backend == AttentionBackend::Composed || D > 256 || v.size(-1) != D) return AttentionImpl::Composed;
  const bool fused = backend == AttentionBackend::Fused ? !q.device().is_cuda() || q.dtype() != kFloat64
                                                        : q.device().is_cuda() && q.dtype() != kFloat64;  // Auto
  return fused ? AttentionImpl::Fused : AttentionImpl::Composed;
}

// The fused kernel pair (kiln's or cuDNN's) over `geometry`'s layout (q, k, v
// checked by the caller), recorded as one autograd node. `offsets` are the
// tensors behind a packed geometry's cu_q and cu_k, its prefix lengths or its
// ALiBi slopes, kept alive as long as the node.
AttentionOutput fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionGeometry& geometry,
                                const std::vector<Tensor>& offsets, double scale, bool with_lse, bool cudnn) {
  Tensor qc = q.detach().contiguous(), kc = k.detach().contiguous(), vc = v.detach().contiguous();
  Tensor out = empty_like(qc);
  Shape row_shape = q.sizes();  // one statistic per row: (B, Hq, Tq) or (total_q, Hq)
  row_shape.pop_back();
  Tensor lse = empty(row_shape, TensorOptions(stat_dtype(q.dtype())).device(q.device()));
  if (cudnn) {
    kernels::cuda::DeviceScope scope(q.device().index);
    kernels::cuda::cudnn_attention(out.buffer(), lse.buffer(), qc.buffer(), kc.buffer(), vc.buffer(), geometry, scale);
  } else {
    KILN_DISPATCH(q.device(), attention, out.buffer(), lse.buffer(), qc.buffer(), kc.buffer(), vc.buffer(), geometry,
                  scale);
  }
  Tensor saved_out = out.detach();  // the node must not hold its own output's grad_fn
  if (autograd::any_requires_grad({q, k, v}))
    autograd::record("scaled_dot_product_attention", out, {q, k, v},
                     [sq = save(qc, "attention"), sk = save(kc, "attention"), sv = save(vc, "attention"),
                      so = save(saved_out, "attention"), sl = save(lse, "attention"), geometry, offsets, scale,
                      cudnn](const Tensor& g, const Needs&) {
                       Tensor gc = g.contiguous();
                       Tensor dq = empty_like(sq.get()), dk = empty_like(sk.get()), dv = empty_like(sv.get());
                       const Buffer args[] = {dq.buffer(),       dk.buffer(),       dv.buffer(),
                                              gc.buffer(),       sq.get().buffer(), sk.get().buffer(),
                                              sv.get().buffer(), so.get().buffer(), sl.get().buffer()};
                       if (cudnn) {
                         kernels::cuda::DeviceScope scope(g.device().index);
                         kernels::cuda::cudnn_attention_backward(args[0], args[1], args[2], args[3], args[4], args[5],
                                                                 args[6], args[7], args[8], geometry, scale);
                       } else {
                         KILN_DISPATCH(g.device(), attention_backward, args[0], args[1], args[2], args[3], args[4],
                                       args[5], args[6], args[7], args[8], geometry, scale);
                       }
                       return Grads{dq, dk, dv};
                     });
  return {out, with_lse ? lse.to(kFloat32) : Tensor()};
}

// Checks the query, key and value of one attention call: `rank` 4 for
// (B, H, T, D), 3 for packed (rows, H, D) (`layout` says which in errors); one
// floating dtype and device; key and value alike but for value's head dim;
// query and key of one head dim; query heads a multiple of key/value heads.
void check_attention_operands(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, int rank,
                              const char* layout) {
  detail::check_defined(q, op, "query");
  detail::check_defined(k, op, "key");
  detail::check_defined(v, op, "value");
  detail::check_same_device(op, {q, k, v});
  detail::check_floating(q, op);
  KILN_CHECK(q.dim() == rank && k.dim() == rank && v.dim() == rank, "[{}] expects {}, got {}, {}, {}", op, layout,
             describe(q), describe(k), describe(v));
  KILN_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype(), "[{}] expects one dtype, got {}, {}, {}", op,
             describe(q), describe(k), describe(v));
  bool match = k.size(-1) == q.size(-1) && (rank == 3 || (k.size(0) == q.size(0)));
  for (int d = 0; d < rank - 1; ++d) match = match && v.size(d) == k.size(d);
  KILN_CHECK(match, "[{}] key {} and value {} do not match query {}", op, describe(k), describe(v), describe(q));
  KILN_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0,
             "[{}] query heads ({}) must be a multiple of key/value heads ({})", op, q.size(1), k.size(1));
}

// Checks ALiBi's slopes: (Hq) float32 on q's device.
void check_slopes(const char* op, const Tensor& slopes, const Tensor& q, int64_t Hq) {
  detail::check_same_device(op, {q, slopes});
  KILN_CHECK(slopes.dim() == 1 && slopes.size(0) == Hq && slopes.dtype() == kFloat32,
             "[{}] alibi_slopes must be (Hq) = ({}) float32, got {}", op, Hq, describe(slopes));
}

// ALiBi's bias (1, Hq, Tq, Tk) in dtype: slope (j - i - (Tk - Tq)).
Tensor alibi_bias(const Tensor& slopes, int64_t Tq, int64_t Tk, DType dtype) {
  const TensorOptions index = TensorOptions(kInt64).device(slopes.device());
  Tensor distance = arange(Tk, index).view({1, Tk}) - arange(Tq, index).view({Tq, 1}) - (Tk - Tq);
  return (slopes.view({1, -1, 1, 1}) * distance.to(kFloat32).view({1, 1, Tq, Tk})).to(dtype);
}

bool has_masks_or_bias(const AttentionOptions& o) {
  return o.prefix_lengths.defined() || o.key_lengths.defined() || o.bias.defined() || o.mask.defined();
}

// Checks per-batch lengths (B) of an integer dtype in [0, limit].
void check_lengths(const char* what, const Tensor& lengths, int64_t B, int64_t limit) {
  const char* op = "scaled_dot_product_attention";
  KILN_CHECK(lengths.dim() == 1 && lengths.size(0) == B && !is_floating(lengths.dtype()) && lengths.dtype() != kBool,
             "[{}] {} must be (B) = ({}) integers, got {}", op, what, B, describe(lengths));
  Tensor host = lengths.to(kCPU, kInt64).contiguous();
  const int64_t* l = host.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    KILN_CHECK(l[b] >= 0 && l[b] <= limit, "[{}] {}[{}] = {} is outside [0, {}]", op, what, b, l[b], limit);
}

// Which keys each query sees under options' masks: bool, broadcastable to (B, Hq, Tq, Tk).
Tensor visible_keys(const AttentionOptions& o, int64_t B, int64_t Tq, int64_t Tk, Device device) {
  const TensorOptions index = TensorOptions(kInt64).device(device);
  Tensor i = arange(Tq, index).view({1, 1, Tq, 1}), j = arange(Tk, index).view({1, 1, 1, Tk});
  Tensor seen = full({1, 1, Tq, Tk}, true, TensorOptions(kBool).device(device));
  if (o.causal) {
    seen = j <= i + (Tk - Tq);
    if (o.prefix_lengths.defined()) seen = logical_or(seen, j < o.prefix_lengths.to(device, kInt64).view({B, 1, 1, 1}));
  }
  if (o.key_lengths.defined()) seen = logical_and(seen, j < o.key_lengths.to(device, kInt64).view({B, 1, 1, 1}));
  if (o.mask.defined()) seen = logical_and(seen, o.mask);
  return seen;
}

// The reference attention, composed of differentiable ops. with_lse also
// returns the logsumexp of each row of scaled scores.
AttentionOutput attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options,
                          bool with_lse) {
  const char* op = "scaled_dot_product_attention";
  check_attention_operands(op, q, k, v, 4, "(B, H, T, D) query, key and value");
  const int64_t B = q.size(0), Hq = q.size(1), Tq = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(1), Tk = k.size(2);
  const int64_t group = Hq / Hkv;
  double scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  const bool general = has_masks_or_bias(options);
  if (general) {
    KILN_CHECK(!options.prefix_lengths.defined() || options.causal,
               "[{}] prefix_lengths make a prefix-LM mask, which needs causal = true", op);
    if (options.prefix_lengths.defined()) check_lengths("prefix_lengths", options.prefix_lengths, B, Tk);
    if (options.key_lengths.defined()) check_lengths("key_lengths", options.key_lengths, B, Tk);
    if (const Tensor& bias = options.bias; bias.defined()) {
      detail::check_same_device(op, {q, bias});
      KILN_CHECK(bias.dtype() == q.dtype() && bias.dim() <= 4 &&
                     broadcast_shapes(bias.sizes(), {B, Hq, Tq, Tk}, op) == Shape({B, Hq, Tq, Tk}),
                 "[{}] bias must be in the query's dtype and broadcast to (B, Hq, Tq, Tk) = ({}, {}, {}, {}), got {}",
                 op, B, Hq, Tq, Tk, describe(bias));
    }
    if (const Tensor& mask = options.mask; mask.defined()) {
      detail::check_same_device(op, {q, mask});
      KILN_CHECK(mask.dtype() == kBool && mask.dim() <= 4 &&
                     broadcast_shapes(mask.sizes(), {B, Hq, Tq, Tk}, op) == Shape({B, Hq, Tq, Tk}),
                 "[{}] mask must be bool (true: seen) and broadcast to (B, Hq, Tq, Tk) = ({}, {}, {}, {}), got {}",
                 op, B, Hq, Tq, Tk, describe(mask));
    }
  }
  const Tensor& slopes = options.alibi_slopes;
  if (slopes.defined()) check_slopes(op, slopes, q, Hq);
  // The fused kernels take the prefix-LM mask and ALiBi (cuDNN's do not:
  // kiln's run them); key lengths, a mask or a bias go through the composed ops.
  const bool prefix_only = options.prefix_lengths.defined() && !options.key_lengths.defined() &&
                           !options.bias.defined() && !options.mask.defined();
  AttentionImpl impl = AttentionImpl::Composed;
  if (!general || prefix_only) impl = attention_impl(q, v, D, op);
  if ((prefix_only || slopes.defined()) && impl == AttentionImpl::Cudnn)
    impl = D <= 256 ? AttentionImpl::Fused : AttentionImpl::Composed;
  if (impl != AttentionImpl::Composed) {
    const Tensor prefix = prefix_only ? options.prefix_lengths.to(q.device(), kInt64).contiguous() : Tensor();
    const Tensor slope = slopes.defined() ? slopes.contiguous() : Tensor();
    return fused_attention(q, k, v,
                           {.batch = B, .heads_q = Hq, .heads_kv = Hkv, .head_dim = D, .Tq = Tq, .Tk = Tk,
                            .causal = options.causal, .prefix = prefix_only ? prefix.data_ptr<int64_t>() : nullptr,
                            .slopes = slope.defined() ? slope.data_ptr<float>() : nullptr},
                           {prefix, slope}, scale, with_lse, impl == AttentionImpl::Cudnn);
  }
  // Grouped queries: kv head j serves query heads j*group .. (j+1)*group - 1.
  auto repeat = [&](const Tensor& t) {
    if (group == 1) return t;
    return t.unsqueeze(2).expand({B, Hkv, group, Tk, t.size(3)}).reshape({B, Hq, Tk, t.size(3)});
  };
  Tensor scores = matmul(q, repeat(k).transpose(-1, -2)) * scale;  // (B, Hq, Tq, Tk)
  if (slopes.defined()) scores = scores + alibi_bias(slopes, Tq, Tk, scores.dtype());
  if (general) {
    if (options.bias.defined()) scores = scores + options.bias;
    // Hidden keys at -inf; a row that sees no key gets zeros, not NaN: its
    // scores are made finite for the softmax and its probabilities zeroed.
    Tensor hidden = logical_not(visible_keys(options, B, Tq, Tk, q.device()));
    Tensor empty_row = logical_not(sum(logical_not(hidden).to(kInt64), {3}, true) > 0);
    scores = masked_fill(scores, hidden, -std::numeric_limits<double>::infinity());
    Tensor lse = with_lse ? logsumexp(scores, -1).to(kFloat32) : Tensor();
    Tensor probs = masked_fill(softmax(masked_fill(scores, empty_row, 0.0), -1), empty_row, 0.0);
    return {matmul(probs, repeat(v)), lse};
  }
  // Causal, bottom-right aligned: query i sees keys j <= i + Tk - Tq; a row
  // that sees none (Tq > Tk) gives zeros, as FlashAttention, not NaN.
  Tensor probs = options.causal ? causal_softmax(scores) : softmax(scores, -1);
  Tensor lse;
  if (with_lse) {
    if (options.causal) {
      Tensor i = arange(Tq, TensorOptions(kInt64).device(q.device())).view({Tq, 1});
      Tensor j = arange(Tk, TensorOptions(kInt64).device(q.device())).view({1, Tk});
      scores = masked_fill(scores, j > i + (Tk - Tq), -std::numeric_limits<double>::infinity());
    }
    lse = logsumexp(scores, -1).to(kFloat32);  // (B, Hq, Tq); -inf for a row that sees no key
  }
  return {matmul(probs, repeat(v)), lse};
}

}  // namespace

AttentionOutput scaled_dot_product_attention_with_lse(const Tensor& q, const Tensor& k, const Tensor& v,
                                                      const AttentionOptions& options) {
  return attention(q, k, v, options, true);
}

namespace {

// Sequence offsets as host integers, checked against the packed length.
std::vector<int64_t> sequence_offsets(const Tensor& cu, int64_t total, const char* what) {
  detail::check_defined(cu, "scaled_dot_product_attention_varlen", what);
  KILN_CHECK(cu.dim() == 1 && cu.numel() >= 2 && (cu.dtype() == kInt32 || cu.dtype() == kInt64),
             "[scaled_dot_product_attention_varlen] {} must be 1-D int32/int64 offsets of length batch + 1, got {}",
             what, describe(cu));
  Tensor host = cu.to(kCPU, kInt64).contiguous();
  std::vector<int64_t> offsets(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel());
  bool ok = offsets.front() == 0 && offsets.back() == total;
  for (size_t i = 1; i < offsets.size() && ok; ++i) ok = offsets[i] >= offsets[i - 1];
  KILN_CHECK(ok, "[scaled_dot_product_attention_varlen] {} must rise from 0 to the {} packed rows, got [{}]", what,
             total, fmt::join(offsets, ", "));
  return offsets;
}

}  // namespace

Tensor scaled_dot_product_attention_varlen(const Tensor& q, const Tensor& k, const Tensor& v,
                                           const Tensor& cu_seqlens_q, const Tensor& cu_seqlens_k,
                                           const AttentionOptions& options) {
  const char* op = "scaled_dot_product_attention_varlen";
  KILN_CHECK(!has_masks_or_bias(options), "[{}] takes causal and scale; prefix lengths, key lengths and a bias are "
             "for padded batches (scaled_dot_product_attention)", op);
  check_attention_operands(op, q, k, v, 3, "packed q (total_q, Hq, D), k and v (total_k, Hkv, D)");
  const std::vector<int64_t> cq = sequence_offsets(cu_seqlens_q, q.size(0), "cu_seqlens_q");
  const std::vector<int64_t> ck = sequence_offsets(cu_seqlens_k, k.size(0), "cu_seqlens_k");
  KILN_CHECK(cq.size() == ck.size(), "[{}] cu_seqlens_q has {} sequences, cu_seqlens_k {}", op, cq.size() - 1,
             ck.size() - 1);
  const int64_t batch = static_cast<int64_t>(cq.size()) - 1, D = q.size(2);
  const double scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  const Tensor& slopes = options.alibi_slopes;
  if (slopes.defined()) check_slopes(op, slopes, q, q.size(1));
  AttentionImpl impl = attention_impl(q, v, D, op);
  if (slopes.defined() && impl == AttentionImpl::Cudnn)  // ALiBi is kiln's kernels'
    impl = D <= 256 ? AttentionImpl::Fused : AttentionImpl::Composed;
  if (impl == AttentionImpl::Cudnn)  // cuDNN leaves rows that see no key undefined; kiln's contract gives them zeros
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t tq = cq[b + 1] - cq[b], tk = ck[b + 1] - ck[b];
      KILN_CHECK(tq == 0 || (tk > 0 && (!options.causal || tq <= tk)),
                 "[{}] the cuDNN backend needs every sequence's queries to see a key (causal: Tq <= Tk), got "
                 "sequence {} with {} queries and {} keys",
                 op, b, tq, tk);
    }
  if (impl != AttentionImpl::Composed) {  // one launch for every sequence
    auto longest = [](const std::vector<int64_t>& cu) {
      int64_t n = 0;
      for (size_t b = 0; b + 1 < cu.size(); ++b) n = std::max(n, cu[b + 1] - cu[b]);
      return n;
    };
    // The offsets on q's device: the caller's, or uploaded from the host copies without the blocking copy's
    // stream synchronization (a pageable source is consumed before the upload returns).
    auto on_device = [&](const Tensor& cu, const std::vector<int64_t>& host) {
      if (cu.device() == q.device()) return cu.to(kInt64).contiguous();
      return tensor(host).to(q.device(), /*non_blocking=*/true);
    };
    const std::vector<Tensor> offsets = {on_device(cu_seqlens_q, cq), on_device(cu_seqlens_k, ck),
                                         slopes.defined() ? slopes.contiguous() : Tensor()};
    const AttentionGeometry geometry{.batch = batch, .heads_q = q.size(1), .heads_kv = k.size(1), .head_dim = D,
                                     .Tq = longest(cq), .Tk = longest(ck), .cu_q = offsets[0].data_ptr<int64_t>(),
                                     .cu_k = offsets[1].data_ptr<int64_t>(), .causal = options.causal,
                                     .slopes = slopes.defined() ? offsets[2].data_ptr<float>() : nullptr};
    return fused_attention(q, k, v, geometry, offsets, scale, false, impl == AttentionImpl::Cudnn).out;
  }
  // Sequence b as a batch of one: (1, H, T_b, D), then back to packed rows.
  auto batch_of_one = [](const Tensor& t, int64_t begin, int64_t end) {
    return t.narrow(0, begin, end - begin).transpose(0, 1).unsqueeze(0);
  };
  std::vector<Tensor> outs;
  for (int64_t b = 0; b < batch; ++b) {
    Tensor o = scaled_dot_product_attention(batch_of_one(q, cq[b], cq[b + 1]), batch_of_one(k, ck[b], ck[b + 1]),
                                            batch_of_one(v, ck[b], ck[b + 1]), options);
    outs.push_back(o.squeeze(0).transpose(0, 1));
  }
  return cat(outs, 0);
}

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options) {
  return attention(q, k, v, options, false).out;
}

}  // namespace kiln
