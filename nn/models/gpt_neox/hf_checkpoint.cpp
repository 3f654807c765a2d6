// GPT-NeoX under Hugging Face's GPTNeoXForCausalLM names, the fused q/k/v
// projection's rows per head (hf::rename_to_hf_per_head_qkv).

#include <nlohmann/json.hpp>

#include "../hf_names.h"
#include "kiln/nn/models/gpt_neox.h"
#include "../json_fields.h"

namespace kiln::nn::gpt_neox {

namespace {

const hf::NameMap& names() {
  static const hf::NameMap map{
      "gpt_neox.layers.",
      {{"embed_tokens.weight", "gpt_neox.embed_in.weight"},
       {"norm.weight", "gpt_neox.final_layer_norm.weight"},
       {"norm.bias", "gpt_neox.final_layer_norm.bias"},
       {"lm_head.weight", "embed_out.weight"},
       {"score.weight", "score.weight"}},  // GPTNeoXForSequenceClassification (a reward model, a critic)
      {{"attn_norm.weight", "input_layernorm.weight"},
       {"attn_norm.bias", "input_layernorm.bias"},
       {"attn.qkv.weight", "attention.query_key_value.weight"},
       {"attn.qkv.bias", "attention.query_key_value.bias"},
       {"attn.out.weight", "attention.dense.weight"},
       {"attn.out.bias", "attention.dense.bias"},
       {"mlp_norm.weight", "post_attention_layernorm.weight"},
       {"mlp_norm.bias", "post_attention_layernorm.bias"},
       {"mlp.up.weight", "mlp.dense_h_to_4h.weight"},
       {"mlp.up.bias", "mlp.dense_h_to_4h.bias"},
       {"mlp.down.weight", "mlp.dense_4h_to_h.weight"},
       {"mlp.down.bias", "mlp.dense_4h_to_h.bias"}}};
  return map;
}

// Buffers that Hugging Face's older GPT-NeoX checkpoints carry.
bool is_buffer(const std::string& name) {
  return name.ends_with(".attention.bias") || name.ends_with(".attention.masked_bias") ||
         name.ends_with(".rotary_emb.inv_freq");
}

}  // namespace

std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& full, const GPTNeoXConfig& c) {
  return hf::rename_to_hf_per_head_qkv(names(), full, c.num_attention_heads);
}

std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, const GPTNeoXConfig& c) {
  std::map<std::string, Tensor> kept;
  for (const auto& [name, t] : weights)
    if (!is_buffer(name)) kept[name == "lm_head.weight" ? "embed_out.weight" : name] = t;  // transformers 5's name
  if (c.tie_word_embeddings) kept = hf::without_tied_head(kept, "embed_out.weight", "gpt_neox.embed_in.weight", "gpt_neox");
  return hf::rename_from_hf_per_head_qkv(names(), kept, c.num_hidden_layers, c.num_attention_heads, "GPT-NeoX");
}

std::string hf_name(const std::string& kiln) { return hf::hf_name_or_kiln(names(), kiln); }

std::string hf_config_json(const GPTNeoXConfig& c) {
  nlohmann::ordered_json j = {{"architectures", {"GPTNeoXForCausalLM"}},
                              {"model_type", "gpt_neox"},
                              {"vocab_size", c.vocab_size},
                              {"hidden_size", c.hidden_size},
                              {"num_hidden_layers", c.num_hidden_layers},
                              {"num_attention_heads", c.num_attention_heads},
                              {"intermediate_size", c.intermediate_size},
                              {"max_position_embeddings", c.max_position_embeddings},
                              {"rotary_pct", c.rotary_pct},
                              {"rotary_emb_base", c.rotary_emb_base},
                              {"layer_norm_eps", c.layer_norm_eps},
                              {"hidden_act", c.hidden_act},
                              {"use_parallel_residual", c.use_parallel_residual},
                              {"attention_bias", c.attention_bias},
                              {"tie_word_embeddings", c.tie_word_embeddings},
                              {"hidden_dropout", c.hidden_dropout},
                              {"attention_dropout", 0.0},
                              {"initializer_range", c.initializer_range}};
  return j.dump(2) + "\n";
}

GPTNeoXConfig from_hf_config(const std::string& text) {
  return hf::read_config_json(text, "gpt_neox", [](const nlohmann::json& j) {
    // Newer transformers keep the rotary settings in rope_parameters.
    const nlohmann::json rope = j.value("rope_parameters", nlohmann::json::object());
    GPTNeoXConfig c{.vocab_size = integer(j, "vocab_size"),
                    .hidden_size = integer(j, "hidden_size"),
                    .num_hidden_layers = integer(j, "num_hidden_layers"),
                    .num_attention_heads = integer(j, "num_attention_heads"),
                    .intermediate_size = integer(j, "intermediate_size"),
                    .max_position_embeddings = integer_or(j, "max_position_embeddings", 2048),
                    .rotary_pct = rope.value("partial_rotary_factor", j.value("rotary_pct", 0.25)),
                    .rotary_emb_base = rope.value("rope_theta", j.value("rotary_emb_base", 10000.0)),
                    .layer_norm_eps = j.value("layer_norm_eps", 1e-5),
                    .hidden_act = j.value("hidden_act", std::string("gelu")),
                    .use_parallel_residual = j.value("use_parallel_residual", true),
                    .attention_bias = j.value("attention_bias", true),
                    .tie_word_embeddings = j.value("tie_word_embeddings", false),
                    .hidden_dropout = j.value("hidden_dropout", 0.0),
                    .initializer_range = j.value("initializer_range", 0.02)};
    KILN_CHECK(!rope.contains("rope_type") || rope["rope_type"] == "default",
               "[gpt_neox] rope_type '{}': kiln's GPT-NeoX has the default rotary embedding",
               rope["rope_type"].get<std::string>());
    return c;
  });
}

}  // namespace kiln::nn::gpt_neox
