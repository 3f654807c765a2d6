#pragma once
// What the reinforcement-learning stages (grpo, ppo) share: prompts rendered
// for generation, responses sampled from them in batches and laid out as
// training rows, the rule that checks an answer, and the held-out accuracy.

#include <algorithm>
#include <chrono>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "stage.h"

namespace align {

// Prompt files rendered up to <|assistant|>, each cut to the window that
// leaves room for max_new_tokens (so generation and training see the same
// tokens), with the answers a rule checks.
struct Prompts {
  std::vector<kiln::data::ChatExample> examples;  // inputs: the prompt's tokens
  std::vector<std::string> answers;
};
inline Prompts render_prompts(const kiln::data::Tokenizer& tok, const std::vector<kiln::data::Prompt>& prompts,
                              const std::vector<int64_t>& which, int64_t max_new_tokens, int64_t max_positions) {
  Prompts out;
  for (int64_t i : which) {
    const kiln::data::Prompt& p = prompts[static_cast<size_t>(i)];
    out.examples.push_back(
        {kiln::nn::prompt_window(kiln::data::render_prompt(tok, p.prompt), max_new_tokens, max_positions), {}});
    out.answers.push_back(p.answer);
  }
  return out;
}

// The options the RL stages share beside StageArgs'.
struct RolloutArgs : StageArgs {
  std::string eval_data;
  int64_t max_new_tokens = 16, eval_batch = 64;
  double temperature = 1.0, clip = 0.2;
  bool keep_best = false;
};
inline void add_rollout_options(CLI::App& app, RolloutArgs& a) {
  app.add_option("--eval-data", a.eval_data, "held-out prompts with answers (default: a --val-fraction share of --data)");
  app.add_option("--max-new-tokens", a.max_new_tokens, "longest response")
      ->check(program::positive)->capture_default_str();
  app.add_option("--temperature", a.temperature, "sampling temperature of the rollouts")
      ->check(program::positive)->capture_default_str();
  app.add_option("--clip", a.clip, "the policy ratio's clip epsilon")->check(program::positive)->capture_default_str();
  app.add_option("--eval-batch", a.eval_batch, "prompts per batch of held-out generation")
      ->check(program::positive)->capture_default_str();
  app.add_flag("--keep-best", a.keep_best, "also keep the policy of the best held-out accuracy so far, in OUT/best");
}

// --keep-best: the policy whose held-out accuracy is the highest so far (the
// start's included, so there always is one) saved under out/best, one
// checkpoint: the step is chosen on --eval-data rather than being the last.
class BestPolicy {
 public:
  BestPolicy(const RolloutArgs& a, int64_t resumed_step) : a_(a) {
    if (!a.keep_best || !a.resume) return;
    std::ifstream in(a.out + "/metrics.jsonl");  // the best before the resumed step
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json m = nlohmann::json::parse(line, nullptr, false);
      if (m.is_object() && m.contains("val_accuracy") && m.value("step", int64_t{0}) <= resumed_step)
        best_ = std::max(best_, m["val_accuracy"].get<double>());
    }
  }
  void offer(double accuracy, int64_t step, const kiln::nn::TransformerLM& model, const kiln::dist::ParallelState& layout,
             const kiln::optim::Optimizer& opt, const kiln::data::LoaderPosition& at) {
    if (!a_.keep_best || accuracy <= best_) return;
    best_ = accuracy;
    const std::string path = kiln::dist::save_checkpoint(a_.out + "/best", model, layout, opt, {step, at, 0}, 1);
    if (!path.empty()) fmt::print("best held-out accuracy so far ({:.3f}): {}\n", accuracy, path);
  }

 private:
  const RolloutArgs& a_;
  double best_ = -1;
};

// The training prompts and the held-out ones (--eval-data, or a seeded
// --val-fraction share of --data), rendered for a model of max_positions.
struct PromptSplit {
  Prompts train, val;
};
inline PromptSplit read_prompt_split(const RolloutArgs& a, const kiln::data::Tokenizer& tok, int64_t max_positions) {
  const std::vector<kiln::data::Prompt> all = kiln::data::read_prompts(a.data);
  const std::vector<kiln::data::Prompt> heldout = a.eval_data.empty() ? all : kiln::data::read_prompts(a.eval_data);
  std::vector<int64_t> train_ids(all.size()), val_ids(heldout.size());
  std::iota(train_ids.begin(), train_ids.end(), 0);
  std::iota(val_ids.begin(), val_ids.end(), 0);
  if (a.eval_data.empty()) {
    const Split split = align::split(all.size(), a.val_fraction, a.seed);
    val_ids.assign(split.order.begin(), split.order.begin() + static_cast<std::ptrdiff_t>(split.held_out));
    train_ids.assign(split.order.begin() + static_cast<std::ptrdiff_t>(split.held_out), split.order.end());
  }
  return {render_prompts(tok, all, train_ids, a.max_new_tokens, max_positions),
          render_prompts(tok, heldout, val_ids, a.max_new_tokens, max_positions)};
}

