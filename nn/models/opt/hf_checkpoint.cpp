// OPT under Hugging Face's OPTForCausalLM names: kiln fuses q/k/v into one
// projection, Hugging Face keeps them apart.

#include <nlohmann/json.hpp>

#include "../hf_names.h"
#include "kiln/nn/models/opt.h"
#include "kiln/ops.h"
#include "../json_fields.h"

namespace kiln::nn::opt {

namespace {

const hf::NameMap& names() {
  static const hf::NameMap map{
      "model.decoder.layers.",
      {{"embed_tokens.weight", "model.decoder.embed_tokens.weight"},
       {"embed_positions.weight", "model.decoder.embed_positions.weight"},
       {"norm.weight", "model.decoder.final_layer_norm.weight"},
       {"norm.bias", "model.decoder.final_layer_norm.bias"},
       {"lm_head.weight", "lm_head.weight"},
       {"score.weight", "score.weight"}},  // OPTForSequenceClassification (a reward model, a critic)
      {{"attn_norm.weight", "self_attn_layer_norm.weight"},
       {"attn_norm.bias", "self_attn_layer_norm.bias"},
       {"attn.q.weight", "self_attn.q_proj.weight"},
       {"attn.k.weight", "self_attn.k_proj.weight"},
       {"attn.v.weight", "self_attn.v_proj.weight"},
       {"attn.q.bias", "self_attn.q_proj.bias"},
       {"attn.k.bias", "self_attn.k_proj.bias"},
       {"attn.v.bias", "self_attn.v_proj.bias"},
       {"attn.out.weight", "self_attn.out_proj.weight"},
       {"attn.out.bias", "self_attn.out_proj.bias"},
       {"mlp_norm.weight", "final_layer_norm.weight"},
       {"mlp_norm.bias", "final_layer_norm.bias"},
       {"mlp.up.weight", "fc1.weight"},
       {"mlp.up.bias", "fc1.bias"},
       {"mlp.down.weight", "fc2.weight"},
       {"mlp.down.bias", "fc2.bias"}}};
  return map;
}

const std::vector<hf::Fused>& fused_tensors() {
  static const std::vector<hf::Fused> fused{{"attn.qkv.weight", {"attn.q.weight", "attn.k.weight", "attn.v.weight"}},
                                           {"attn.qkv.bias", {"attn.q.bias", "attn.k.bias", "attn.v.bias"}}};
  return fused;
}

}  // namespace

std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& full) {
  return hf::rename_to_hf(names(), hf::split_fused(full, fused_tensors()));
}

std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, const OPTConfig& c) {
  const std::map<std::string, Tensor> kept =
      c.tie_word_embeddings ? hf::without_tied_head(weights, "lm_head.weight", "model.decoder.embed_tokens.weight", "opt")
                            : weights;
  return hf::join_fused(hf::rename_from_hf(names(), kept, c.num_hidden_layers, "OPT"), fused_tensors(), hf_name,
                        "OPT");
}

std::string hf_name(const std::string& kiln) {
  return hf::hf_name_or_kiln(names(), hf::first_part(kiln, fused_tensors()));
}

std::string hf_config_json(const OPTConfig& c) {
  nlohmann::ordered_json j = {{"architectures", {"OPTForCausalLM"}},
                              {"model_type", "opt"},
                              {"vocab_size", c.vocab_size},
                              {"hidden_size", c.hidden_size},
                              {"word_embed_proj_dim", c.hidden_size},
                              {"num_hidden_layers", c.num_hidden_layers},
                              {"ffn_dim", c.ffn_dim},
                              {"num_attention_heads", c.num_attention_heads},
                              {"max_position_embeddings", c.max_position_embeddings},
                              {"do_layer_norm_before", true},
                              {"activation_function", "relu"},
                              {"dropout", c.dropout},
                              {"attention_dropout", 0.0},
                              {"layerdrop", 0.0},
                              {"init_std", c.init_std},
                              {"enable_bias", c.enable_bias},
                              {"layer_norm_elementwise_affine", true},
                              {"tie_word_embeddings", c.tie_word_embeddings}};
  return j.dump(2) + "\n";
}

OPTConfig from_hf_config(const std::string& text) {
  return hf::read_config_json(text, "opt", [](const nlohmann::json& j) {
    const OPTConfig c{.vocab_size = integer(j, "vocab_size"),
                      .hidden_size = integer(j, "hidden_size"),
                      .num_hidden_layers = integer(j, "num_hidden_layers"),
                      .ffn_dim = integer(j, "ffn_dim"),
                      .num_attention_heads = integer(j, "num_attention_heads"),
                      .max_position_embeddings = integer(j, "max_position_embeddings"),
                      .dropout = j.value("dropout", 0.1),
                      .init_std = j.value("init_std", 0.02),
                      .enable_bias = j.value("enable_bias", true),
                      .tie_word_embeddings = j.value("tie_word_embeddings", true)};
    KILN_CHECK(j.value("do_layer_norm_before", true) && !j.value("_remove_final_layer_norm", false),
               "[opt] this OPT has post-norm blocks (do_layer_norm_before false, as opt-350m): kiln's OPT is pre-norm");
    KILN_CHECK(j.value("word_embed_proj_dim", c.hidden_size) == c.hidden_size,
               "[opt] word_embed_proj_dim {} differs from hidden_size {} (opt-350m's projected embeddings): kiln's "
               "OPT has none", j.value("word_embed_proj_dim", c.hidden_size), c.hidden_size);
    KILN_CHECK(j.value("activation_function", std::string("relu")) == "relu" &&
                   j.value("layer_norm_elementwise_affine", true),
               "[opt] kiln's OPT has a ReLU MLP and affine LayerNorms, the config asks for '{}' and {}",
               j.value("activation_function", std::string("relu")),
               j.value("layer_norm_elementwise_affine", true) ? "affine ones" : "no affine parameters");
    return c;
  });
}

}  // namespace kiln::nn::opt
