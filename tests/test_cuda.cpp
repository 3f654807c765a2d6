// Every CUDA op against its CPU twin on the same Philox inputs: forward and
// backward, odd and tiny and larger sizes, non-contiguous and broadcast
// inputs, tolerances per dtype (the norm-relative error of METHOD.md).
// Label `gpu`: skipped (exit 77) without a device.

#include <functional>
#include <random>

#include "helpers.h"

using namespace kiln;
using kt::values;

namespace {

const Device kGpu(kCUDA, 0);

// GPU tolerances: float32 accumulates in float32 here (in float64 on the CPU).
double gpu_tolerance(DType t) {
  switch (t) {
    case kFloat64: return 1e-10;
    case kFloat32: return 2e-5;
    case kFloat16: return 4e-3;
    case kBFloat16: return 3e-2;
    default: return 0;
  }
}

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs fn on the CPU inputs and on their GPU copies; compares the outputs and,
// for floating inputs that require grad, the gradients of sum(out * w).
void compare(const std::string& name, const Fn& fn, const std::vector<Tensor>& cpu_inputs, double tol,
             bool backward = true) {
  INFO(name);
  std::vector<Tensor> cpu, gpu;
  for (const Tensor& t : cpu_inputs) {
    bool grad = backward && is_floating(t.dtype());
    cpu.push_back(grad ? t.detach().clone().requires_grad_() : t);
    gpu.push_back(grad ? t.detach().to(kGpu).requires_grad_() : t.to(kGpu));
  }
  Tensor out_cpu = fn(cpu), out_gpu = fn(gpu);
  REQUIRE(out_gpu.device() == kGpu);
  REQUIRE(out_gpu.dtype() == out_cpu.dtype());
  REQUIRE(out_gpu.sizes() == out_cpu.sizes());
  KT_CHECK_CLOSE(out_gpu, values(out_cpu), tol);
  if (!backward || !out_cpu.requires_grad()) return;
  Generator gen(17);
  Tensor w = randn(out_cpu.sizes(), gen, out_cpu.dtype());
  sum(out_cpu * w).backward();
  sum(out_gpu * w.to(kGpu)).backward();
  for (size_t i = 0; i < cpu.size(); ++i) {
    if (!cpu[i].requires_grad() || !cpu[i].grad().defined()) continue;
    INFO("gradient of input " << i);
    REQUIRE(gpu[i].grad().defined());
    KT_CHECK_CLOSE(gpu[i].grad(), values(cpu[i].grad()), 4 * tol);
  }
}

}  // namespace

TEST_CASE("Philox draws are the same numbers on the GPU") {
  Generator a(5), b(5);
  CHECK(values(rand({1001}, a)) == values(rand({1001}, b, kGpu)));
  CHECK(values(randint(-7, 1000, {333}, a)) == values(randint(-7, 1000, {333}, b, TensorOptions(kInt64).device(kGpu))));
  KT_CHECK_CLOSE(randn({777}, b, kGpu), values(randn({777}, a)), 1e-6);
  CHECK(a.offset() == b.offset());
}

TEST_CASE("copies, casts, views and fill") {
  Generator gen(1);
  for (DType dt : {kFloat32, kFloat64, kBFloat16, kFloat16, kInt32, kInt64, kBool}) {
    INFO(dtype_name(dt));
    Tensor x = (randn({3, 5, 7}, gen) * 10.0).to(dt);
    CHECK(values(x.to(kGpu).to(kCPU)) == values(x));
    CHECK(values(x.to(kGpu).transpose(0, 2).contiguous()) == values(x.transpose(0, 2).contiguous()));
    for (DType to : {kFloat32, kBFloat16, kInt64, kBool}) CHECK(values(x.to(kGpu).to(to)) == values(x.to(to)));
    CHECK(values(full({4, 3}, 2.5, TensorOptions(dt).device(kGpu))) == values(full({4, 3}, 2.5, dt)));
  }
  Tensor d = zeros({4, 6}, kGpu);
  d.slice(1, 1, 6, 2).fill_(3);
  Tensor ref = zeros({4, 6});
  ref.slice(1, 1, 6, 2).fill_(3);
  CHECK(values(d) == values(ref));
  CHECK(values(arange(0, 17, 3, TensorOptions(kInt64).device(kGpu))) == values(arange(0, 17, 3)));
}

