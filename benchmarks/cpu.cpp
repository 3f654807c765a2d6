// CPU benchmark: a GPT-2 and a Llama training step (forward, backward, AdamW
// apart) and the ops around the GEMMs at those models' shapes, forward and
// backward, in float32. scripts/bench-cpu-torch times the same work in
// PyTorch and prints kiln / PyTorch. A program, never a test.
//
//   bench_cpu [--threads 2] [--repeats 20] [--json cpu.json] [--only layer_norm]
//
// Timing: each piece is run `repeats` times after 3 warm-ups; the median
// wall time is reported. "backward" is the median of forward + backward minus
// the forward's.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

using kiln::Tensor;

namespace {

struct Settings {
  int repeats = 20;
};

double median_ms(const std::function<void()>& fn, int repeats) {
  for (int i = 0; i < 3; ++i) fn();
  std::vector<double> samples;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    samples.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

struct Row {
  std::string name, shape;
  double forward_ms, backward_ms;
};

// An op's forward alone, then forward + backward of sum(out * w) for a fixed random w.
Row time_op(const std::string& name, const std::string& shape, const std::vector<Tensor>& inputs,
            const std::function<Tensor(const std::vector<Tensor>&)>& op, int repeats) {
  Tensor w;
  {
    kiln::NoGradGuard no_grad;
    w = kiln::randn(op(inputs).sizes());
  }
  const double f = median_ms(
      [&] {
        kiln::NoGradGuard no_grad;
        op(inputs);
      },
      repeats);
  std::vector<Tensor> leaves;
  for (const Tensor& x : inputs) leaves.push_back(kiln::is_floating(x.dtype()) ? x.detach().requires_grad_() : x);
  const double fb = median_ms(
      [&] {
        for (Tensor& x : leaves)
          if (x.requires_grad()) x.set_grad(Tensor());
        kiln::sum(op(leaves) * w).backward();
      },
      repeats);
  return {name, shape, f, std::max(0.0, fb - f)};
}

// A training step's forward, backward and AdamW, each timed on its own over `repeats` steps.
template <typename Model>
std::vector<Row> time_step(const std::string& name, Model& model, int64_t vocab, int64_t B, int64_t T, int repeats) {
  kiln::Generator gen(1);
  const Tensor x = kiln::randint(0, vocab, {B, T}, gen), y = kiln::randint(0, vocab, {B, T}, gen);
  kiln::optim::AdamW opt(kiln::optim::decay_groups(model.named_parameters(), 0.1), {.lr = 1e-4});
  const double f = median_ms(
      [&] {
        kiln::NoGradGuard no_grad;
        model.loss(x, y);
      },
      repeats);
  const double fb = median_ms(
      [&] {
        opt.zero_grad();
        model.loss(x, y).backward();
      },
      repeats);
  const double o = median_ms([&] { opt.step(); }, repeats);
  const std::string shape = fmt::format("B={} T={}", B, T);
  return {{name + " forward", shape, f, 0}, {name + " backward", shape, fb - f, 0}, {name + " adamw", shape, o, 0},
          {name + " step", shape, fb + o, 0}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Time kiln's CPU training steps and ops (compare with scripts/bench-cpu-torch)"};
  int threads = 2, repeats = 20;
  std::string json_path = "cpu.json", only;
  app.add_option("--threads", threads, "kiln::set_num_threads")->capture_default_str();
  app.add_option("--repeats", repeats, "timed runs of each piece (the median is kept)")->capture_default_str();
  app.add_option("--json", json_path, "write results here")->capture_default_str();
  app.add_option("--only", only, "run the pieces whose name contains this");
  CLI11_PARSE(app, argc, argv);
  try {
    kiln::set_num_threads(threads);
    kiln::Generator gen(0);
    auto rand = [&](kiln::Shape s) { return kiln::randn(s, gen); };
    auto ids = [&](int64_t high, kiln::Shape s) { return kiln::randint(0, high, s, gen); };
    std::vector<Row> rows;
    auto want = [&](const std::string& name) { return only.empty() || name.find(only) != std::string::npos; };
    // Inputs are made only for the ops that run.
    auto op = [&](const std::string& name, const std::string& shape,
                  const std::function<std::vector<Tensor>()>& make_inputs,
                  const std::function<Tensor(const std::vector<Tensor>&)>& fn) {
      if (!want(name)) return;
      rows.push_back(time_op(name, shape, make_inputs(), fn, repeats));
      fmt::print("{:<28} {:<22} forward {:8.3f} ms  backward {:8.3f} ms\n", name, shape, rows.back().forward_ms,
                 rows.back().backward_ms);
    };

    // The GPT example's shapes: B 16, T 128, C 192, 6 heads of 32, vocabulary 2048; and a 4096 x 768 norm.
    const int64_t B = 16, T = 128, C = 192, H = 6, D = 32, V = 2048, N = B * T;
    op("matmul", "1024x1024x1024", [&] { return std::vector<Tensor>{rand({1024, 1024}), rand({1024, 1024})}; },
       [](const auto& t) { return kiln::matmul(t[0], t[1]); });
    op("linear", "2048x192 -> 576", [&] { return std::vector<Tensor>{rand({N, C}), rand({3 * C, C}), rand({3 * C})}; },
       [](const auto& t) { return kiln::linear(t[0], t[1], t[2]); });
    op("layer_norm", "4096x768", [&] { return std::vector<Tensor>{rand({4096, 768}), rand({768}), rand({768})}; },
       [](const auto& t) { return kiln::layer_norm(t[0], {768}, t[1], t[2]); });
    op("layer_norm", "2048x192", [&] { return std::vector<Tensor>{rand({N, C}), rand({C}), rand({C})}; },
       [&](const auto& t) { return kiln::layer_norm(t[0], {C}, t[1], t[2]); });
    op("rms_norm", "4096x768", [&] { return std::vector<Tensor>{rand({4096, 768}), rand({768})}; },
       [](const auto& t) { return kiln::rms_norm(t[0], {768}, t[1]); });
    op("softmax", "16x6x128x128", [&] { return std::vector<Tensor>{rand({B, H, T, T})}; },
       [](const auto& t) { return kiln::softmax(t[0], -1); });
    op("cross_entropy", "2048x2048", [&] { return std::vector<Tensor>{rand({N, V}), ids(V, {N})}; },
       [](const auto& t) { return kiln::cross_entropy(t[0], t[1]); });
    op("gelu_tanh", "2048x768", [&] { return std::vector<Tensor>{rand({N, 4 * C})}; },
       [](const auto& t) { return kiln::gelu(t[0], "tanh"); });
    op("swiglu", "2048x512", [&] { return std::vector<Tensor>{rand({N, 512}), rand({N, 512})}; },
       [](const auto& t) { return kiln::swiglu(t[0], t[1]); });
    for (auto backend : {kiln::AttentionBackend::Fused, kiln::AttentionBackend::Composed}) {
      const std::string name = backend == kiln::AttentionBackend::Fused ? "attention_fused" : "attention_composed";
      op(name, "16x6x128x32 causal",
         [&] { return std::vector<Tensor>{rand({B, H, T, D}), rand({B, H, T, D}), rand({B, H, T, D})}; },
         [backend](const auto& t) {
           kiln::SettingsGuard guard;
           kiln::settings().attention = backend;
           return kiln::scaled_dot_product_attention(t[0], t[1], t[2], {.causal = true});
         });
    }
    op("embedding", "2048x192[16x128]", [&] { return std::vector<Tensor>{rand({V, C}), ids(V, {B, T})}; },
       [](const auto& t) { return kiln::embedding(t[0], t[1]); });
    op("add_broadcast", "16x128x192 + 192", [&] { return std::vector<Tensor>{rand({B, T, C}), rand({C})}; },
       [](const auto& t) { return t[0] + t[1]; });
    op("mul", "2048x768 * 2048x768", [&] { return std::vector<Tensor>{rand({N, 4 * C}), rand({N, 4 * C})}; },
       [](const auto& t) { return t[0] * t[1]; });
    op("sum_last", "2048x768 -> 2048", [&] { return std::vector<Tensor>{rand({N, 4 * C})}; },
       [](const auto& t) { return kiln::sum(t[0], {-1}); });
    op("sum_first", "2048x768 -> 768", [&] { return std::vector<Tensor>{rand({N, 4 * C})}; },
       [](const auto& t) { return kiln::sum(t[0], {0}); });

    if (want("gpt2")) {
      kiln::nn::GPT gpt({.vocab_size = V, .block_size = T, .n_layer = 4, .n_head = H, .n_embd = C}, gen);
      for (const Row& r : time_step("gpt2", gpt, V, B, T, repeats)) {
        rows.push_back(r);
        fmt::print("{:<28} {:<22} {:8.3f} ms\n", r.name, r.shape, r.forward_ms);
      }
    }
    if (want("llama")) {
      kiln::nn::Llama llama({.vocab_size = V, .hidden_size = C, .intermediate_size = 512, .num_hidden_layers = 4,
                             .num_attention_heads = H, .num_key_value_heads = 2, .max_position_embeddings = T},
                            gen);
      for (const Row& r : time_step("llama", llama, V, B, T, repeats)) {
        rows.push_back(r);
        fmt::print("{:<28} {:<22} {:8.3f} ms\n", r.name, r.shape, r.forward_ms);
      }
    }

    nlohmann::json out = nlohmann::json::array();
    for (const Row& r : rows)
      out.push_back({{"name", r.name}, {"shape", r.shape}, {"forward_ms", r.forward_ms}, {"backward_ms", r.backward_ms}});
    std::ofstream(json_path) << nlohmann::json{{"threads", threads}, {"rows", out}}.dump(2) << "\n";
  } catch (const kiln::Error& e) {
    fmt::print(stderr, "bench_cpu: {}\n", e.what());
    return 1;
  }
  return 0;
}
