// GPT-2 under Hugging Face's GPT2LMHeadModel names and layout.

#include <nlohmann/json.hpp>

#include "../hf_names.h"
#include "kiln/nn/models/gpt2.h"
#include "kiln/ops.h"
#include "../json_fields.h"

namespace kiln::nn::gpt2 {

namespace {

const hf::NameMap& names() {
  static const hf::NameMap map{
      "transformer.h.",
      {{"embed_tokens.weight", "transformer.wte.weight"},
       {"embed_positions.weight", "transformer.wpe.weight"},
       {"norm.weight", "transformer.ln_f.weight"},
       {"norm.bias", "transformer.ln_f.bias"},
       {"score.weight", "score.weight"}},  // GPT2ForSequenceClassification (a reward model, a critic)
      {{"attn_norm.weight", "ln_1.weight"},
       {"attn_norm.bias", "ln_1.bias"},
       {"attn.qkv.weight", "attn.c_attn.weight", true},  // Conv1D: [in, out]
       {"attn.qkv.bias", "attn.c_attn.bias"},
       {"attn.out.weight", "attn.c_proj.weight", true},
       {"attn.out.bias", "attn.c_proj.bias"},
       {"mlp_norm.weight", "ln_2.weight"},
       {"mlp_norm.bias", "ln_2.bias"},
       {"mlp.up.weight", "mlp.c_fc.weight", true},
       {"mlp.up.bias", "mlp.c_fc.bias"},
       {"mlp.down.weight", "mlp.c_proj.weight", true},
       {"mlp.down.bias", "mlp.c_proj.bias"}}};
  return map;
}

bool is_mask_buffer(const std::string& name) {
  return name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias");
}

}  // namespace

std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& full) {
  return hf::rename_to_hf(names(), full);
}

std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, int64_t n_layer) {
  std::map<std::string, Tensor> kept = hf::without_tied_head(weights, "lm_head.weight", "transformer.wte.weight", "gpt2");
  // Hugging Face keeps the causal mask in some checkpoints.
  std::erase_if(kept, [](const auto& named) { return is_mask_buffer(named.first); });
  return hf::rename_from_hf(names(), kept, n_layer, "GPT-2");
}

std::string hf_name(const std::string& kiln) {
  auto hf = names().to_hf(kiln);
  return hf ? hf->first : kiln;
}

std::string hf_config_json(const GPTConfig& c) {
  nlohmann::ordered_json j = {{"architectures", {"GPT2LMHeadModel"}},
                              {"model_type", "gpt2"},
                              {"vocab_size", c.vocab_size},
                              {"n_positions", c.block_size},
                              {"n_ctx", c.block_size},
                              {"n_embd", c.n_embd},
                              {"n_layer", c.n_layer},
                              {"n_head", c.n_head},
                              {"activation_function", "gelu_new"},
                              {"layer_norm_epsilon", 1e-5},
                              {"resid_pdrop", c.dropout},
                              {"embd_pdrop", c.dropout},
                              {"attn_pdrop", 0.0},
                              {"tie_word_embeddings", true}};
  return j.dump(2) + "\n";
}

GPTConfig from_hf_config(const std::string& text) {
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    return {.vocab_size = integer(j, "vocab_size"),
            .block_size = integer(j, "n_positions"),
            .n_layer = integer(j, "n_layer"),
            .n_head = integer(j, "n_head"),
            .n_embd = integer(j, "n_embd"),
            .dropout = j.value("resid_pdrop", 0.0)};
  } catch (const nlohmann::json::exception& e) {
    KILN_FAIL("[gpt2] not a GPT-2 config.json: {}", e.what());
  }
}

}  // namespace kiln::nn::gpt2