TEST_CASE("elementwise ops with broadcasting match the CPU") {
  Generator gen(2);
  for (DType dt : {kFloat32, kBFloat16, kFloat16, kFloat64}) {
    double tol = gpu_tolerance(dt);
    Tensor a = randn({5, 1, 7}, gen, dt), b = randn({3, 7}, gen, dt).t().contiguous().t(), c = randn({7}, gen, dt);
    compare("add", [](auto& v) { return v[0] + v[1]; }, {a, b}, tol);
    compare("sub mul div", [](auto& v) { return (v[0] - v[1]) * v[2] / (v[1] * v[1] + 1.0); }, {a, b, c}, tol);
    compare("pow", [](auto& v) { return pow(abs(v[0]) + 0.5, v[1]); }, {a, b}, 2 * tol);
    compare("max min", [](auto& v) { return maximum(v[0], v[1]) + minimum(v[1], v[2]); }, {a, b, c}, tol);
    compare("unary", [](auto& v) {
      return exp(v[0]) + log(abs(v[0]) + 0.1) + sqrt(abs(v[0])) + rsqrt(abs(v[0]) + 0.5) + tanh(v[0]) + sigmoid(v[0]) +
             abs(v[0]) + sign(v[0]) - v[0] + pow(v[0], 3) + clamp(v[0], -0.5, 0.5);
    }, {a}, 2 * tol);
    compare("activations", [](auto& v) { return relu(v[0]) + gelu(v[0]) + gelu(v[0], "tanh") + silu(v[0]); }, {c}, tol);
    compare("cumsum", [](auto& v) { return cumsum(v[0], 2) + cumsum(v[1], 0); }, {a, b}, 4 * tol);
    compare("sort", [](auto& v) { return sort(v[0], 2).first + sort(v[1], 0, true).first; }, {a, b}, tol);
    CHECK(values(argsort(a.to(kGpu), 0, true).to(kCPU)) == values(argsort(a, 0, true)));
    compare("trigonometry and rounding", [](auto& v) {
      return sin(v[0]) + cos(v[0]) + floor(v[0] * 4.0) + ceil(v[0] * 4.0) + round(v[0] * 4.0) + tril(v[1], 1);
    }, {a, b}, tol);
    compare("where", [](auto& v) { return where(v[0] > v[1], v[0], v[1] * 2.0) + masked_fill(v[2], v[2] < 0, 1.5); },
            {a, b, c}, tol);
    CHECK(values((a.to(kGpu) > b.to(kGpu)).to(kCPU)) == values(a > b));
    CHECK(values(logical_or(a.to(kGpu) > 0, c.to(kGpu) < 0)) == values(logical_or(a > 0, c < 0)));
  }
  Tensor i = randint(-50, 50, {4, 5}, gen), j = randint(1, 9, {5}, gen);
  CHECK(values(i.to(kGpu) * j.to(kGpu) + i.to(kGpu)) == values(i * j + i));
  CHECK(values(clamp(i.to(kGpu), -3, 4)) == values(clamp(i, -3, 4)));
}

TEST_CASE("reductions match the CPU") {
  Generator gen(3);
  for (DType dt : {kFloat32, kBFloat16, kFloat64}) {
    double tol = gpu_tolerance(dt);
    for (Shape s : {Shape{1}, Shape{7}, Shape{3, 5, 7}, Shape{33, 1000}, Shape{2, 3, 4, 5}}) {
      Tensor x = randn(s, gen, dt);
      compare("sum all", [](auto& v) { return sum(v[0]); }, {x}, tol);
      compare("mean last", [](auto& v) { return mean(v[0], {-1}); }, {x}, tol);
      compare("sum first keepdim", [](auto& v) { return sum(v[0], {0}, true); }, {x}, tol);
      compare("max", [](auto& v) { return max(v[0], -1); }, {x}, tol);
      compare("min", [](auto& v) { return min(v[0], 0, true); }, {x}, tol);
      if (x.numel() > 1) compare("var", [](auto& v) { return var(v[0], {-1}, 0); }, {x}, 4 * tol);
      CHECK(values(argmax(x.to(kGpu), -1)) == values(argmax(x, -1)));
      CHECK(values(argmin(x.to(kGpu), 0)) == values(argmin(x, 0)));
    }
  }
  Tensor i = randint(-9, 9, {6, 7}, gen, kInt32);
  CHECK(values(sum(i.to(kGpu), {1})) == values(sum(i, {1})));
  CHECK(sum(i.to(kGpu)).dtype() == kInt64);
}

TEST_CASE("matmul through cuBLASLt matches the CPU") {
  Generator gen(4);
  for (DType dt : {kFloat32, kBFloat16, kFloat16, kFloat64}) {
    double tol = dt == kFloat32 ? 1e-5 : gpu_tolerance(dt);
    compare("2d", [](auto& v) { return matmul(v[0], v[1]); }, {randn({17, 33}, gen, dt), randn({33, 9}, gen, dt)}, tol);
    compare("batched broadcast", [](auto& v) { return matmul(v[0], v[1]); },
            {randn({2, 3, 5, 8}, gen, dt), randn({3, 8, 4}, gen, dt)}, tol);
    compare("transposed operands", [](auto& v) { return matmul(v[0].t(), v[1].t()); },
            {randn({64, 31}, gen, dt), randn({7, 64}, gen, dt)}, tol);
    compare("strided operand (copied)", [](auto& v) { return matmul(v[0].slice(1, 0, 24, 3), v[1]); },
            {randn({5, 24}, gen, dt), randn({8, 6}, gen, dt)}, tol);
    compare("vector", [](auto& v) { return matmul(v[0], v[1]); }, {randn({9}, gen, dt), randn({9, 4}, gen, dt)}, tol);
  }
  Tensor a = randint(-5, 5, {4, 6}, gen), b = randint(-5, 5, {6, 3}, gen);
  CHECK(values(matmul(a.to(kGpu), b.to(kGpu))) == values(matmul(a, b)));
}

