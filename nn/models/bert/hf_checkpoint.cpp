// BERT under Hugging Face's BertForPreTraining names: kiln fuses q/k/v into
// one projection; the masked-LM decoder's weight is the word embeddings and
// its bias kiln's mlm_bias, which Hugging Face stores twice
// (cls.predictions.bias and cls.predictions.decoder.bias).

#include <nlohmann/json.hpp>

#include "../hf_names.h"
#include "kiln/autograd.h"
#include "kiln/nn/models/bert.h"
#include "kiln/ops.h"
#include "../json_fields.h"

namespace kiln::nn::bert {

namespace {

const hf::NameMap& names() {
  static const hf::NameMap map{
      "bert.encoder.layer.",
      {{"embed_tokens.weight", "bert.embeddings.word_embeddings.weight"},
       {"embed_positions.weight", "bert.embeddings.position_embeddings.weight"},
       {"embed_types.weight", "bert.embeddings.token_type_embeddings.weight"},
       {"embed_norm.weight", "bert.embeddings.LayerNorm.weight"},
       {"embed_norm.bias", "bert.embeddings.LayerNorm.bias"},
       {"pooler.weight", "bert.pooler.dense.weight"},
       {"pooler.bias", "bert.pooler.dense.bias"},
       {"transform.weight", "cls.predictions.transform.dense.weight"},
       {"transform.bias", "cls.predictions.transform.dense.bias"},
       {"transform_norm.weight", "cls.predictions.transform.LayerNorm.weight"},
       {"transform_norm.bias", "cls.predictions.transform.LayerNorm.bias"},
       {"mlm_bias", "cls.predictions.bias"},
       {"nsp.weight", "cls.seq_relationship.weight"},
       {"nsp.bias", "cls.seq_relationship.bias"}},
      {{"attn.q.weight", "attention.self.query.weight"},
       {"attn.k.weight", "attention.self.key.weight"},
       {"attn.v.weight", "attention.self.value.weight"},
       {"attn.q.bias", "attention.self.query.bias"},
       {"attn.k.bias", "attention.self.key.bias"},
       {"attn.v.bias", "attention.self.value.bias"},
       {"attn.out.weight", "attention.output.dense.weight"},
       {"attn.out.bias", "attention.output.dense.bias"},
       {"attn_norm.weight", "attention.output.LayerNorm.weight"},
       {"attn_norm.bias", "attention.output.LayerNorm.bias"},
       {"mlp.up.weight", "intermediate.dense.weight"},
       {"mlp.up.bias", "intermediate.dense.bias"},
       {"mlp.down.weight", "output.dense.weight"},
       {"mlp.down.bias", "output.dense.bias"},
       {"mlp_norm.weight", "output.LayerNorm.weight"},
       {"mlp_norm.bias", "output.LayerNorm.bias"}}};
  return map;
}

const std::vector<hf::Fused>& fused_tensors() {
  static const std::vector<hf::Fused> fused{
      {"attn.qkv.weight", {"attn.q.weight", "attn.k.weight", "attn.v.weight"}},
      {"attn.qkv.bias", {"attn.q.bias", "attn.k.bias", "attn.v.bias"}}};
  return fused;
}

const char* kDecoderWeight = "cls.predictions.decoder.weight";
const char* kDecoderBias = "cls.predictions.decoder.bias";

}  // namespace

std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& state) {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> out = hf::rename_to_hf(names(), hf::split_fused(state, fused_tensors()));
  out[kDecoderWeight] = out.at("bert.embeddings.word_embeddings.weight");
  out[kDecoderBias] = out.at("cls.predictions.bias");
  return out;
}

std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, const BertConfig& config) {
  std::map<std::string, Tensor> kept;
  for (const auto& [name, t] : weights) {
    if (name == kDecoderWeight || name == kDecoderBias) {  // tied: must equal what they are tied to
      const char* tied = name == kDecoderWeight ? "bert.embeddings.word_embeddings.weight" : "cls.predictions.bias";
      auto it = weights.find(tied);
      KILN_CHECK(it != weights.end() && allclose(t.to(kFloat32), it->second.to(kFloat32), 0, 0),
                 "[bert] {} differs from {}, to which BERT ties it", name, tied);
      continue;
    }
    if (name.ends_with("position_ids")) continue;  // a buffer some checkpoints carry
    kept[name] = t;
  }
  return hf::join_fused(hf::rename_from_hf(names(), kept, config.num_hidden_layers, "BERT"), fused_tensors(),
                        [](const std::string& name) { return hf::hf_name_or_kiln(names(), name); }, "BERT");
}

std::string hf_config_json(const BertConfig& c) {
  nlohmann::ordered_json j = {{"architectures", {"BertForPreTraining"}},
                              {"model_type", "bert"},
                              {"vocab_size", c.vocab_size},
                              {"hidden_size", c.hidden_size},
                              {"num_hidden_layers", c.num_hidden_layers},
                              {"num_attention_heads", c.num_attention_heads},
                              {"intermediate_size", c.intermediate_size},
                              {"hidden_act", "gelu"},
                              {"hidden_dropout_prob", c.hidden_dropout_prob},
                              {"attention_probs_dropout_prob", 0.0},
                              {"max_position_embeddings", c.max_position_embeddings},
                              {"type_vocab_size", c.type_vocab_size},
                              {"pad_token_id", c.pad_token_id},
                              {"initializer_range", c.initializer_range},
                              {"layer_norm_eps", c.layer_norm_eps},
                              {"position_embedding_type", "absolute"}};
  return j.dump(2) + "\n";
}

BertConfig from_hf_config(const std::string& text) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    KILN_CHECK(j.value("hidden_act", "gelu") == "gelu", "[bert] hidden_act '{}': kiln's BERT has the exact GELU",
               j.value("hidden_act", ""));
    KILN_CHECK(j.value("position_embedding_type", "absolute") == "absolute",
               "[bert] position_embedding_type '{}': kiln's BERT has absolute positions",
               j.value("position_embedding_type", ""));
    return {.vocab_size = integer(j, "vocab_size"),
            .hidden_size = integer(j, "hidden_size"),
            .num_hidden_layers = integer(j, "num_hidden_layers"),
            .num_attention_heads = integer(j, "num_attention_heads"),
            .intermediate_size = integer(j, "intermediate_size"),
            .max_position_embeddings = integer_or(j, "max_position_embeddings", 512),
            .type_vocab_size = integer_or(j, "type_vocab_size", 2),
            .pad_token_id = integer_or(j, "pad_token_id", -1),
            .layer_norm_eps = j.value("layer_norm_eps", 1e-12),
            .hidden_dropout_prob = j.value("hidden_dropout_prob", 0.1),
            .initializer_range = j.value("initializer_range", 0.02)};
  } catch (const nlohmann::json::exception& e) {
    KILN_FAIL("[bert] not a BERT config.json: {}", e.what());
  }
}

}  // namespace kiln::nn::bert
