#include "kiln/data/conversations.h"

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "kiln/base/error.h"

namespace kiln::data {

namespace {

using Json = nlohmann::json;

// Where a record came from, for errors.
struct Where {
  const std::string& path;
  int64_t line;
};

[[noreturn]] void bad(const Where& at, const std::string& what) {
  KILN_FAIL("[data] {}:{}: {}", at.path, at.line, what);
}

std::string text_field(const Json& j, const char* key, const Where& at) {
  if (!j.contains(key)) bad(at, fmt::format("no \"{}\"", key));
  if (!j[key].is_string()) bad(at, fmt::format("\"{}\" must be a string", key));
  return j[key].get<std::string>();
}

Role role_named(const std::string& name, const Where& at) {
  if (name == "system") return Role::System;
  if (name == "user" || name == "human") return Role::User;
  if (name == "assistant" || name == "gpt") return Role::Assistant;
  bad(at, fmt::format("unknown role \"{}\": use system, user or assistant (human or gpt in ShareGPT)", name));
}

// A list of turns under `key`, each {role_key: ..., text_key: ...}.
Conversation turns(const Json& list, const char* role_key, const char* text_key, const Where& at) {
  if (!list.is_array() || list.empty()) bad(at, "turns must be a non-empty list");
  Conversation c;
  for (const Json& turn : list) {
    if (!turn.is_object()) bad(at, "each turn must be an object");
    c.push_back({role_named(text_field(turn, role_key, at), at), text_field(turn, text_key, at)});
  }
  return c;
}

// A conversation that alternates user and assistant after an optional system turn.
void check_order(const Conversation& c, const Where& at) {
  size_t i = !c.empty() && c[0].role == Role::System ? 1 : 0;
  for (Role expected = Role::User; i < c.size(); ++i, expected = expected == Role::User ? Role::Assistant : Role::User)
    if (c[i].role != expected)
      bad(at, fmt::format("turn {} should be the {}'s: turns alternate user and assistant after an optional system "
                          "turn", i, expected == Role::User ? "user" : "assistant"));
}

Conversation conversation_of(const Json& j, const Where& at) {
  Conversation c;
  if (j.contains("messages")) {
    c = turns(j["messages"], "role", "content", at);
  } else if (j.contains("conversations")) {
    c = turns(j["conversations"], "from", "value", at);
  } else if (j.contains("instruction")) {
    std::string prompt = text_field(j, "instruction", at);
    if (j.contains("input") && !j["input"].is_null()) {
      const std::string input = text_field(j, "input", at);
      if (!input.empty()) prompt += "\n\n" + input;
    }
    c = {{Role::User, prompt}, {Role::Assistant, text_field(j, "output", at)}};
  } else {
    bad(at, "not a conversation: expected \"messages\", \"conversations\" or Alpaca's \"instruction\"/\"output\"");
  }
  check_order(c, at);
  return c;
}

// A prompt: a string (one user turn) or messages ending with the user's turn.
Conversation prompt_of(const Json& j, const Where& at) {
  Conversation c;
  if (j.is_string()) c = {{Role::User, j.get<std::string>()}};
  else c = turns(j, "role", "content", at);
  check_order(c, at);
  if (c.back().role != Role::User) bad(at, "a prompt must end with the user's turn");
  return c;
}

// An answer: a string, or messages whose last is the assistant's.
std::string answer_of(const Json& j, const char* key, const Where& at) {
  if (!j.contains(key)) bad(at, fmt::format("no \"{}\"", key));
  const Json& a = j[key];
  if (a.is_string()) return a.get<std::string>();
  Conversation c = turns(a, "role", "content", at);
  if (c.back().role != Role::Assistant) bad(at, fmt::format("\"{}\" must end with the assistant's turn", key));
  return c.back().content;
}

// Calls f(record, where) for each non-blank line of a JSON-lines file.
void for_each_record(const std::string& path, const std::function<void(const Json&, const Where&)>& f) {
  std::ifstream in(path);
  KILN_CHECK(in.good(), "[data] cannot read {}", path);
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const Where at{path, n};
    Json j;
    try {
      j = Json::parse(line);
    } catch (const Json::exception& e) {  // a syntax error, or a number past a double (406)
      bad(at, fmt::format("not valid JSON: {}", e.what()));
    }
    if (!j.is_object()) bad(at, "a record must be a JSON object");
    f(j, at);
  }
}

}  // namespace

std::vector<Conversation> read_conversations(const std::string& path) {
  std::vector<Conversation> out;
  for_each_record(path, [&](const Json& j, const Where& at) {
    Conversation c = conversation_of(j, at);
    if (c.back().role != Role::Assistant) bad(at, "a conversation must end with the assistant's turn");
    out.push_back(std::move(c));
  });
  return out;
}

std::vector<PreferencePair> read_preferences(const std::string& path) {
  std::vector<PreferencePair> out;
  for_each_record(path, [&](const Json& j, const Where& at) {
    if (!j.contains("prompt")) bad(at, "no \"prompt\"");
    out.push_back({prompt_of(j["prompt"], at), answer_of(j, "chosen", at), answer_of(j, "rejected", at)});
  });
  return out;
}

std::vector<Prompt> read_prompts(const std::string& path) {
  std::vector<Prompt> out;
  for_each_record(path, [&](const Json& j, const Where& at) {
    Conversation c;
    if (j.contains("prompt")) c = prompt_of(j["prompt"], at);
    else if (j.contains("messages")) c = prompt_of(j["messages"], at);
    else bad(at, "no \"prompt\" or \"messages\"");
    std::string answer;
    if (j.contains("answer")) {
      if (j["answer"].is_string()) answer = j["answer"].get<std::string>();
      else if (j["answer"].is_number()) answer = j["answer"].dump();
      else bad(at, "\"answer\" must be a string or a number");
    }
    out.push_back({std::move(c), std::move(answer)});
  });
  return out;
}

}  // namespace kiln::data
