#pragma once
// OPT (Zhang et al. 2022), Meta's open GPT-3 replica: token embeddings and
// learned positions read two rows further on (fairseq's padding offset),
// pre-norm blocks of LayerNorm, multi-head attention and a ReLU MLP, all with
// biases, a final LayerNorm and a head tied to the token embedding. Dropout
// on the embeddings and each block's outputs; initialized N(0, init_std).
//
// Weights load from and save to Hugging Face's OPTForCausalLM
// ("model.decoder.layers.0.self_attn.q_proj.weight") with the config.json
// its OPTConfig reads. Every size but 350m: kiln refuses OPT-350m's post-norm
// blocks and its projection of the embeddings (word_embed_proj_dim).

#include <map>
#include <string>

#include "kiln/nn/transformer_lm.h"

namespace kiln::nn {

// Hugging Face's OPTConfig fields kiln builds from.
struct OPTConfig {
  // config.json's fields, under its names and with transformers' defaults.
  int64_t vocab_size = 50272;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t ffn_dim = 3072;
  int64_t num_attention_heads = 12;
  int64_t max_position_embeddings = 2048;
  double dropout = 0.1;
  double init_std = 0.02;
  bool enable_bias = true;
  bool tie_word_embeddings = true;

  // The model this config describes.
  ModelSpec spec() const;
  // facebook/opt-125m (12 x 768) and opt-1.3b (24 x 2048).
  static OPTConfig opt_125m();
  static OPTConfig opt_1_3b();
};

namespace opt {
// The position table's rows before position 0's.
constexpr int64_t kPositionOffset = 2;
// A whole model's parameters (TransformerLM::full_state_dict's names) under
// Hugging Face's names, q, k and v apart; and back (the tied lm_head checked
// against the embedding and dropped).
std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& full);
std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, const OPTConfig& config);
// The Hugging Face name of one parameter.
std::string hf_name(const std::string& kiln);
// The config.json that Hugging Face's OPTConfig reads, and back (refusing
// what kiln's OPT does not build).
std::string hf_config_json(const OPTConfig& config);
OPTConfig from_hf_config(const std::string& json);
// The config of an OPT spec.
OPTConfig config_of(const ModelSpec& spec);
}  // namespace opt

}  // namespace kiln::nn
