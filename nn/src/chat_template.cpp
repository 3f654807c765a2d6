#include "kiln/data/chat_template.h"

#include <algorithm>

namespace kiln::data {

namespace {

Special marker(Role r) {
  switch (r) {
    case Role::System: return Special::System;
    case Role::User: return Special::User;
    case Role::Assistant: return Special::Assistant;
  }
  return Special::User;
}

// Appends one turn; returns the range [first, last) of the tokens a model
// answering it would emit (its text and <|end|>).
std::pair<size_t, size_t> append_turn(const Tokenizer& tok, const Message& m, std::vector<int64_t>& out) {
  out.push_back(tok.special_id(marker(m.role)));
  const size_t first = out.size();
  for (uint32_t id : tok.encode(m.content)) out.push_back(id);
  out.push_back(tok.special_id(Special::EndOfTurn));
  return {first, out.size()};
}

}  // namespace

std::vector<int64_t> render(const Tokenizer& tok, const Conversation& conversation) {
  std::vector<int64_t> out;
  for (const Message& m : conversation) append_turn(tok, m, out);
  return out;
}

std::vector<int64_t> render_prompt(const Tokenizer& tok, const Conversation& prompt) {
  std::vector<int64_t> out = render(tok, prompt);
  out.push_back(tok.special_id(Special::Assistant));
  return out;
}

std::optional<ChatExample> chat_example(const Tokenizer& tok, const Conversation& conversation,
                                        const ChatTemplateOptions& options) {
  std::vector<int64_t> tokens;
  std::vector<bool> trained;  // per token: is it one the model learns to emit?
  size_t last_assistant = conversation.size();
  for (size_t i = 0; i < conversation.size(); ++i)
    if (conversation[i].role == Role::Assistant) last_assistant = i;
  for (size_t i = 0; i < conversation.size(); ++i) {
    auto [first, last] = append_turn(tok, conversation[i], tokens);
    trained.resize(tokens.size(), false);
    const bool learn = conversation[i].role == Role::Assistant &&
                       (options.train_every_assistant_turn || i == last_assistant);
    if (learn) std::fill(trained.begin() + static_cast<std::ptrdiff_t>(first), trained.begin() + static_cast<std::ptrdiff_t>(last), true);
  }
  if (options.max_tokens > 0 && static_cast<int64_t>(tokens.size()) > options.max_tokens + 1) {
    tokens.resize(static_cast<size_t>(options.max_tokens + 1));
    trained.resize(tokens.size());
  }
  ChatExample e;
  for (size_t t = 0; t + 1 < tokens.size(); ++t) {
    e.inputs.push_back(tokens[t]);
    e.targets.push_back(trained[t + 1] ? tokens[t + 1] : -100);
  }
  if (std::all_of(e.targets.begin(), e.targets.end(), [](int64_t y) { return y == -100; })) return std::nullopt;
  return e;
}

}  // namespace kiln::data
