// Kernel benchmark: time kiln's CUDA ops at LLM shapes and report achieved
// GB/s (memory-bound kernels) or TFLOP/s (GEMM) beside the ceilings measured
// in the same run: a device-to-device cudaMemcpy (bytes read + written) and a
// large cuBLASLt bf16 GEMM. A program, never a test.
//
//   kernels [--quick] [--json results.json]
//
// Timing: CUDA events around 20 repetitions after 3 warm-ups, median of 5
// such measurements. Inputs are random (never zeros).

#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <utility>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

using kiln::Tensor;

namespace {

const kiln::Device kGpu(kiln::kCUDA, 0);

void check(cudaError_t e) {
  if (e != cudaSuccess) throw kiln::Error(std::string("[benchmark] ") + cudaGetErrorString(e));
}

// Median milliseconds of one call of fn.
double time_ms(const std::function<void()>& fn, int reps = 20) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start));
  check(cudaEventCreate(&stop));
  std::vector<double> samples;
  for (int s = 0; s < 5; ++s) {
    check(cudaEventRecord(start, cudaStreamPerThread));
    for (int i = 0; i < reps; ++i) fn();
    check(cudaEventRecord(stop, cudaStreamPerThread));
    check(cudaEventSynchronize(stop));
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop));
    samples.push_back(ms / reps);
  }
  kiln::cuda::synchronize();  // surfaces device-side errors
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

struct Row {
  std::string kernel, shape, dtype;
  double ms, rate;  // GB/s or TFLOP/s
  std::string unit;
  double fraction;  // of the matching ceiling
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark kiln's CUDA kernels"};
  bool quick = false;
  std::string json_path = "kernels.json";
  app.add_flag("--quick", quick, "fewer shapes");
  app.add_option("--json", json_path, "write results here")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (!kiln::cuda::is_available()) {
    fmt::print(stderr, "kernels: no CUDA device\n");
    return 1;
  }
  try {
    kiln::NoGradGuard no_grad;
    kiln::Generator gen(0);
    std::vector<Row> rows;

    // Ceilings: copy bandwidth and bf16 GEMM rate.
    const size_t copy_bytes = size_t{2} << 30;
    void *src = nullptr, *dst = nullptr;
    check(cudaMalloc(&src, copy_bytes));
    check(cudaMalloc(&dst, copy_bytes));
    check(cudaMemset(src, 1, copy_bytes));
    double copy_ms = time_ms([&] { check(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, cudaStreamPerThread)); }, 10);
    cudaFree(src);
    cudaFree(dst);
    const double copy_gbs = 2.0 * static_cast<double>(copy_bytes) / (copy_ms * 1e-3) / 1e9;
    rows.push_back({"cudaMemcpy D2D (ceiling)", "2 GiB", "bytes", copy_ms, copy_gbs, "GB/s", 1.0});
    const int64_t G = 8192;
    Tensor a = kiln::randn({G, G}, gen, kiln::TensorOptions(kiln::kBFloat16).device(kGpu));
    Tensor b = kiln::randn({G, G}, gen, kiln::TensorOptions(kiln::kBFloat16).device(kGpu));
    double gemm_ms = time_ms([&] { kiln::matmul(a, b); }, 5);
    const double gemm_tflops = 2.0 * G * G * G / (gemm_ms * 1e-3) / 1e12;
    rows.push_back({"matmul (cuBLASLt, ceiling)", "8192^3", "bf16", gemm_ms, gemm_tflops, "TFLOP/s", 1.0});

