#pragma once
// BERT's masked-LM corruption (Devlin et al. 2019; create_pretraining_data.py):
// in each sequence, round(length x mask_prob) positions (at least one, at most
// max_predictions_per_128 for every 128 tokens: 20 at 128, 80 at 512) are
// drawn from those that may be masked ([CLS], [SEP] and padding never are);
// 80% of them become [MASK], 10% a random token of the vocabulary and 10%
// stay. The loss is taken at the drawn positions only.

#include <vector>

#include "kiln/random.h"
#include "kiln/tensor.h"

namespace kiln::data {

// BERT's masking: the tokens that may be drawn, and how many.
struct MaskingOptions {
  int64_t mask_id = 0;     // [MASK]
  int64_t vocab_size = 0;  // random replacements come from [0, vocab_size)
  std::vector<int64_t> never_mask;  // [CLS], [SEP], [PAD], ...
  double mask_prob = 0.15;               // the share of a row's real tokens drawn
  int64_t max_predictions_per_128 = 20;  // the most drawn per 128 tokens of a row
};

// A masked batch.
struct MaskedBatch {
  Tensor inputs;  // (B, T) int64: the corrupted tokens
  Tensor labels;  // (B, T) int64: the original token at the drawn positions, -100 elsewhere
};

// tokens (B, T) int64 on the CPU; lengths (B) (or undefined: every row whole)
// bound each row's real tokens. Draws from gen (Philox: the same gen state,
// the same corruption).
MaskedBatch mask_tokens(const Tensor& tokens, const Tensor& lengths, const MaskingOptions& options, Generator& gen);

}  // namespace kiln::data