TEST_CASE("softmax, norms and cross-entropy match the CPU, forward and backward") {
  Generator gen(5);
  for (DType dt : {kFloat32, kBFloat16, kFloat64}) {
    double tol = 2 * gpu_tolerance(dt);
    for (int64_t C : {1, 7, 64, 769}) {
      Tensor x = randn({5, C}, gen, dt) * 3.0;
      compare("softmax", [](auto& v) { return softmax(v[0], -1); }, {x}, tol);
      compare("causal_softmax", [](auto& v) { return causal_softmax(v[0]); }, {x}, tol);
      compare("causal_softmax, more queries", [](auto& v) { return causal_softmax(v[0].t()); }, {x}, tol);
      compare("log_softmax dim 0", [](auto& v) { return log_softmax(v[0], 0); }, {x}, tol);
      Tensor w = randn({C}, gen, dt), b = randn({C}, gen, dt);
      compare("layer_norm", [C](auto& v) { return layer_norm(v[0], {C}, v[1], v[2]); }, {x, w, b}, tol);
      compare("layer_norm no affine", [C](auto& v) { return layer_norm(v[0], {C}); }, {x}, tol);
      compare("rms_norm", [C](auto& v) { return rms_norm(v[0], {C}, v[1]); }, {x, w}, tol);
      Tensor res = randn({5, C}, gen, dt);
      compare("add_layer_norm", [C](auto& v) {
        auto [s, y] = add_layer_norm(v[0], v[1], {C}, v[2], v[3]);
        return s * y;
      }, {x, res, w, b}, tol);
      compare("add_rms_norm", [C](auto& v) { return add_rms_norm(v[0], v[1], {C}, v[2]).second; }, {x, res, w}, tol);
      Tensor t = masked_fill(randint(0, C, {5}, gen), rand({5}, gen) < 0.3, -100);
      compare("cross_entropy", [t](auto& v) { return cross_entropy(v[0], t.to(v[0].device())); }, {x}, tol);
      compare("cross_entropy none", [t](auto& v) {
        return cross_entropy(v[0], t.to(v[0].device()), -100, Reduction::None);
      }, {x}, tol);
    }
  }
}

TEST_CASE("the multi-tensor AdamW and Lion updates match the CPU") {
  Generator gen(12);
  std::vector<Tensor> p, g, m, v;
  for (int64_t n : {1, 70000, 131072, 5}) {  // chunk boundaries inside and at the end of tensors
    p.push_back(randn({n}, gen));
    g.push_back(randn({n}, gen, kBFloat16));
    m.push_back(randn({n}, gen) * 0.1);
    v.push_back(rand({n}, gen));
  }
  auto to_gpu = [](const std::vector<Tensor>& ts) {
    std::vector<Tensor> out;
    for (const Tensor& t : ts) out.push_back(t.to(kGpu));
    return out;
  };
  std::vector<Tensor> pg = to_gpu(p), gg = to_gpu(g), mg = to_gpu(m), vg = to_gpu(v);
  // Compute copies (cast_cached) of some parameters: the kernels write them too.
  cast_cached(pg[1], kBFloat16);
  cast_cached(pg[2], kFloat16);
  auto check_copies = [&] {
    for (size_t i : {1, 2}) {
      const ComputeCopy& copy = *pg[i].impl()->compute_copy;
      CHECK(copy.version == pg[i].version());
      CHECK(values(copy.data) == values(pg[i].to(copy.data.dtype())));
    }
  };
  const AdamWStep step{1e-2, 0.9, 0.99, 1e-8, 0.1, 0.1, 0.01};
  adamw_update_(p, g, m, v, step);
  adamw_update_(pg, gg, mg, vg, step);
  for (size_t i = 0; i < p.size(); ++i) {
    KT_CHECK_CLOSE(pg[i], values(p[i]), 1e-6);
    KT_CHECK_CLOSE(vg[i], values(v[i]), 1e-6);
  }
  check_copies();
  lion_update_(p, g, m, {1e-2, 0.9, 0.99, 0.1});
  lion_update_(pg, gg, mg, {1e-2, 0.9, 0.99, 0.1});
  for (size_t i = 0; i < p.size(); ++i) KT_CHECK_CLOSE(pg[i], values(p[i]), 1e-6);
  check_copies();
}

TEST_CASE("the memory pool's figures follow allocations") {
  cuda::synchronize();
  cuda::reset_peak_memory_stats();
  const uint64_t before = cuda::memory_stats().in_use;
  {
    Tensor big = empty({64 << 20}, TensorOptions(kFloat32).device(kGpu));  // 256 MiB
    cuda::synchronize();
    CHECK(cuda::memory_stats().in_use >= before + (uint64_t(256) << 20));
  }
  cuda::synchronize();
  const cuda::MemoryStats after = cuda::memory_stats();
  CHECK(after.in_use == before);
  CHECK(after.peak_in_use >= before + (uint64_t(256) << 20));
  CHECK(after.reserved >= after.in_use);
}

