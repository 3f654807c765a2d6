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

namespace {

// Checks the lists and returns their buffers (gradients made contiguous, kept alive in `keep`).
std::vector<Buffer> checked_lists(const char* op, const std::vector<Tensor>& p, const std::vector<Tensor>& g,
                                  const std::vector<std::vector<Tensor>>& states, std::vector<Tensor>& keep,
                                  std::vector<std::vector<Buffer>>& state_buffers) {
  KILN_CHECK(g.size() == p.size(), "[{}] {} parameters but {} gradients", op, p.size(), g.size());
  std::vector<Buffer> params;
  state_buffers.assign(states.size(), {});
  for (size_t i = 0; i < p.size(); ++i) {
    std::vector<Tensor> st;
    for (const auto& s : states) {
      KILN_CHECK(s.size() == p.size(), "[{}] {} parameters but {} state tensors", op, p.size(), s.size());
      st.push_back(s[i]);
    }
    check_update(op, p[i], g[i], st);
    KILN_CHECK(p[i].dtype() == p[0].dtype() && g[i].dtype() == g[0].dtype() && p[i].device() == p[0].device(),
               "[{}] one call updates parameters of one dtype and device with gradients of one dtype; tensor {} is "
               "{} with a {} gradient, tensor 0 {} with a {} gradient", op, i, describe(p[i]), describe(g[i]),
               describe(p[0]), describe(g[0]));
    params.push_back(p[i].buffer());
    keep.push_back(g[i].contiguous());
    for (size_t k = 0; k < states.size(); ++k) state_buffers[k].push_back(states[k][i].buffer());
  }
  return params;
}

std::vector<Buffer> buffers_of(const std::vector<Tensor>& ts) {
  std::vector<Buffer> out;
  for (const Tensor& t : ts) out.push_back(t.buffer());
  return out;
}

void bump(const std::vector<std::vector<Tensor>>& lists) {
  for (const auto& list : lists)
    for (const Tensor& t : list) t.storage()->bump_version();
}

// The compute copies (cast_cached) of the parameters, for the kernel to write;
// an empty Buffer for a parameter without one.
std::vector<Buffer> copies_of(const std::vector<Tensor>& p) {
  std::vector<Buffer> out;
  for (const Tensor& t : p) {
    const ComputeCopy* c = t.impl()->compute_copy.get();
    out.push_back(c ? c->data.buffer() : Buffer{});
  }
  return out;
}

// After the update: each copy holds its parameter's new version.
void mark_copies_current(const std::vector<Tensor>& p) {
  for (const Tensor& t : p) {
    if (ComputeCopy* c = t.impl()->compute_copy.get()) {
      c->data.storage()->bump_version();
      c->source = t.storage().get();
      c->version = t.storage()->version();
    }
  }
}

}  // namespace

void adamw_update_(const std::vector<Tensor>& p, const std::vector<Tensor>& g, const std::vector<Tensor>& m,
                   const std::vector<Tensor>& v, const AdamWStep& step) {
  if (p.empty()) return;
  std::vector<Tensor> grads;
  std::vector<std::vector<Buffer>> state;
  std::vector<Buffer> params = checked_lists("adamw_update", p, g, {m, v}, grads, state);
  KILN_DISPATCH(p[0].device(), adamw_update, params, buffers_of(grads), state[0], state[1], copies_of(p), step);
  bump({p, m, v});
  mark_copies_current(p);
}

void lion_update_(const std::vector<Tensor>& p, const std::vector<Tensor>& g, const std::vector<Tensor>& m,
                  const LionStep& step) {
  if (p.empty()) return;
  std::vector<Tensor> grads;
  std::vector<std::vector<Buffer>> state;
  std::vector<Buffer> params = checked_lists("lion_update", p, g, {m}, grads, state);
  KILN_DISPATCH(p[0].device(), lion_update, params, buffers_of(grads), state[0], copies_of(p), step);
  bump({p, m});
  mark_copies_current(p);
}

void adamw_update_(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWStep& step) {
  adamw_update_(std::vector<Tensor>{p}, {g}, {m}, {v}, step);
}

void lion_update_(Tensor& p, const Tensor& g, Tensor& m, const LionStep& step) {
  lion_update_(std::vector<Tensor>{p}, {g}, {m}, step);
}

}  // namespace kiln
