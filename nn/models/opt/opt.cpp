#include "kiln/nn/models/opt.h"

namespace kiln::nn {

ModelSpec OPTConfig::spec() const {
  return {.family = "opt",
          .vocab_size = vocab_size,
          .max_positions = max_position_embeddings,
          .n_layer = num_hidden_layers,
          .block = {.d_model = hidden_size,
                    .norm = {.kind = NormKind::LayerNorm, .eps = 1e-5, .bias = true},
                    .placement = NormPlacement::Pre,
                    .attention = {.heads = num_attention_heads, .qkv_bias = enable_bias, .out_bias = enable_bias,
                                  .mask = AttentionMask::Causal},
                    .mlp = {.kind = MlpKind::Relu, .hidden = ffn_dim, .bias = enable_bias},
                    .dropout = dropout},
          .learned_positions = true,
          .position_offset = opt::kPositionOffset,
          .tie_embeddings = tie_word_embeddings,
          .embedding_dropout = dropout,
          .init_std = init_std};
}

OPTConfig OPTConfig::opt_125m() { return {}; }

OPTConfig OPTConfig::opt_1_3b() {
  return {.hidden_size = 2048, .num_hidden_layers = 24, .ffn_dim = 8192, .num_attention_heads = 32};
}

namespace opt {

OPTConfig config_of(const ModelSpec& s) {
  return {.vocab_size = s.vocab_size, .hidden_size = s.block.d_model, .num_hidden_layers = s.n_layer,
          .ffn_dim = s.block.mlp_hidden(), .num_attention_heads = s.block.attention.heads,
          .max_position_embeddings = s.max_positions, .dropout = s.block.dropout, .init_std = s.init_std,
          .enable_bias = s.block.mlp.bias, .tie_word_embeddings = s.tie_embeddings};
}

}  // namespace opt

}  // namespace kiln::nn