TEST_CASE("streams and events order work; pinned copies are asynchronous") {
  Generator gen(21);
  Tensor host = randn({1 << 20}, gen);
  const cuda::Stream main = cuda::current_stream();
  CHECK(main == cuda::Stream::default_stream());
  const cuda::Stream side = cuda::Stream::from_pool();
  CHECK_FALSE(side == main);

  // Pinned host memory: a non-blocking upload, then work on a second stream.
  Tensor pinned = host.pin_memory();
  CHECK(pinned.is_pinned());
  CHECK_FALSE(host.is_pinned());
  Tensor x = pinned.to(kGpu, /*non_blocking=*/true);
  cuda::Event uploaded, computed;
  uploaded.record(main);
  Tensor y;
  {
    cuda::StreamGuard guard(side);
    CHECK(cuda::current_stream() == side);
    side.wait(uploaded);
    y = x * 3.0 + 1.0;  // allocated on and computed by the side stream
    computed.record(side);
  }
  CHECK(cuda::current_stream() == main);
  main.wait(computed);
  cuda::record_stream(x, side);  // x (main's memory) was read on the side stream
  Tensor back = y.to(kCPU, /*non_blocking=*/true);
  CHECK(back.is_pinned());
  main.synchronize();
  CHECK(main.query());
  CHECK(computed.query());
  KT_CHECK_CLOSE(back, values(host * 3.0 + 1.0), 1e-6);

  // Timing events.
  cuda::Event start(/*enable_timing=*/true), stop(/*enable_timing=*/true);
  Tensor a = randn({1024, 1024}, gen).to(kGpu);
  start.record(main);
  Tensor c = matmul(a, a);
  stop.record(main);
  stop.synchronize();
  CHECK(start.elapsed_ms(stop) > 0);
  CHECK_THROWS_WITH(cuda::Event().elapsed_ms(stop), Catch::Contains("both events must have been recorded"));
  CHECK_THROWS_WITH(cuda::record_stream(host, side), Catch::Contains("needs a tensor on the stream's device cuda:0"));
}

TEST_CASE("linear (cuBLASLt bias epilogue) matches the CPU; TF32 stays close") {
  Generator gen(9);
  for (DType dt : {kFloat32, kBFloat16, kFloat16, kFloat64}) {
    double tol = 2 * gpu_tolerance(dt);
    for (int64_t in : {1, 33, 768}) {
      // 64 outputs: GELU in cuBLASLt's epilogue; 65: the pre-activation's leading dimension rules it out.
      const int64_t out = in == 33 ? 64 : 65;
      Tensor x = randn({2, 17, in}, gen, dt), w = randn({out, in}, gen, dt), b = randn({out}, gen, dt);
      compare("linear", [](auto& v) { return linear(v[0], v[1], v[2]); }, {x, w, b}, tol);
      compare("linear no bias", [](auto& v) { return linear(v[0], v[1]); }, {x, w}, tol);
      compare("linear gelu", [](auto& v) { return linear(v[0], v[1], v[2], Activation::GeluTanh); }, {x, w, b}, tol);
      compare("linear gelu no bias", [](auto& v) { return linear(v[0], v[1], {}, Activation::GeluTanh); }, {x, w},
              tol);
    }
  }
  Tensor x = randn({64, 512}, gen), w = randn({256, 512}, gen);
  std::vector<double> exact = values(linear(x, w));
  SettingsGuard guard;
  settings().allow_tf32 = true;
  KT_CHECK_CLOSE(linear(x.to(kGpu), w.to(kGpu)), exact, 3e-3);
}

TEST_CASE("swiglu, rope, linear_cross_entropy and squared_norms match the CPU") {
  Generator gen(8);
  for (DType dt : {kFloat32, kBFloat16, kFloat16}) {
    double tol = 2 * gpu_tolerance(dt);
    for (int64_t n : {1, 7, 64, 4099}) {
      Tensor g = randn({3, n}, gen, dt), u = randn({3, n}, gen, dt);
      compare("swiglu", [](auto& v) { return swiglu(v[0], v[1]); }, {g, u}, tol);
      // A view that starts off the 16-byte alignment takes the scalar path.
      compare("swiglu unaligned", [](auto& v) {
        return swiglu(v[0].narrow(1, 1, v[0].size(1) - 1), v[1].narrow(1, 1, v[1].size(1) - 1));
      }, {g, u}, tol);
    }
    compare("rope", [](auto& v) { return rope(v[0].transpose(1, 2), 5, 500.0); }, {randn({2, 33, 3, 16}, gen, dt)}, tol);
    Tensor x = randn({37, 48}, gen, dt), w = randn({1001, 48}, gen, dt) * 0.2;
    Tensor t = masked_fill(randint(0, 1001, {37}, gen), rand({37}, gen) < 0.2, -100);
    for (int64_t chunk : {0, 5})
      compare("linear_cross_entropy", [t, chunk](auto& v) {
        return linear_cross_entropy(v[0], v[1], t.to(v[0].device()), -100, chunk);
      }, {x, w}, tol);
  }
  std::vector<Tensor> cpu = {randn({5, 7}, gen), randn({200001}, gen, kFloat64), randn({70001}, gen, kBFloat16),
                             randn({1}, gen, kFloat16)};
  std::vector<Tensor> gpu;
  for (const Tensor& t : cpu) gpu.push_back(t.to(kGpu));
  KT_CHECK_CLOSE(squared_norms(gpu), values(squared_norms(cpu)), 1e-6);
}

