#pragma once
// The LoRA options of the programs that fine-tune a causal model (train, sft):
// --lora-rank turns adapters on (nn/lora.h); the checkpoints then hold the
// frozen base in Hugging Face's format and the adapters in PEFT's.

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "program.h"

struct LoraArgs {
  int64_t rank = 0;  // 0: full fine-tuning
  double alpha = 16.0, dropout = 0.05;
  std::vector<std::string> targets;  // empty: PEFT's defaults for the family
  std::vector<std::string> trainable;
  std::string base_dtype;            // "bfloat16": the frozen weights kept in it
};

inline void add_lora_options(CLI::App& app, LoraArgs& a) {
  app.add_option("--lora-rank", a.rank, "LoRA adapters of this rank on a frozen model (0: train every weight)")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--lora-alpha", a.alpha, "LoRA: the update is scaled by alpha / rank")
      ->check(program::positive)->capture_default_str();
  app.add_option("--lora-dropout", a.dropout, "LoRA: dropout on the adapters' input")
      ->check(program::fraction)->capture_default_str();
  app.add_option("--lora-targets", a.targets, "LoRA: layers or parts to adapt (q k v out gate up down qkv; default: "
                 "PEFT's for the family, q v or qkv)")->delimiter(',');
  app.add_option("--lora-trainable", a.trainable, "LoRA: modules trained whole beside the adapters "
                 "(embed_tokens: the embedding and a tied head, for symbols pretraining never saw)")->delimiter(',');
  app.add_option("--lora-base-dtype", a.base_dtype, "LoRA: keep the frozen weights in this dtype")
      ->check(CLI::IsMember({"bfloat16"}));
}

// Adds the adapters --lora-rank asks for to model (after its weights are loaded).
inline void apply_lora(const LoraArgs& a, kiln::nn::TransformerLM& model, kiln::Generator& dropout_gen, uint64_t seed) {
  if (a.rank == 0) return;
  kiln::nn::add_lora(model,
                     {.rank = a.rank, .alpha = a.alpha, .dropout = a.dropout,
                      .targets = a.targets.empty() ? kiln::nn::hf::default_lora_targets(model.spec()) : a.targets,
                      .trainable = a.trainable,
                      .base_dtype = a.base_dtype.empty() ? std::nullopt : std::optional(kiln::kBFloat16), .seed = seed},
                     dropout_gen);
}
