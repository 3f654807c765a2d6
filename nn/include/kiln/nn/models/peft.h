#pragma once
// LoRA adapters in Hugging Face PEFT's format: a directory of
// adapter_config.json (PEFT's LoraConfig) and adapter_model.safetensors
// (base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight), so that
// PeftModel.from_pretrained loads what kiln trains and kiln loads what PEFT
// trains. Each family's adapters sit where its Hugging Face layers are:
// Llama, Mixtral and OPT per projection (targets q, k, v, out, gate, up,
// down), GPT-2, GPT-NeoX and BLOOM on their fused q/k/v layer (qkv). A model
// of no Hugging Face family keeps kiln's names.

#include <map>
#include <string>

#include "kiln/nn/lora.h"
#include "kiln/nn/transformer_lm.h"

namespace kiln::nn::hf {

// Writes dir/adapter_config.json and dir/adapter_model.safetensors (each
// atomically) for a model of `spec` whose whole adapters are `adapters`
// (full_state_dict's adapter parameters, is_lora_parameter).
void save_peft_adapter(const std::string& dir, const ModelSpec& spec, const LoraConfig& config,
                       const std::map<std::string, Tensor>& adapters);
// A PEFT adapter directory's LoraConfig as kiln's (its targets those of the
// adapter's layers); raises on what kiln's LoRA does not do (rsLoRA, DoRA,
// trained biases, per-layer ranks, extra trained modules).
LoraConfig read_peft_config(const std::string& dir, const ModelSpec& spec);
// Adds the directory's adapters to model (add_lora with read_peft_config's
// config) and loads their values, at any layout; returns the config.
LoraConfig load_peft_adapter(const std::string& dir, TransformerLM& model, Generator& dropout_gen = default_generator());
// Loads the directory's adapter values into a model that has those adapters.
void load_peft_weights(const std::string& dir, TransformerLM& model);
// PEFT's default targets for the family: Llama's, Mixtral's and OPT's q and
// v; GPT-2's, GPT-NeoX's and BLOOM's fused qkv; q and v otherwise.
std::vector<std::string> default_lora_targets(const ModelSpec& spec);

}  // namespace kiln::nn::hf
