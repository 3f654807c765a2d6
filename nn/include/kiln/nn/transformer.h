#pragma once
// The transformer pieces: causal self-attention (multi-head or grouped-query,
// optional RoPE, KV cache for generation), the MLP, and the pre-norm block.
// Names follow Hugging Face's GPT-2 (c_attn, c_proj, c_fc, ln_1, ln_2).

#include <memory>

#include "kiln/nn/layers.h"
#include "kiln/nn/linear.h"

namespace kiln::nn {

struct TransformerOptions {
  int64_t n_embd = 768;
  int64_t n_head = 12;
  int64_t n_kv_head = 0;   // 0: as n_head (multi-head); fewer: grouped-query attention
  double dropout = 0.0;
  bool bias = true;        // biases in linear layers and LayerNorm
  bool rope = false;       // rotary position embedding on q and k
  double rope_theta = 10000.0;
  int64_t n_layer = 12;    // scales the residual projections' initialization
  DType dtype = kFloat32;
  Device device = kCPU;

  int64_t kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
  int64_t head_dim() const { return n_embd / n_head; }
};

// Keys and values of the positions seen so far, for one layer: (B, Hkv, T, D).
struct KVCache {
  Tensor k, v;
  int64_t length() const { return k.defined() ? k.size(2) : 0; }
};

// The attention of a fused projection: qkv (B, T, (n_head + 2 n_kv_head) D)
// holds the queries, keys and values of every head in that order; returns the
// heads' outputs (B, T, n_head D), causal, RoPE on q and k when rope_theta > 0.
// With a cache, qkv holds the positions after the cached ones (see forward).
// Shared by CausalSelfAttention and its tensor-parallel twin, which passes
// the heads of its rank.
Tensor causal_attention(const Tensor& qkv, int64_t n_head, int64_t n_kv_head, double rope_theta = 0.0,
                        KVCache* cache = nullptr);

class CausalSelfAttention : public Module {
 public:
  CausalSelfAttention(const TransformerOptions& options, Generator& gen);
  // x (B, T, C) -> (B, T, C). With a cache, x holds the positions after the
  // cached ones, which are attended to and then extended with x's keys/values.
  Tensor forward(const Tensor& x, KVCache* cache = nullptr) const;

  std::shared_ptr<Linear> c_attn;  // C -> (n_head + 2 n_kv_head) * head_dim
  std::shared_ptr<Linear> c_proj;  // C -> C
  std::shared_ptr<Dropout> resid_dropout;

 private:
  TransformerOptions options_;
};

class MLP : public Module {
 public:
  MLP(const TransformerOptions& options, Generator& gen);
  // x (..., C) -> (..., C): c_proj(gelu_tanh(c_fc(x)))
  Tensor forward(const Tensor& x) const;

  std::shared_ptr<Linear> c_fc;    // C -> 4C
  std::shared_ptr<Linear> c_proj;  // 4C -> C
  std::shared_ptr<Dropout> dropout;
};

// x + attn(ln_1(x)), then + mlp(ln_2(x)).
class Block : public Module {
 public:
  Block(const TransformerOptions& options, Generator& gen);
  Tensor forward(const Tensor& x, KVCache* cache = nullptr) const;

  std::shared_ptr<LayerNorm> ln_1, ln_2;
  std::shared_ptr<CausalSelfAttention> attn;
  std::shared_ptr<MLP> mlp;
};

}  // namespace kiln::nn
