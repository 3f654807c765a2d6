#include "kiln/nn/models/gpt2.h"

namespace kiln::nn {

ModelSpec GPTConfig::spec() const {
  return {.family = "gpt2",
          .vocab_size = vocab_size,
          .max_positions = block_size,
          .n_layer = n_layer,
          .block = {.d_model = n_embd,
                    .norm = {.kind = NormKind::LayerNorm, .eps = 1e-5, .bias = true},
                    .placement = NormPlacement::Pre,
                    .attention = {.heads = n_head, .qkv_bias = true, .out_bias = true, .mask = AttentionMask::Causal},
                    .mlp = {.kind = MlpKind::GeluTanh, .hidden = 4 * n_embd, .bias = true},
                    .dropout = dropout,
                    .recompute = recompute},
          .learned_positions = true,
          .tie_embeddings = true,
          .embedding_dropout = dropout,
          .init_std = 0.02,
          .scale_residual_init = true,
          .compute_dtype = compute_dtype};
}

GPTConfig GPTConfig::gpt2(int depth, int64_t vocab_size, int64_t block_size) {
  // llm.c's table: channels and heads by depth (head_dim 64).
  int64_t channels = 0;
  switch (depth) {
    case 6: channels = 384; break;
    case 12: channels = 768; break;
    case 24: channels = 1024; break;
    case 36: channels = 1280; break;
    case 48: channels = 1600; break;
    default: KILN_FAIL("[GPTConfig] no GPT-2 configuration of depth {}: use 6, 12, 24, 36 or 48", depth);
  }
  return {.vocab_size = vocab_size, .block_size = block_size, .n_layer = depth, .n_head = channels / 64,
          .n_embd = channels};
}

}  // namespace kiln::nn
