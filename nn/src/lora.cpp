#include "kiln/nn/lora.h"

#include <cmath>
#include <functional>
#include <set>

#include "kiln/autograd.h"
#include "kiln/nn/init.h"
#include "kiln/ops.h"

namespace kiln::nn {

namespace {

// The parts of a fused column layer, by its name and segment count; none for
// a layer of one part or of parts kiln has no names for.
std::vector<std::string> part_names(const std::string& local_name, const LinearSplit& split) {
  if (split.kind != LinearSplit::Column) return {};
  const size_t n = split.segments.size();
  if (local_name == "qkv" && n == 3) return {"q", "k", "v"};
  if (local_name == "kv" && n == 2) return {"k", "v"};
  if (local_name == "up" && n == 2) return {"gate", "up"};
  return {};
}

// FNV-1a: a seed from a name, the same on every platform and layout.
uint64_t name_hash(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string param_prefix(const std::string& site) { return site.empty() ? "" : site + "_"; }

}  // namespace

void LoraConfig::check() const {
  KILN_CHECK(rank > 0 && alpha > 0 && dropout >= 0 && dropout < 1,
             "[lora] rank ({}) and alpha ({}) must be positive and dropout ({}) in [0, 1)", rank, alpha, dropout);
  KILN_CHECK(!targets.empty(), "[lora] no target modules: name the layers to adapt (\"q\", \"v\", \"mlp.down\", ...)");
  KILN_CHECK(!base_dtype || is_floating(*base_dtype), "[lora] base_dtype must be a floating dtype, got {}",
             *base_dtype);
}

LoraAdapter::LoraAdapter(const LinearLayer& base, const std::map<int64_t, std::string>& parts,
                         const LoraConfig& config, const LayerFactory& factory, Generator& dropout_gen)
    : config_(config), scale_(config.scale()) {
  config.check();
  LinearSplit split = base.split;
  const bool row = split.kind == LinearSplit::Row;
  if (split.in_features == 0) split = {LinearSplit::Whole, base.weight.size(1), base.weight.size(0), {}};
  const int64_t tp = split.kind == LinearSplit::Whole ? 1 : factory.tp_size(), r = config.rank;
  const std::vector<int64_t> segments = split.segments.empty() ? std::vector<int64_t>{split.out_features}
                                                               : split.segments;
  for (int64_t s : segments) local_widths_.push_back(s / tp);
  const DType dtype = base.weight.dtype();
  const Device device = base.weight.device();
  auto whole = [&](int64_t in, int64_t out) { return std::make_shared<Linear>(LinearOptions{in, out, false, dtype, device}, nullptr); };
  auto add_site = [&](const std::string& name, int64_t segment) {
    const int64_t out = segment < 0 ? split.out_features : segments[static_cast<size_t>(segment)];
    Site s{name, segment, nullptr, nullptr, split.in_features};
    if (row) {  // A splits the input features with the layer, B whole
      s.A = factory.row({split.in_features, r, false, dtype, device});
      s.B = whole(r, out);
    } else if (split.kind == LinearSplit::Column) {  // A whole, B splits the output rows (of each segment)
      s.A = whole(split.in_features, r);
      s.B = factory.column({r, out, false, dtype, device}, segment < 0 ? split.segments : std::vector<int64_t>{});
    } else {
      s.A = whole(split.in_features, r);
      s.B = whole(r, out);
    }
    register_module(param_prefix(name) + "A", s.A);
    register_module(param_prefix(name) + "B", s.B);
    sites_.push_back(std::move(s));
  };
  if (parts.empty()) add_site("", -1);
  for (const auto& [segment, name] : parts) add_site(name, segment);
  dropout_ = register_module("dropout", std::make_shared<Dropout>(config.dropout, dropout_gen));
}

Tensor LoraAdapter::forward(const Tensor& x) const {
  const Tensor in = dropout_->forward(x);
  std::vector<Tensor> pieces(local_widths_.size());
  Tensor some;
  for (const Site& s : sites_) {
    Tensor y = s.B->forward(s.A->forward(in)) * scale_;
    if (s.segment < 0) return y;
    pieces[static_cast<size_t>(s.segment)] = some = y;
  }
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (pieces[i].defined()) continue;
    Shape shape = some.sizes();
    shape.back() = local_widths_[i];
    pieces[i] = zeros(shape, TensorOptions(some.dtype()).device(some.device()));
  }
  return cat(pieces, -1);
}

void LoraAdapter::add_update(LinearLayer& base, double sign) {
  NoGradGuard no_grad;
  for (const Site& s : sites_) {
    // This rank's rows of B times its columns of A: its share of B A.
    Tensor update = matmul(s.B->weight.to(kFloat64), s.A->weight.to(kFloat64)) * (sign * scale_);
    Tensor rows = base.weight;
    if (s.segment >= 0) {
      int64_t offset = 0;
      for (int64_t i = 0; i < s.segment; ++i) offset += local_widths_[static_cast<size_t>(i)];
      rows = base.weight.narrow(0, offset, local_widths_[static_cast<size_t>(s.segment)]);
    }
    rows.copy_((rows.to(kFloat64) + update).to(rows.dtype()));
  }
}

void LoraAdapter::merge(LinearLayer& base) {
  KILN_CHECK(!merged_, "[lora] the adapter is merged already");
  add_update(base, 1.0);
  merged_ = true;
}

void LoraAdapter::unmerge(LinearLayer& base) {
  KILN_CHECK(merged_, "[lora] the adapter is not merged");
  add_update(base, -1.0);
  merged_ = false;
}

std::map<std::string, Tensor> LoraAdapter::start_values(const std::string& layer_name) const {
  std::map<std::string, Tensor> out;
  for (const Site& s : sites_) {
    const std::string prefix = layer_name + ".lora." + param_prefix(s.name);
    const int64_t r = s.B->split.in_features ? s.B->split.in_features : s.B->weight.size(1);
    const int64_t rows = s.B->split.out_features ? s.B->split.out_features : s.B->weight.size(0);
    // PyTorch's Linear draw for A (PEFT's default), B zero: the model starts unchanged.
    Tensor a = empty({r, s.in_features}, TensorOptions(s.A->weight.dtype()));
    Generator gen(config_.seed ^ name_hash(prefix));
    const double bound = 1.0 / std::sqrt(static_cast<double>(s.in_features));
    init::uniform_(a, -bound, bound, gen);
    out[prefix + "A.weight"] = a;
    out[prefix + "B.weight"] = zeros({rows, r}, TensorOptions(s.B->weight.dtype()));
  }
  return out;
}

bool is_lora_parameter(const std::string& name) { return name.find(".lora.") != std::string::npos; }

void add_lora(ParallelModel& model, const LoraConfig& config, Generator& dropout_gen) {
  config.check();
  std::vector<std::pair<std::string, LinearLayer*>> layers;
  for (auto& [name, m] : model.named_modules())
    if (auto* layer = dynamic_cast<LinearLayer*>(m); layer && !is_lora_parameter(name + "."))
      layers.emplace_back(name, layer);
  std::map<std::string, bool> used;
  for (const std::string& t : config.targets) used[t] = false;
  auto named = [&](const std::string& site) {
    bool any = false;
    for (auto& [t, hit] : used)
      if (site == t || site.ends_with("." + t)) any = hit = true;
    return any;
  };
  std::map<std::string, Tensor> start;
  std::set<std::string> sites;  // what a target may name, as "attn.q" (for the message)
  for (auto& [name, layer] : layers) {
    KILN_CHECK(!layer->adapter(), "[lora] '{}' has an adapter already", name);
    const size_t dot = name.rfind('.');
    const std::string parent = dot == std::string::npos ? "" : name.substr(0, dot + 1);
    const std::vector<std::string> part = part_names(name.substr(parent.size()), layer->split);
    std::map<int64_t, std::string> parts;
    const std::string block = parent.substr(parent.rfind('.', parent.size() - 2) + 1);  // "attn." of "layers.0.attn."
    for (size_t i = 0; i < part.size(); ++i) {
      sites.insert(block + part[i]);
      if (named(parent + part[i])) parts[static_cast<int64_t>(i)] = part[i];
    }
    sites.insert(name.substr(parent.size() - block.size()));
    if (parts.empty() && !named(name)) continue;
    auto adapter = std::make_shared<LoraAdapter>(*layer, parts, config, model.layout(), dropout_gen);
    start.merge(adapter->start_values(name));
    layer->set_adapter(adapter);
  }
  for (const auto& [t, hit] : used)
    KILN_CHECK(hit, "[lora] target '{}' names no linear layer of the model; its layers and parts end in {}", t,
               fmt::join(sites, ", "));
  model.load_full_state_dict(start, /*strict=*/false);
  std::map<std::string, bool> kept;
  for (const std::string& t : config.trainable) kept[t] = false;
  for (auto& [name, p] : model.named_parameters()) {
    bool trainable = is_lora_parameter(name);
    for (auto& [t, hit] : kept)
      if (name.starts_with(t + ".") || name.find("." + t + ".") != std::string::npos) trainable = hit = true;
    p.requires_grad_(trainable);
  }
  for (const auto& [t, hit] : kept)
    KILN_CHECK(hit, "[lora] trainable module '{}' names no parameter of the model", t);
  if (config.base_dtype)
    for (auto& [name, layer] : layers)
      for (Tensor* t : {&layer->weight, &layer->bias})
        if (t->defined()) t->set_data(t->to(*config.base_dtype));
}

namespace {

void for_each_adapter(Module& model, const std::function<void(LinearLayer&, LoraAdapter&)>& fn) {
  for (auto& [name, m] : model.named_modules())
    if (auto* layer = dynamic_cast<LinearLayer*>(m); layer && layer->adapter()) fn(*layer, *layer->adapter());
}

}  // namespace

std::optional<LoraConfig> lora_config(const Module& model) {
  // named_modules hands out mutable modules; only their configs are read.
  for (auto& [name, m] : const_cast<Module&>(model).named_modules())
    if (auto* layer = dynamic_cast<LinearLayer*>(m); layer && layer->adapter()) return layer->adapter()->config();
  return std::nullopt;
}

void merge_lora(Module& model) {
  for_each_adapter(model, [](LinearLayer& layer, LoraAdapter& a) { a.merge(layer); });
}

void unmerge_lora(Module& model) {
  for_each_adapter(model, [](LinearLayer& layer, LoraAdapter& a) { a.unmerge(layer); });
}

}  // namespace kiln::nn
