#pragma once
// T5's span corruption (Raffel et al. 2020; t5.data.preprocessors:
// random_spans_noise_mask, noise_span_to_unique_sentinel). Of a sequence of L
// tokens, round(L noise_density) are noise (at least one, at most L - 1), in
// round(noise / mean_noise_span_length) spans (at least one): the noise and
// the other tokens are each cut into that many nonempty runs uniformly at
// random, and the runs alternate, starting with the other tokens. The input
// keeps the other tokens with each noise span replaced by one sentinel; the
// target is each sentinel followed by its span. Sentinels count down from
// the end of the vocabulary (vocab_size - 1 first, T5's `<extra_id_0>`), or
// are a tokenizer's reserved ones; EOS closes both.

#include <vector>

#include "kiln/random.h"
#include "kiln/tensor.h"

namespace kiln::data {

// Span corruption's vocabulary, sentinels and noise (t5.data's names).
struct SpanCorruptionOptions {
  int64_t vocab_size = 0;  // sentinels are vocab_size - 1, vocab_size - 2, ...
  std::vector<int64_t> sentinel_ids;  // or these: `<extra_id_0>`, `<extra_id_1>`, ... (Tokenizer::sentinel_id)
  int64_t eos_id = 1;                   // closes the input and the target
  double noise_density = 0.15;          // the share of tokens that are noise
  double mean_noise_span_length = 3.0;  // tokens per noise span, on average
};

// Which of `length` tokens are noise, drawn from gen.
std::vector<bool> random_spans_noise_mask(int64_t length, const SpanCorruptionOptions& options, Generator& gen);

// One corrupted sequence.
struct SpanCorrupted {
  std::vector<int64_t> inputs, targets;  // with EOS at the end of each
};
// The input and target of tokens under a noise mask of the same length.
SpanCorrupted span_corrupt(const std::vector<int64_t>& tokens, const std::vector<bool>& noise,
                           const SpanCorruptionOptions& options);

// A batch of corrupted rows.
struct SpanBatch {
  Tensor inputs;  // (B, Ti) int64
  Tensor labels;  // (B, To) int64: the targets
};
// Each row of tokens (B, T) int64 on the CPU corrupted with its own mask from
// gen. Rows of one length give inputs and targets of one length each.
SpanBatch span_corruption(const Tensor& tokens, const SpanCorruptionOptions& options, Generator& gen);

}  // namespace kiln::data
