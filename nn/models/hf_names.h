#pragma once
// Renaming one model's parameters to a Hugging Face family's names: rules for
// the tensors outside the blocks and for each block's ("layers.{i}." in kiln,
// the family's per-layer prefix in Hugging Face). Private to nn/models.

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
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

// A kiln tensor that Hugging Face keeps as parts along dim 0 (q, k and v in
// one projection).
struct Fused {
  std::string name;                // kiln suffix after a layer's prefix: "attn.qkv.weight"
  std::vector<std::string> parts;  // the parts' suffixes, in order: "attn.q.weight", ...
};
// The sizes of a fused tensor's parts by its full kiln name; equal parts when
// not given.
using PartSizes = std::function<std::vector<int64_t>(const std::string& name)>;

// Every tensor named "<prefix>.<fused name>" cut into its "<prefix>.<part>"s;
// the others as they are.
std::map<std::string, Tensor> split_fused(const std::map<std::string, Tensor>& state, const std::vector<Fused>& fused,
                                          const PartSizes& sizes = {});
// The parts joined back into their fused tensors; raises, naming `family`
// and the missing part by its Hugging Face name (hf_name of its kiln name),
// when only some of a tensor's parts are there.
std::map<std::string, Tensor> join_fused(const std::map<std::string, Tensor>& parts, const std::vector<Fused>& fused,
                                         const std::function<std::string(const std::string&)>& hf_name,
                                         const char* family);
// read(j) of config.json's text parsed: raises, naming `family`, when the
// text is not JSON or lacks a field read asks for (j.at).
template <typename Read>
auto read_config_json(const std::string& text, const char* family, Read read) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    KILN_FAIL("[{}] config.json is not valid JSON: {}", family, e.what());
  }
  try {
    return read(j);
  } catch (const nlohmann::json::exception& e) {
    KILN_FAIL("[{}] config.json lacks a field or has one of the wrong type: {}", family, e.what());
  }
}

// weights without the head `head`, which a tied model's checkpoint may carry
// beside the embedding `embed`: raises, naming `family`, unless the two are equal.
std::map<std::string, Tensor> without_tied_head(const std::map<std::string, Tensor>& weights, const std::string& head,
                                                const std::string& embed, const char* family);
// A fused q/k/v projection's rows (or a LoRA B beside it) between kiln's
// layout (all queries, then all keys, then all values) and the per-head one
// of GPT-NeoX and BLOOM (each head's query, key and value in turn).
Tensor qkv_rows_per_head(const Tensor& t, int64_t heads);
Tensor qkv_rows_per_kind(const Tensor& t, int64_t heads);
// rename_to_hf and rename_from_hf for a family whose fused q/k/v projection
// ("attn.qkv.*") holds each head's query, key and value rows in turn
// (GPT-NeoX, BLOOM), where kiln's holds all queries, then all keys, then all values.
std::map<std::string, Tensor> rename_to_hf_per_head_qkv(const NameMap& map, const std::map<std::string, Tensor>& full,
                                                        int64_t heads);
std::map<std::string, Tensor> rename_from_hf_per_head_qkv(const NameMap& map,
                                                          const std::map<std::string, Tensor>& weights,
                                                          int64_t n_layer, int64_t heads, const char* family);
// A map's Hugging Face name for a kiln name, or the kiln name when no rule knows it.
std::string hf_name_or_kiln(const NameMap& map, const std::string& kiln);
// The name of a fused tensor's first part ("layers.0.attn.q.weight"), which
// names it in messages; any other name as it is.
std::string first_part(const std::string& name, const std::vector<Fused>& fused);

}  // namespace kiln::nn::hf
