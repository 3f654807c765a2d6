#pragma once
// GPT-2 (Radford et al. 2019) as llm.c and nanoGPT build it: token and position
// embeddings, pre-norm blocks, a final LayerNorm and a head tied to the token
// embedding. The vocabulary is padded to a multiple of 128 for fast kernels;
// the padding rows are never looked up and never reach the logits or the loss.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/nn/transformer.h"

namespace kiln::nn {

struct GPTConfig {
  int64_t vocab_size = 50257;
  int64_t block_size = 1024;  // the longest sequence
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_embd = 768;
  double dropout = 0.0;
  // The activations' dtype: bfloat16 or float16 for mixed precision (the
  // parameters, their gradients and the optimizer state stay in the model's
  // dtype, float32 by default); the loss is computed in float32.
  std::optional<DType> compute_dtype;

  // The vocabulary rounded up to a multiple of 128.
  int64_t padded_vocab_size() const { return (vocab_size + 127) / 128 * 128; }
  // Parameters of the model (the padded vocabulary included).
  int64_t num_parameters() const;
  // Training FLOPs per token: 6 N + 12 L C T (llm.c, PaLM appendix B).
  double flops_per_token(int64_t seq_len) const;
  // GPT-2 family by depth as llm.c names it: d6, d12 (124M), d24 (350M), d36 (774M), d48 (1558M).
  static GPTConfig gpt2(int depth, int64_t vocab_size = 50257, int64_t block_size = 1024);
};

class GPT : public Module {
 public:
  explicit GPT(const GPTConfig& config, Generator& gen = default_generator(), DType dtype = kFloat32,
               Device device = kCPU);

  // idx (B, T) int64 token ids -> logits (B, T, vocab_size). With caches (one
  // per layer), idx holds the positions after the cached ones.
  Tensor forward(const Tensor& idx, std::vector<KVCache>* caches = nullptr) const;
  // The final LayerNorm's output (B, T, C): forward without the head.
  Tensor hidden(const Tensor& idx, std::vector<KVCache>* caches = nullptr) const;
  // The head's weight (vocab_size, C) in dtype: the real rows of the tied embedding.
  Tensor head_weight(DType dtype) const;
  // Mean cross-entropy of forward(idx) against targets (B, T); ignore_index
  // -100. Computed by linear_cross_entropy (float32, or float64 for a float64
  // model), without materializing the logits.
  Tensor loss(const Tensor& idx, const Tensor& targets) const;
  // GPT-2 initialization: N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 n_layer)), zero biases.
  void reset_parameters(Generator& gen);
  const GPTConfig& config() const { return config_; }
  double flops_per_token(int64_t seq_len) const { return config_.flops_per_token(seq_len); }

  std::shared_ptr<Embedding> wte, wpe;
  std::shared_ptr<Dropout> drop;
  std::shared_ptr<ModuleList> h;
  std::shared_ptr<LayerNorm> ln_f;

 private:
  GPTConfig config_;
};

}  // namespace kiln::nn
