#include "kiln/nn/models/hf.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kiln/autograd.h"
#include "kiln/nn/lora.h"
#include "kiln/nn/models/bloom.h"
#include "kiln/nn/models/gpt2.h"
#include "kiln/nn/models/gpt_neox.h"
#include "kiln/nn/models/llama.h"
#include "kiln/nn/models/opt.h"
#include "kiln/serialize.h"

namespace kiln::nn::hf {

namespace {

GPTConfig gpt2_config(const ModelSpec& s) {
  return {.vocab_size = s.vocab_size, .block_size = s.max_positions, .n_layer = s.n_layer,
          .n_head = s.block.attention.heads, .n_embd = s.block.d_model, .dropout = s.block.dropout};
}

LlamaConfig llama_config(const ModelSpec& s) {
  const BlockSpec& b = s.block;
  const RopeSpec rope = b.attention.rope.value_or(RopeSpec{});
  return {.vocab_size = s.vocab_size, .hidden_size = b.d_model, .intermediate_size = b.mlp_hidden(),
          .num_hidden_layers = s.n_layer, .num_attention_heads = b.attention.heads, .num_key_value_heads = b.kv_heads(),
          .head_dim = b.head_dim(), .max_position_embeddings = s.max_positions, .rms_norm_eps = b.norm.eps,
          .rope_theta = rope.theta, .rope_scaling = rope.scaling, .tie_word_embeddings = s.tie_embeddings,
          .attention_bias = b.attention.qkv_bias, .mlp_bias = b.mlp.bias, .initializer_range = s.init_std,
          .dropout = b.dropout, .moe = b.mlp.moe};
}

// What kiln knows of one Hugging Face family of causal models: its config.json
// both ways, its weights' names and layout both ways, and one parameter's name.
struct Family {
  std::vector<std::string> model_types;  // config.json's model_type, ModelSpec::family
  std::function<std::string(const ModelSpec&)> config_json;
  std::function<ModelSpec(const std::string& json)> spec;
  std::function<std::map<std::string, Tensor>(const ModelSpec&, const std::map<std::string, Tensor>&)> to_hf, from_hf;
  std::function<std::string(const std::string& kiln)> hf_name;
};

const std::vector<Family>& families() {
  using Weights = std::map<std::string, Tensor>;
  static const std::vector<Family> all{
      {{"gpt2"},
       [](const ModelSpec& s) { return gpt2::hf_config_json(gpt2_config(s)); },
       [](const std::string& j) { return gpt2::from_hf_config(j).spec(); },
       [](const ModelSpec&, const Weights& w) { return gpt2::to_hf(w); },
       [](const ModelSpec& s, const Weights& w) { return gpt2::from_hf(w, s.n_layer); },
       gpt2::hf_name},
      {{"llama", "mixtral"},
       [](const ModelSpec& s) { return llama::hf_config_json(llama_config(s)); },
       [](const std::string& j) { return llama::from_hf_config(j).spec(); },
       [](const ModelSpec& s, const Weights& w) { return llama::to_hf(w, llama_config(s)); },
       [](const ModelSpec& s, const Weights& w) { return llama::from_hf(w, llama_config(s)); },
       llama::hf_name},
      {{"opt"},
       [](const ModelSpec& s) { return opt::hf_config_json(opt::config_of(s)); },
       [](const std::string& j) { return opt::from_hf_config(j).spec(); },
       [](const ModelSpec&, const Weights& w) { return opt::to_hf(w); },
       [](const ModelSpec& s, const Weights& w) { return opt::from_hf(w, opt::config_of(s)); },
       opt::hf_name},
      {{"gpt_neox"},
       [](const ModelSpec& s) { return gpt_neox::hf_config_json(gpt_neox::config_of(s)); },
       [](const std::string& j) { return gpt_neox::from_hf_config(j).spec(); },
       [](const ModelSpec& s, const Weights& w) { return gpt_neox::to_hf(w, gpt_neox::config_of(s)); },
       [](const ModelSpec& s, const Weights& w) { return gpt_neox::from_hf(w, gpt_neox::config_of(s)); },
       gpt_neox::hf_name},
      {{"bloom"},
       [](const ModelSpec& s) { return bloom::hf_config_json(bloom::config_of(s)); },
       [](const std::string& j) { return bloom::from_hf_config(j).spec(); },
       [](const ModelSpec& s, const Weights& w) { return bloom::to_hf(w, bloom::config_of(s)); },
       [](const ModelSpec& s, const Weights& w) { return bloom::from_hf(w, bloom::config_of(s)); },
       bloom::hf_name}};
  return all;
}

// The family of a model_type, or null for kiln's own names.
const Family* family_of(const std::string& type) {
  for (const Family& f : families())
    if (std::find(f.model_types.begin(), f.model_types.end(), type) != f.model_types.end()) return &f;
  return nullptr;
}

}  // namespace

// A model without its language-model head (a reward model, a critic) is
// Hugging Face's *ForSequenceClassification with one label.
std::string as_sequence_classifier(const std::string& json) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(json);
  std::string architecture = j["architectures"][0].get<std::string>();
  architecture = architecture.substr(0, architecture.find("For")) + "ForSequenceClassification";
  j["architectures"] = {architecture};
  j["num_labels"] = 1;
  return j.dump(2) + "\n";
}

