#include "kiln/nn/module.h"

#include <algorithm>
#include <ostream>
#include <set>

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::nn {

void Module::check_name(const std::string& name) const {
  KILN_CHECK(!name.empty() && name.find('.') == std::string::npos,
             "[Module] name '{}' must be non-empty and contain no '.'", name);
  auto taken = [&](const auto& list) {
    for (const auto& [n, _] : list)
      if (n == name) return true;
    return false;
  };
  KILN_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_), "[Module] name '{}' is already registered",
             name);
}

Tensor Module::register_parameter(const std::string& name, Tensor t, bool requires_grad) {
  check_name(name);
  KILN_CHECK(t.defined(), "[Module] parameter '{}' is undefined", name);
  t.requires_grad_(requires_grad);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  check_name(name);
  buffers_.emplace_back(name, t);
  return t;
}

template <typename F>
void Module::visit(const std::string& prefix, F&& f) const {
  f(prefix, *this);
  for (const auto& [name, child] : children_) child->visit(prefix + name + ".", f);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool remove_duplicate) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::set<TensorImpl*> seen;
  visit("", [&](const std::string& prefix, const Module& m) {
    for (const auto& [name, t] : m.params_)
      if (!remove_duplicate || seen.insert(t.impl()).second) out.emplace_back(prefix + name, t);
  });
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [_, t] : named_parameters()) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  visit("", [&](const std::string& prefix, const Module& m) {
    for (const auto& [name, t] : m.buffers_) out.emplace_back(prefix + name, t);
  });
  return out;
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : named_parameters(false)) out.emplace(name, t);
  for (auto& [name, t] : named_buffers()) out.emplace(name, t);
  return out;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& state) {
  auto own = state_dict();
  for (const auto& [name, _] : state)
    KILN_CHECK(own.count(name), "[load_state_dict] unexpected key '{}'", name);
  NoGradGuard no_grad;
  for (auto& [name, t] : own) {
    auto it = state.find(name);
    KILN_CHECK(it != state.end(), "[load_state_dict] missing key '{}'", name);
    KILN_CHECK(it->second.sizes() == t.sizes(), "[load_state_dict] '{}' has shape [{}], the module expects [{}]", name,
               fmt::join(it->second.sizes(), ", "), fmt::join(t.sizes(), ", "));
    t.copy_(it->second.to(t.device()));
  }
}

void Module::copy_state_from(const Module& other) {
  load_state_dict(other.state_dict());
  std::map<std::string, Tensor> theirs;
  for (auto& [name, p] : other.named_parameters(/*remove_duplicate=*/false)) theirs.emplace(name, p);
  for (auto& [name, p] : named_parameters(/*remove_duplicate=*/false)) p.requires_grad_(theirs.at(name).requires_grad());
  std::vector<const Module*> mine, others;
  visit("", [&](const std::string&, const Module& m) { mine.push_back(&m); });
  other.visit("", [&](const std::string&, const Module& m) { others.push_back(&m); });
  KILN_CHECK(mine.size() == others.size(), "[copy_state_from] {} holds {} modules, the copy {}", other.type_name(),
             others.size(), mine.size());
  for (size_t i = 0; i < mine.size(); ++i) const_cast<Module*>(mine[i])->training_ = others[i]->training_;
}

void Module::train(bool on) {
  visit("", [&](const std::string&, const Module& m) { const_cast<Module&>(m).training_ = on; });
}

void Module::to(Device device, std::optional<DType> dtype) {
  NoGradGuard no_grad;
  std::set<TensorImpl*> seen;
  auto move = [&](Tensor t) {
    if (!seen.insert(t.impl()).second) return;
    DType target = dtype && is_floating(t.dtype()) ? *dtype : t.dtype();
    if (t.device() != device || t.dtype() != target) t.set_data(t.to(device, target));
  };
  for (auto& [_, t] : named_parameters(false)) move(t);
  for (auto& [_, t] : named_buffers()) move(t);
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [_, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::set_shard_spec(const std::string& param, ShardSpec spec) {
  auto it = std::find_if(params_.begin(), params_.end(), [&](const auto& p) { return p.first == param; });
  KILN_CHECK(it != params_.end(), "[Module] set_shard_spec: no parameter '{}'", param);
  KILN_CHECK(spec.replicated() || (spec.dim < it->second.dim()),
             "[Module] set_shard_spec: dim {} for parameter '{}' of shape [{}]", spec.dim, param,
             fmt::join(it->second.sizes(), ", "));
  shard_specs_[param] = std::move(spec);
}

ShardSpec Module::shard_spec(const std::string& name) const {
  const size_t dot = name.find('.');
  if (dot == std::string::npos) {
    auto it = shard_specs_.find(name);
    return it == shard_specs_.end() ? ShardSpec{} : it->second;
  }
  for (const auto& [child_name, child] : children_)
    if (name.compare(0, dot, child_name) == 0 && child_name.size() == dot) return child->shard_spec(name.substr(dot + 1));
  return {};
}

void Module::zero_grad(bool set_to_none) { autograd::zero_grad(parameters(), set_to_none); }

std::string Module::type_name() const { return unqualified_name(typeid(*this)); }

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out;
  std::set<const Module*> seen;
  visit("", [&](const std::string& prefix, const Module& m) {
    if (seen.insert(&m).second) out.emplace_back(prefix.empty() ? "" : prefix.substr(0, prefix.size() - 1),
                                                 const_cast<Module*>(&m));
  });
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_children() {
  std::vector<std::pair<std::string, Module*>> out;
  for (const auto& [name, child] : children_) out.emplace_back(name, child.get());
  return out;
}

std::vector<Module*> Module::children() {
  std::vector<Module*> out;
  for (const auto& [_, child] : children_) out.push_back(child.get());
  return out;
}

void Module::apply(const std::function<void(Module&)>& fn) {
  for (const auto& [_, child] : children_) child->apply(fn);
  fn(*this);
}

namespace {

bool is_index(const std::string& name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string indented(const std::string& text) {
  std::string out;
  for (char c : text) out += c == '\n' ? std::string("\n  ") : std::string(1, c);
  return out;
}

}  // namespace

std::string to_string(const Module& m) {
  const auto children = const_cast<Module&>(m).named_children();
  if (children.empty()) return m.type_name() + "(" + m.extra_repr() + ")";
  std::string out = m.type_name() + "(";
  if (!m.extra_repr().empty()) out += "\n  " + m.extra_repr();
  std::vector<std::string> texts;
  for (const auto& [_, child] : children) texts.push_back(to_string(*child));
  // Runs of children numbered one after another and printing the same are printed once.
  for (size_t i = 0; i < children.size();) {
    const std::string& text = texts[i];
    size_t end = i + 1;
    while (end < children.size() && is_index(children[end].first) && is_index(children[end - 1].first) &&
           std::stoll(children[end].first) == std::stoll(children[end - 1].first) + 1 && texts[end] == text)
      ++end;
    const size_t run = end - i;
    out += run == 1 ? fmt::format("\n  ({}): ", children[i].first)
                    : fmt::format("\n  ({}-{}): {} x ", children[i].first, children[end - 1].first, run);
    out += indented(text);
    i = end;
  }
  return out + "\n)";
}

std::ostream& operator<<(std::ostream& os, const Module& m) { return os << to_string(m); }

}  // namespace kiln::nn
