#pragma once
// Reverse-mode autograd: grad mode, the recorded graph's nodes, saved tensors
// with version checks, the engine, and user-defined differentiable functions.

#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "kiln/tensor.h"

namespace kiln::autograd {

// --- grad mode (thread-local) --------------------------------------------------
bool grad_mode_enabled();
void set_grad_mode(bool enabled);

// Disables recording for its scope: for optimizer steps and evaluation.
class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_mode_enabled()) { set_grad_mode(false); }
  ~NoGradGuard() { set_grad_mode(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// Re-enables recording inside a NoGradGuard scope.
class EnableGradGuard {
 public:
  EnableGradGuard() : prev_(grad_mode_enabled()) { set_grad_mode(true); }
  ~EnableGradGuard() { set_grad_mode(prev_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

// A tensor saved for backward: its data (no history, so no reference cycle
// through its own grad_fn) and the storage version when it was saved. Unpacking
// raises when an in-place op has changed it since.
class SavedTensor {
 public:
  SavedTensor() = default;
  SavedTensor(const Tensor& t, const char* op);  // op names the saver in the error
  const Tensor& get() const;                     // the data; raises if modified in place since
  bool defined() const { return data_.defined(); }  // false when nothing was saved

 private:
  Tensor data_;
  uint32_t version_ = 0;
  const char* op_ = "";
};

class Node;
// One per input of a node: where that input's gradient flows. Empty when the
// input does not require grad.
struct Edge {
  std::shared_ptr<Node> fn;  // the input's grad_fn, or its AccumulateGrad for a leaf
};

// One gradient per input of an op, undefined where there is none.
using Grads = std::vector<Tensor>;
// needs[i]: whether input i wants a gradient (skip the work when not).
using Needs = std::vector<bool>;
// An op's backward: its output's gradient -> its inputs' Grads.
using BackwardFn = std::function<Grads(const Tensor& grad, const Needs& needs)>;

// A recorded op. It has one output; apply maps that output's gradient to one
// gradient per input (undefined where none).
class Node {
 public:
  // An op's node: its name ("MulBackward") and one edge per input.
  Node(std::string name, std::vector<Edge> edges) : name_(std::move(name)), next_edges_(std::move(edges)) {}
  virtual ~Node() = default;
  virtual Grads apply(const Tensor& grad) = 0;  // the output's gradient -> one per input
  // Frees what backward needed (saved tensors) once the graph is not retained.
  virtual void release() {}

  const std::string& name() const { return name_; }                    // as errors and graphs show it
  const std::vector<Edge>& next_edges() const { return next_edges_; }  // one per input
  // Called with this node's complete incoming gradient before apply (retain_grad).
  std::vector<std::function<void(const Tensor&)>>& pre_hooks() { return pre_hooks_; }

 private:
  std::string name_;
  std::vector<Edge> next_edges_;
  std::vector<std::function<void(const Tensor&)>> pre_hooks_;
};

// The sink for a leaf that requires grad: accumulates into leaf.grad() and runs
// the leaf's post-accumulate hooks. One per leaf, so tied uses count once.
class AccumulateGrad : public Node {
 public:
  explicit AccumulateGrad(Tensor leaf) : Node("AccumulateGrad", {}), leaf_(std::move(leaf)) {}  // leaf's sink
  Grads apply(const Tensor& grad) override;  // no inputs: returns nothing

 private:
  Tensor leaf_;
};

// True when grad mode is on and any of the defined tensors requires grad.
bool any_requires_grad(std::initializer_list<Tensor> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Records `out` as produced by op `name` from `inputs`: sets out's grad_fn to a
// node running `fn`. The caller checks any_requires_grad first.
void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn);

// Runs backward from roots with the given gradients (same shapes).
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph = false);

// Sets every gradient of `params` to undefined (frees them) or to zero.
void zero_grad(const std::vector<Tensor>& params, bool set_to_none = true);

// --- user-defined differentiable functions ----------------------------------
//
//   struct Cube : kiln::autograd::Function<Cube> {
//     static Tensor forward(kiln::autograd::AutogradContext& ctx, const Tensor& x) {
//       ctx.save_for_backward({x});
//       return x * x * x;
//     }
//     static kiln::autograd::Grads backward(kiln::autograd::AutogradContext& ctx, const Tensor& g) {
//       const Tensor& x = ctx.saved()[0];
//       return {g * 3.0 * x * x};
//     }
//   };
//   Tensor y = Cube::apply(x);
//
// forward runs without recording; backward returns one gradient per Tensor
// argument of forward, in order (undefined for none), and may use any kiln op.

// What a custom Function's forward leaves for its backward.
class AutogradContext {
 public:
  // Keeps tensors for backward (their data, checked for in-place changes).
  void save_for_backward(const std::vector<Tensor>& tensors);
  // The saved tensors; raises if one was modified in place since it was saved.
  // The reference stays valid until the next call.
  const std::vector<Tensor>& saved() const;
  bool needs_input_grad(size_t i) const { return i < needs_.size() && needs_[i]; }  // of the i-th Tensor argument
  // Non-tensor values for backward (shapes, flags, scalars).
  std::vector<double> saved_values;

 private:
  friend struct FunctionRecorder;
  std::vector<SavedTensor> saved_;
  mutable std::vector<Tensor> unpacked_;
  Needs needs_;
};

// The library's side of Function::apply: records the node of a custom Function's output.
struct FunctionRecorder {
  // out, made by `function`, gets a node running backward on ctx.
  static Tensor record(const std::type_info& function, std::shared_ptr<AutogradContext> ctx, Tensor out,
                       const std::vector<Tensor>& inputs,
                       std::function<Grads(AutogradContext&, const Tensor&)> backward);
};

// The base of a custom autograd Function (above): Derived gives static forward and backward.
template <typename Derived>
struct Function {
  // Runs Derived::forward without recording, then records its backward.
  template <typename... Args>
  static Tensor apply(Args&&... args) {
    std::vector<Tensor> inputs;
    (collect(inputs, args), ...);
    auto ctx = std::make_shared<AutogradContext>();
    Tensor out;
    {
      NoGradGuard no_grad;
      out = Derived::forward(*ctx, std::forward<Args>(args)...);
    }
    return FunctionRecorder::record(typeid(Derived), std::move(ctx), std::move(out), inputs,
                                    [](AutogradContext& c, const Tensor& g) { return Derived::backward(c, g); });
  }

 private:
  template <typename A>
  static void collect(std::vector<Tensor>& inputs, const A& a) {
    if constexpr (std::is_same_v<std::decay_t<A>, Tensor>) inputs.push_back(a);
  }
};

}  // namespace kiln::autograd

namespace kiln {
using autograd::NoGradGuard;
}
