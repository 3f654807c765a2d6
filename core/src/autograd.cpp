// The autograd engine: recording, saved-tensor version checks, and a
// single-threaded backward with per-node dependency counts, so each node runs
// once with its complete gradient and leaf hooks fire when a gradient is final.

#include "kiln/autograd.h"

#include <algorithm>
#include <unordered_map>

#include "dispatch.h"
#include "kiln/base/type_name.h"

namespace kiln::autograd {

namespace {
thread_local bool grad_mode = true;

// A node whose backward is a function: what every built-in op records.
class FunctionNode : public Node {
 public:
  FunctionNode(std::string name, std::vector<Edge> edges, BackwardFn fn, const std::vector<Tensor>& inputs)
      : Node(std::move(name), std::move(edges)), fn_(std::move(fn)) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      needs_.push_back(next_edges()[i].fn != nullptr);
      shapes_.push_back(inputs[i].defined() ? inputs[i].sizes() : Shape{});
      dtypes_.push_back(inputs[i].defined() ? inputs[i].dtype() : kFloat32);
    }
  }
  // Gradients come back reduced to each input's shape (undoing broadcasting)
  // and in its dtype, so op backwards need not repeat that.
  Grads apply(const Tensor& grad) override {
    KILN_CHECK(fn_ != nullptr,
               "[backward] trying to backward through the graph a second time (through {}), or after its saved "
               "tensors were freed; pass retain_graph=true to the first backward",
               name());
    Grads grads = fn_(grad, needs_);
    KILN_CHECK(grads.size() == needs_.size(), "[backward] {} returned {} gradients for {} inputs", name(),
               grads.size(), needs_.size());
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!needs_[i] || !grads[i].defined()) {
        grads[i] = Tensor();
        continue;
      }
      if (grads[i].sizes() != shapes_[i]) grads[i] = sum_to(grads[i], shapes_[i]);
      if (grads[i].dtype() != dtypes_[i]) grads[i] = grads[i].to(dtypes_[i]);
    }
    return grads;
  }
  void release() override { fn_ = nullptr; }

 private:
  BackwardFn fn_;
  Needs needs_;
  std::vector<Shape> shapes_;
  std::vector<DType> dtypes_;
};

Edge edge_for(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  if (t.grad_fn()) return {t.grad_fn()};
  auto& meta = t.impl()->meta();
  auto acc = meta.grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t);
    meta.grad_accumulator = acc;
  }
  return {acc};
}

}  // namespace

bool grad_mode_enabled() { return grad_mode; }
void set_grad_mode(bool enabled) { grad_mode = enabled; }

SavedTensor::SavedTensor(const Tensor& t, const char* op) : op_(op) {
  if (!t.defined()) return;
  data_ = t.detach();
  version_ = t.version();
}

const Tensor& SavedTensor::get() const {
  KILN_CHECK(!data_.defined() || data_.version() == version_,
             "[backward] a tensor saved by {} for gradient computation has been modified by an in-place "
             "operation (version {} now, {} when saved)",
             op_, data_.version(), version_);
  return data_;
}

Grads AccumulateGrad::apply(const Tensor& grad) {
  KILN_CHECK(grad.sizes() == leaf_.sizes(), "[backward] gradient of shape {} for a leaf of shape {}",
             detail::shape_str(grad.sizes()), detail::shape_str(leaf_.sizes()));
  auto& meta = leaf_.impl()->meta();
  Tensor g = grad.dtype() == leaf_.dtype() ? grad : grad.to(leaf_.dtype());
  if (!meta.grad.defined()) {
    // Keep the incoming buffer when nothing else can see it; else copy it.
    bool exclusive = g.is_contiguous() && g.storage().use_count() == 1 && g.storage_offset() == 0;
    meta.grad = exclusive ? g.detach() : g.clone();
  } else {
    meta.grad.add_(g);
  }
  for (auto& hook : meta.post_accumulate_hooks) hook(leaf_);
  return {};
}

