// Instruction data in the shapes users have (Alpaca, ShareGPT/Vicuna,
// messages, preference pairs, prompts) and the chat template's exact token
// and target layout.

#include <filesystem>
#include <fstream>

#include "helpers.h"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

// A JSON-lines file of the given lines, removed with the object.
struct JsonLines {
  std::string path;
  explicit JsonLines(const std::string& name, const std::vector<std::string>& lines)
      : path((fs::temp_directory_path() / name).string()) {
    std::ofstream out(path);
    for (const std::string& l : lines) out << l << '\n';
  }
  ~JsonLines() { fs::remove(path); }
};

using data::Role;

// A tokenizer with kiln's special symbols, trained once.
const data::Tokenizer& tokenizer() {
  static const data::Tokenizer tok = [] {
    const fs::path dir = fs::temp_directory_path() / "kiln_test_chat_tokenizer";
    fs::create_directories(dir);
    std::vector<std::string> docs;
    for (int i = 0; i < 300; ++i) docs.push_back(fmt::format("what is {} plus {}? it is {}.", i % 10, i % 7, i % 10 + i % 7));
    data::Tokenizer::train(docs, (dir / "tok").string(), {.vocab_size = 400, .sentinels = 0});
    data::Tokenizer loaded((dir / "tok.model").string());  // read whole: the files can go
    fs::remove_all(dir);
    return loaded;
  }();
  return tok;
}

}  // namespace

TEST_CASE("conversations read from Alpaca, ShareGPT and messages records") {
  JsonLines f("kiln_test_conversations.jsonl",
              {R"({"instruction": "Add.", "input": "2 and 3", "output": "5"})",
               R"({"instruction": "Say hi.", "input": "", "output": "hi"})",
               "",
               R"({"conversations": [{"from": "system", "value": "Be terse."}, {"from": "human", "value": "Hi"}, )"
               R"({"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye"}]})",
               R"({"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]})"});
  auto c = data::read_conversations(f.path);
  REQUIRE(c.size() == 4);
  CHECK(c[0] == data::Conversation{{Role::User, "Add.\n\n2 and 3"}, {Role::Assistant, "5"}});
  CHECK(c[1] == data::Conversation{{Role::User, "Say hi."}, {Role::Assistant, "hi"}});
  CHECK(c[2] == data::Conversation{{Role::System, "Be terse."}, {Role::User, "Hi"}, {Role::Assistant, "Hello"},
                                   {Role::User, "Bye"}, {Role::Assistant, "Bye"}});
  CHECK(c[3] == data::Conversation{{Role::User, "1+1?"}, {Role::Assistant, "2"}});
}

TEST_CASE("bad records name the file and line") {
  auto error_of = [](const std::string& record) {
    JsonLines f("kiln_test_bad.jsonl", {R"({"instruction": "ok", "output": "ok"})", record});
    try {
      data::read_conversations(f.path);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(error_of("{not json"), Catch::Contains("kiln_test_bad.jsonl:2: not valid JSON"));
  CHECK_THAT(error_of(R"({"instruction": "x"})"), Catch::Contains(":2: no \"output\""));
  CHECK_THAT(error_of(R"({"messages": [{"role": "robot", "content": "x"}]})"), Catch::Contains("unknown role \"robot\""));
  CHECK_THAT(error_of(R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})"),
             Catch::Contains("turn 1 should be the assistant's"));
  CHECK_THAT(error_of(R"({"messages": [{"role": "user", "content": "a"}]})"),
             Catch::Contains("must end with the assistant's turn"));
  CHECK_THAT(error_of(R"({"text": "a"})"), Catch::Contains("not a conversation"));
  CHECK_THAT(error_of(R"({"messages": [{"role": "user", "content": 3}]})"), Catch::Contains("\"content\" must be a string"));
  CHECK_THROWS_WITH(data::read_conversations("/nonexistent/x.jsonl"), Catch::Contains("cannot read /nonexistent/x.jsonl"));
}

TEST_CASE("preference pairs and prompts") {
  JsonLines p("kiln_test_preferences.jsonl",
              {R"({"prompt": "2+2?", "chosen": "4", "rejected": "5"})",
               R"({"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "user", "content": "Hi"}, )"
               R"({"role": "assistant", "content": "Hello"}], "rejected": "Go away"})"});
  auto pairs = data::read_preferences(p.path);
  REQUIRE(pairs.size() == 2);
  CHECK(pairs[0].prompt == data::Conversation{{Role::User, "2+2?"}});
  CHECK(pairs[0].chosen == "4");
  CHECK(pairs[1].chosen == "Hello");
  CHECK(pairs[1].rejected == "Go away");
  JsonLines q("kiln_test_prompts.jsonl", {R"({"prompt": "3+4?", "answer": 7})", R"({"prompt": "name?"})"});
  auto prompts = data::read_prompts(q.path);
  REQUIRE(prompts.size() == 2);
  CHECK(prompts[0].answer == "7");
  CHECK(prompts[1].answer.empty());
  JsonLines bad("kiln_test_bad_preferences.jsonl", {R"({"prompt": "x", "chosen": "y"})"});
  CHECK_THROWS_WITH(data::read_preferences(bad.path), Catch::Contains(":1: no \"rejected\""));
}