    auto memory_bound = [&](const std::string& name, const std::string& shape, double bytes, const std::function<void()>& fn) {
      double ms = time_ms(fn);
      double gbs = bytes / (ms * 1e-3) / 1e9;
      rows.push_back({name, shape, "bf16", ms, gbs, "GB/s", gbs / copy_gbs});
    };
    std::vector<int64_t> row_counts = quick ? std::vector<int64_t>{16384} : std::vector<int64_t>{4096, 16384, 65536};
    std::vector<int64_t> widths = quick ? std::vector<int64_t>{768, 4096} : std::vector<int64_t>{768, 1024, 4096, 8192};
    auto opts = kiln::TensorOptions(kiln::kBFloat16).device(kGpu);
    for (int64_t R : row_counts) {
      for (int64_t C : widths) {
        const std::string shape = fmt::format("{} x {}", R, C);
        const double n = static_cast<double>(R * C), e = 2.0;  // bf16 bytes
        Tensor x = kiln::randn({R, C}, gen, opts), w = kiln::randn({C}, gen, opts), bias = kiln::randn({C}, gen, opts);
        memory_bound("layer_norm fwd", shape, 2 * n * e, [&] { kiln::layer_norm(x, {C}, w, bias); });
        memory_bound("rms_norm fwd", shape, 2 * n * e, [&] { kiln::rms_norm(x, {C}, w); });
        memory_bound("softmax fwd", shape, 2 * n * e, [&] { kiln::softmax(x, -1); });
        memory_bound("gelu fwd", shape, 2 * n * e, [&] { kiln::gelu(x, "tanh"); });
        memory_bound("add", shape, 3 * n * e, [&] { x + x; });
        memory_bound("swiglu fwd", shape, 3 * n * e, [&] { kiln::swiglu(x, x); });
        // reads x and the residual, writes the sum and y
        memory_bound("add_layer_norm fwd", shape, 4 * n * e, [&] { kiln::add_layer_norm(x, x, {C}, w, bias); });
        {
          kiln::autograd::EnableGradGuard grad;
          Tensor xg = x.detach().requires_grad_(), wg = w.detach().requires_grad_(), bg = bias.detach().requires_grad_();
          Tensor g = kiln::randn({R, C}, gen, opts);
          // fwd + bwd: x read twice, y written, dy read, dx written.
          memory_bound("layer_norm fwd+bwd", shape, 5 * n * e, [&] {
            kiln::layer_norm(xg, {C}, wg, bg).backward(g);
          });
        }
      }
      const int64_t V = 50304;
      const std::string shape = fmt::format("{} x {}", R, V);
      Tensor logits = kiln::randn({R, V}, gen, opts);
      Tensor target = kiln::randint(0, V, {R}, gen, kiln::TensorOptions(kiln::kInt64).device(kGpu));
      memory_bound("cross_entropy fwd", shape, static_cast<double>(R * V) * 2.0, [&] { kiln::cross_entropy(logits, target); });
      {
        // The fused head: time per token against the unfused GEMM + loss (bytes: the logits written and read once).
        kiln::autograd::EnableGradGuard grad;
        const int64_t C = 768;
        Tensor h = kiln::randn({R, C}, gen, opts).requires_grad_(), wte = kiln::randn({V, C}, gen, opts).requires_grad_();
        memory_bound("linear_cross_entropy f+b", fmt::format("{} x {} x {}", R, C, V), static_cast<double>(R * V) * 4.0,
                     [&] { kiln::linear_cross_entropy(h, wte, target).backward(); });
      }
    }

