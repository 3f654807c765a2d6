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
// --answers writes every prompt's greedy answer beside the right one.

#include <numeric>

#include "rollout.h"

namespace {

struct Args {
  std::string model, tokenizer, data, json, answers, device = "cpu";
  int64_t max_new_tokens = 16, batch = 64;
};

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
  if (world->rank() != 0) return 0;
  fmt::print("{}: held-out accuracy {:.3f} over {} prompts\n", dir, accuracy, prompts.size());
  if (!a.json.empty()) {
    std::ofstream out(a.json, std::ios::app);
    out << nlohmann::json{{"model", dir}, {"accuracy", accuracy}, {"prompts", prompts.size()}}.dump() << '\n';
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Held-out accuracy of greedy answers to prompts with checkable answers"};
  Args a;
  app.add_option("--model", a.model, "run or checkpoint directory of a causal model")->required();
  app.add_option("--tokenizer", a.tokenizer, "sentencepiece .model with kiln's special symbols")->required();
  app.add_option("--data", a.data, "JSON lines of {prompt, answer}")->required();
  app.add_option("--max-new-tokens", a.max_new_tokens, "longest answer")->capture_default_str();
  app.add_option("--batch", a.batch, "prompts generated together")->capture_default_str();
  app.add_option("--json", a.json, "append the result to this JSON-lines file");
  app.add_option("--answers", a.answers, "write each prompt's answer and whether it was right (JSON lines; one process)");
  app.add_option("--device", a.device, "cpu | cuda:N")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return align::run_stage("evaluate", [&] { return run(a); });
}
