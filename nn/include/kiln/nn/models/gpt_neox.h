#pragma once
// GPT-NeoX (Black et al. 2022) and the Pythia suite built on it: token
// embeddings, pre-norm LayerNorm blocks whose attention and MLP run side by
// side from the block's input (use_parallel_residual, each with its own norm),
// rotary positions on the first quarter of each head (rotary_pct), a GELU MLP,
// biases everywhere, a final LayerNorm and an untied head. Initialized
// N(0, initializer_range).
//
// Weights load from and save to Hugging Face's GPTNeoXForCausalLM
// ("gpt_neox.layers.0.attention.query_key_value.weight", whose rows hold each
// head's q, k and v in turn; the head as "embed_out.weight", the name the
// released checkpoints use, "lm_head.weight" read too) with the config.json
// its GPTNeoXConfig reads.

#include <map>
#include <string>

#include "kiln/nn/transformer_lm.h"

namespace kiln::nn {

// Hugging Face's GPTNeoXConfig fields kiln builds from.
struct GPTNeoXConfig {
  // config.json's fields, under its names and with transformers' defaults.
  int64_t vocab_size = 50432;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  int64_t max_position_embeddings = 2048;
  double rotary_pct = 0.25;  // of each head's features that rotate
  double rotary_emb_base = 10000.0;
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "gelu";  // "gelu" (erf) or "gelu_new" (tanh)
  bool use_parallel_residual = true;
  bool attention_bias = true;
  bool tie_word_embeddings = false;
  double hidden_dropout = 0.0;
  double initializer_range = 0.02;

  // The model this config describes.
  ModelSpec spec() const;
  // The features of a head that rotate: int(head size x rotary_pct), as Hugging Face rounds.
  int64_t rotary_dims() const;
  // EleutherAI/pythia-160m (12 x 768) and pythia-1.4b (24 x 2048).
  static GPTNeoXConfig pythia_160m();
  static GPTNeoXConfig pythia_1_4b();
};

namespace gpt_neox {
// A whole model's parameters (TransformerLM::full_state_dict's names) under
// Hugging Face's names and layout, and back.
std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& full, const GPTNeoXConfig& config);
std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, const GPTNeoXConfig& config);
// The Hugging Face name of one parameter.
std::string hf_name(const std::string& kiln);
// The config.json that Hugging Face's GPTNeoXConfig reads (older and newer
// transformers alike), and back.
std::string hf_config_json(const GPTNeoXConfig& config);
GPTNeoXConfig from_hf_config(const std::string& json);
// The config of a GPT-NeoX spec.
GPTNeoXConfig config_of(const ModelSpec& spec);
}  // namespace gpt_neox

}  // namespace kiln::nn
