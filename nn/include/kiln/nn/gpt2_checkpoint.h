#pragma once
// GPT-2 weights under Hugging Face's names and layout, so that
// GPT2LMHeadModel.from_pretrained loads what kiln writes and kiln loads a
// Hugging Face checkpoint: "transformer.h.0.attn.c_attn.weight" and so on,
// Conv1D weights stored [in, out] (kiln's Linear is [out, in]), the vocabulary
// unpadded, and the tied head stored once (as transformer.wte.weight).

#include <map>
#include <string>

#include "kiln/nn/gpt.h"

namespace kiln::nn {

// Tensors under nn::GPT's names ("h.0.attn.c_attn.weight") to Hugging Face's
// names and layout (float32, CPU; the embedding cut to vocab_size rows), and
// back (checking and dropping the tied lm_head and the mask buffers). For
// models held in pieces (dist::ParallelGPT) that assemble nn::GPT's tensors.
std::map<std::string, Tensor> gpt2_names_to_hf(const std::map<std::string, Tensor>& params, int64_t vocab_size);
std::map<std::string, Tensor> gpt2_names_from_hf(const std::map<std::string, Tensor>& weights);

// The model's weights (or, with gradients, their gradients) as Hugging Face
// names and lays them out (float32, on the CPU).
std::map<std::string, Tensor> gpt2_to_hf(const GPT& model, bool gradients = false);
// Copies Hugging Face GPT-2 weights into model (shapes must match its config;
// "lm_head.weight", when present, must equal the embedding). Missing or extra
// keys raise kiln::Error naming them.
void gpt2_from_hf(GPT& model, const std::map<std::string, Tensor>& weights);
// The config.json Hugging Face's GPT2Config reads for this model.
std::string gpt2_hf_config_json(const GPTConfig& config);

}  // namespace kiln::nn