std::string config_json(const ModelSpec& spec) {
  const Family* f = family_of(spec.family);
  if (!f) return spec_to_json(spec);
  const std::string json = f->config_json(spec);
  return spec.lm_head ? json : as_sequence_classifier(json);
}

ModelSpec spec_from_config(const std::string& json) {
  std::string type;
  bool classifier = false;
  try {
    const nlohmann::json j = nlohmann::json::parse(json);
    type = j.value("model_type", "");
    if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty())
      classifier = j["architectures"][0].get<std::string>().ends_with("ForSequenceClassification");
  } catch (const nlohmann::json::exception& e) {
    KILN_FAIL("[hf] config.json is not valid JSON: {}", e.what());
  }
  if (const Family* f = family_of(type)) {
    ModelSpec spec = f->spec(json);
    spec.lm_head = !classifier;
    spec.check();  // a damaged config stops here, before anything is allocated
    return spec;
  }
  if (type == "kiln") return spec_from_json(json);
  std::string known;
  for (const Family& f : families())
    for (const std::string& t : f.model_types) known += t + ", ";
  KILN_FAIL("[hf] config.json of model_type '{}': kiln reads {}and its own (kiln)", type, known);
}

std::map<std::string, Tensor> to_weights(const ModelSpec& spec, const std::map<std::string, Tensor>& full) {
  if (const Family* f = family_of(spec.family)) return f->to_hf(spec, full);
  std::map<std::string, Tensor> out;  // kiln's names
  for (const auto& [name, t] : full) out[name] = t.detach().to(kCPU, kFloat32).contiguous();
  return out;
}

std::map<std::string, Tensor> from_weights(const ModelSpec& spec, const std::map<std::string, Tensor>& weights) {
  const Family* f = family_of(spec.family);
  return f ? f->from_hf(spec, weights) : weights;
}

void load_weights(TransformerLM& model, const std::map<std::string, Tensor>& weights, bool strict) {
  const ModelSpec& spec = model.spec();
  const Family* family = family_of(spec.family);
  auto hf_name = [&](const std::string& name) { return family ? family->hf_name(name) : name; };
  std::map<std::string, Tensor> full = from_weights(spec, weights);
  // Shapes checked against the whole model's, named as Hugging Face names them.
  for (const auto& [name, p] : model.named_parameters()) {
    if (is_lora_parameter(name)) continue;  // adapters come from their own file (models/peft.h)
    auto it = full.find(name);
    if (it == full.end() && !strict) continue;
    KILN_CHECK(it != full.end(), "[hf] the checkpoint has no '{}'", hf_name(name));
    const ShardSpec shard = model.shard_spec(name);
    Shape want = p.sizes();
    if (!shard.replicated()) {
      want[static_cast<size_t>(shard.dim)] *= model.layout().shard_ranks(shard);
      if (shard.valid >= 0) want[static_cast<size_t>(shard.dim)] = shard.valid;
    }
    KILN_CHECK(it->second.sizes() == want, "[hf] '{}' gives {} of shape [{}], the model expects [{}]", hf_name(name),
               name, fmt::join(it->second.sizes(), ", "), fmt::join(want, ", "));
    // A sum is finite only when every value is (weights are far below float32's overflow).
    KILN_CHECK(!is_floating(it->second.dtype()) || std::isfinite(sum(it->second).item<double>()),
               "[hf] '{}' holds NaN or infinite values: the checkpoint is damaged (or saved from a diverged run)",
               hf_name(name));
  }
  model.load_full_state_dict(full, strict && !lora_config(model));
}

ModelSpec read_config(const std::string& directory) {
  return spec_from_config(read_file((std::filesystem::path(directory) / "config.json").string()));
}

std::map<std::string, Tensor> read_weights(const std::string& directory) {
  return load_safetensors((std::filesystem::path(directory) / "model.safetensors").string()).tensors;
}

}  // namespace kiln::nn::hf
