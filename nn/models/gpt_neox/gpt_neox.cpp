#include "kiln/nn/models/gpt_neox.h"

namespace kiln::nn {

int64_t GPTNeoXConfig::rotary_dims() const {
  return static_cast<int64_t>(static_cast<double>(hidden_size / num_attention_heads) * rotary_pct);
}

ModelSpec GPTNeoXConfig::spec() const {
  KILN_CHECK(hidden_size > 0 && num_attention_heads > 0 && rotary_pct > 0 && rotary_pct <= 1,
             "[gpt_neox] hidden_size ({}) and num_attention_heads ({}) must be positive, rotary_pct ({}) in (0, 1]",
             hidden_size, num_attention_heads, rotary_pct);
  KILN_CHECK(hidden_act == "gelu" || hidden_act == "gelu_new",
             "[gpt_neox] hidden_act '{}': kiln's GPT-NeoX has 'gelu' (erf) and 'gelu_new' (tanh)", hidden_act);
  KILN_CHECK(rotary_dims() > 0, "[gpt_neox] rotary_pct {} rotates none of a head's {} features", rotary_pct,
             hidden_size / num_attention_heads);
  return {.family = "gpt_neox",
          .vocab_size = vocab_size,
          .max_positions = max_position_embeddings,
          .n_layer = num_hidden_layers,
          .block = {.d_model = hidden_size,
                    .norm = {.kind = NormKind::LayerNorm, .eps = layer_norm_eps, .bias = true},
                    .placement = NormPlacement::Pre,
                    .residual = use_parallel_residual ? Residual::Parallel : Residual::Sequential,
                    .attention = {.heads = num_attention_heads, .qkv_bias = attention_bias, .out_bias = attention_bias,
                                  .rope = RopeSpec{.theta = rotary_emb_base, .dims = rotary_dims()},
                                  .mask = AttentionMask::Causal},
                    .mlp = {.kind = hidden_act == "gelu" ? MlpKind::Gelu : MlpKind::GeluTanh,
                            .hidden = intermediate_size, .bias = true},
                    .dropout = hidden_dropout},
          .learned_positions = false,
          .tie_embeddings = tie_word_embeddings,
          .embedding_dropout = hidden_dropout,
          .init_std = initializer_range};
}

GPTNeoXConfig GPTNeoXConfig::pythia_160m() { return {.vocab_size = 50304}; }

GPTNeoXConfig GPTNeoXConfig::pythia_1_4b() {
  return {.vocab_size = 50304, .hidden_size = 2048, .num_hidden_layers = 24, .num_attention_heads = 16,
          .intermediate_size = 8192};
}

namespace gpt_neox {

GPTNeoXConfig config_of(const ModelSpec& s) {
  const BlockSpec& b = s.block;
  const double head = static_cast<double>(b.head_dim());
  return {.vocab_size = s.vocab_size, .hidden_size = b.d_model, .num_hidden_layers = s.n_layer,
          .num_attention_heads = b.attention.heads, .intermediate_size = b.mlp_hidden(),
          .max_position_embeddings = s.max_positions,
          .rotary_pct = static_cast<double>(b.rotary_dims()) / head,
          .rotary_emb_base = b.attention.rope ? b.attention.rope->theta : 10000.0, .layer_norm_eps = b.norm.eps,
          .hidden_act = b.mlp.kind == MlpKind::Gelu ? "gelu" : "gelu_new",
          .use_parallel_residual = b.residual == Residual::Parallel, .attention_bias = b.attention.qkv_bias,
          .tie_word_embeddings = s.tie_embeddings, .hidden_dropout = b.dropout, .initializer_range = s.init_std};
}

}  // namespace gpt_neox

}  // namespace kiln::nn
