#include "kiln/nn/gpt2_checkpoint.h"

#include <nlohmann/json.hpp>
#include <set>

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::nn {

namespace {

// kiln name -> (HF name, whether the HF tensor is the transpose: Conv1D weights)
std::map<std::string, std::pair<std::string, bool>> name_map(const GPT& model) {
  std::map<std::string, std::pair<std::string, bool>> out;
  for (const auto& [name, _] : model.named_parameters()) {
    bool conv1d = name.find(".c_attn.weight") != std::string::npos || name.find(".c_proj.weight") != std::string::npos ||
                  name.find(".c_fc.weight") != std::string::npos;
    out[name] = {"transformer." + name, conv1d};
  }
  return out;
}

}  // namespace

std::map<std::string, Tensor> gpt2_to_hf(const GPT& model, bool gradients) {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> out;
  const int64_t V = model.config().vocab_size;
  const auto names = name_map(model);
  for (const auto& [name, p] : model.named_parameters()) {
    auto [hf, transpose] = names.at(name);
    KILN_CHECK(!gradients || p.grad().defined(), "[gpt2_to_hf] parameter '{}' has no gradient", name);
    Tensor t = (gradients ? p.grad() : p).detach().to(kCPU, kFloat32);
    if (name == "wte.weight") t = t.narrow(0, 0, V);
    out[hf] = (transpose ? t.t() : t).contiguous();
  }
  return out;
}

void gpt2_from_hf(GPT& model, const std::map<std::string, Tensor>& weights) {
  NoGradGuard no_grad;
  const int64_t V = model.config().vocab_size;
  std::set<std::string> used;
  const auto names = name_map(model);
  for (auto& [name, p] : model.named_parameters()) {
    auto [hf, transpose] = names.at(name);
    auto it = weights.find(hf);
    KILN_CHECK(it != weights.end(), "[gpt2_from_hf] checkpoint has no '{}'", hf);
    used.insert(hf);
    Tensor src = transpose ? it->second.t() : it->second;
    Tensor dst = name == "wte.weight" ? p.narrow(0, 0, V) : p;
    KILN_CHECK(src.sizes() == dst.sizes(), "[gpt2_from_hf] '{}' has shape [{}], the model expects [{}]", hf,
               fmt::join(it->second.sizes(), ", "), fmt::join(transpose ? dst.t().sizes() : dst.sizes(), ", "));
    dst.copy_(src.to(p.device(), p.dtype()));
  }
  if (auto head = weights.find("lm_head.weight"); head != weights.end()) {
    used.insert(head->first);
    KILN_CHECK(allclose(head->second.to(kFloat32), weights.at("transformer.wte.weight").to(kFloat32), 0, 0),
               "[gpt2_from_hf] lm_head.weight differs from transformer.wte.weight: kiln's GPT ties them");
  }
  for (const auto& [name, _] : weights) {
    // Hugging Face keeps the causal-mask buffers in some checkpoints.
    bool buffer = name.find(".attn.bias") != std::string::npos || name.find(".attn.masked_bias") != std::string::npos;
    KILN_CHECK(used.count(name) || buffer, "[gpt2_from_hf] unexpected key '{}' in the checkpoint", name);
  }
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