// The generators of a step's rollouts, one a row, seeded by the step and the
// row's place in the whole data-parallel batch (rows first_row ..): a resumed
// run draws what the uninterrupted one drew, and data-parallel ranks what one
// process draws.
inline std::vector<kiln::Generator> rollout_generators(uint64_t seed, int64_t step, int64_t first_row, int64_t rows) {
  std::vector<kiln::Generator> out;
  for (int64_t r = first_row; r < first_row + rows; ++r) out.push_back(kiln::row_generator(seed, step, r));
  return out;
}

// Each figure's mean over the ranks of `group` (whose tensors live on device).
inline std::vector<double> mean_over(kiln::dist::ProcessGroup& group, const std::vector<double>& figures,
                                     kiln::Device device) {
  kiln::Tensor t = kiln::tensor(figures).to(device);
  group.all_reduce(t);
  std::vector<double> out;
  for (int64_t i = 0; i < t.numel(); ++i) out.push_back(t[i].item<double>() / group.size());
  return out;
}

// log pi of each target token (B, T) under the model's logits at the sampling
// temperature, as TRL and OpenRLHF take them: the ratio and the KL then
// compare the distribution the rollouts were drawn from.
inline kiln::Tensor rollout_log_probs(const kiln::nn::TransformerLM& model, const kiln::Tensor& inputs,
                                      const kiln::Tensor& targets, double temperature) {
  kiln::Tensor logits = model.forward(inputs);
  return kiln::nn::token_log_probs(temperature == 1.0 ? logits : logits * (1.0 / temperature), targets);
}

// A response as text, without its <|end|>, and whether it ended there (not
// cut by the token limit).
struct Response {
  std::string text;
  bool ended;
};
inline Response decode_response(const kiln::data::Tokenizer& tok, const std::vector<int64_t>& tokens) {
  const int64_t end = tok.special_id(kiln::data::Special::EndOfTurn);
  const bool ended = !tokens.empty() && tokens.back() == end;
  return {tok.decode(std::vector<uint32_t>(tokens.begin(), ended ? tokens.end() - 1 : tokens.end())), ended};
}

// The rule of the generated tasks: 1 when the response ended and is the
// answer, up to surrounding white space, else 0.
inline double rule_reward(const Response& response, const std::string& answer) {
  auto trim = [](const std::string& s) {
    const size_t first = s.find_first_not_of(" \t\n"), last = s.find_last_not_of(" \t\n");
    return first == std::string::npos ? std::string() : s.substr(first, last - first + 1);
  };
  return response.ended && trim(response.text) == trim(answer) ? 1.0 : 0.0;
}

