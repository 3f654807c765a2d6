#pragma once
// LLaMA (Touvron et al. 2023; Llama 2 and Llama 3): token embeddings and no
// learned positions, pre-norm blocks of RMSNorm, attention with rotary
// positions (rope_theta, Llama 3's frequency scaling) and grouped-query heads
// (num_key_value_heads), a SwiGLU MLP, no biases, a final RMSNorm and an
// untied head. Initialized N(0, initializer_range), norms at one.
//
// The config's fields are Hugging Face's LlamaConfig's, and weights load from
// and save to LlamaForCausalLM ("model.layers.0.self_attn.q_proj.weight"),
// whose RoPE pairs element i with i + head_dim / 2 (rotate-half), as kiln's does.
// With experts (Mixtral, Jiang et al. 2024), MixtralForCausalLM's config and
// names ("model.layers.0.block_sparse_moe.experts.3.w1.weight").

#include <map>
#include <optional>
#include <string>

#include "kiln/nn/transformer_lm.h"

namespace kiln::nn {

// Hugging Face's LlamaConfig fields kiln builds from.
struct LlamaConfig {
  // config.json's fields, under its names and with transformers' defaults.
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 0;  // 0: as num_attention_heads
  int64_t head_dim = 0;             // 0: hidden_size / num_attention_heads
  int64_t max_position_embeddings = 4096;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;  // Llama 3.1's "llama3" scaling
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  double initializer_range = 0.02;
  double dropout = 0.0;
  std::optional<DType> compute_dtype;  // see ModelSpec
  bool recompute = false;              // see BlockSpec
  // Mixtral (MixtralForCausalLM): experts in every layer's MLP, from
  // num_local_experts, num_experts_per_tok and router_aux_loss_coef; each
  // expert a SwiGLU MLP of intermediate_size.
  std::optional<MoeSpec> moe;

  // The model this config describes, and its size and cost (see ModelSpec).
  ModelSpec spec() const;
  int64_t num_parameters() const { return spec().num_parameters(); }
  double flops_per_token(int64_t seq_len) const { return spec().flops_per_token(seq_len); }

  // Meta's published configurations.
  static LlamaConfig llama2_7b();
  static LlamaConfig llama2_13b();
  static LlamaConfig llama2_70b();
  static LlamaConfig llama3_8b();
  static LlamaConfig llama3_70b();
  static LlamaConfig llama3_2_1b();
  // By name: "llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "llama3.2-1b".
  static LlamaConfig preset(const std::string& name);
};

// Whether a block's experts are Mixtral's (every layer, softmax over the
// top-k, dropless, SwiGLU): those a Mixtral checkpoint can hold.
bool mixtral_compatible(const BlockSpec& block);

// Llama: a TransformerLM of LlamaConfig's spec.
class Llama : public TransformerLM {
 public:
  // Initialized from gen; this rank's share of each layer from factory (all on one process).
  explicit Llama(const LlamaConfig& config, Generator& gen = default_generator(), DType dtype = kFloat32,
                 Device device = kCPU, std::shared_ptr<const LayerFactory> factory = nullptr)
      : TransformerLM(config.spec(), gen, dtype, device, std::move(factory)), config_(config) {}
  const LlamaConfig& config() const { return config_; }  // vocab_size follows resize_vocab
  void resize_vocab(int64_t vocab_size, Generator& gen) override {
    TransformerLM::resize_vocab(vocab_size, gen);
    config_.vocab_size = vocab_size;
  }

 private:
  LlamaConfig config_;
};

namespace llama {
// A whole model's parameters (TransformerLM::full_state_dict's names) under
// LlamaForCausalLM's names, q/k/v and gate/up apart, and back.
std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& full, const LlamaConfig& config);
std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, const LlamaConfig& config);
std::string hf_name(const std::string& kiln);
// The config.json that Hugging Face's LlamaConfig reads, and back.
std::string hf_config_json(const LlamaConfig& config);
LlamaConfig from_hf_config(const std::string& json);
}  // namespace llama

}  // namespace kiln::nn
