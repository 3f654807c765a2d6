// Mixture-of-experts ops: top-k selection, token dispatch to the experts and
// back (moe_permute / moe_unpermute over the kernels of kernel_api.inc) and
// the experts' grouped GEMM.

#include <array>
#include <limits>

#include "dispatch.h"
#include "kiln/settings.h"

namespace kiln {

std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k) {
  detail::check_defined(x, "topk", "self");
  detail::check_floating(x, "topk");
  KILN_CHECK(x.dim() >= 1 && k >= 1 && k <= x.size(-1), "[topk] k ({}) must be in [1, {}] for {}", k,
             x.dim() >= 1 ? x.size(-1) : 0, describe(x));
  // k rounds of argmax: k is small (the experts a token takes), and the
  // first of equal values wins as in torch.topk on the CPU.
  Tensor remaining = x.detach();
  Tensor columns = arange(0, x.size(-1), 1, TensorOptions(kInt64).device(x.device()));
  std::vector<Tensor> picks;
  for (int64_t i = 0; i < k; ++i) {
    Tensor pick = argmax(remaining, -1, /*keepdim=*/true);
    picks.push_back(pick);
    if (i + 1 < k) remaining = masked_fill(remaining, eq(columns, pick), -std::numeric_limits<double>::infinity());
  }
  Tensor indices = cat(picks, -1);
  return {gather(x, -1, indices), indices};
}

namespace {

void check_permutation(const MoePermutation& p, const Tensor& t, const char* op) {
  detail::check_defined(p.row_choice, op, "row_choice");
  detail::check_defined(p.slot, op, "slot");
  detail::check_same_device(op, {t, p.row_choice, p.slot});
  KILN_CHECK(p.row_choice.dim() == 1 && p.row_choice.dtype() == kInt64 && p.slot.dim() == 2 &&
                 p.slot.dtype() == kInt64 && p.row_choice.is_contiguous() && p.slot.is_contiguous(),
             "[{}] expects row_choice (R) and slot (N, k), contiguous int64, got {} and {}", op,
             describe(p.row_choice), describe(p.slot));
}

// The gates' dtype beside rows of dtype t: float32, float64 for float64.
DType gate_dtype(DType t) { return t == kFloat64 ? kFloat64 : kFloat32; }

}  // namespace

Tensor moe_permute(const Tensor& x, const MoePermutation& p) {
  detail::check_defined(x, "moe_permute", "self");
  detail::check_floating(x, "moe_permute");
  check_permutation(p, x, "moe_permute");
  KILN_CHECK(x.dim() == 2 && x.size(0) == p.slot.size(0), "[moe_permute] expects tokens (N, C) with N = {} (the "
             "slot's rows), got {}", p.slot.size(0), describe(x));
  const int64_t k = p.slot.size(1);
  Tensor out = empty({p.row_choice.size(0), x.size(1)}, TensorOptions(x.dtype()).device(x.device()));
  KILN_DISPATCH(x.device(), moe_gather, out.buffer(), x.detach().contiguous().buffer(), p.row_choice.buffer(),
                Buffer{}, k);
  if (autograd::any_requires_grad({x}))
    autograd::record("moe_permute", out, {x}, [p, n = x.size(0)](const Tensor& g, const Needs&) {
      // A token's gradient: the sum over the rows that copied it.
      Tensor gx = empty({n, g.size(1)}, TensorOptions(g.dtype()).device(g.device()));
      KILN_DISPATCH(g.device(), moe_combine, gx.buffer(), g.contiguous().buffer(), p.slot.buffer(), Buffer{});
      return Grads{gx};
    });
  return out;
}

Tensor moe_unpermute(const Tensor& rows, const Tensor& gates, const MoePermutation& p) {
  detail::check_defined(rows, "moe_unpermute", "rows");
  detail::check_defined(gates, "moe_unpermute", "gates");
  detail::check_floating(rows, "moe_unpermute");
  check_permutation(p, rows, "moe_unpermute");
  detail::check_same_device("moe_unpermute", {rows, gates});
  KILN_CHECK(rows.dim() == 2 && rows.size(0) == p.row_choice.size(0), "[moe_unpermute] expects rows (R, C) with "
             "R = {} (row_choice's length), got {}", p.row_choice.size(0), describe(rows));
  KILN_CHECK(gates.sizes() == p.slot.sizes() && gates.dtype() == gate_dtype(rows.dtype()),
             "[moe_unpermute] gates must be {} {} beside rows {}, got {}", dtype_name(gate_dtype(rows.dtype())),
             shape_str(p.slot.sizes()), describe(rows), describe(gates));
  const int64_t N = p.slot.size(0), k = p.slot.size(1);
  Tensor r = rows.detach().contiguous(), w = gates.detach().contiguous();
  Tensor out = empty({N, rows.size(1)}, TensorOptions(rows.dtype()).device(rows.device()));
  KILN_DISPATCH(rows.device(), moe_combine, out.buffer(), r.buffer(), p.slot.buffer(), w.buffer());
  if (autograd::any_requires_grad({rows, gates}))
    autograd::record("moe_unpermute", out, {rows, gates},
                     [p, k, sr = save(r, "moe_unpermute"), sw = save(w, "moe_unpermute")](const Tensor& g,
                                                                                          const Needs& nd) {
                       Tensor gc = g.contiguous(), drows, dgates;
                       if (nd[0]) {  // each row: its token's gradient times the row's gate
                         drows = empty(sr.get().sizes(), TensorOptions(g.dtype()).device(g.device()));
                         KILN_DISPATCH(g.device(), moe_gather, drows.buffer(), gc.buffer(), p.row_choice.buffer(),
                                       sw.get().buffer(), k);
                       }
                       if (nd[1]) {
                         dgates = empty(p.slot.sizes(), TensorOptions(sw.get().dtype()).device(g.device()));
                         KILN_DISPATCH(g.device(), moe_combine_weights_backward, dgates.buffer(), gc.buffer(),
                                       sr.get().buffer(), p.slot.buffer());
                       }
                       return Grads{drows, dgates};
                     });
  return out;
}