TEST_CASE("indexing, embedding and attention match the CPU") {
  Generator gen(6);
  Tensor w = randn({50, 24}, gen);
  Tensor tokens = randint(0, 50, {4, 9}, gen);
  compare("embedding", [&](auto& v) { return embedding(v[0], tokens.to(v[0].device())); }, {w}, 1e-6);
  Tensor x = randn({6, 7}, gen);
  Tensor idx = randint(0, 7, {6, 3}, gen);
  compare("gather", [&](auto& v) { return gather(v[0], 1, idx.to(v[0].device())); }, {x}, 1e-6);
  compare("index_select", [&](auto& v) { return index_select(v[0], 0, tensor(std::vector<int64_t>{5, 0, 5}).to(v[0].device())); },
          {x}, 1e-6);
  compare("cat stack split", [](auto& v) { return cat({v[0], split(v[1], 2, 0)[1]}, 0) * 2.0; },
          {randn({2, 5}, gen), randn({5, 5}, gen)}, 1e-6);
  for (bool causal : {false, true}) {
    compare("attention", [causal](auto& v) { return scaled_dot_product_attention(v[0], v[1], v[2], {.causal = causal}); },
            {randn({2, 4, 9, 16}, gen), randn({2, 2, 11, 16}, gen), randn({2, 2, 11, 16}, gen)}, 1e-5);
  }
  // The embedding backward is deterministic: the same gradient bit for bit.
  Tensor big = randn({100, 64}, gen).to(kGpu).requires_grad_();
  Tensor ids = randint(0, 100, {4096}, gen).to(kGpu);
  Tensor g = randn({4096, 64}, gen).to(kGpu);
  sum(embedding(big, ids) * g).backward();
  std::vector<double> first = values(big.grad());
  big.set_grad(Tensor());
  sum(embedding(big, ids) * g).backward();
  CHECK(values(big.grad()) == first);
}

TEST_CASE("index_select's backward sums repeated rows: sorted path on rows, general path otherwise") {
  Generator gen(16);
  for (DType dt : {kFloat32, kBFloat16, kFloat64}) {
    for (DType it : {kInt64, kInt32}) {
      INFO(dtype_name(dt) << " " << dtype_name(it));
      // Rows (the embedding backward's layout), five hot rows, odd sizes.
      Tensor hot = randint(0, 5, {2051}, gen).to(it);
      compare("rows", [&](auto& v) { return index_select(v[0], 0, hot.to(v[0].device())); },
              {randn({37, 3, 5}, gen, dt)}, gpu_tolerance(dt) + 1e-12);
      // Along dim 1 of a transposed tensor: the general kernel.
      Tensor cols = randint(0, 9, {6}, gen).to(it);
      compare("columns", [&](auto& v) { return index_select(v[0].t(), 1, cols.to(v[0].device())); },
              {randn({9, 4}, gen, dt)}, gpu_tolerance(dt) + 1e-12);
    }
  }
}

// q, k, v of shape c rounded to dt: the output, logsumexp, dQ, dK and dV of
// the CUDA attention settings().attention picks, against the float64 CPU
// reference on the same rounded inputs.
struct AttentionCase {
  int64_t B, Hq, Hkv, Tq, Tk, D;
};
void check_attention_against_float64(const AttentionCase& c, DType dt, bool causal, Generator& gen) {
  INFO("B " << c.B << " Hq " << c.Hq << " Hkv " << c.Hkv << " D " << c.D << " Tq " << c.Tq << " Tk " << c.Tk
            << " causal " << causal << " " << dtype_name(dt));
  Tensor q = randn({c.B, c.Hq, c.Tq, c.D}, gen, dt), k = randn({c.B, c.Hkv, c.Tk, c.D}, gen, dt);
  Tensor v = randn({c.B, c.Hkv, c.Tk, c.D}, gen, dt), w = randn({c.B, c.Hq, c.Tq, c.D}, gen, kFloat64);
  std::vector<Tensor> ref = {q.to(kFloat64).requires_grad_(), k.to(kFloat64).requires_grad_(),
                             v.to(kFloat64).requires_grad_()};
  std::vector<Tensor> dev = {q.to(kGpu).requires_grad_(), k.to(kGpu).requires_grad_(), v.to(kGpu).requires_grad_()};
  AttentionOutput r;
  {
    SettingsGuard composed;
    settings().attention = AttentionBackend::Composed;
    r = scaled_dot_product_attention_with_lse(ref[0], ref[1], ref[2], {.causal = causal});
  }
  AttentionOutput d = scaled_dot_product_attention_with_lse(dev[0], dev[1], dev[2], {.causal = causal});
  KT_CHECK_CLOSE(d.out, values(r.out), gpu_tolerance(dt));
  std::vector<double> lr = values(r.lse), ld = values(d.lse);
  for (size_t i = 0; i < lr.size(); ++i) {
    if (std::isinf(lr[i])) CHECK((std::isinf(ld[i]) && ld[i] < 0));
    else CHECK(ld[i] == Approx(lr[i]).margin(2e-2));
  }
  sum(r.out * w).backward();
  sum(d.out * w.to(kGpu, dt)).backward();
  for (int i = 0; i < 3; ++i) {
    INFO("gradient " << "qkv"[i]);
    KT_CHECK_CLOSE(dev[i].grad(), values(ref[i].grad()), 2 * gpu_tolerance(dt));
  }
}