TEST_CASE("the chat template's tokens and targets for a two-turn conversation") {
  const data::Tokenizer& tok = tokenizer();
  auto id = [&](data::Special s) { return static_cast<int64_t>(tok.special_id(s)); };
  auto text = [&](const std::string& s) {
    std::vector<int64_t> out;
    for (uint32_t t : tok.encode(s)) out.push_back(t);
    return out;
  };
  const data::Conversation c{{Role::System, "be brief"}, {Role::User, "what is 2 plus 3?"}, {Role::Assistant, "it is 5."},
                             {Role::User, "what is 1 plus 1?"}, {Role::Assistant, "it is 2."}};
  // The whole layout, token by token: marker, text, end of turn.
  std::vector<int64_t> want;
  std::vector<bool> trained;
  auto turn = [&](data::Special marker, const std::string& s, bool learn) {
    want.push_back(id(marker));
    trained.push_back(false);
    for (int64_t t : text(s)) {
      want.push_back(t);
      trained.push_back(learn);
    }
    want.push_back(id(data::Special::EndOfTurn));
    trained.push_back(learn);
  };
  turn(data::Special::System, "be brief", false);
  turn(data::Special::User, "what is 2 plus 3?", false);
  turn(data::Special::Assistant, "it is 5.", true);
  turn(data::Special::User, "what is 1 plus 1?", false);
  turn(data::Special::Assistant, "it is 2.", true);
  CHECK(data::render(tok, c) == want);

  auto e = data::chat_example(tok, c);
  REQUIRE(e);
  CHECK(e->inputs == std::vector<int64_t>(want.begin(), want.end() - 1));
  for (size_t t = 0; t < e->targets.size(); ++t) {
    INFO("position " << t);
    CHECK(e->targets[t] == (trained[t + 1] ? want[t + 1] : -100));
  }
  // Only the last answer: the first assistant turn's targets are ignored too.
  auto last = data::chat_example(tok, c, {.train_every_assistant_turn = false});
  const size_t first_answer_end = 2 + text("be brief").size() + 2 + text("what is 2 plus 3?").size() + 2 +
                                  text("it is 5.").size();
  for (size_t t = 0; t < first_answer_end; ++t) CHECK(last->targets[t] == -100);
  CHECK(last->targets.back() == id(data::Special::EndOfTurn));
  // Cut short: 6 inputs keep none of the answers, and the example is dropped; a cut inside an answer keeps its start.
  CHECK(!data::chat_example(tok, c, {.max_tokens = 6}));
  const int64_t into_answer = static_cast<int64_t>(first_answer_end) - 2;
  auto cut = data::chat_example(tok, c, {.max_tokens = into_answer});
  REQUIRE(cut);
  CHECK(static_cast<int64_t>(cut->inputs.size()) == into_answer);
  // A prompt to continue ends with the assistant's marker.
  auto prompt = data::render_prompt(tok, {{Role::User, "what is 1 plus 1?"}});
  CHECK(prompt.back() == id(data::Special::Assistant));
  CHECK(prompt.size() == text("what is 1 plus 1?").size() + 3);
}
