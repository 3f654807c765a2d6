// LLaMA under Hugging Face's LlamaForCausalLM names: kiln fuses q/k/v into
// one projection and gate/up into another, Hugging Face keeps them apart.

#include <nlohmann/json.hpp>
#include <regex>

#include "../hf_names.h"
#include "kiln/autograd.h"
#include "kiln/nn/models/llama.h"
#include "kiln/ops.h"
#include "../json_fields.h"

namespace kiln::nn::llama {

namespace {

// Rules over kiln's names with the fused projections split into their parts
// ("attn.q", "mlp.gate", ...), as Hugging Face stores them.
const hf::NameMap& names() {
  static const hf::NameMap map{
      "model.layers.",
      {{"embed_tokens.weight", "model.embed_tokens.weight"},
       {"norm.weight", "model.norm.weight"},
       {"lm_head.weight", "lm_head.weight"},
       {"score.weight", "score.weight"}},  // LlamaForSequenceClassification (a reward model, a critic)
      {{"attn_norm.weight", "input_layernorm.weight"},
       {"attn.q.weight", "self_attn.q_proj.weight"},
       {"attn.k.weight", "self_attn.k_proj.weight"},
       {"attn.v.weight", "self_attn.v_proj.weight"},
       {"attn.q.bias", "self_attn.q_proj.bias"},
       {"attn.k.bias", "self_attn.k_proj.bias"},
       {"attn.v.bias", "self_attn.v_proj.bias"},
       {"attn.out.weight", "self_attn.o_proj.weight"},
       {"attn.out.bias", "self_attn.o_proj.bias"},
       {"mlp_norm.weight", "post_attention_layernorm.weight"},
       {"mlp.gate.weight", "mlp.gate_proj.weight"},
       {"mlp.up_only.weight", "mlp.up_proj.weight"},
       {"mlp.gate.bias", "mlp.gate_proj.bias"},
       {"mlp.up_only.bias", "mlp.up_proj.bias"},
       {"mlp.down.weight", "mlp.down_proj.weight"},
       {"mlp.down.bias", "mlp.down_proj.bias"}}};
  return map;
}

const std::vector<hf::Fused>& fused_tensors() {
  static const std::vector<hf::Fused> fused = [] {
    std::vector<hf::Fused> out;
    for (const std::string k : {"weight", "bias"}) {
      out.push_back({"attn.qkv." + k, {"attn.q." + k, "attn.k." + k, "attn.v." + k}});
      out.push_back({"mlp.up." + k, {"mlp.gate." + k, "mlp.up_only." + k}});
    }
    return out;
  }();
  return fused;
}

// Mixtral's experts: kiln holds a layer's router (E, C), up (E, 2 H, C) with
// each expert's [gate; up] and down (E, C, H); Hugging Face holds the router
// as block_sparse_moe.gate and each expert's w1 (gate), w3 (up) and w2 (down).
const std::regex kKilnExperts(R"(layers\.(\d+)\.mlp\.(router|up|down))");
const std::regex kHfExperts(R"(model\.layers\.(\d+)\.block_sparse_moe\.(gate\.weight|experts\.(\d+)\.(w[123])\.weight))");

std::string hf_expert(const std::string& layer, int64_t expert, const char* w) {
  return fmt::format("model.layers.{}.block_sparse_moe.experts.{}.{}.weight", layer, expert, w);
}
std::string hf_router(const std::string& layer) {
  return fmt::format("model.layers.{}.block_sparse_moe.gate.weight", layer);
}

// Adds the Hugging Face tensors of kiln's expert tensor `name` to out; false
// when name is not one.
bool experts_to_hf(const std::string& name, const Tensor& t, std::map<std::string, Tensor>& out) {
  std::smatch m;
  if (!std::regex_match(name, m, kKilnExperts)) return false;
  const std::string layer = m[1], what = m[2];
  if (what == "router") {
    out[hf_router(layer)] = t;
    return true;
  }
  for (int64_t e = 0; e < t.size(0); ++e) {
    Tensor expert = t.select(0, e);
    if (what == "down") {
      out[hf_expert(layer, e, "w2")] = expert;
    } else {
      const int64_t H = expert.size(0) / 2;
      out[hf_expert(layer, e, "w1")] = expert.narrow(0, 0, H);
      out[hf_expert(layer, e, "w3")] = expert.narrow(0, H, H);
    }
  }
  return true;
}

// kiln's expert tensors from the Hugging Face ones among weights (which are
// taken out of it), for a model of c's experts.
std::map<std::string, Tensor> experts_from_hf(std::map<std::string, Tensor>& weights, const LlamaConfig& c) {
  std::map<std::string, Tensor> out, found;
  for (auto it = weights.begin(); it != weights.end();) {
    if (std::regex_match(it->first, kHfExperts)) {
      found.insert(*it);
      it = weights.erase(it);
    } else {
      ++it;
    }
  }
  if (found.empty()) return out;
  KILN_CHECK(c.moe, "[mixtral] the checkpoint has experts ({}), the config none", found.begin()->first);
  auto take = [&](const std::string& name) {
    auto it = found.find(name);
    KILN_CHECK(it != found.end(), "[mixtral] the checkpoint has no '{}'", name);
    return it->second;
  };
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const std::string l = std::to_string(layer);
    std::vector<Tensor> up, down;
    for (int64_t e = 0; e < c.moe->experts; ++e) {
      up.push_back(cat({take(hf_expert(l, e, "w1")), take(hf_expert(l, e, "w3"))}, 0));
      down.push_back(take(hf_expert(l, e, "w2")));
    }
    out["layers." + l + ".mlp.router"] = take(hf_router(l));
    out["layers." + l + ".mlp.up"] = stack(up);
    out["layers." + l + ".mlp.down"] = stack(down);
  }
  KILN_CHECK(found.size() == static_cast<size_t>(c.num_hidden_layers * (1 + 3 * c.moe->experts)),
             "[mixtral] the checkpoint has {} expert tensors, a model of {} layers of {} experts {}", found.size(),
             c.num_hidden_layers, c.moe->experts, c.num_hidden_layers * (1 + 3 * c.moe->experts));
  return out;
}

std::vector<int64_t> part_sizes(const std::string& fused, const LlamaConfig& c) {
  const ModelSpec spec = c.spec();
  const int64_t D = spec.block.head_dim(), H = spec.block.attention.heads, Hkv = spec.block.kv_heads();
  if (fused.find("attn.qkv.") != std::string::npos) return {H * D, Hkv * D, Hkv * D};
  return {c.intermediate_size, c.intermediate_size};
}

}  // namespace