namespace {

// The experts' products as one grouped_matmul: for each group e with rows
// (n of them from row `at`), product(e, at, n) gives its (out, a, b) matrices.
template <typename Product>
void grouped_gemm(Device device, const std::vector<int64_t>& group_rows, Product product) {
  std::vector<Buffer> out, a, b;
  int64_t at = 0;
  for (size_t e = 0; e < group_rows.size(); ++e) {
    const int64_t n = group_rows[e];
    if (n > 0) {
      const auto [o, x, w] = product(static_cast<int64_t>(e), at, n);
      out.push_back(o.unsqueeze(0).buffer());
      a.push_back(x.unsqueeze(0).buffer());
      b.push_back(w.unsqueeze(0).buffer());
    }
    at += n;
  }
  KILN_DISPATCH(device, grouped_matmul, out, a, b, GemmOptions{settings().allow_tf32, {}},
                settings().grouped_gemm_one_launch);
}

// out[rows of group e] = a[rows of group e] @ b[e]: a (R, m), b (E, m, n) (any strides), out (R, n).
void grouped_rows_gemm(const Tensor& out, const Tensor& a, const Tensor& b, const std::vector<int64_t>& group_rows) {
  grouped_gemm(out.device(), group_rows, [&](int64_t e, int64_t at, int64_t n) {
    return std::array<Tensor, 3>{out.narrow(0, at, n), a.narrow(0, at, n), b.select(0, e)};
  });
}

}  // namespace

Tensor grouped_linear(const Tensor& x, const Tensor& weight, const std::vector<int64_t>& group_rows) {
  detail::check_defined(x, "grouped_linear", "input");
  detail::check_defined(weight, "grouped_linear", "weight");
  detail::check_same_device("grouped_linear", {x, weight});
  detail::check_floating(x, "grouped_linear");
  KILN_CHECK(x.dim() == 2 && weight.dim() == 3 && x.size(1) == weight.size(2) && x.dtype() == weight.dtype(),
             "[grouped_linear] expects input (R, in) and weight (groups, out, in) of one dtype, got {} and {}",
             describe(x), describe(weight));
  int64_t total = 0;
  for (int64_t n : group_rows) {
    KILN_CHECK(n >= 0, "[grouped_linear] a group has {} rows", n);
    total += n;
  }
  KILN_CHECK(static_cast<int64_t>(group_rows.size()) == weight.size(0) && total == x.size(0),
             "[grouped_linear] {} groups of rows summing to {} for weight {} and input {}", group_rows.size(), total,
             describe(weight), describe(x));
  const TensorOptions options = TensorOptions(x.dtype()).device(x.device());
  Tensor xd = x.detach(), wd = weight.detach();
  Tensor out = empty({x.size(0), weight.size(1)}, options);
  grouped_rows_gemm(out, xd, wd.transpose(1, 2), group_rows);
  if (autograd::any_requires_grad({x, weight}))
    autograd::record("grouped_linear", out, {x, weight},
                     [group_rows, sx = save(xd, "grouped_linear"), sw = save(wd, "grouped_linear")](
                         const Tensor& g, const Needs& nd) {
                       const Tensor& xs = sx.get();
                       const Tensor& ws = sw.get();
                       const TensorOptions o = TensorOptions(g.dtype()).device(g.device());
                       Tensor dx, dw;
                       if (nd[0]) {  // dx_e = g_e w_e
                         dx = empty(xs.sizes(), o);
                         grouped_rows_gemm(dx, g, ws, group_rows);
                       }
                       if (nd[1]) {  // dw_e = g_e^T x_e; an expert without rows gets zeros
                         dw = zeros(ws.sizes(), o);
                         grouped_gemm(g.device(), group_rows, [&](int64_t e, int64_t at, int64_t n) {
                           return std::array<Tensor, 3>{dw.select(0, e), g.narrow(0, at, n).t(), xs.narrow(0, at, n)};
                         });
                       }
                       return Grads{dx, dw};
                     });
  return out;
}

}  // namespace kiln