TEST_CASE("the fused attention kernel matches the CPU: head dims, GQA, ragged and causal lengths") {
  // On CUDA, scaled_dot_product_attention runs the fused kernels (settings' Auto); the CPU runs the composed ops.
  Generator gen(10);
  for (const AttentionCase& c :
       {AttentionCase{2, 4, 2, 100, 100, 64}, AttentionCase{1, 8, 2, 37, 129, 128}, AttentionCase{1, 2, 2, 130, 70, 80},
        AttentionCase{3, 2, 1, 1, 300, 32}, AttentionCase{1, 1, 1, 65, 65, 256}, AttentionCase{1, 2, 1, 150, 70, 64},
        AttentionCase{2, 4, 1, 3, 300, 128}})
    for (DType dt : {kFloat32, kBFloat16, kFloat16})
      for (bool causal : {false, true}) {
        INFO("D " << c.D << " Tq " << c.Tq << " Tk " << c.Tk << " causal " << causal << " " << dtype_name(dt));
        compare("fused attention", [causal](auto& v) {
          return scaled_dot_product_attention(v[0], v[1], v[2], {.causal = causal});
        }, {randn({c.B, c.Hq, c.Tq, c.D}, gen, dt), randn({c.B, c.Hkv, c.Tk, c.D}, gen, dt),
            randn({c.B, c.Hkv, c.Tk, c.D}, gen, dt)}, 2 * gpu_tolerance(dt));
      }
  // The tensor-core kernels (bfloat16/float16, D 64 and 128) against the float64 reference.
  for (const AttentionCase& c : {AttentionCase{1, 4, 2, 129, 200, 64}, AttentionCase{2, 2, 2, 64, 64, 128},
                                 AttentionCase{1, 2, 1, 150, 70, 128}})
    for (DType dt : {kBFloat16, kFloat16})
      for (bool causal : {false, true}) check_attention_against_float64(c, dt, causal, gen);
  // Shapes drawn at random (a fixed seed): batch, heads and their grouping, lengths on either side of the
  // 64-row tiles and of each other, D 64 or 128, causal or not.
  std::mt19937 draw(2026);
  auto in = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(draw); };
  for (int i = 0; i < 8; ++i) {
    const int64_t Hkv = in(1, 3), B = in(1, 3);
    const AttentionCase c{B, Hkv * in(1, 4), Hkv, in(1, 300), in(1, 300), in(0, 1) ? 64 : 128};
    check_attention_against_float64(c, in(0, 1) ? kBFloat16 : kFloat16, in(0, 1) == 1, gen);
  }
  // Packed sequences of different lengths (varlen), one fused launch for all of
  // them; the third has keys but no queries (its keys' gradients are zero).
  // Tensor cores at D 64 (bfloat16) and D 128 (float16), the general kernels in float32.
  for (auto [dt, D] : {std::pair{kBFloat16, int64_t(64)}, std::pair{kFloat16, int64_t(128)},
                       std::pair{kFloat32, int64_t(64)}}) {
    INFO(dtype_name(dt) << " D " << D);
    Tensor cu_q = tensor(std::vector<int64_t>{0, 70, 71, 71, 200});
    Tensor cu_k = tensor(std::vector<int64_t>{0, 90, 91, 120, 150});
    compare("varlen attention", [&](auto& v) {
      return scaled_dot_product_attention_varlen(v[0], v[1], v[2], cu_q, cu_k, {.causal = true});
    }, {randn({200, 4, D}, gen, dt), randn({150, 2, D}, gen, dt), randn({150, 2, D}, gen, dt)},
            2 * gpu_tolerance(dt));
  }
  // Deterministic backward: the same gradients bit for bit.
  Tensor q = randn({1, 4, 200, 64}, gen, kBFloat16).to(kGpu).requires_grad_();
  Tensor k = randn({1, 2, 200, 64}, gen, kBFloat16).to(kGpu).requires_grad_();
  Tensor g = randn({1, 4, 200, 64}, gen, kBFloat16).to(kGpu);
  sum(scaled_dot_product_attention(q, k, k, {.causal = true}) * g).backward();
  std::vector<double> dq = values(q.grad()), dk = values(k.grad());
  q.set_grad(Tensor());
  k.set_grad(Tensor());
  sum(scaled_dot_product_attention(q, k, k, {.causal = true}) * g).backward();
  CHECK(values(q.grad()) == dq);
  CHECK(values(k.grad()) == dk);
}