    // Attention: forward and backward TFLOP/s at B T = 16384 (4 B H T^2 D forward, 2.5x that backward,
    // halved when causal): kiln's fused kernels, cuDNN's, and the composed matmul + softmax path. The backward is
    // timed alone: one forward keeps its graph, and each repetition runs backward from it.
    auto attention_row = [&](const std::string& name, const std::string& shape, double ms, double flops) {
      const double tflops = flops / (ms * 1e-3) / 1e12;
      rows.push_back({name, shape, "bf16", ms, tflops, "TFLOP/s", tflops / gemm_tflops});
    };
    // Milliseconds of one backward through `out` (one forward keeps its graph; gradients start fresh each time).
    auto backward_ms = [&](Tensor& out, const Tensor& g, std::initializer_list<Tensor*> leaves) {
      return time_ms([&] {
        for (Tensor* t : leaves) t->set_grad(Tensor());
        out.backward(g, /*retain_graph=*/true);
      }, 3);
    };
    // Forward and backward rows of `attend` (q, k, v -> out) under each backend; a backend this build or device
    // lacks is reported and skipped.
    using kiln::AttentionBackend;
    using Attend = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>;
    auto time_backends = [&](const std::vector<std::pair<AttentionBackend, std::string>>& backends,
                             const std::string& shape, double fwd_flops, const std::array<Tensor, 4>& qkvg,
                             const Attend& attend) {
      const auto& [q, k, v, g] = qkvg;
      for (const auto& [backend, name] : backends) {
        kiln::SettingsGuard guard;
        kiln::settings().attention = backend;
        try {
          attention_row(name + " fwd", shape, time_ms([&] { attend(q, k, v); }, 3), fwd_flops);
          kiln::autograd::EnableGradGuard grad;
          Tensor qg = q.detach().requires_grad_(), kg = k.detach().requires_grad_(), vg = v.detach().requires_grad_();
          Tensor out = attend(qg, kg, vg);
          attention_row(name + " bwd", shape, backward_ms(out, g, {&qg, &kg, &vg}), 2.5 * fwd_flops);
        } catch (const kiln::Error& e) {
          fmt::print(stderr, "{} {}: {}\n", name, shape, e.what());
        }
      }
    };
    for (int64_t D : {int64_t(64), int64_t(128)}) {
      for (int64_t T : quick ? std::vector<int64_t>{4096} : std::vector<int64_t>{512, 1024, 2048, 4096, 8192, 16384}) {
        const int64_t B = 16384 / T, H = 2048 / D;
        std::vector<std::pair<AttentionBackend, std::string>> backends = {{AttentionBackend::Fused, "attention kiln"},
                                                                          {AttentionBackend::Cudnn, "attention cudnn"}};
        if (T <= 4096)  // beyond, the composed path's T x T scores no longer fit
          backends.emplace_back(AttentionBackend::Composed, "attention composed");
        time_backends(backends, fmt::format("B{} H{} T{} D{}", B, H, T, D), 4.0 * B * H * T * T * D / 2,  // causal
                      {kiln::randn({B, H, T, D}, gen, opts), kiln::randn({B, H, T, D}, gen, opts),
                       kiln::randn({B, H, T, D}, gen, opts), kiln::randn({B, H, T, D}, gen, opts)},
                      [](const Tensor& q, const Tensor& k, const Tensor& v) {
                        return kiln::scaled_dot_product_attention(q, k, v, {.causal = true});
                      });
      }
    }
    // Packed sequences of 128 .. 2048 tokens (16384 in all), causal, in one launch.
    {
      const int64_t H = 16, D = 128, total = 16384;
      std::vector<int64_t> cu = {0};
      double fwd_flops = 0;
      for (int i = 0; cu.back() < total; ++i) {
        const int64_t len = std::min<int64_t>(int64_t(128) << (i % 5), total - cu.back());
        cu.push_back(cu.back() + len);
        fwd_flops += 4.0 * H * len * len * D / 2;
      }
      const Tensor offsets = kiln::tensor(cu);  // on the host, as a data loader has them: nothing is read back
      time_backends({{AttentionBackend::Fused, "attention kiln"}, {AttentionBackend::Cudnn, "attention cudnn"}},
                    fmt::format("{} packed seqs H{} D{}", cu.size() - 1, H, D), fwd_flops,
                    {kiln::randn({total, H, D}, gen, opts), kiln::randn({total, H, D}, gen, opts),
                     kiln::randn({total, H, D}, gen, opts), kiln::randn({total, H, D}, gen, opts)},
                    [&](const Tensor& q, const Tensor& k, const Tensor& v) {
                      return kiln::scaled_dot_product_attention_varlen(q, k, v, offsets, offsets, {.causal = true});
                    });
    }

    fmt::print("{:<28} {:>14} {:>6} {:>10} {:>12} {:>10}\n", "kernel", "shape", "dtype", "ms", "rate", "of ceiling");
    for (const Row& r : rows)
      fmt::print("{:<28} {:>14} {:>6} {:>10.4f} {:>8.1f} {:<7} {:>6.1f}%\n", r.kernel, r.shape, r.dtype, r.ms, r.rate,
                 r.unit, 100 * r.fraction);
    nlohmann::json j = nlohmann::json::array();
    for (const Row& r : rows)
      j.push_back({{"kernel", r.kernel}, {"shape", r.shape}, {"dtype", r.dtype}, {"ms", r.ms}, {"rate", r.rate},
                   {"unit", r.unit}, {"fraction_of_ceiling", r.fraction}});
    std::ofstream(json_path) << j.dump(2) << "\n";
  } catch (const kiln::Error& e) {
    fmt::print(stderr, "kernels: {}\n", e.what());
    return 1;
  }
  return 0;
}