std::map<std::string, Tensor> to_hf(const std::map<std::string, Tensor>& full, const LlamaConfig& c) {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> dense, experts;
  for (const auto& [name, t] : full)
    if (!experts_to_hf(name, t, experts)) dense[name] = t;
  auto sizes = [&](const std::string& name) { return part_sizes(name, c); };
  std::map<std::string, Tensor> out = hf::rename_to_hf(names(), hf::split_fused(dense, fused_tensors(), sizes));
  out.insert(experts.begin(), experts.end());
  return out;
}

std::map<std::string, Tensor> from_hf(const std::map<std::string, Tensor>& weights, const LlamaConfig& c) {
  std::map<std::string, Tensor> kept =
      c.tie_word_embeddings ? hf::without_tied_head(weights, "lm_head.weight", "model.embed_tokens.weight", "llama")
                            : weights;
  std::erase_if(kept, [](const auto& named) {  // a buffer older checkpoints carry
    return named.first.ends_with(".rotary_emb.inv_freq");
  });
  std::map<std::string, Tensor> out = experts_from_hf(kept, c);
  std::map<std::string, Tensor> dense =
      hf::join_fused(hf::rename_from_hf(names(), kept, c.num_hidden_layers, "Llama"), fused_tensors(), hf_name, "Llama");
  out.insert(dense.begin(), dense.end());
  return out;
}

std::string hf_name(const std::string& kiln) {
  std::smatch m;
  if (std::regex_match(kiln, m, kKilnExperts))  // named by expert 0's first part
    return m[2] == "router" ? hf_router(m[1]) : hf_expert(m[1], 0, m[2] == "up" ? "w1" : "w2");
  return hf::hf_name_or_kiln(names(), hf::first_part(kiln, fused_tensors()));  // a fused tensor by its first part
}

