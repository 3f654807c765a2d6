// generate: sample text from a checkpoint with the KV cache.
//
//   generate --checkpoint out/fortunes --tokenizer data/fortunes/tokenizer.model \
//            --prompt "The best" --temperature 0.8 --top-k 40 --top-p 0.95
//
// --checkpoint takes a run directory (its latest checkpoint is used) or one
// checkpoint directory, kiln's or a Hugging Face GPT-2 or Llama export
// (config.json + model.safetensors).

#include <CLI/CLI.hpp>
#include <filesystem>

#include <kiln/kiln.h>

#include "../program.h"

int main(int argc, char** argv) {
  CLI::App app{"Sample text from a GPT-2 or Llama checkpoint"};
  std::string checkpoint, tokenizer, prompt, device = "cpu";
  int64_t max_tokens = 128, samples = 1;
  kiln::nn::SamplingOptions sampling{.temperature = 0.8, .top_k = 40, .top_p = 0.95};
  uint64_t seed = 0;
  app.add_option("--checkpoint", checkpoint, "run or checkpoint directory")->required();
  app.add_option("--tokenizer", tokenizer, "sentencepiece .model")->required();
  app.add_option("--prompt", prompt, "text to continue (default: a new document)");
  app.add_option("--max-tokens", max_tokens, "tokens to generate per sample")
      ->check(program::positive)->capture_default_str();
  app.add_option("--num-samples", samples, "samples to draw")->check(program::positive)->capture_default_str();
  app.add_option("--temperature", sampling.temperature, "0 for greedy")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--top-k", sampling.top_k, "keep the k most likely tokens, 0 for all")
      ->check(program::non_negative)->capture_default_str();
  app.add_option("--top-p", sampling.top_p, "nucleus: smallest set with this much mass")
      ->check(program::in_range(std::nextafter(0.0, 1.0), 1, "a number in (0, 1]"))->capture_default_str();
  app.add_option("--seed", seed, "sampling seed")->capture_default_str();
  app.add_option("--device", device, "cpu | cuda:N")->capture_default_str();
  if (auto code = program::parse(app, argc, argv)) return *code;
  return program::run("generate", [&] {
    std::string dir = checkpoint;
    if (std::string latest = kiln::dist::latest_checkpoint(checkpoint); !latest.empty()) dir = latest;
    kiln::data::Tokenizer tok(tokenizer);
    kiln::nn::TransformerLM model(kiln::nn::hf::read_config(dir), kiln::default_generator(), kiln::kFloat32,
                                  kiln::Device(device));
    kiln::dist::load_checkpoint(dir, model);
    model.eval();
    std::vector<int64_t> ids{static_cast<int64_t>(tok.eos_id())};
    for (uint32_t id : tok.encode(prompt)) ids.push_back(id);
    kiln::Generator gen(seed);
    for (int64_t s = 0; s < samples; ++s) {
      auto out = kiln::nn::generate(model, ids, max_tokens, sampling, gen, tok.eos_id());
      if (!out.empty() && out.back() == static_cast<int64_t>(tok.eos_id())) out.pop_back();
      fmt::print("{}{}\n{}\n", prompt, tok.decode({out.begin(), out.end()}), s + 1 < samples ? "---" : "");
    }
    return 0;
  });
}
