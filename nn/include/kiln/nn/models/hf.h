#pragma once
// Hugging Face checkpoints of the causal language models (GPT2LMHeadModel,
// LlamaForCausalLM, MixtralForCausalLM, OPTForCausalLM, GPTNeoXForCausalLM,
// BloomForCausalLM):
// a model directory's config.json to a ModelSpec and back, and weights under
// Hugging Face's names to TransformerLM's and back. The
// family (ModelSpec::family, config.json's model_type) picks the mapping in
// the model's own folder (nn/models, a folder per family); a model of another family is
// saved under kiln's names with kiln's config.json (spec_to_json).

#include <map>
#include <string>

#include "kiln/nn/transformer_lm.h"

namespace kiln::nn::hf {

// config.json's text for spec, and the spec a config.json describes.
std::string config_json(const ModelSpec& spec);
ModelSpec spec_from_config(const std::string& json);

// A whole model's parameters (TransformerLM::full_state_dict) under Hugging
// Face's names and layout (float32, on the CPU), and back. from_weights
// raises on a key the family does not know, or a layer the spec does not have.
std::map<std::string, Tensor> to_weights(const ModelSpec& spec, const std::map<std::string, Tensor>& full);
std::map<std::string, Tensor> from_weights(const ModelSpec& spec, const std::map<std::string, Tensor>& weights);

// Loads Hugging Face weights into a model at any layout (its share of
// them); names the Hugging Face key that is missing or has the wrong shape.
// Not strict: parameters the checkpoint lacks keep their values (a reward
// model's new head on a language model's checkpoint). LoRA adapters are not
// among the weights (models/peft.h loads them).
void load_weights(TransformerLM& model, const std::map<std::string, Tensor>& weights, bool strict = true);

// Reads a model directory (config.json + model.safetensors, as Hugging Face
// or kiln writes them).
ModelSpec read_config(const std::string& directory);
std::map<std::string, Tensor> read_weights(const std::string& directory);

}  // namespace kiln::nn::hf