std::string hf_config_json(const LlamaConfig& c) {
  const ModelSpec spec = c.spec();
  KILN_CHECK(!c.moe || mixtral_compatible(spec.block), "[mixtral] these experts are not Mixtral's (every layer, a "
             "softmax over the top-k, dropless): save the model in kiln's format (an empty family)");
  nlohmann::ordered_json j = {{"architectures", {"LlamaForCausalLM"}},
                              {"model_type", "llama"},
                              {"vocab_size", c.vocab_size},
                              {"hidden_size", c.hidden_size},
                              {"intermediate_size", c.intermediate_size},
                              {"num_hidden_layers", c.num_hidden_layers},
                              {"num_attention_heads", c.num_attention_heads},
                              {"num_key_value_heads", spec.block.kv_heads()},
                              {"head_dim", spec.block.head_dim()},
                              {"max_position_embeddings", c.max_position_embeddings},
                              {"rms_norm_eps", c.rms_norm_eps},
                              {"rope_theta", c.rope_theta},
                              {"rope_scaling", nullptr},
                              {"tie_word_embeddings", c.tie_word_embeddings},
                              {"attention_bias", c.attention_bias},
                              {"mlp_bias", c.mlp_bias},
                              {"attention_dropout", 0.0},
                              {"hidden_act", "silu"},
                              {"initializer_range", c.initializer_range}};
  if (c.moe) {
    j["architectures"] = {"MixtralForCausalLM"};
    j["model_type"] = "mixtral";
    j["num_local_experts"] = c.moe->experts;
    j["num_experts_per_tok"] = c.moe->top_k;
    j["router_aux_loss_coef"] = c.moe->aux_loss_coeff;
    j["router_jitter_noise"] = 0.0;
    j["output_router_logits"] = false;
    j["sliding_window"] = nullptr;
  }
  if (c.rope_scaling)
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling->factor},
                         {"low_freq_factor", c.rope_scaling->low_freq_factor},
                         {"high_freq_factor", c.rope_scaling->high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling->original_max_positions}};
  return j.dump(2) + "\n";
}

LlamaConfig from_hf_config(const std::string& text) {
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    LlamaConfig c{.vocab_size = integer(j, "vocab_size"),
                  .hidden_size = integer(j, "hidden_size"),
                  .intermediate_size = integer(j, "intermediate_size"),
                  .num_hidden_layers = integer(j, "num_hidden_layers"),
                  .num_attention_heads = integer(j, "num_attention_heads"),
                  .num_key_value_heads = integer_or(j, "num_key_value_heads", 0),
                  .head_dim = integer_or(j, "head_dim", 0),
                  .max_position_embeddings = integer_or(j, "max_position_embeddings", 2048),
                  .rms_norm_eps = j.value("rms_norm_eps", 1e-6),
                  .rope_theta = j.value("rope_theta", 10000.0),
                  .tie_word_embeddings = j.value("tie_word_embeddings", false),
                  .attention_bias = j.value("attention_bias", false),
                  .mlp_bias = j.value("mlp_bias", false),
                  .initializer_range = j.value("initializer_range", 0.02)};
    if (j.value("model_type", "") == "mixtral") {
      KILN_CHECK(j.value("sliding_window", nlohmann::json()).is_null(), "[mixtral] sliding-window attention is "
                 "not supported");
      c.moe = MoeSpec{.experts = integer(j, "num_local_experts"),
                      .top_k = integer(j, "num_experts_per_tok"),
                      .aux_loss_coeff = j.value("router_aux_loss_coef", 0.001)};
    }
    // transformers 5 writes rope_parameters (theta and scaling together), earlier ones rope_theta and rope_scaling.
    nlohmann::json scaling = j.contains("rope_scaling") ? j["rope_scaling"] : nlohmann::json();
    if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
      scaling = j["rope_parameters"];
      c.rope_theta = scaling.value("rope_theta", c.rope_theta);
      if (scaling.value("rope_type", "default") == "default") scaling = nullptr;
    }
    if (!scaling.is_null()) {
      const nlohmann::json& s = scaling;
      const std::string type = s.value("rope_type", s.value("type", ""));
      KILN_CHECK(type == "llama3", "[llama] RoPE scaling of type '{}' is not supported: kiln knows 'llama3'", type);
      c.rope_scaling = RopeScaling{s.at("factor").get<double>(), s.at("low_freq_factor").get<double>(),
                                   s.at("high_freq_factor").get<double>(),
                                   integer(s, "original_max_position_embeddings")};
    }
    return c;
  } catch (const nlohmann::json::exception& e) {
    KILN_FAIL("[llama] not a Llama config.json: {}", e.what());
  }
}

}  // namespace kiln::nn::llama
