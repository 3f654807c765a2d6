#pragma once
// GLM's autoregressive blank infilling (Du et al. 2022; THUDM's GLM,
// blocklm_utils.py). Spans of a sequence become blanks: part A is the text
// with each span replaced by one mask token, part B the spans in a shuffled
// order, each started by [START] (<|startofpiece|>) and predicted token by
// token up to [END] (<|endofpiece|>). Two position streams: a token's
// position in part A (a span's tokens all take their mask's), and its place
// inside its span (0 in part A, 1.. in part B). Part A attends to itself
// bidirectionally, part B to part A and causally to itself: a prefix-LM mask
// whose prefix is part A.
//
// Blank infilling draws span lengths from Poisson(mean_span) (1 to
// max_span - 1) until ratio of the tokens are covered, places them at random
// with at least one token between two, and masks them with [MASK]. The
// gap-sentence objective blanks whole sentences with [sMASK], the generation
// objective one span that runs to the end of the sequence (at least
// min_generation_ratio of it) with [gMASK].

#include <utility>
#include <vector>

#include "kiln/random.h"
#include "kiln/tensor.h"

namespace kiln::data {

// The special tokens and span statistics of blank infilling (above).
struct BlankInfillingOptions {
  int64_t mask_id = 0;   // [MASK] (blank infilling), [sMASK] or [gMASK] (generation)
  int64_t start_id = 0;  // [START]: the first input of each span in part B
  int64_t end_id = 0;    // [END]: the last target of each span
  double ratio = 0.15;                // the share of tokens blanked
  double mean_span = 3.0;             // the spans' Poisson mean
  int64_t max_span = 40;              // spans are shorter than this
  double min_generation_ratio = 0.5;  // the generation span's least share of the sequence
};

// One sequence laid out for GLM (above).
struct GlmExample {
  std::vector<int64_t> tokens;           // part A, then part B's inputs ([START] and each span but its last token)
  std::vector<int64_t> labels;           // -100 over part A, each span's tokens and [END] over part B
  std::vector<int64_t> positions;        // in part A
  std::vector<int64_t> block_positions;  // 0 over part A, 1.. inside each span of part B
  int64_t prefix = 0;                    // part A's length: the prefix-LM mask's prefix
};

// The layout of tokens with the spans [start, end) blanked by options.mask_id;
// part B takes the spans in the order given. Spans must be nonempty, in
// bounds and must not overlap (adjacent sentences are two blanks).
GlmExample glm_layout(const std::vector<int64_t>& tokens, const std::vector<std::pair<int64_t, int64_t>>& spans,
                      const BlankInfillingOptions& options);

// Random spans of GLM's blank infilling over `length` tokens, in part B's (shuffled) order.
std::vector<std::pair<int64_t, int64_t>> blank_spans(int64_t length, const BlankInfillingOptions& options, Generator& gen);
// GLM's gap-sentence spans (THUDM's construct_blocks): the sentences of
// tokens, each running to a token whose id is marked in ends_sentence (or to
// the end; an eos_id ends one and stands in none), shuffled and taken until
// they cover int(ratio x length) tokens, in the order taken (part B's).
// Sentences longer than max_span - 1 tokens are passed over (the block
// positions bound a span); empty when no sentence fits.
std::vector<std::pair<int64_t, int64_t>> sentence_spans(const std::vector<int64_t>& tokens,
                                                        const std::vector<bool>& ends_sentence, int64_t eos_id,
                                                        const BlankInfillingOptions& options, Generator& gen);
// The generation objective's span: from a random point to the end.
std::pair<int64_t, int64_t> generation_span(int64_t length, const BlankInfillingOptions& options, Generator& gen);

}  // namespace kiln::data