TEST_CASE("cuDNN's fused attention (AttentionBackend::Cudnn) matches the float64 reference") {
  Generator gen(12);
  SettingsGuard guard;
  settings().attention = AttentionBackend::Cudnn;
  // Multi-head and grouped; whole and ragged lengths; causal with Tq < Tk aligned bottom-right.
  for (const AttentionCase& c : {AttentionCase{2, 4, 4, 128, 128, 64}, AttentionCase{1, 8, 2, 100, 260, 128},
                                 AttentionCase{2, 2, 1, 64, 64, 128}})
    for (DType dt : {kBFloat16, kFloat16})
      for (bool causal : {false, true}) check_attention_against_float64(c, dt, causal, gen);
  // Packed sequences (cuDNN's ragged layout) against the CPU: 70, 1, 0, 79 and 1 queries over 90, 1, 29, 150
  // and 5 keys (made up to 8 with empty sequences), grouped heads, D 128.
  Tensor cu_q = tensor(std::vector<int64_t>{0, 70, 71, 71, 150, 151});
  Tensor cu_k = tensor(std::vector<int64_t>{0, 90, 91, 120, 270, 275});
  for (DType dt : {kBFloat16, kFloat16})
    for (bool causal : {false, true}) {
      INFO(dtype_name(dt) << " causal " << causal);
      compare("cuDNN varlen attention", [&](auto& v) {
        SettingsGuard backend;
        settings().attention = v[0].device().is_cuda() ? AttentionBackend::Cudnn : AttentionBackend::Auto;
        return scaled_dot_product_attention_varlen(v[0], v[1], v[2], cu_q, cu_k, {.causal = causal});
      }, {randn({151, 4, 128}, gen, dt), randn({275, 2, 128}, gen, dt), randn({275, 2, 128}, gen, dt)},
              2 * gpu_tolerance(dt));
    }
  // What it does not take, it says.
  Tensor x = randn({1, 2, 8, 64}, gen).to(kGpu);
  CHECK_THROWS_WITH(scaled_dot_product_attention(x, x, x), Catch::Contains("the cuDNN backend takes bfloat16 or float16"));
  Tensor packed = randn({151, 2, 64}, gen, kBFloat16).to(kGpu);
  Tensor fewer_keys = tensor(std::vector<int64_t>{0, 10, 71, 71, 150, 151});  // the first: 70 queries, 10 keys
  CHECK_THROWS_WITH(scaled_dot_product_attention_varlen(packed, packed, packed, cu_q, fewer_keys, {.causal = true}),
                    Catch::Contains("needs every sequence's queries to see a key"));
}

TEST_CASE("a bad index on the GPU raises kiln::Error at the next synchronization") {
  Tensor w = randn({10, 4}).to(kGpu);
  Tensor bad = tensor(std::vector<int64_t>{1, 12}).to(kGpu);
  CHECK_THROWS_WITH(embedding(w, bad).to(kCPU), Catch::Contains("index 12 is out of range for a dimension of size 10"));
  // The context is not poisoned: work continues.
  CHECK(sum(w).to(kCPU).numel() == 1);
  CHECK_THROWS_WITH(cross_entropy(randn({2, 3}).to(kGpu), tensor(std::vector<int64_t>{0, 5}).to(kGpu)).item(),
                    Catch::Contains("target 5 is out of range for 3 classes"));
}

namespace {
// Three AdamW steps of a model and its twin on the GPU (built alike from one
// seed): the losses and the weights agree; then greedy decoding draws the same tokens.
void check_trains_like_cpu(nn::TransformerLM& cpu, nn::TransformerLM& gpu) {
  const int64_t V = cpu.spec().vocab_size;
  optim::AdamW opt_cpu(optim::decay_groups(cpu.named_parameters(), 0.1), {.lr = 1e-2});
  optim::AdamW opt_gpu(optim::decay_groups(gpu.named_parameters(), 0.1), {.lr = 1e-2});
  Generator data(8);
  for (int step = 0; step < 3; ++step) {
    Tensor x = randint(0, V, {2, 16}, data), y = randint(0, V, {2, 16}, data);
    Tensor lc = cpu.loss(x, y), lg = gpu.loss(x.to(kGpu), y.to(kGpu));
    CHECK(lg.item<double>() == Approx(lc.item<double>()).epsilon(1e-4));
    opt_cpu.zero_grad();
    opt_gpu.zero_grad();
    lc.backward();
    lg.backward();
    opt_cpu.step();
    opt_gpu.step();
  }
  for (auto& [name, p] : cpu.named_parameters()) {
    INFO(name);
    KT_CHECK_CLOSE(gpu.state_dict().at(name), values(p), 1e-4);
  }
  Generator s1(3), s2(3);
  cpu.eval();
  gpu.eval();
  CHECK(nn::generate(gpu, {1, 2, 3}, 8, {.temperature = 0}, s2) == nn::generate(cpu, {1, 2, 3}, 8, {.temperature = 0}, s1));
}
}  // namespace

