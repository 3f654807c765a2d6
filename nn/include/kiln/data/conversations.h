#pragma once
// Instruction, conversation, preference and prompt data in the JSON-lines
// shapes users already have, one record a line:
//   Alpaca:          {"instruction": ..., "input": ..., "output": ...}   ("input" optional)
//   ShareGPT/Vicuna: {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}
//   messages:        {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
//   preferences:     {"prompt": ..., "chosen": ..., "rejected": ...}  (the prompt a string or
//                    messages, each answer a string or messages ending with the assistant's)
//   prompts:         {"prompt": ...} or {"messages": [...]}, with an optional "answer"
//                    that a rule-based reward checks
// A bad record raises kiln::Error naming the file, the line and what is wrong.

#include <string>
#include <vector>

namespace kiln::data {

// Who speaks a turn.
enum class Role { System, User, Assistant };

// One turn of a conversation: who speaks and what.
struct Message {
  Role role;            // the speaker
  std::string content;  // the text, as said
  bool operator==(const Message&) const = default;  // role and content alike
};
// The turns in order.
using Conversation = std::vector<Message>;

// Alpaca, ShareGPT/Vicuna or messages records, each a conversation (the shape
// is recognized per record). Alpaca's input follows its instruction after a blank line.
std::vector<Conversation> read_conversations(const std::string& path);

// A prompt with a preferred and a rejected answer (DPO, reward models).
struct PreferencePair {
  Conversation prompt;  // ends with the user's turn
  std::string chosen, rejected;  // the assistant's answers
};
// Preference records (above), one pair each.
std::vector<PreferencePair> read_preferences(const std::string& path);

// A prompt to answer (PPO, GRPO, evaluation), with its reference answer when known.
struct Prompt {
  Conversation prompt;  // ends with the user's turn
  std::string answer;   // empty when the file gives none
};
// Prompt records (above), one prompt each.
std::vector<Prompt> read_prompts(const std::string& path);

}  // namespace kiln::data
