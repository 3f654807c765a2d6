#pragma once
// GPT-2 (Radford et al. 2019) as llm.c and nanoGPT build it: token and learned
// position embeddings, pre-norm blocks of LayerNorm, multi-head attention and
// a GELU-tanh MLP of 4 C, all with biases, a final LayerNorm and a head tied
// to the token embedding. Initialized N(0, 0.02), the projections into the
// residual stream N(0, 0.02 / sqrt(2 n_layer)).
//
// Weights load from and save to Hugging Face's GPT2LMHeadModel
// ("transformer.h.0.attn.c_attn.weight", Conv1D's [in, out] layout, the tied
// head stored once) with the config.json its GPT2Config reads.

#include <map>
#include <optional>
#include <string>

#include "kiln/nn/transformer_lm.h"

namespace kiln::nn {

// GPT-2's sizes, as nanoGPT names them.
struct GPTConfig {
  // The vocabulary, the longest sequence, the layers, heads and width, and dropout.
  int64_t vocab_size = 50257;
  int64_t block_size = 1024;  // the longest sequence
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_embd = 768;
  double dropout = 0.0;
  // The activations' dtype for mixed precision (see ModelSpec).
  std::optional<DType> compute_dtype;
  bool recompute = false;  // activation recomputation (see BlockSpec)

  // The model this config describes.
  ModelSpec spec() const;
  // The vocabulary rounded up to a multiple of 128.
  int64_t padded_vocab_size() const { return (vocab_size + 127) / 128 * 128; }
  int64_t num_parameters() const { return spec().num_parameters(); }
  double flops_per_token(int64_t seq_len) const { return spec().flops_per_token(seq_len); }
  // GPT-2 family by depth as llm.c names it: d6, d12 (124M), d24 (350M), d36 (774M), d48 (1558M).
  static GPTConfig gpt2(int depth, int64_t vocab_size = 50257, int64_t block_size = 1024);
};

// GPT-2: a TransformerLM of GPTConfig's spec.
class GPT : public TransformerLM {
 public:
  // Initialized from gen; this rank's share of each layer from factory (all on one process).
  explicit GPT(const GPTConfig& config, Generator& gen = default_generator(), DType dtype = kFloat32,
               Device device = kCPU, std::shared_ptr<const LayerFactory> factory = nullptr)
      : TransformerLM(config.spec(), gen, dtype, device, std::move(factory)), config_(config) {}
  const GPTConfig& config() const { return config_; }  // vocab_size follows resize_vocab
  void resize_vocab(int64_t vocab_size, Generator& gen) override {
    TransformerLM::resize_vocab(vocab_size, gen);
    config_.vocab_size = vocab_size;
  }

 private:
  GPTConfig config_;
};

namespace gpt2 {
// A whole model's parameters (TransformerLM::full_state_dict's names, float32
// on the CPU) under Hugging Face's names and layout, and back: Conv1D weights
// transposed, the tied lm_head checked against the embedding and dropped, the
// attention-mask buffers some checkpoints carry ignored.
std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& full);
std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, int64_t n_layer);
// The Hugging Face name of one parameter.
std::string hf_name(const std::string& kiln);
// The config.json that Hugging Face's GPT2Config reads, and back.
std::string hf_config_json(const GPTConfig& config);
GPTConfig from_hf_config(const std::string& json);
}  // namespace gpt2

}  // namespace kiln::nn