bool any_requires_grad(std::initializer_list<Tensor> inputs) {
  if (!grad_mode) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!grad_mode) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn) {
  std::vector<Edge> edges;
  edges.reserve(inputs.size());
  for (const Tensor& t : inputs) edges.push_back(edge_for(t));
  auto& meta = out.impl()->meta();
  meta.requires_grad = true;
  meta.grad_fn = std::make_shared<FunctionNode>(name, std::move(edges), std::move(fn), inputs);
}

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  KILN_CHECK(roots.size() == grads.size(), "[backward] {} roots but {} gradients", roots.size(), grads.size());
  NoGradGuard no_grad;
  // Dependency counts: how many gradient contributions each node waits for.
  std::unordered_map<Node*, int> deps;
  std::unordered_map<Node*, Tensor> pending;
  std::vector<Node*> stack;
  std::vector<std::shared_ptr<Node>> roots_fn;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    KILN_CHECK(r.requires_grad(), "[backward] root {} does not require grad", i);
    KILN_CHECK(grads[i].sizes() == r.sizes(), "[backward] gradient of shape {} for a root of shape {}",
               detail::shape_str(grads[i].sizes()), detail::shape_str(r.sizes()));
    std::shared_ptr<Node> fn = edge_for(r).fn;
    roots_fn.push_back(fn);
    if (!deps.count(fn.get())) {
      deps[fn.get()] = 0;
      stack.push_back(fn.get());
    }
  }
  // Count edges by a traversal from the roots.
  std::vector<Node*> order;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    order.push_back(n);
    for (const Edge& e : n->next_edges()) {
      if (!e.fn) continue;
      if (deps[e.fn.get()]++ == 0) stack.push_back(e.fn.get());
    }
  }
  auto accumulate = [&](Node* n, const Tensor& g) {
    Tensor& slot = pending[n];
    slot = slot.defined() ? slot + g : g;
  };
  for (size_t i = 0; i < roots.size(); ++i) {
    Node* n = roots_fn[i].get();
    accumulate(n, grads[i].to(roots[i].dtype()));
  }
  // Roots that no other root feeds are ready. A node runs when every edge into
  // it has been processed; one that received no gradient passes none on.
  std::vector<Node*> ready;
  for (auto& fn : roots_fn)
    if (deps[fn.get()] == 0 && std::find(ready.begin(), ready.end(), fn.get()) == ready.end())
      ready.push_back(fn.get());
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    Grads in_grads;
    if (auto it = pending.find(n); it != pending.end()) {
      Tensor g = std::move(it->second);
      pending.erase(it);
      for (auto& hook : n->pre_hooks()) hook(g);
      in_grads = n->apply(g);
    }
    const auto& edges = n->next_edges();
    for (size_t i = 0; i < edges.size(); ++i) {
      Node* next = edges[i].fn.get();
      if (!next) continue;
      if (i < in_grads.size() && in_grads[i].defined()) accumulate(next, in_grads[i]);
      if (--deps[next] == 0) ready.push_back(next);
    }
  }
  if (!retain_graph)
    for (Node* n : order) n->release();
}

void zero_grad(const std::vector<Tensor>& params, bool set_to_none) {
  for (Tensor p : params) {
    if (!p.grad().defined()) continue;
    if (set_to_none) p.set_grad(Tensor());
    else p.mutable_grad().zero_();
  }
}

void AutogradContext::save_for_backward(const std::vector<Tensor>& tensors) {
  saved_.clear();
  for (const Tensor& t : tensors) saved_.emplace_back(t, "a custom Function");
}

const std::vector<Tensor>& AutogradContext::saved() const {
  unpacked_.clear();
  for (const SavedTensor& s : saved_) unpacked_.push_back(s.get());
  return unpacked_;
}

Tensor FunctionRecorder::record(const std::type_info& function, std::shared_ptr<AutogradContext> ctx, Tensor out,
                                const std::vector<Tensor>& inputs,
                                std::function<Grads(AutogradContext&, const Tensor&)> backward) {
  const std::string type = unqualified_name(function);
  const char* name = type.c_str();
  KILN_CHECK(out.defined(), "[{}] forward returned an undefined tensor", name);
  if (!any_requires_grad(inputs)) return out;
  // The output must not alias a tensor with history of its own.
  if (out.requires_grad() || !out.is_leaf()) out = out.detach();
  for (const Tensor& t : inputs) ctx->needs_.push_back(t.defined() && t.requires_grad());
  autograd::record(name, out, inputs, [ctx, backward = std::move(backward)](const Tensor& g, const Needs&) {
    return backward(*ctx, g);
  });
  return out;
}

}  // namespace kiln::autograd
