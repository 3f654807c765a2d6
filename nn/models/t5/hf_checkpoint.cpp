// T5 under Hugging Face's T5ForConditionalGeneration names: kiln fuses the
// self-attention's q/k/v, the cross-attention's k/v and the gated MLP's
// wi_0/wi_1; each stack's relative position bias sits in Hugging Face's first
// block; the embedding is stored once (shared.weight), with the head when tied.

#include <filesystem>
#include <nlohmann/json.hpp>

#include "../hf_names.h"
#include "kiln/autograd.h"
#include "kiln/nn/models/t5.h"
#include "kiln/ops.h"
#include "kiln/serialize.h"
#include "../json_fields.h"

namespace kiln::nn::t5 {

namespace {

hf::NameMap stack_names(const std::string& stack, bool decoder) {
  // The decoder's blocks hold self-attention (layer.0), cross-attention
  // (layer.1) and the MLP (layer.2); the encoder's only the first and last.
  const std::string mlp = decoder ? "layer.2." : "layer.1.";
  std::vector<hf::NameRule> block{{"attn_norm.weight", "layer.0.layer_norm.weight"},
                                  {"attn.q.weight", "layer.0.SelfAttention.q.weight"},
                                  {"attn.k.weight", "layer.0.SelfAttention.k.weight"},
                                  {"attn.v.weight", "layer.0.SelfAttention.v.weight"},
                                  {"attn.out.weight", "layer.0.SelfAttention.o.weight"},
                                  {"mlp_norm.weight", mlp + "layer_norm.weight"},
                                  {"mlp.up.weight", mlp + "DenseReluDense.wi.weight"},
                                  {"mlp.gate.weight", mlp + "DenseReluDense.wi_0.weight"},
                                  {"mlp.up_only.weight", mlp + "DenseReluDense.wi_1.weight"},
                                  {"mlp.down.weight", mlp + "DenseReluDense.wo.weight"}};
  if (decoder)
    block.insert(block.end(), {{"cross_norm.weight", "layer.1.layer_norm.weight"},
                               {"cross_attn.q.weight", "layer.1.EncDecAttention.q.weight"},
                               {"cross_attn.k.weight", "layer.1.EncDecAttention.k.weight"},
                               {"cross_attn.v.weight", "layer.1.EncDecAttention.v.weight"},
                               {"cross_attn.out.weight", "layer.1.EncDecAttention.o.weight"}});
  return {stack + ".block.",
          {{"relative_bias.weight", stack + ".block.0.layer.0.SelfAttention.relative_attention_bias.weight"},
           {"norm.weight", stack + ".final_layer_norm.weight"}},
          block};
}

// kiln's names under a prefix ("encoder.") and the rules that rename them without it.
struct Part {
  std::string prefix;
  hf::NameMap names;
  int64_t layers;
};

std::vector<Part> parts(const T5Config& c) {
  return {{"encoder.", stack_names("encoder", false), c.num_layers},
          {"decoder.", stack_names("decoder", true), c.decoder_layers()},
          {"", {"", {{"embed_tokens.weight", "shared.weight"}, {"lm_head.weight", "lm_head.weight"}}, {}}, 0}};
}

std::vector<hf::Fused> fused_tensors(const T5Config& c) {
  std::vector<hf::Fused> fused{{"attn.qkv.weight", {"attn.q.weight", "attn.k.weight", "attn.v.weight"}},
                               {"cross_attn.kv.weight", {"cross_attn.k.weight", "cross_attn.v.weight"}}};
  if (c.feed_forward_proj == "gated-gelu") fused.push_back({"mlp.up.weight", {"mlp.gate.weight", "mlp.up_only.weight"}});
  return fused;
}

// The part a name belongs to: the first whose prefix (kiln's or, with hf, Hugging Face's) it has.
const Part& part_of(const std::vector<Part>& all, const std::string& name) {
  for (const Part& p : all)
    if (name.rfind(p.prefix, 0) == 0) return p;
  return all.back();
}

const char* kShared = "shared.weight";

}  // namespace

std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& state, const T5Config& config) {
  NoGradGuard no_grad;
  const std::vector<Part> all = parts(config);
  std::map<std::string, std::map<std::string, Tensor>> by_part;
  for (const auto& [name, t] : hf::split_fused(state, fused_tensors(config))) {
    const Part& p = part_of(all, name);
    by_part[p.prefix][name.substr(p.prefix.size())] = t;
  }
  std::map<std::string, Tensor> out;
  for (const Part& p : all) {
    std::map<std::string, Tensor> renamed = hf::rename_to_hf(p.names, by_part[p.prefix]);
    out.insert(renamed.begin(), renamed.end());
  }
  return out;
}