TEST_CASE("a tiny GPT trains the same on the GPU as on the CPU") {
  Generator g1(7), g2(7);
  nn::GPTConfig config{.vocab_size = 61, .block_size = 16, .n_layer = 2, .n_head = 2, .n_embd = 32};
  nn::GPT cpu(config, g1), gpu(config, g2, kFloat32, kGpu);
  check_trains_like_cpu(cpu, gpu);
}

TEST_CASE("a tiny Llama (GQA, RoPE tables on the device, SwiGLU, recomputation) trains the same on the GPU") {
  nn::LlamaConfig config{.vocab_size = 61, .hidden_size = 32, .intermediate_size = 64, .num_hidden_layers = 2,
                         .num_attention_heads = 4, .num_key_value_heads = 2, .max_position_embeddings = 16,
                         .rope_theta = 500000.0, .recompute = true};
  Generator g1(7), g2(7);
  nn::Llama cpu(config, g1), gpu(config, g2, kFloat32, kGpu);
  check_trains_like_cpu(cpu, gpu);
}

TEST_CASE("MoE: topk, permutation both ways, grouped GEMM, and a tiny Mixtral trains the same on the GPU") {
  Generator gen(23);
  Tensor experts = tensor(std::vector<int64_t>{2, 0, 1, 2, 0, 3, 3, 1, 2, 1}).view({5, 2});
  Tensor gates = softmax(randn({5, 2}, gen, kFloat64), -1).to(kFloat32);
  for (int64_t capacity : {int64_t(-1), int64_t(2)}) {
    const nn::Routing cpu_plan = nn::route(experts, gates, 4, capacity, nn::DropPolicy::Probs);
    const nn::Routing gpu_plan = nn::route(experts.to(kGpu), gates.to(kGpu), 4, capacity, nn::DropPolicy::Probs);
    compare("moe_permute then moe_unpermute",
            [&](const std::vector<Tensor>& in) {
              const nn::Routing& plan = in[0].device().is_cpu() ? cpu_plan : gpu_plan;
              return moe_unpermute(moe_permute(in[0], plan.permutation) * 1.5, in[1], plan.permutation);
            },
            {randn({5, 70}, gen), gates}, gpu_tolerance(kFloat32));
  }
  const std::vector<int64_t> groups{3, 0, 4, 1};
  for (bool one_launch : {false, true})
    for (DType dt : {kFloat32, kBFloat16}) {
      INFO("one cuBLAS grouped launch: " << one_launch << ", " << dt);
      SettingsGuard guard;
      settings().grouped_gemm_one_launch = one_launch;
      compare("grouped_linear", [&](const std::vector<Tensor>& in) { return grouped_linear(in[0], in[1], groups); },
              {randn({8, 24}, gen).to(dt), randn({4, 40, 24}, gen).to(dt)}, gpu_tolerance(dt));
    }
  compare("topk", [](const std::vector<Tensor>& in) { return topk(in[0], 2).first; }, {randn({6, 8}, gen)}, gpu_tolerance(kFloat32));

  nn::LlamaConfig config{.vocab_size = 61, .hidden_size = 32, .intermediate_size = 24, .num_hidden_layers = 2,
                         .num_attention_heads = 4, .num_key_value_heads = 2, .max_position_embeddings = 16,
                         .moe = nn::MoeSpec{.experts = 4, .top_k = 2, .z_loss_coeff = 1e-3}};
  Generator g1(7), g2(7);
  nn::Llama cpu(config, g1), gpu(config, g2, kFloat32, kGpu);
  check_trains_like_cpu(cpu, gpu);
}

TEST_CASE("NCCL at world size 1: collectives are identities") {
  auto group = dist::nccl_world(0);
  REQUIRE(group->size() == 1);
  Generator gen(11);
  Tensor x = randn({1000}, gen).to(kGpu);
  std::vector<double> before = values(x);
  group->all_reduce(x, dist::ReduceOp::Sum);
  group->all_reduce(x, dist::ReduceOp::Avg);
  group->broadcast(x, 0);
  CHECK(values(x) == before);
  Tensor gathered = empty({1000}, kGpu);
  group->all_gather(gathered, x);
  CHECK(values(gathered) == before);
  Tensor scattered = empty({1000}, kGpu);
  group->reduce_scatter(scattered, x, dist::ReduceOp::Sum);
  CHECK(values(scattered) == before);
  group->barrier();
}
