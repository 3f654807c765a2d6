// Rollout benchmark: tokens/s of nn::generate_batch (a batch of prompts of
// different lengths at once) beside nn::generate (one prompt at a time), the
// two in one run, on a GPT-2-shaped model with random weights. Every row
// draws its full --new-tokens (no stop token), so both do the same work.
//
//   bench_generate --depth 12 --prompts 64 --device cuda --dtype bfloat16
//   bench_generate --depth 4 --width 192 --vocab 8192 --device cpu --dtype float32   # the align demo's size

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

int main(int argc, char** argv) {
  CLI::App app{"Time batched generation against one prompt at a time"};
  int depth = 12;
  int64_t width = 0, vocab = 50257, prompts = 64, shortest = 8, longest = 64, new_tokens = 32;
  std::string device_name = "cuda", dtype = "bfloat16", json_path = "generate.json";
  app.add_option("--depth", depth, "layers (GPT-2 sizes by depth unless --width)")->capture_default_str();
  app.add_option("--width", width, "channels (0: GPT-2's for the depth)")->capture_default_str();
  app.add_option("--vocab", vocab, "vocabulary")->capture_default_str();
  app.add_option("--prompts", prompts, "prompts in the batch")->capture_default_str();
  app.add_option("--shortest", shortest, "shortest prompt")->capture_default_str();
  app.add_option("--longest", longest, "longest prompt")->capture_default_str();
  app.add_option("--new-tokens", new_tokens, "tokens drawn per prompt")->capture_default_str();
  app.add_option("--device", device_name, "cuda | cpu")->capture_default_str();
  app.add_option("--dtype", dtype, "activations: bfloat16 | float32")->capture_default_str();
  app.add_option("--json", json_path, "write results here")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    const kiln::Device device(device_name);
    kiln::Generator gen(0);
    kiln::nn::GPTConfig config =
        width > 0 ? kiln::nn::GPTConfig{.vocab_size = vocab, .block_size = longest + new_tokens, .n_layer = depth,
                                        .n_head = std::max<int64_t>(1, width / 64), .n_embd = width}
                  : kiln::nn::GPTConfig::gpt2(depth, vocab, longest + new_tokens);
    if (dtype == "bfloat16") config.compute_dtype = kiln::kBFloat16;
    kiln::nn::GPT model(config, gen, kiln::kFloat32, device);
    model.eval();
    std::vector<std::vector<int64_t>> batch;
    for (int64_t p = 0; p < prompts; ++p) {
      const int64_t n = shortest + (longest - shortest) * p / std::max<int64_t>(1, prompts - 1);
      kiln::Tensor ids = kiln::randint(0, vocab, {n}, gen).to(kiln::kCPU, kiln::kInt64).contiguous();
      batch.push_back({ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + n});
    }
    auto seconds_of = [&](auto&& run) {
      const auto t0 = std::chrono::steady_clock::now();
      run();
      if (device.is_cuda()) kiln::cuda::synchronize(device.index);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    std::vector<kiln::Generator> rows(batch.size()), warm(1);
    kiln::nn::generate_batch(model, {batch[0]}, 2, {}, warm);  // first-call allocations, out of the timing
    const double batched = seconds_of([&] { kiln::nn::generate_batch(model, batch, new_tokens, {}, rows); });
    const double alone = seconds_of([&] {
      kiln::Generator g(1);
      for (const auto& p : batch) kiln::nn::generate(model, p, new_tokens, {}, g);
    });
    const double tokens = static_cast<double>(prompts * new_tokens);
    fmt::print("{} prompts of {}..{} tokens, {} new each, depth {} width {} on {} ({}):\n", prompts, shortest, longest,
               new_tokens, depth, config.n_embd, device_name, dtype);
    fmt::print("  generate_batch: {:10.0f} tokens/s\n  one at a time:  {:10.0f} tokens/s\n  ratio: {:.1f}x\n",
               tokens / batched, tokens / alone, alone / batched);
    std::ofstream(json_path) << nlohmann::json{{"prompts", prompts}, {"new_tokens", new_tokens}, {"depth", depth},
                                               {"width", config.n_embd}, {"device", device_name}, {"dtype", dtype},
                                               {"batched_tokens_per_second", tokens / batched},
                                               {"alone_tokens_per_second", tokens / alone}}
                                    .dump(2)
                             << '\n';
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_generate: {}\n", e.what());
    return 1;
  }
  return 0;
}
