// evaluate: the share of held-out prompts a model answers exactly right with
// greedy decoding (the rule of examples/align/make_tasks), the figure every
// alignment stage is compared by.
//
//   evaluate --model out/align/sft --tokenizer data/fortunes/tokenizer.model \
//            --data out/align/tasks/heldout.jsonl
//
// --model is a run directory (its newest checkpoint) or one checkpoint;
// --data is JSON lines of {"prompt": ..., "answer": ...}. Prints the
// accuracy and, with --json, appends {"model", "accuracy", "prompts"} to a file;
// --answers writes every prompt's greedy answer beside the right one. With
// --pass-at K it also samples K answers per prompt at --temperature and
// reports pass@K (the share of prompts with a right one among them) and the
// share of right samples: how much a reinforcement-learning stage, which
// turns right samples into greedy answers, has to work with. --comparisons
// then writes preference pairs ranked by the rule from those samples, as
// InstructGPT's labelers rank the SFT model's outputs: for each prompt, a
// right sample (or the given answer when none is) over each distinct wrong one.

#include <numeric>
#include <set>

#include "rollout.h"

namespace {

struct Args {
  std::string model, tokenizer, data, json, answers, comparisons, device = "cpu";
  int64_t max_new_tokens = 16, batch = 64, pass_at = 0;
  double temperature = 1.0;
  uint64_t seed = 1;
};

// pass@k and the share of right samples over the prompts, each prompt's k
// samples drawn from rollout_generators of (seed, prompt, sample); data-parallel
// ranks take every R-th prompt and sum their counts over `group`.
// Each prompt's samples, for --comparisons: f(prompt index, responses, rights).
using Samples = std::function<void(int64_t, const std::vector<align::Response>&, const std::vector<bool>&)>;
std::pair<double, double> sampled_accuracy(const kiln::nn::TransformerLM& model, const kiln::data::Tokenizer& tok,
                                           const align::Prompts& prompts, const Args& a,
                                           kiln::dist::ProcessGroup& group, const Samples& samples) {
  kiln::NoGradGuard no_grad;
  const int64_t end = tok.special_id(kiln::data::Special::EndOfTurn);
  const auto n = static_cast<int64_t>(prompts.examples.size());
  std::vector<double> counts(3, 0.0);  // prompts solved, right samples, prompts seen
  const int64_t per_batch = std::max<int64_t>(1, a.batch / a.pass_at);
  for (int64_t first = group.rank() * per_batch; first < n; first += group.size() * per_batch) {
    std::vector<std::vector<int64_t>> ids;
    const int64_t last = std::min(n, first + per_batch);
    for (int64_t i = first; i < last; ++i)
      for (int64_t k = 0; k < a.pass_at; ++k) ids.push_back(prompts.examples[static_cast<size_t>(i)].inputs);
    // Sample k of prompt i is row i k + k of one step's rollouts.
    std::vector<kiln::Generator> samplers =
        align::rollout_generators(a.seed, 0, first * a.pass_at, static_cast<int64_t>(ids.size()));
    const kiln::nn::BatchGeneration drawn =
        kiln::nn::generate_batch(model, ids, a.max_new_tokens, {.temperature = a.temperature}, samplers, end);
    for (int64_t i = first; i < last; ++i) {
      double right = 0;
      std::vector<align::Response> responses;
      std::vector<bool> rights;
      for (int64_t k = 0; k < a.pass_at; ++k) {
        responses.push_back(
            align::decode_response(tok, drawn.tokens[static_cast<size_t>((i - first) * a.pass_at + k)]));
        rights.push_back(align::rule_reward(responses.back(), prompts.answers[static_cast<size_t>(i)]) > 0);
        right += rights.back() ? 1.0 : 0.0;
      }
      if (samples) samples(i, responses, rights);
      counts[0] += right > 0 ? 1.0 : 0.0;
      counts[1] += right;
      counts[2] += 1;
    }
  }
  kiln::Tensor total = kiln::tensor(counts).to(model.embed_tokens->weight.device());
  group.all_reduce(total);
  const double seen = std::max(1.0, total[2].item<double>());
  return {total[0].item<double>() / seen, total[1].item<double>() / (seen * static_cast<double>(a.pass_at))};
}

int run(const Args& a) {
  auto world = kiln::dist::mpi_world();
  kiln::dist::ParallelState layout(world, 1, 1, world->size());
  const kiln::Device device(a.device);
  kiln::data::Tokenizer tok(a.tokenizer);
  const std::string dir = align::checkpoint_dir(a.model);
  const kiln::nn::ModelSpec spec = kiln::nn::hf::read_config(dir);
  kiln::Generator gen(0);
  kiln::nn::TransformerLM model(spec, gen, kiln::kFloat32, device, std::make_shared<kiln::dist::ModelParallel>(layout));
  kiln::dist::load_checkpoint(dir, model);
  model.eval();
  const std::vector<kiln::data::Prompt> prompts = kiln::data::read_prompts(a.data);
  std::vector<int64_t> all(prompts.size());
  std::iota(all.begin(), all.end(), 0);
  const align::Prompts rendered = align::render_prompts(tok, prompts, all, a.max_new_tokens, spec.max_positions);
  std::ofstream answers;
  if (!a.answers.empty()) answers.open(a.answers);
  auto show = [&](int64_t i, const std::string& response, bool right) {
    const kiln::data::Prompt& p = prompts[static_cast<size_t>(i)];
    answers << nlohmann::json{{"prompt", p.prompt.back().content}, {"answer", p.answer}, {"response", response},
                              {"right", right}}.dump()
            << '\n';
  };
  const double accuracy = align::heldout_accuracy(model, tok, rendered, a.max_new_tokens, a.batch, *layout.dp_group(),
                                                  a.answers.empty() ? align::GradedAnswer{} : show);
  nlohmann::json result{{"model", dir}, {"accuracy", accuracy}, {"prompts", prompts.size()}};
  std::ofstream comparisons;
  int64_t pairs = 0;
  Samples rank_samples;
  if (!a.comparisons.empty()) {
    KILN_CHECK(a.pass_at > 0 && world->size() == 1, "[evaluate] --comparisons needs --pass-at and one process");
    comparisons.open(a.comparisons);
    KILN_CHECK(comparisons.good(), "[evaluate] cannot write {}", a.comparisons);
    rank_samples = [&](int64_t i, const std::vector<align::Response>& responses, const std::vector<bool>& rights) {
      const kiln::data::Prompt& p = prompts[static_cast<size_t>(i)];
      const auto first_right = std::find(rights.begin(), rights.end(), true);
      const std::string chosen = first_right == rights.end() ? p.answer : responses[first_right - rights.begin()].text;
      std::set<std::string> wrong{chosen};  // an unfinished right answer reads as the right one: no pair
      for (size_t k = 0; k < responses.size(); ++k)
        if (!rights[k] && wrong.insert(responses[k].text).second) {
          comparisons << nlohmann::json{{"prompt", p.prompt.back().content}, {"chosen", chosen},
                                        {"rejected", responses[k].text}}.dump()
                      << '\n';
          ++pairs;
        }
    };
  }
  if (a.pass_at > 0) {
    const auto [pass, right] = sampled_accuracy(model, tok, rendered, a, *layout.dp_group(), rank_samples);
    result[fmt::format("pass_at_{}", a.pass_at)] = pass;
    result["sample_accuracy"] = right;
    result["temperature"] = a.temperature;
  }
  if (world->rank() != 0) return 0;
  fmt::print("{}: held-out accuracy {:.3f} over {} prompts{}\n", dir, accuracy, prompts.size(),
             a.pass_at > 0 ? fmt::format("; pass@{} {:.3f}, right samples {:.3f} at temperature {}", a.pass_at,
                                         result[fmt::format("pass_at_{}", a.pass_at)].get<double>(),
                                         result["sample_accuracy"].get<double>(), a.temperature)
                           : "");
  if (!a.json.empty()) std::ofstream(a.json, std::ios::app) << result.dump() << '\n';
  if (comparisons.is_open()) fmt::print("{} preference pairs ranked by the rule in {}\n", pairs, a.comparisons);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Held-out accuracy of greedy answers to prompts with checkable answers"};
  Args a;
  app.add_option("--model", a.model, "run or checkpoint directory of a causal model")->required();
  app.add_option("--tokenizer", a.tokenizer, "sentencepiece .model with kiln's special symbols")->required();
  app.add_option("--data", a.data, "JSON lines of {prompt, answer}")->required();
  app.add_option("--max-new-tokens", a.max_new_tokens, "longest answer")
      ->check(program::positive)->capture_default_str();
  app.add_option("--batch", a.batch, "prompts generated together")->check(program::positive)->capture_default_str();
  app.add_option("--json", a.json, "append the result to this JSON-lines file");
  app.add_option("--answers", a.answers, "write each prompt's answer and whether it was right (JSON lines; one process)");
  app.add_option("--pass-at", a.pass_at, "also sample this many answers per prompt: pass@K and right samples")
      ->check(program::non_negative)
      ->capture_default_str();
  app.add_option("--temperature", a.temperature, "sampling temperature of --pass-at")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--seed", a.seed, "samples of --pass-at")->capture_default_str();
  app.add_option("--comparisons", a.comparisons, "write pairs of --pass-at samples ranked by the rule (JSON lines of "
                 "{prompt, chosen, rejected}; one process)");
  app.add_option("--device", a.device, "cpu | cuda:N")->capture_default_str();
  if (auto code = program::parse(app, argc, argv)) return *code;
  return program::run("evaluate", [&] { return run(a); });
}
