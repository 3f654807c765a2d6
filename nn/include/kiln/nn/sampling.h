#pragma once
// Sampling from a language model: temperature, top-k and nucleus (top-p)
// filtering, and autoregressive generation with the KV cache.

#include <vector>

#include "kiln/nn/transformer_lm.h"
#include "kiln/random.h"

namespace kiln::nn {

// How a token is drawn from logits.
struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // 0: no limit
  double top_p = 1.0;        // 1: no limit
};

// Draws one token id from logits (V,) after temperature, top-k and top-p.
int64_t sample_token(const Tensor& logits, const SamplingOptions& options, Generator& gen);

// The part of a prompt a model of max_positions can continue by max_new_tokens:
// its last max_positions - max_new_tokens tokens (at least one).
std::vector<int64_t> prompt_window(const std::vector<int64_t>& prompt, int64_t max_new_tokens, int64_t max_positions);

// Extends prompt by up to max_new_tokens, feeding each new token through the
// KV cache; stops early after `stop` (when >= 0). Returns only the new tokens.
// The model holds every layer (dist::pipeline_generate decodes across stages).
std::vector<int64_t> generate(const TransformerLM& model, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                              const SamplingOptions& options, Generator& gen, int64_t stop = -1);

// What generate_batch returns.
struct BatchGeneration {
  std::vector<std::vector<int64_t>> tokens;  // each prompt's new tokens, through `stop` when it was drawn
  // log p of each new token under the model (its logits at temperature 1,
  // unfiltered): what the policy-gradient losses compare against.
  std::vector<std::vector<double>> log_probs;
  int64_t steps = 0;  // forward passes after the prompts'
};
// generate() for a batch of prompts of different lengths at once: the
// prompts left-padded into one prefill, then one token per unfinished row
// per step through the KV cache, each row at its own positions. A row stops
// after `stop` (when >= 0) or max_new_tokens; finished rows leave the batch.
// Row b draws from generators[b] (one per prompt), so what a row draws does
// not depend on the rest of its batch: data-parallel ranks draw what one
// process draws, and generate() with the same generator draws the same.
BatchGeneration generate_batch(const TransformerLM& model, const std::vector<std::vector<int64_t>>& prompts,
                               int64_t max_new_tokens, const SamplingOptions& options,
                               std::vector<Generator>& generators, int64_t stop = -1);

}  // namespace kiln::nn