std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, const T5Config& config) {
  auto shared = weights.find(kShared);
  KILN_CHECK(shared != weights.end(), "[t5] the checkpoint has no '{}'", kShared);
  const std::vector<Part> all = parts(config);
  std::map<std::string, std::map<std::string, Tensor>> by_part;
  for (const auto& [name, t] : weights) {
    const bool tied_copy = name == "encoder.embed_tokens.weight" || name == "decoder.embed_tokens.weight" ||
                           (name == "lm_head.weight" && config.tie_word_embeddings);
    if (tied_copy) {  // must equal what it is tied to
      KILN_CHECK(allclose(t.to(kFloat32), shared->second.to(kFloat32), 0, 0), "[t5] {} differs from {}, to which "
                 "the config ties it", name, kShared);
      continue;
    }
    by_part[part_of(all, name).prefix][name] = t;
  }
  std::map<std::string, Tensor> kiln;
  for (const Part& p : all)
    for (auto& [name, t] : hf::rename_from_hf(p.names, by_part[p.prefix], p.layers, "T5"))
      kiln[p.prefix + name] = t;
  // transformers 5 ties every T5's head and writes no lm_head.weight, the
  // unscaled (v1.1) ones too: an untied head starts as the embedding.
  if (!config.tie_word_embeddings && !kiln.count("lm_head.weight")) kiln["lm_head.weight"] = shared->second;
  auto hf_name = [&](const std::string& name) {
    const Part& p = part_of(all, name);
    return hf::hf_name_or_kiln(p.names, name.substr(p.prefix.size()));
  };
  return hf::join_fused(kiln, fused_tensors(config), hf_name, "T5");
}

std::string hf_config_json(const T5Config& c) {
  nlohmann::ordered_json j = {{"architectures", {"T5ForConditionalGeneration"}},
                              {"model_type", "t5"},
                              {"vocab_size", c.vocab_size},
                              {"d_model", c.d_model},
                              {"d_kv", c.d_kv},
                              {"d_ff", c.d_ff},
                              {"num_layers", c.num_layers},
                              {"num_decoder_layers", c.decoder_layers()},
                              {"num_heads", c.num_heads},
                              {"relative_attention_num_buckets", c.relative_attention_num_buckets},
                              {"relative_attention_max_distance", c.relative_attention_max_distance},
                              {"dropout_rate", c.dropout_rate},
                              {"layer_norm_epsilon", c.layer_norm_epsilon},
                              {"initializer_factor", c.initializer_factor},
                              {"feed_forward_proj", c.feed_forward_proj},
                              {"tie_word_embeddings", c.tie_word_embeddings},
                              {"scale_decoder_outputs", c.scale_decoder_outputs},
                              {"is_encoder_decoder", true},
                              {"pad_token_id", c.pad_token_id},
                              {"eos_token_id", c.eos_token_id},
                              {"decoder_start_token_id", c.decoder_start_token_id}};
  return j.dump(2) + "\n";
}

T5Config from_hf_config(const std::string& text) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    T5Config c{.vocab_size = integer(j, "vocab_size"),
               .d_model = integer(j, "d_model"),
               .d_kv = integer(j, "d_kv"),
               .d_ff = integer(j, "d_ff"),
               .num_layers = integer(j, "num_layers"),
               .num_heads = integer(j, "num_heads"),
               .relative_attention_num_buckets = integer_or(j, "relative_attention_num_buckets", 32),
               .relative_attention_max_distance = integer_or(j, "relative_attention_max_distance", 128),
               .dropout_rate = j.value("dropout_rate", 0.1),
               .layer_norm_epsilon = j.value("layer_norm_epsilon", 1e-6),
               .initializer_factor = j.value("initializer_factor", 1.0),
               .feed_forward_proj = j.value("feed_forward_proj", std::string("relu")),
               .tie_word_embeddings = j.value("tie_word_embeddings", true)};
    c.num_decoder_layers = integer_or(j, "num_decoder_layers", c.num_decoder_layers);
    // Before transformers 5, an untied head meant an unscaled one (v1.1).
    c.scale_decoder_outputs = j.value("scale_decoder_outputs", c.tie_word_embeddings);
    c.pad_token_id = integer_or(j, "pad_token_id", c.pad_token_id);
    if (j.contains("eos_token_id") && j["eos_token_id"].is_number()) c.eos_token_id = integer(j, "eos_token_id");
    c.decoder_start_token_id = integer_or(j, "decoder_start_token_id", c.pad_token_id);
    c.block(false);  // raises on a feed-forward kind kiln does not have
    return c;
  } catch (const nlohmann::json::exception& e) {
    KILN_FAIL("[t5] not a T5 config.json: {}", e.what());
  }
}

T5Config read_config(const std::string& directory) { return from_hf_config(read_file(directory + "/config.json")); }

void read_weights(T5& model, const std::string& directory) {
  model.load_full_state_dict(from_hf(load_safetensors(directory + "/model.safetensors").tensors, model.config()));
}

void save(const std::string& directory, const T5& model) {
  std::filesystem::create_directories(directory);
  save_safetensors(directory + "/model.safetensors", to_hf(model.full_state_dict(), model.config()), {{"format", "pt"}});
  write_file_atomic(directory + "/config.json", hf_config_json(model.config()));
}

}  // namespace kiln::nn::t5
