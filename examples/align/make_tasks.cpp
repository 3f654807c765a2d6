// make_tasks: instruction tasks whose answers a rule checks, for the
// alignment demonstration (scripts/align-demo): sums and differences of
// small numbers, and counting or reversing the letters of words from a
// corpus (Debian's fortunes by default).
//
//   make_tasks --out out/align/tasks --heldout 600
//   make_tasks --out out/align/tasks --tasks count --per-task 3000   # one task
//   make_tasks ... --demonstrations 300   # answers written out for 300 of them
//
// Every question is asked once: a held-out and a validation share of each
// task are kept apart from everything trained on. Writes, as JSON lines (kiln/data/conversations.h):
//   sft.jsonl      the training questions with their answers (messages): all,
//                  or the first --demonstrations of each task (InstructGPT's
//                  setting: demonstrations are scarcer than comparisons)
//   prompts.jsonl  the same questions with "answer", for the RL stages
//   pairs.jsonl    each training question with the right answer chosen over a
//                  near miss (a sum off by one, two letters swapped)
//   validation.jsonl  more questions with "answer" kept apart, the stages'
//                  --eval-data: settings are chosen on these, never on heldout
//   heldout.jsonl  the held-out questions with "answer": the figure reported

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "../program.h"

namespace {

struct Task {
  std::string question, answer, near_miss;
};

// Lowercase words of 3 to `longest` letters found in the files under dir, each once, sorted.
std::vector<std::string> corpus_words(const std::string& dir, size_t longest) {
  std::set<std::string> words;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file() || e.path().extension() == ".dat" || e.path().extension() == ".u8") continue;
    std::ifstream in(e.path());
    std::string word;
    for (char c; in.get(c);) {
      if (std::isalpha(static_cast<unsigned char>(c))) {
        word += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        continue;
      }
      if (word.size() >= 3 && word.size() <= longest) words.insert(word);
      word.clear();
    }
  }
  return {words.begin(), words.end()};
}

// Every task's questions by name: sum, difference, count, reverse.
std::map<std::string, std::vector<Task>> all_tasks(const std::vector<std::string>& words, std::mt19937_64& rng) {
  auto off_by = [&](int64_t right) {
    const int64_t step = static_cast<int64_t>(rng() % 2) + 1;
    return std::to_string(right == 0 || rng() % 2 ? right + step : right - step);
  };
  std::vector<Task> sums, differences, counts, reversals;
  for (int a = 0; a < 50; ++a)
    for (int b = 0; b < 50; ++b) {
      sums.push_back({fmt::format("What is {} plus {}?", a, b), std::to_string(a + b), off_by(a + b)});
      if (a >= b) differences.push_back({fmt::format("What is {} minus {}?", a, b), std::to_string(a - b), off_by(a - b)});
    }
  for (const std::string& w : words) {
    counts.push_back({fmt::format("How many letters are in \"{}\"?", w), std::to_string(w.size()),
                      off_by(static_cast<int64_t>(w.size()))});
    if (w.size() > 5) continue;
    std::string reversed(w.rbegin(), w.rend()), swapped = reversed;
    std::swap(swapped[0], swapped[1]);
    if (swapped == reversed) std::swap(swapped[1], swapped[2]);
    if (swapped != reversed) reversals.push_back({fmt::format("Reverse the letters of \"{}\".", w), reversed, swapped});
  }
  return {{"sum", sums}, {"difference", differences}, {"count", counts}, {"reverse", reversals}};
}

void write_lines(const std::string& path, const std::vector<nlohmann::json>& records) {
  std::ofstream out(path);
  KILN_CHECK(out.good(), "[make_tasks] cannot write {}", path);
  for (const auto& r : records) out << r.dump() << '\n';
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Instruction tasks with checkable answers, for the alignment stages"};
  std::string out = "out/align/tasks", words_dir = "/usr/share/games/fortunes";
  int64_t heldout = 600, validation = 300, per_task = 2000, demonstrations = -1;
  uint64_t seed = 1;
  std::vector<std::string> chosen = {"sum", "difference", "count", "reverse"};
  app.add_option("--out", out, "directory of the JSON-lines files")->capture_default_str();
  app.add_option("--words", words_dir, "text whose words are counted and reversed")->capture_default_str();
  app.add_option("--heldout", heldout, "held-out questions, shared equally among the tasks")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--validation", validation, "validation questions, shared equally among the tasks")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--per-task", per_task, "training questions per task at most")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--demonstrations", demonstrations, "training questions per task whose answer is written out for "
                 "SFT (-1: all); pairs and prompts cover every training question")
      ->check(program::in_range(-1, DBL_MAX, "-1 or a number >= 0"))->capture_default_str();
  app.add_option("--tasks", chosen, "which tasks: sum difference count reverse")->capture_default_str();
  app.add_option("--seed", seed, "which questions are held out, and the near misses")->capture_default_str();
  if (auto code = program::parse(app, argc, argv)) return *code;
  return program::run("make_tasks", [&] {
    std::mt19937_64 rng(seed);
    std::map<std::string, std::vector<Task>> every = all_tasks(corpus_words(words_dir, 9), rng);
    std::vector<std::vector<Task>> tasks;
    for (const std::string& name : chosen) {
      KILN_CHECK(every.count(name), "[make_tasks] no task named '{}' (sum, difference, count, reverse)", name);
      tasks.push_back(every.at(name));
    }
    const auto share = [&](int64_t n) { return (n + static_cast<int64_t>(tasks.size()) - 1) / static_cast<int64_t>(tasks.size()); };
    const int64_t each = share(heldout), kept = each + share(validation);
    std::vector<nlohmann::json> sft, prompts, pairs, held, val;
    for (std::vector<Task>& task : tasks) {
      KILN_CHECK(static_cast<int64_t>(task.size()) > kept, "[make_tasks] a task has {} questions, fewer than the {} "
                 "to keep apart: give --words a larger corpus", task.size(), kept);
      std::shuffle(task.begin(), task.end(), rng);
      for (int64_t i = 0; i < std::min<int64_t>(static_cast<int64_t>(task.size()), kept + per_task); ++i) {
        const Task& t = task[static_cast<size_t>(i)];
        if (i < kept) {
          (i < each ? held : val).push_back({{"prompt", t.question}, {"answer", t.answer}});
          continue;
        }
        if (demonstrations < 0 || i - kept < demonstrations)
          sft.push_back({{"messages", {{{"role", "user"}, {"content", t.question}},
                                       {{"role", "assistant"}, {"content", t.answer}}}}});
        prompts.push_back({{"prompt", t.question}, {"answer", t.answer}});
        pairs.push_back({{"prompt", t.question}, {"chosen", t.answer}, {"rejected", t.near_miss}});
      }
    }
    std::filesystem::create_directories(out);
    write_lines(out + "/sft.jsonl", sft);
    write_lines(out + "/prompts.jsonl", prompts);
    write_lines(out + "/pairs.jsonl", pairs);
    write_lines(out + "/validation.jsonl", val);
    write_lines(out + "/heldout.jsonl", held);
    fmt::print("make_tasks: {} training questions ({} with written answers), {} for validation, {} held out, in {}\n",
               prompts.size(), sft.size(), val.size(), held.size(), out);
    return 0;
  });
}
