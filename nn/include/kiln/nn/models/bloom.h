#pragma once
// BLOOM (BigScience 2022): token embeddings followed by a LayerNorm, no
// position embeddings but ALiBi's per-head linear biases on the attention
// scores, pre-norm LayerNorm blocks of multi-head attention and a tanh-GELU
// MLP of 4 x hidden_size, biases everywhere, a final LayerNorm and a head
// tied to the embedding. Dropout on each block's outputs; initialized
// N(0, initializer_range).
//
// Weights load from and save to Hugging Face's BloomForCausalLM
// ("transformer.h.0.self_attention.query_key_value.weight", whose rows hold
// each head's q, k and v in turn; the released checkpoints' names without
// "transformer." read too) with the config.json its BloomConfig reads.

#include <map>
#include <string>

#include "kiln/nn/transformer_lm.h"

namespace kiln::nn {

// Hugging Face's BloomConfig fields kiln builds from.
struct BloomConfig {
  // config.json's fields, under its names and with transformers' defaults.
  int64_t vocab_size = 250880;
  int64_t hidden_size = 1024;
  int64_t n_layer = 24;
  int64_t n_head = 16;
  double layer_norm_epsilon = 1e-5;
  double initializer_range = 0.02;
  double hidden_dropout = 0.0;
  bool tie_word_embeddings = true;
  // The longest sequence kiln's trainer and checks expect; ALiBi itself has no limit.
  int64_t seq_length = 2048;

  // The model this config describes.
  ModelSpec spec() const;
  // bigscience/bloom-560m (24 x 1024) and bloom-1b7 (24 x 2048).
  static BloomConfig bloom_560m();
  static BloomConfig bloom_1b7();
};

namespace bloom {
// A whole model's parameters (TransformerLM::full_state_dict's names) under
// Hugging Face's names and layout, and back (the tied lm_head checked
// against the embedding and dropped).
std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& full, const BloomConfig& config);
std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, const BloomConfig& config);
// The Hugging Face name of one parameter.
std::string hf_name(const std::string& kiln);
// The config.json that Hugging Face's BloomConfig reads, and back (refusing
// what kiln's BLOOM does not build).
std::string hf_config_json(const BloomConfig& config);
BloomConfig from_hf_config(const std::string& json);
// The config of a BLOOM spec.
BloomConfig config_of(const ModelSpec& spec);
}  // namespace bloom

}  // namespace kiln::nn
