#include "kiln/nn/models/llama.h"

namespace kiln::nn {

ModelSpec LlamaConfig::spec() const {
  ModelSpec s{.family = moe ? "mixtral" : "llama",
          .vocab_size = vocab_size,
          .max_positions = max_position_embeddings,
          .n_layer = num_hidden_layers,
          .block = {.d_model = hidden_size,
                    .norm = {.kind = NormKind::RMSNorm, .eps = rms_norm_eps, .bias = false},
                    .placement = NormPlacement::Pre,
                    .attention = {.heads = num_attention_heads,
                                  .kv_heads = num_key_value_heads,
                                  .head_dim = head_dim,
                                  .qkv_bias = attention_bias,
                                  .out_bias = attention_bias,
                                  .rope = RopeSpec{rope_theta, rope_scaling},
                                  .mask = AttentionMask::Causal},
                    .mlp = {.kind = MlpKind::SwiGLU, .hidden = intermediate_size, .bias = mlp_bias},
                    .dropout = dropout,
                    .recompute = recompute},
          .learned_positions = false,
          .tie_embeddings = tie_word_embeddings,
          .embedding_dropout = 0.0,
          .init_std = initializer_range,
          .scale_residual_init = false,
          .compute_dtype = compute_dtype};
  s.block.mlp.moe = moe;
  return s;
}

bool mixtral_compatible(const BlockSpec& block) {
  const auto& m = block.mlp.moe;
  return m && m->every == 1 && m->score == RouterScore::TopKThenSoftmax && m->capacity_factor == 0 &&
         block.mlp.kind == MlpKind::SwiGLU && !block.mlp.bias;
}

LlamaConfig LlamaConfig::llama2_7b() { return {}; }

LlamaConfig LlamaConfig::llama2_13b() {
  return {.hidden_size = 5120, .intermediate_size = 13824, .num_hidden_layers = 40, .num_attention_heads = 40};
}

LlamaConfig LlamaConfig::llama2_70b() {
  return {.hidden_size = 8192, .intermediate_size = 28672, .num_hidden_layers = 80, .num_attention_heads = 64,
          .num_key_value_heads = 8};
}

LlamaConfig LlamaConfig::llama3_8b() {
  return {.vocab_size = 128256, .hidden_size = 4096, .intermediate_size = 14336, .num_hidden_layers = 32,
          .num_attention_heads = 32, .num_key_value_heads = 8, .max_position_embeddings = 8192,
          .rope_theta = 500000.0};
}

LlamaConfig LlamaConfig::llama3_70b() {
  LlamaConfig c = llama3_8b();
  c.hidden_size = 8192;
  c.intermediate_size = 28672;
  c.num_hidden_layers = 80;
  c.num_attention_heads = 64;
  return c;
}

LlamaConfig LlamaConfig::llama3_2_1b() {
  return {.vocab_size = 128256, .hidden_size = 2048, .intermediate_size = 8192, .num_hidden_layers = 16,
          .num_attention_heads = 32, .num_key_value_heads = 8, .head_dim = 64, .max_position_embeddings = 131072,
          .rope_theta = 500000.0, .rope_scaling = RopeScaling{32.0, 1.0, 4.0, 8192}, .tie_word_embeddings = true};
}

LlamaConfig LlamaConfig::preset(const std::string& name) {
  if (name == "llama2-7b") return llama2_7b();
  if (name == "llama2-13b") return llama2_13b();
  if (name == "llama2-70b") return llama2_70b();
  if (name == "llama3-8b") return llama3_8b();
  if (name == "llama3-70b") return llama3_70b();
  if (name == "llama3.2-1b") return llama3_2_1b();
  KILN_FAIL("[LlamaConfig] no preset '{}': use llama2-7b, llama2-13b, llama2-70b, llama3-8b, llama3-70b or "
            "llama3.2-1b", name);
}

}  // namespace kiln::nn