// A step's rollouts laid out for training: each prompt followed by its
// response, padded; the targets are the response's tokens (its <|end|>
// included), -100 elsewhere.
struct Rollouts {
  kiln::Tensor inputs, targets, mask;        // (B, T); mask: 1.0 where targets is a response token
  kiln::Tensor sequences, sequence_lengths;  // (B, T + 1) each whole prompt and response, what a reward model scores
  std::vector<double> rule_rewards;          // rule_reward of each response against its prompt's answer
  int64_t response_tokens = 0;
  double seconds = 0;  // spent generating
};
// `group` samples of each prompt in `which` (a prompt's rows adjacent), drawn
// at --temperature by rollout_generators (rows numbered across the dp_rank's
// of the whole batch), stopping at <|end|> or --max-new-tokens.
inline Rollouts sample_rollouts(const kiln::nn::TransformerLM& model, const kiln::data::Tokenizer& tok,
                                const Prompts& prompts, const std::vector<int64_t>& which, int64_t group,
                                const RolloutArgs& a, int64_t step, int dp_rank, kiln::Device device) {
  std::vector<std::vector<int64_t>> ids;
  std::vector<const std::string*> answers;
  for (int64_t i : which)
    for (int64_t g = 0; g < group; ++g) {
      ids.push_back(prompts.examples[static_cast<size_t>(i)].inputs);
      answers.push_back(&prompts.answers[static_cast<size_t>(i)]);
    }
  const auto rows = static_cast<int64_t>(ids.size());
  std::vector<kiln::Generator> samplers = rollout_generators(a.seed, step, dp_rank * rows, rows);
  const auto t0 = std::chrono::steady_clock::now();
  const kiln::nn::BatchGeneration drawn = kiln::nn::generate_batch(
      model, ids, a.max_new_tokens, {.temperature = a.temperature}, samplers, tok.special_id(kiln::data::Special::EndOfTurn));
  Rollouts r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<kiln::data::ChatExample> training, whole;
  for (size_t b = 0; b < ids.size(); ++b) {
    const std::vector<int64_t>& response = drawn.tokens[b];
    std::vector<int64_t> seq = ids[b];
    seq.insert(seq.end(), response.begin(), response.end());
    kiln::data::ChatExample e{{seq.begin(), seq.end() - 1}, std::vector<int64_t>(seq.size() - 1, -100)};
    std::copy(response.begin(), response.end(), e.targets.end() - static_cast<std::ptrdiff_t>(response.size()));
    training.push_back(std::move(e));
    whole.push_back({seq, {}});
    r.rule_rewards.push_back(rule_reward(decode_response(tok, response), *answers[b]));
    r.response_tokens += static_cast<int64_t>(response.size());
  }
  auto padded = [&](const std::vector<kiln::data::ChatExample>& examples) {
    std::vector<const kiln::data::ChatExample*> views;
    for (const auto& e : examples) views.push_back(&e);
    return kiln::data::pad_examples(views, tok.special_id(kiln::data::Special::Pad), device);
  };
  kiln::data::ExampleBatch batch = padded(training), sequences = padded(whole);
  r.inputs = batch.inputs;
  r.targets = batch.targets;
  r.mask = (batch.targets != -100).to(kiln::kFloat32);
  r.sequences = sequences.inputs;
  r.sequence_lengths = sequences.lengths;
  return r;
}

// What heldout_accuracy saw of one prompt: its index, the greedy answer, and whether it was right.
using GradedAnswer = std::function<void(int64_t, const std::string&, bool)>;

// The share of prompts whose greedy answer is exactly right; data-parallel
// ranks take every R-th prompt and sum their counts over `group`. Each
// answer is shown to `graded` when given.
inline double heldout_accuracy(const kiln::nn::TransformerLM& model, const kiln::data::Tokenizer& tok,
                               const Prompts& prompts, int64_t max_new_tokens, int64_t batch,
                               kiln::dist::ProcessGroup& group, const GradedAnswer& graded = {}) {
  kiln::NoGradGuard no_grad;
  const int64_t end = tok.special_id(kiln::data::Special::EndOfTurn);
  const auto n = static_cast<int64_t>(prompts.examples.size());
  std::vector<double> right_and_seen(2, 0.0);
  std::vector<std::vector<int64_t>> ids;
  std::vector<std::string> answers;
  std::vector<int64_t> which;
  auto flush = [&] {
    std::vector<kiln::Generator> greedy(ids.size());
    kiln::nn::BatchGeneration drawn = kiln::nn::generate_batch(model, ids, max_new_tokens, {.temperature = 0}, greedy, end);
    for (size_t b = 0; b < ids.size(); ++b) {
      const Response response = decode_response(tok, drawn.tokens[b]);
      const bool right = rule_reward(response, answers[b]) > 0;
      right_and_seen[0] += right ? 1.0 : 0.0;
      right_and_seen[1] += 1;
      if (graded) graded(which[b], response.text, right);
    }
    ids.clear();
    answers.clear();
    which.clear();
  };
  for (int64_t i = group.rank(); i < n; i += group.size()) {
    ids.push_back(prompts.examples[static_cast<size_t>(i)].inputs);
    answers.push_back(prompts.answers[static_cast<size_t>(i)]);
    which.push_back(i);
    if (static_cast<int64_t>(ids.size()) == batch) flush();
  }
  if (!ids.empty()) flush();
  kiln::Tensor counts = kiln::tensor(right_and_seen).to(model.embed_tokens->weight.device());
  group.all_reduce(counts);
  return counts[0].item<double>() / std::max(1.0, counts[1].item<double>());
}

}  // namespace align
