// GPT-2 training-step benchmark: tokens/s and MFU of forward + backward +
// AdamW on random tokens. MFU counts (6 N + 12 L C T) FLOPs per token over the
// device's dense bf16 peak (989 TFLOP/s for an H100 SXM), as llm.c does.
//
//   gpt2_step --depth 12 --batch 16 --seq 1024 --dtype bfloat16    # the 124M model
//   gpt2_step --depth 6 --batch 2 --seq 64 --device cpu --steps 2  # a smoke run

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

int main(int argc, char** argv) {
  CLI::App app{"Time GPT-2 training steps"};
  int depth = 12;
  int64_t batch = 16, seq = 1024, steps = 10, warmup = 2;
  std::string device_name = "cuda", dtype = "bfloat16", json_path = "gpt2_step.json";
  double peak_tflops = 989.0;
  app.add_option("--depth", depth, "GPT-2 depth: 6, 12, 24, 36, 48")->capture_default_str();
  app.add_option("--batch", batch, "B")->capture_default_str();
  app.add_option("--seq", seq, "T")->capture_default_str();
  app.add_option("--steps", steps, "timed steps")->capture_default_str();
  app.add_option("--warmup", warmup, "untimed steps first")->capture_default_str();
  app.add_option("--device", device_name, "cuda | cpu")->capture_default_str();
  app.add_option("--dtype", dtype, "activations: bfloat16 | float32")->capture_default_str();
  app.add_option("--peak-tflops", peak_tflops, "the device's dense bf16 peak for MFU")->capture_default_str();
  app.add_option("--json", json_path, "write results here")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    const kiln::Device device(device_name);
    kiln::Generator gen(0);
    kiln::nn::GPTConfig config = kiln::nn::GPTConfig::gpt2(depth, 50257, seq);
    if (dtype == "bfloat16") config.compute_dtype = kiln::kBFloat16;
    kiln::nn::GPT model(config, gen, kiln::kFloat32, device);
    kiln::optim::AdamW opt(kiln::optim::decay_groups(model.named_parameters(), 0.1),
                           {.lr = 6e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8});
    auto params = model.parameters();
    auto step = [&] {
      kiln::Tensor x = kiln::randint(0, 50257, {batch, seq}, gen, kiln::TensorOptions(kiln::kInt64).device(device));
      kiln::Tensor y = kiln::randint(0, 50257, {batch, seq}, gen, kiln::TensorOptions(kiln::kInt64).device(device));
      opt.zero_grad();
      kiln::Tensor loss = model.loss(x, y);
      loss.backward();
      kiln::optim::clip_grad_norm(params, 1.0);
      opt.step();
      return loss.item<double>();  // synchronizes
    };
    for (int64_t i = 0; i < warmup; ++i) step();
    auto t0 = std::chrono::steady_clock::now();
    double loss = 0;
    for (int64_t i = 0; i < steps; ++i) loss = step();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / static_cast<double>(steps);
    const double tokens = static_cast<double>(batch * seq);
    const double tok_s = tokens / seconds;
    const double mfu = model.flops_per_token(seq) * tok_s / (peak_tflops * 1e12);
    fmt::print("GPT-2 d{} ({:.1f}M parameters), B={} T={}, {} activations on {}: {:.1f} ms/step, {:.0f} tokens/s, "
               "MFU {:.1f}% of {} TFLOP/s (last loss {:.3f})\n",
               depth, static_cast<double>(model.num_parameters()) / 1e6, batch, seq, dtype, device, seconds * 1e3, tok_s,
               100 * mfu, peak_tflops, loss);
    std::ofstream(json_path) << nlohmann::json{{"depth", depth}, {"parameters", model.num_parameters()},
                                               {"batch", batch}, {"seq", seq}, {"dtype", dtype},
                                               {"device", device.str()}, {"ms_per_step", seconds * 1e3},
                                               {"tokens_per_second", tok_s}, {"mfu", mfu},
                                               {"peak_tflops", peak_tflops}}
                                     .dump(2)
                             << "\n";
  } catch (const kiln::Error& e) {
    fmt::print(stderr, "gpt2_step: {}\n", e.what());
    return 1;
  }
  return 0;
}
