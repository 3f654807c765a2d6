#include "kiln/nn/models/hf.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kiln/autograd.h"
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

bool has_mapping(const std::string& family) {
  return family == "gpt2" || family == "llama" || family == "mixtral" || family == "opt" || family == "gpt_neox";
}
bool llama_family(const std::string& family) { return family == "llama" || family == "mixtral"; }


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
  std::string json;
  if (spec.family == "gpt2") json = gpt2::hf_config_json(gpt2_config(spec));
  else if (llama_family(spec.family)) json = llama::hf_config_json(llama_config(spec));
  else if (spec.family == "opt") json = opt::hf_config_json(opt::config_of(spec));
  else if (spec.family == "gpt_neox") json = gpt_neox::hf_config_json(gpt_neox::config_of(spec));
  else return spec_to_json(spec);
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
  ModelSpec spec;
  if (type == "gpt2") spec = gpt2::from_hf_config(json).spec();
  else if (type == "llama" || type == "mixtral") spec = llama::from_hf_config(json).spec();
  else if (type == "opt") spec = opt::from_hf_config(json).spec();
  else if (type == "gpt_neox") spec = gpt_neox::from_hf_config(json).spec();
  if (has_mapping(type)) {
    spec.lm_head = !classifier;
    return spec;
  }
  if (type == "kiln") return spec_from_json(json);
  KILN_FAIL("[hf] config.json of model_type '{}': kiln reads gpt2, llama, mixtral, opt, gpt_neox and its own "
            "(kiln)", type);
}

std::map<std::string, Tensor> to_weights(const ModelSpec& spec, const std::map<std::string, Tensor>& full) {
  if (spec.family == "gpt2") return gpt2::to_hf(full);
  if (llama_family(spec.family)) return llama::to_hf(full, llama_config(spec));
  if (spec.family == "opt") return opt::to_hf(full);
  if (spec.family == "gpt_neox") return gpt_neox::to_hf(full, gpt_neox::config_of(spec));
  std::map<std::string, Tensor> out;  // kiln's names
  for (const auto& [name, t] : full) out[name] = t.detach().to(kCPU, kFloat32).contiguous();
  return out;
}

std::map<std::string, Tensor> from_weights(const ModelSpec& spec, const std::map<std::string, Tensor>& weights) {
  if (spec.family == "gpt2") return gpt2::from_hf(weights, spec.n_layer);
  if (llama_family(spec.family)) return llama::from_hf(weights, llama_config(spec));
  if (spec.family == "opt") return opt::from_hf(weights, opt::config_of(spec));
  if (spec.family == "gpt_neox") return gpt_neox::from_hf(weights, gpt_neox::config_of(spec));
  return weights;
}

void load_weights(TransformerLM& model, const std::map<std::string, Tensor>& weights, bool strict) {
  const ModelSpec& spec = model.spec();
  auto hf_name = [&](const std::string& name) {
    if (!has_mapping(spec.family)) return name;
    if (spec.family == "gpt2") return gpt2::hf_name(name);
    if (spec.family == "gpt_neox") return gpt_neox::hf_name(name);
    return spec.family == "opt" ? opt::hf_name(name) : llama::hf_name(name);
  };
  std::map<std::string, Tensor> full = from_weights(spec, weights);
  // Shapes checked against the whole model's, named as Hugging Face names them.
  for (const auto& [name, p] : model.named_parameters()) {
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
  }
  model.load_full_state_dict(full, strict);
}

ModelSpec read_config(const std::string& directory) {
  return spec_from_config(read_file((std::filesystem::path(directory) / "config.json").string()));
}

std::map<std::string, Tensor> read_weights(const std::string& directory) {
  return load_safetensors((std::filesystem::path(directory) / "model.safetensors").string()).tensors;
}

}  // namespace kiln::nn::hf
