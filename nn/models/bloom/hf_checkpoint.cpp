// BLOOM under Hugging Face's BloomForCausalLM names, the fused q/k/v
// projection's rows per head (hf::rename_to_hf_per_head_qkv).

#include <nlohmann/json.hpp>

#include "../hf_names.h"
#include "kiln/nn/models/bloom.h"
#include "../json_fields.h"

namespace kiln::nn::bloom {

namespace {

const hf::NameMap& names() {
  static const hf::NameMap map{
      "transformer.h.",
      {{"embed_tokens.weight", "transformer.word_embeddings.weight"},
       {"embed_norm.weight", "transformer.word_embeddings_layernorm.weight"},
       {"embed_norm.bias", "transformer.word_embeddings_layernorm.bias"},
       {"norm.weight", "transformer.ln_f.weight"},
       {"norm.bias", "transformer.ln_f.bias"},
       {"lm_head.weight", "lm_head.weight"},
       {"score.weight", "score.weight"}},  // BloomForSequenceClassification (a reward model, a critic)
      {{"attn_norm.weight", "input_layernorm.weight"},
       {"attn_norm.bias", "input_layernorm.bias"},
       {"attn.qkv.weight", "self_attention.query_key_value.weight"},
       {"attn.qkv.bias", "self_attention.query_key_value.bias"},
       {"attn.out.weight", "self_attention.dense.weight"},
       {"attn.out.bias", "self_attention.dense.bias"},
       {"mlp_norm.weight", "post_attention_layernorm.weight"},
       {"mlp_norm.bias", "post_attention_layernorm.bias"},
       {"mlp.up.weight", "mlp.dense_h_to_4h.weight"},
       {"mlp.up.bias", "mlp.dense_h_to_4h.bias"},
       {"mlp.down.weight", "mlp.dense_4h_to_h.weight"},
       {"mlp.down.bias", "mlp.dense_4h_to_h.bias"}}};
  return map;
}

// BigScience's released checkpoints were saved from BloomModel: no
// "transformer." before the backbone's names.
std::map<std::string, Tensor> with_backbone_prefix(const std::map<std::string, Tensor>& weights) {
  for (const auto& [name, t] : weights)
    if (name.starts_with("transformer.")) return weights;
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : weights)
    out[name == "lm_head.weight" || name == "score.weight" ? name : "transformer." + name] = t;
  return out;
}

}  // namespace

std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& full, const BloomConfig& c) {
  return hf::rename_to_hf_per_head_qkv(names(), full, c.n_head);
}

std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, const BloomConfig& c) {
  std::map<std::string, Tensor> kept = with_backbone_prefix(weights);
  if (c.tie_word_embeddings)
    kept = hf::without_tied_head(kept, "lm_head.weight", "transformer.word_embeddings.weight", "bloom");
  return hf::rename_from_hf_per_head_qkv(names(), kept, c.n_layer, c.n_head, "BLOOM");
}

std::string hf_name(const std::string& kiln) { return hf::hf_name_or_kiln(names(), kiln); }

std::string hf_config_json(const BloomConfig& c) {
  nlohmann::ordered_json j = {{"architectures", {"BloomForCausalLM"}},
                              {"model_type", "bloom"},
                              {"vocab_size", c.vocab_size},
                              {"hidden_size", c.hidden_size},
                              {"n_layer", c.n_layer},
                              {"n_head", c.n_head},
                              {"layer_norm_epsilon", c.layer_norm_epsilon},
                              {"initializer_range", c.initializer_range},
                              {"apply_residual_connection_post_layernorm", false},
                              {"hidden_dropout", c.hidden_dropout},
                              {"attention_dropout", 0.0},
                              {"tie_word_embeddings", c.tie_word_embeddings},
                              {"seq_length", c.seq_length}};
  return j.dump(2) + "\n";
}

BloomConfig from_hf_config(const std::string& text) {
  return hf::read_config_json(text, "bloom", [](const nlohmann::json& j) {
    KILN_CHECK(!j.value("apply_residual_connection_post_layernorm", false),
               "[bloom] apply_residual_connection_post_layernorm: kiln's BLOOM adds each block's input to its "
               "outputs, not the normed input");
    // Older configs name the width n_embed (which wins, as in BloomConfig); the
    // common names of layers and heads are read too.
    auto either = [&](const char* name, const char* other) {
      return integer(j, j.contains(name) ? name : other);
    };
    return BloomConfig{.vocab_size = integer(j, "vocab_size"),
                       .hidden_size = either("n_embed", "hidden_size"),
                       .n_layer = either("n_layer", "num_hidden_layers"),
                       .n_head = either("n_head", "num_attention_heads"),
                       .layer_norm_epsilon = j.value("layer_norm_epsilon", 1e-5),
                       .initializer_range = j.value("initializer_range", 0.02),
                       .hidden_dropout = j.value("hidden_dropout", 0.0),
                       .tie_word_embeddings = j.value("tie_word_embeddings", true),
                       .seq_length = integer_or(j, "seq_length", 2048)};
  });
}

}  // namespace kiln::nn::bloom
