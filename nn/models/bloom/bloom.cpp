#include "kiln/nn/models/bloom.h"

namespace kiln::nn {

ModelSpec BloomConfig::spec() const {
  return {.family = "bloom",
          .vocab_size = vocab_size,
          .max_positions = seq_length,
          .n_layer = n_layer,
          .block = {.d_model = hidden_size,
                    .norm = {.kind = NormKind::LayerNorm, .eps = layer_norm_epsilon, .bias = true},
                    .placement = NormPlacement::Pre,
                    .attention = {.heads = n_head, .qkv_bias = true, .out_bias = true, .alibi = true,
                                  .mask = AttentionMask::Causal},
                    .mlp = {.kind = MlpKind::GeluTanh, .hidden = 4 * hidden_size, .bias = true},
                    .dropout = hidden_dropout},
          .learned_positions = false,
          .embedding_norm = true,
          .tie_embeddings = tie_word_embeddings,
          .init_std = initializer_range};
}

BloomConfig BloomConfig::bloom_560m() { return {}; }

BloomConfig BloomConfig::bloom_1b7() { return {.hidden_size = 2048}; }

namespace bloom {

BloomConfig config_of(const ModelSpec& s) {
  KILN_CHECK(s.block.mlp_hidden() == 4 * s.block.d_model,
             "[bloom] BLOOM's MLP is 4 x hidden_size ({}), this spec's is {}", 4 * s.block.d_model,
             s.block.mlp_hidden());
  return {.vocab_size = s.vocab_size, .hidden_size = s.block.d_model, .n_layer = s.n_layer,
          .n_head = s.block.attention.heads, .layer_norm_epsilon = s.block.norm.eps, .initializer_range = s.init_std,
          .hidden_dropout = s.block.dropout, .tie_word_embeddings = s.tie_embeddings, .seq_length = s.max_positions};
}

}  // namespace bloom

}  // namespace kiln::nn
