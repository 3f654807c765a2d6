#include "kiln/nn/gpt2_checkpoint.h"

#include <nlohmann/json.hpp>
#include <cstring>
#include <set>

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::nn {

namespace {

// Conv1D weights: Hugging Face stores them [in, out].
bool is_conv1d(const std::string& name) {
  for (const char* suffix : {".c_attn.weight", ".c_proj.weight", ".c_fc.weight"})
    if (name.size() > std::strlen(suffix) && name.compare(name.size() - std::strlen(suffix), std::string::npos, suffix) == 0)
      return true;
  return false;
}

const std::string kPrefix = "transformer.";

}  // namespace

std::map<std::string, Tensor> gpt2_names_to_hf(const std::map<std::string, Tensor>& params, int64_t vocab_size) {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> out;
  for (const auto& [name, p] : params) {
    Tensor t = p.detach().to(kCPU, kFloat32);
    if (name == "wte.weight") t = t.narrow(0, 0, vocab_size);
    out[kPrefix + name] = (is_conv1d(name) ? t.t() : t).contiguous();
  }
  return out;
}

std::map<std::string, Tensor> gpt2_names_from_hf(const std::map<std::string, Tensor>& weights) {
  std::map<std::string, Tensor> out;
  for (const auto& [hf, t] : weights) {
    // Hugging Face keeps the causal-mask buffers in some checkpoints.
    if (hf.find(".attn.bias") != std::string::npos || hf.find(".attn.masked_bias") != std::string::npos) continue;
    if (hf == "lm_head.weight") {
      auto wte = weights.find(kPrefix + "wte.weight");
      KILN_CHECK(wte != weights.end() && allclose(t.to(kFloat32), wte->second.to(kFloat32), 0, 0),
                 "[gpt2_from_hf] lm_head.weight differs from transformer.wte.weight: kiln's GPT ties them");
      continue;
    }
    KILN_CHECK(hf.rfind(kPrefix, 0) == 0, "[gpt2_from_hf] unexpected key '{}' in the checkpoint", hf);
    const std::string name = hf.substr(kPrefix.size());
    out[name] = is_conv1d(name) ? t.t() : t;
  }
  return out;
}

std::map<std::string, Tensor> gpt2_to_hf(const GPT& model, bool gradients) {
  std::map<std::string, Tensor> params;
  for (const auto& [name, p] : model.named_parameters()) {
    KILN_CHECK(!gradients || p.grad().defined(), "[gpt2_to_hf] parameter '{}' has no gradient", name);
    params[name] = gradients ? p.grad() : p;
  }
  return gpt2_names_to_hf(params, model.config().vocab_size);
}

void gpt2_from_hf(GPT& model, const std::map<std::string, Tensor>& weights) {
  NoGradGuard no_grad;
  const int64_t V = model.config().vocab_size;
  std::map<std::string, Tensor> named = gpt2_names_from_hf(weights);
  std::set<std::string> used;
  for (auto& [name, p] : model.named_parameters()) {
    auto it = named.find(name);
    KILN_CHECK(it != named.end(), "[gpt2_from_hf] checkpoint has no '{}'", kPrefix + name);
    used.insert(name);
    Tensor dst = name == "wte.weight" ? p.narrow(0, 0, V) : p;
    KILN_CHECK(it->second.sizes() == dst.sizes(), "[gpt2_from_hf] '{}' has shape [{}], the model expects [{}]",
               kPrefix + name, fmt::join(weights.at(kPrefix + name).sizes(), ", "),
               fmt::join(is_conv1d(name) ? dst.t().sizes() : dst.sizes(), ", "));
    dst.copy_(it->second.to(p.device(), p.dtype()));
  }
  for (const auto& [name, _] : named)
    KILN_CHECK(used.count(name), "[gpt2_from_hf] unexpected key '{}' in the checkpoint", kPrefix + name);
}

std::string gpt2_hf_config_json(const GPTConfig& c) {
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

}  // namespace kiln::nn
