#include "hf_names.h"

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::nn::hf {

namespace {
const std::string kLayers = "layers.";

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

}  // namespace kiln::nn::hf
