#include "hf_names.h"

#include <algorithm>

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::nn::hf {

namespace {
const std::string kLayers = "layers.";

// The prefix of "<prefix>.<suffix>", if name is one.
std::optional<std::string> prefix_of(const std::string& name, const std::string& suffix) {
  if (!name.ends_with("." + suffix)) return std::nullopt;
  return name.substr(0, name.size() - suffix.size());
}

// "<prefix><i>.<rest>" -> (i, rest)
std::optional<std::pair<int64_t, std::string>> split_layer(const std::string& name, const std::string& prefix) {
  if (name.rfind(prefix, 0) != 0) return std::nullopt;
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size()) return std::nullopt;
  const std::string index = name.substr(prefix.size(), dot - prefix.size());
  if (index.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::pair{std::stoll(index), name.substr(dot + 1)};
}
}  // namespace

std::optional<std::pair<std::string, bool>> NameMap::to_hf(const std::string& kiln) const {
  for (const NameRule& r : model)
    if (r.kiln == kiln) return std::pair{r.hf, r.transpose};
  if (auto layer = split_layer(kiln, kLayers))
    for (const NameRule& r : block)
      if (r.kiln == layer->second) return std::pair{hf_layer_prefix + std::to_string(layer->first) + "." + r.hf, r.transpose};
  return std::nullopt;
}

std::optional<std::pair<std::string, bool>> NameMap::from_hf(const std::string& hf, int64_t n_layer) const {
  for (const NameRule& r : model)
    if (r.hf == hf) return std::pair{r.kiln, r.transpose};
  if (auto layer = split_layer(hf, hf_layer_prefix); layer && layer->first < n_layer)
    for (const NameRule& r : block)
      if (r.hf == layer->second) return std::pair{kLayers + std::to_string(layer->first) + "." + r.kiln, r.transpose};
  return std::nullopt;
}

std::map<std::string, Tensor> rename_to_hf(const NameMap& map, const std::map<std::string, Tensor>& full) {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : full) {
    auto hf = map.to_hf(name);
    KILN_CHECK(hf, "[hf] no Hugging Face name for '{}'", name);
    Tensor f = t.detach().to(kCPU, kFloat32);
    out[hf->first] = (hf->second ? f.t() : f).contiguous();
  }
  return out;
}

std::map<std::string, Tensor> rename_from_hf(const NameMap& map, const std::map<std::string, Tensor>& weights,
                                             int64_t n_layer, const char* family) {
  std::map<std::string, Tensor> out;
  for (const auto& [hf, t] : weights) {
    auto kiln = map.from_hf(hf, n_layer);
    KILN_CHECK(kiln, "[hf] unexpected key '{}' in a {} checkpoint of {} layers", hf, family, n_layer);
    out[kiln->first] = kiln->second ? t.t() : t;
  }
  return out;
}

std::map<std::string, Tensor> split_fused(const std::map<std::string, Tensor>& state, const std::vector<Fused>& fused,
                                          const PartSizes& sizes) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : state) {
    auto f = std::find_if(fused.begin(), fused.end(), [&](const Fused& f) { return prefix_of(name, f.name).has_value(); });
    if (f == fused.end()) {
      out[name] = t;
      continue;
    }
    const std::string prefix = *prefix_of(name, f->name);
    std::vector<int64_t> part_sizes = sizes ? sizes(name) : std::vector<int64_t>{};
    if (part_sizes.empty()) part_sizes.assign(f->parts.size(), t.size(0) / static_cast<int64_t>(f->parts.size()));
    int64_t at = 0;
    for (size_t i = 0; i < f->parts.size(); ++i) {
      out[prefix + f->parts[i]] = t.narrow(0, at, part_sizes[i]);
      at += part_sizes[i];
    }
  }
  return out;
}

