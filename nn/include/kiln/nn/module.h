#pragma once
// nn::Module: the base of every layer and model. Registers parameters, buffers
// and child modules by name, in order; names join with '.' as in PyTorch
// ("blocks.0.attn.weight"), which is what checkpoints rely on.

#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "kiln/base/type_name.h"
#include "kiln/nn/shard_spec.h"
#include "kiln/tensor.h"

namespace kiln::nn {

// The base of every layer and model (above).
class Module {
 public:
  Module() = default;
  // A copy would share its parameters with the original (PyTorch's modules
  // are references too). A deep copy is a module built alike and filled by
  // copy_state_from; the language models do both in clone().
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  // Every parameter with its dotted name: a module's own first, then its
  // children's, in registration order (PyTorch's order). A tied parameter is
  // listed once, under its first name, unless remove_duplicate is false.
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool remove_duplicate = true) const;
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  // Parameters (every name of a tied one) and buffers by name.
  std::map<std::string, Tensor> state_dict() const;
  // Copies values into the registered tensors; names and shapes must match exactly.
  void load_state_dict(const std::map<std::string, Tensor>& state);
  // Makes this module, of the same structure as other, a copy of it: every
  // parameter's and buffer's values, which parameters require grad, and
  // each module's training mode. A clone() does it after building its structure.
  void copy_state_from(const Module& other);

  // Training mode (dropout on), this module and every one under it; eval()
  // turns it off, as PyTorch's.
  void train(bool on = true);
  void eval() { train(false); }                     // train(false)
  bool is_training() const { return training_; }   // the mode train() set
  // Frees (or zeroes) every parameter's gradient.
  void zero_grad(bool set_to_none = true);
  // Moves every parameter and buffer to device, casting floating ones to dtype.
  // Handles stay valid (the tensors' data is replaced in place); gradients are dropped.
  void to(Device device, std::optional<DType> dtype = std::nullopt);
  // Number of elements over the unique parameters.
  int64_t num_parameters() const;

  // This module ("") and every module under it with its dotted name, parents
  // before children, in registration order; a module held twice is listed once.
  std::vector<std::pair<std::string, Module*>> named_modules();
  // The direct children, by name.
  std::vector<std::pair<std::string, Module*>> named_children();
  std::vector<Module*> children();
  // Calls fn on every module under this one and then on this one (PyTorch's order).
  void apply(const std::function<void(Module&)>& fn);

  // The class's name, unqualified ("Linear"), and what a printout of the
  // module shows of its settings ("in_features=192, out_features=576, bias=true").
  virtual std::string type_name() const;
  virtual std::string extra_repr() const { return ""; }

  // How each parameter is split under tensor parallelism (replicated unless
  // its layer says otherwise), by dotted name; checkpoints and layout changes
  // read it. set_shard_spec names one of this module's own parameters.
  void set_shard_spec(const std::string& param, ShardSpec spec);
  ShardSpec shard_spec(const std::string& name) const;

 protected:
  // Registers a parameter (trained, in state_dict), a buffer (in state_dict,
  // not trained) or a child module under name; each returns what it registered.
  Tensor register_parameter(const std::string& name, Tensor t, bool requires_grad = true);
  Tensor register_buffer(const std::string& name, Tensor t);
  // Adds m as a child under name (its parameters then appear as "name.weight"); returns m.
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    check_name(name);
    children_.emplace_back(name, m);
    return m;
  }

 private:
  void check_name(const std::string& name) const;
  template <typename F>
  void visit(const std::string& prefix, F&& f) const;

  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::map<std::string, ShardSpec> shard_specs_;  // own parameters that are not replicated
  bool training_ = true;
};

// Children in a list, named "0", "1", ... (transformer blocks); a list that
// holds layers first, first + 1, ... of a larger model (a pipeline stage)
// names them so.
class ModuleList : public Module {
 public:
  explicit ModuleList(size_t first = 0) : first_(first) {}  // first: the first item's name
  // Appends m, named by its place; returns m.
  template <typename M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    items_.push_back(m);
    return register_module(std::to_string(first_ + items_.size() - 1), std::move(m));
  }
  size_t size() const { return items_.size(); }  // the items held
  // Item i as an M; raises when i is out of range or the item is not an M.
  template <typename M>
  M& at(size_t i) const {
    KILN_CHECK(i < items_.size(), "[ModuleList] index {} out of range for {} modules", i, items_.size());
    auto* item = dynamic_cast<M*>(items_[i].get());
    KILN_CHECK(item, "[ModuleList] item {} is a {}, not a {}", i, items_[i]->type_name(), unqualified_name(typeid(M)));
    return *item;
  }

 private:
  size_t first_;
  std::vector<std::shared_ptr<Module>> items_;
};

// Children applied in order, each a module with `Tensor forward(const Tensor&) const`:
//   Sequential mlp;
//   mlp.push_back(std::make_shared<Linear>(LinearOptions{2, 64}));
//   mlp.push_back(std::make_shared<Lambda>(relu));
class Sequential : public Module {
 public:
  // Appends m as the next step; returns m.
  template <typename M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    steps_.push_back([raw = m.get()](const Tensor& x) { return raw->forward(x); });
    return register_module(std::to_string(steps_.size() - 1), std::move(m));
  }
  // x through every step in order.
  Tensor forward(const Tensor& x) const {
    Tensor y = x;
    for (const auto& step : steps_) y = step(y);
    return y;
  }
  size_t size() const { return steps_.size(); }  // the steps held

 private:
  std::vector<std::function<Tensor(const Tensor&)>> steps_;
};

// A parameter-free function as a module (an activation in a Sequential).
class Lambda : public Module {
 public:
  explicit Lambda(std::function<Tensor(const Tensor&)> fn) : fn_(std::move(fn)) {}  // fn: x -> y
  Tensor forward(const Tensor& x) const { return fn_(x); }  // fn(x)

 private:
  std::function<Tensor(const Tensor&)> fn_;
};

// Prints the module tree as PyTorch does: each module's type and settings,
// its children indented, runs of identical numbered children as "(0-11): 12 x Block(...)".
std::ostream& operator<<(std::ostream& os, const Module& m);
std::string to_string(const Module& m);

}  // namespace kiln::nn
