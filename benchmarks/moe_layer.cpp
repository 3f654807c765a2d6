// MoE layer benchmark: forward + backward of one mixture-of-experts layer
// (router, permutation, the experts' grouped GEMMs, unpermutation), of its
// expert GEMMs alone (on CUDA also as one cuBLAS grouped launch), and of the
// dense SwiGLU MLP with the same active FLOPs (hidden size top_k x the
// experts'), beside one plain GEMM of the same FLOPs
// measured in the same run: the ceiling the layer is compared with.
//
//   bench_moe                                  # CPU-sized defaults
//   bench_moe --mixtral --device cuda --dtype bfloat16
//       # Mixtral 8x7B's layer (4096 -> 14336, 8 experts, top-2) at 4096
//       # tokens: Megatron-Core's per-GPU token count

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include <kiln/kiln.h>

namespace {

struct Timing {
  double seconds, flops;
  double rate() const { return flops / seconds; }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Time an MoE layer against the dense MLP of the same active FLOPs"};
  int64_t tokens = 2048, channels = 256, ffn = 512, experts = 8, top_k = 2, repeats = 3;
  bool mixtral = false;
  std::string device_name = "cpu", dtype = "float32", json_path = "moe.json";
  app.add_option("--tokens", tokens, "tokens in the batch")->capture_default_str();
  app.add_option("--channels", channels, "model width")->capture_default_str();
  app.add_option("--ffn", ffn, "each expert's hidden size")->capture_default_str();
  app.add_option("--experts", experts, "experts")->capture_default_str();
  app.add_option("--top-k", top_k, "experts per token")->capture_default_str();
  app.add_flag("--mixtral", mixtral, "Mixtral 8x7B's layer at 4096 tokens (overrides the sizes)");
  app.add_option("--repeats", repeats, "timed runs of each (the best is kept)")->capture_default_str();
  app.add_option("--device", device_name, "cpu | cuda")->capture_default_str();
  app.add_option("--dtype", dtype, "float32 | bfloat16")->capture_default_str();
  app.add_option("--json", json_path, "write results here")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (mixtral) {
    tokens = 4096;
    channels = 4096;
    ffn = 14336;
    experts = 8;
    top_k = 2;
  }
  try {
    const kiln::Device device(device_name);
    const kiln::DType dt = dtype == "bfloat16" ? kiln::kBFloat16 : kiln::kFloat32;
    const kiln::TensorOptions o = kiln::TensorOptions(dt).device(device);
    kiln::Generator gen(0);
    auto seconds_of = [&](auto&& run) {
      run();  // warm-up: allocations and first-call setup
      double best = 1e30;
      for (int64_t r = 0; r < repeats; ++r) {
        if (device.is_cuda()) kiln::cuda::synchronize(device.index);
        const auto t0 = std::chrono::steady_clock::now();
        run();
        if (device.is_cuda()) kiln::cuda::synchronize(device.index);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      return best;
    };
    const double rows = static_cast<double>(tokens * top_k);
    // SwiGLU: C -> 2 H, H -> C; forward 2 flops a multiply-add, backward twice the forward.
    const double expert_flops = 3 * 2 * rows * 3.0 * static_cast<double>(channels * ffn);

    kiln::nn::BlockSpec spec{.d_model = channels, .attention = {.heads = 1},
                             .mlp = {.kind = kiln::nn::MlpKind::SwiGLU, .hidden = ffn, .bias = false,
                                     .moe = kiln::nn::MoeSpec{.experts = experts, .top_k = top_k}}};
    kiln::nn::MoeLayer layer(spec, gen, dt, device);
    {
      kiln::NoGradGuard no_grad;
      for (kiln::Tensor p : layer.parameters()) p.copy_(kiln::randn(p.sizes(), gen, dt).to(device) * 0.02);
    }
    kiln::Tensor x = kiln::randn({1, tokens, channels}, gen, dt).to(device).requires_grad_();
    kiln::Tensor dy = kiln::randn({1, tokens, channels}, gen, dt).to(device);
    const Timing moe{seconds_of([&] { kiln::autograd::backward({layer.forward(x)}, {dy}); }), expert_flops};

    // The expert GEMMs alone, on rows split among the experts as evenly as the router would at balance.
    std::vector<int64_t> groups(static_cast<size_t>(experts), tokens * top_k / experts);
    groups.back() += tokens * top_k - groups.back() * experts;
    kiln::Tensor rows_in = kiln::randn({tokens * top_k, channels}, gen, dt).to(device).requires_grad_();
    kiln::Tensor up = layer.up.detach().requires_grad_(), down = layer.down.detach().requires_grad_();
    kiln::Tensor drows = kiln::randn({tokens * top_k, channels}, gen, dt).to(device);
    auto expert_gemms = [&] {
      kiln::Tensor h = kiln::grouped_linear(rows_in, up, groups);
      h = kiln::swiglu(h.narrow(1, 0, ffn), h.narrow(1, ffn, ffn));
      kiln::autograd::backward({kiln::grouped_linear(h, down, groups)}, {drows});
    };
    const Timing grouped{seconds_of(expert_gemms), expert_flops};
    // On CUDA, the same GEMMs as one cuBLAS grouped launch each instead of one launch per expert.
    std::optional<Timing> one_launch;
    if (device.is_cuda()) {
      kiln::SettingsGuard guard;
      kiln::settings().grouped_gemm_one_launch = true;
      one_launch = Timing{seconds_of(expert_gemms), expert_flops};
    }

    // The dense MLP of the same active FLOPs: hidden top_k x ffn.
    kiln::nn::BlockSpec dense_spec = spec;
    dense_spec.mlp.moe.reset();
    dense_spec.mlp.hidden = top_k * ffn;
    kiln::nn::Mlp dense(dense_spec, *kiln::nn::local_layers(), gen, dt, device);
    {
      kiln::NoGradGuard no_grad;
      for (kiln::Tensor p : dense.parameters()) p.copy_(kiln::randn(p.sizes(), gen, dt).to(device) * 0.02);
    }
    const Timing mlp{seconds_of([&] { kiln::autograd::backward({dense.forward(x)}, {dy}); }), expert_flops};

    // The ceiling: one GEMM of the expert GEMMs' FLOPs (rows x C by C x 9 H).
    kiln::Tensor a = kiln::randn({tokens * top_k, channels}, gen, dt).to(device);
    kiln::Tensor b = kiln::randn({channels, 9 * ffn}, gen, dt).to(device);
    const Timing gemm{seconds_of([&] { kiln::matmul(a, b); }), 2 * rows * static_cast<double>(channels * 9 * ffn)};

    const double unit = device.is_cuda() ? 1e12 : 1e9;
    const char* unit_name = device.is_cuda() ? "TFLOP/s" : "GFLOP/s";
    fmt::print("MoE layer: {} tokens x {} channels, {} experts of {} hidden, top-{}, SwiGLU, {} on {}\n", tokens,
               channels, experts, ffn, top_k, dtype, device_name);
    auto row = [&](const char* what, const Timing& t) {
      fmt::print("  {:<34} {:9.3f} ms  {:8.2f} {}  {:5.1f}% of the GEMM\n", what, 1e3 * t.seconds, t.rate() / unit,
                 unit_name, 100 * t.rate() / gemm.rate());
    };
    row("MoE layer forward + backward", moe);
    row("expert GEMMs alone (per expert)", grouped);
    if (one_launch) row("expert GEMMs alone (one launch)", *one_launch);
    row("dense MLP of equal active FLOPs", mlp);
    row("one GEMM of those FLOPs (forward)", gemm);
    std::ofstream(json_path) << nlohmann::json{{"tokens", tokens}, {"channels", channels}, {"ffn", ffn},
                                               {"experts", experts}, {"top_k", top_k}, {"device", device_name},
                                               {"dtype", dtype}, {"moe_seconds", moe.seconds},
                                               {"grouped_seconds", grouped.seconds}, {"dense_seconds", mlp.seconds},
                                               {"one_launch_seconds", one_launch ? nlohmann::json(one_launch->seconds) : nlohmann::json()},
                                               {"gemm_flops_per_second", gemm.rate()},
                                               {"moe_flops_per_second", moe.rate()}}
                                    .dump(2)
                             << '\n';
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_moe: {}\n", e.what());
    return 1;
  }
  return 0;
}