std::map<std::string, Tensor> join_fused(const std::map<std::string, Tensor>& parts, const std::vector<Fused>& fused,
                                         const std::function<std::string(const std::string&)>& hf_name,
                                         const char* family) {
  std::map<std::string, Tensor> out;
  std::map<std::pair<std::string, const Fused*>, std::map<size_t, Tensor>> found;  // (prefix, fused) -> part index -> tensor
  for (const auto& [name, t] : parts) {
    bool part = false;
    for (const Fused& f : fused)
      for (size_t i = 0; i < f.parts.size(); ++i)
        if (auto prefix = prefix_of(name, f.parts[i])) {
          found[{*prefix, &f}][i] = t;
          part = true;
        }
    if (!part) out[name] = t;
  }
  for (const auto& [key, by_index] : found) {
    const auto& [prefix, f] = key;
    auto part = [&](size_t i) { return hf_name(prefix + f->parts[i]); };
    for (size_t i = 0; i < f->parts.size(); ++i)
      KILN_CHECK(by_index.count(i), "[hf] a {} checkpoint has {} but no {}", family, part(by_index.begin()->first),
                 part(i));
    std::vector<Tensor> in_order;
    for (const auto& [i, t] : by_index) in_order.push_back(t);
    out[prefix + f->name] = cat(in_order, 0);
  }
  return out;
}

std::map<std::string, Tensor> without_tied_head(const std::map<std::string, Tensor>& weights, const std::string& head,
                                                const std::string& embed, const char* family) {
  std::map<std::string, Tensor> out = weights;
  auto it = out.find(head);
  if (it == out.end()) return out;
  auto table = weights.find(embed);
  KILN_CHECK(table != weights.end() && allclose(it->second.to(kFloat32), table->second.to(kFloat32), 0, 0),
             "[{}] {} differs from {}, but the model ties them", family, head, embed);
  out.erase(it);
  return out;
}

namespace {

bool is_qkv(const std::string& name) { return name.find(".attn.qkv.") != std::string::npos; }

// t's rows as (outer, inner, rest) with the first two swapped: (3, H) blocks
// of a head's rows to (H, 3), or back with (H, 3).
Tensor swap_row_blocks(const Tensor& t, int64_t outer, int64_t inner) {
  Shape blocks{outer, inner, t.size(0) / (outer * inner)};
  for (int64_t d = 1; d < t.dim(); ++d) blocks.push_back(t.size(d));
  return t.reshape(blocks).transpose(0, 1).contiguous().reshape(t.sizes());
}

}  // namespace

Tensor qkv_rows_per_head(const Tensor& t, int64_t heads) { return swap_row_blocks(t, 3, heads); }
Tensor qkv_rows_per_kind(const Tensor& t, int64_t heads) { return swap_row_blocks(t, heads, 3); }

std::map<std::string, Tensor> rename_to_hf_per_head_qkv(const NameMap& map, const std::map<std::string, Tensor>& full,
                                                        int64_t heads) {
  std::map<std::string, Tensor> laid_out;
  for (const auto& [name, t] : full) laid_out[name] = is_qkv(name) ? qkv_rows_per_head(t.detach(), heads) : t;
  return rename_to_hf(map, laid_out);
}

std::map<std::string, Tensor> rename_from_hf_per_head_qkv(const NameMap& map,
                                                          const std::map<std::string, Tensor>& weights,
                                                          int64_t n_layer, int64_t heads, const char* family) {
  std::map<std::string, Tensor> out = rename_from_hf(map, weights, n_layer, family);
  for (auto& [name, t] : out)
    if (is_qkv(name)) t = qkv_rows_per_kind(t, heads);
  return out;
}

std::string hf_name_or_kiln(const NameMap& map, const std::string& kiln) {
  auto hf = map.to_hf(kiln);
  return hf ? hf->first : kiln;
}

std::string first_part(const std::string& name, const std::vector<Fused>& fused) {
  for (const Fused& f : fused)
    if (auto prefix = prefix_of(name, f.name)) return *prefix + f.parts[0];
  return name;
}

}  // namespace kiln::nn::hf
