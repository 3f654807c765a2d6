#pragma once
// Renaming one model's parameters to a Hugging Face family's names: rules for
// the tensors outside the blocks and for each block's ("layers.{i}." in kiln,
// the family's per-layer prefix in Hugging Face). Private to nn/models.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kiln/tensor.h"

namespace kiln::nn::hf {

struct NameRule {
  std::string kiln, hf;    // names, or suffixes after the layer prefix for block rules
  bool transpose = false;  // stored transposed by Hugging Face (GPT-2's Conv1D)
};

struct NameMap {
  std::string hf_layer_prefix;  // "transformer.h." or "model.layers."
  std::vector<NameRule> model, block;

  // The Hugging Face name of a kiln name (and whether it is transposed), if a rule knows it.
  std::optional<std::pair<std::string, bool>> to_hf(const std::string& kiln) const;
  // The kiln name of a Hugging Face name, and the layer index for block names.
  std::optional<std::pair<std::string, bool>> from_hf(const std::string& hf, int64_t n_layer) const;
};

// Renames (and transposes) every tensor; raises, naming `family`, on a name no rule knows.
std::map<std::string, Tensor> rename_to_hf(const NameMap& map, const std::map<std::string, Tensor>& full);
std::map<std::string, Tensor> rename_from_hf(const NameMap& map, const std::map<std::string, Tensor>& weights,
                                             int64_t n_layer, const char* family);

}  // namespace kiln::nn::hf
