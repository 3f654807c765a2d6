#pragma once
// The chat template: a conversation as token ids, each turn its role's marker
// (the tokenizer's <|system|>, <|user|> or <|assistant|>), its text, and
// <|end|>:
//   <|system|> You are terse. <|end|> <|user|> 2+2? <|end|> <|assistant|> 4 <|end|>
// and the next-token targets for fine-tuning: the tokens of the assistant's
// turns (their text and <|end|>, so the model learns to stop) are trained,
// everything else is -100, which the loss ignores.

#include <optional>
#include <vector>

#include "kiln/data/conversations.h"
#include "kiln/data/tokenizer.h"

namespace kiln::data {

// Which turns an example trains on, and how long it may be.
struct ChatTemplateOptions {
  // Every assistant turn is trained (Vicuna's masking), or only the last.
  bool train_every_assistant_turn = true;
  // The longest example in tokens (inputs); longer ones are cut at the end,
  // and dropped when nothing trained is left. 0: no limit.
  int64_t max_tokens = 0;
};

// An example's inputs and their next-token targets, of one length.
struct ChatExample {
  std::vector<int64_t> inputs, targets;  // targets -100 where nothing is trained
};

// The conversation's tokens: every turn with its markers.
std::vector<int64_t> render(const Tokenizer& tok, const Conversation& conversation);
// A prompt to continue: its turns, then <|assistant|>, where generation starts.
std::vector<int64_t> render_prompt(const Tokenizer& tok, const Conversation& prompt);
// Inputs and targets for supervised fine-tuning; nullopt when truncation left
// nothing to train on.
std::optional<ChatExample> chat_example(const Tokenizer& tok, const Conversation& conversation,
                                        const ChatTemplateOptions& options = {});

}  // namespace kiln::data
