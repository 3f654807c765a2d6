// Gradients of every differentiable op against central finite differences in
// float64, and the engine's semantics: accumulation, shared subexpressions,
// retain_graph, hooks, retain_grad, version checks, custom functions.

#include "helpers.h"

using namespace kiln;
using kt::check_grad;
using kt::leaf;
using kt::values;
using Inputs = std::vector<Tensor>;

TEST_CASE("gradcheck: elementwise ops with broadcasting") {
  Generator gen(1);
  Tensor a = leaf({3, 4}, gen), b = leaf({4}, gen), c = leaf({3, 1}, gen);
  check_grad([](const Inputs& x) { return x[0] + x[1]; }, {a, b});
  check_grad([](const Inputs& x) { return add(x[0], x[1], -1.5); }, {a, c});
  check_grad([](const Inputs& x) { return x[0] - x[1]; }, {a, c});
  check_grad([](const Inputs& x) { return x[0] * x[1]; }, {a, b});
  check_grad([](const Inputs& x) { return x[0] / (x[1] * x[1] + 1.0); }, {a, b});
  check_grad([](const Inputs& x) { return pow(abs(x[0]) + 0.5, x[1]); }, {a, b});
  check_grad([](const Inputs& x) { return pow(x[0], 3); }, {a});
  check_grad([](const Inputs& x) { return maximum(x[0], x[1]); }, {a, b});
  check_grad([](const Inputs& x) { return minimum(x[0], x[1]); }, {a, c});
  check_grad([](const Inputs& x) { return 2.0 - x[0] / 3.0 + 1.0 / (x[0] * x[0] + 1.0); }, {a});
}

TEST_CASE("gradcheck: unary ops and activations") {
  Generator gen(2);
  Tensor x = leaf({2, 5}, gen);
  check_grad([](const Inputs& v) { return neg(v[0]); }, {x});
  check_grad([](const Inputs& v) { return abs(v[0]); }, {x});
  check_grad([](const Inputs& v) { return exp(v[0]); }, {x});
  check_grad([](const Inputs& v) { return log(v[0] * v[0] + 0.5); }, {x});
  check_grad([](const Inputs& v) { return sqrt(v[0] * v[0] + 0.5); }, {x});
  check_grad([](const Inputs& v) { return rsqrt(v[0] * v[0] + 0.5); }, {x});
  check_grad([](const Inputs& v) { return tanh(v[0]); }, {x});
  check_grad([](const Inputs& v) { return sigmoid(v[0]); }, {x});
  check_grad([](const Inputs& v) { return relu(v[0]); }, {x});
  check_grad([](const Inputs& v) { return gelu(v[0]); }, {x});
  check_grad([](const Inputs& v) { return gelu(v[0], "tanh"); }, {x});
  check_grad([](const Inputs& v) { return silu(v[0]); }, {x});
  check_grad([](const Inputs& v) { return sin(v[0]) * cos(v[0] * 2.0); }, {x});
  check_grad([](const Inputs& v) { return tril(v[0], 1) + triu(v[0] * 3.0, -1); }, {x});
  check_grad([](const Inputs& v) { return cumsum(v[0], 1) * cumsum(v[0], 0); }, {x});
  check_grad([](const Inputs& v) { return clamp(v[0], -0.3, 0.4); }, {x});
  check_grad([](const Inputs& v) { return where(v[0] > 0, v[0] * 2.0, exp(v[0])); }, {x});
  check_grad([](const Inputs& v) { return masked_fill(v[0], v[0] < -0.5, 3.0); }, {x});
}

TEST_CASE("gradcheck: reductions") {
  Generator gen(3);
  Tensor x = leaf({3, 4, 5}, gen);
  check_grad([](const Inputs& v) { return sum(v[0]); }, {x});
  check_grad([](const Inputs& v) { return sum(v[0], {0, 2}); }, {x});
  check_grad([](const Inputs& v) { return sum(v[0], {1}, true); }, {x});
  check_grad([](const Inputs& v) { return mean(v[0], {-1}); }, {x});
  check_grad([](const Inputs& v) { return mean(v[0]); }, {x});
  check_grad([](const Inputs& v) { return max(v[0], 1); }, {x});
  check_grad([](const Inputs& v) { return min(v[0], 2, true); }, {x});
  check_grad([](const Inputs& v) { return max(v[0]); }, {x});
  check_grad([](const Inputs& v) { return var(v[0], {0, 1}); }, {x});
  check_grad([](const Inputs& v) { return var(v[0], {2}, 0, true); }, {x});
  check_grad([](const Inputs& v) { return logsumexp(v[0], 1); }, {x});
  // ties share the gradient evenly
  Tensor t = tensor({1.0, 3.0, 3.0}, kFloat64).requires_grad_();
  max(t).backward();
  CHECK(values(t.grad()) == std::vector<double>{0, 0.5, 0.5});
}

TEST_CASE("gradcheck: views") {
  Generator gen(4);
  Tensor x = leaf({3, 4, 2}, gen);
  check_grad([](const Inputs& v) { return v[0].transpose(0, 2) * 2.0; }, {x});
  check_grad([](const Inputs& v) { return v[0].permute({2, 0, 1}).reshape({2, 12}); }, {x});
  check_grad([](const Inputs& v) { return v[0].slice(1, 1, 4, 2); }, {x});
  check_grad([](const Inputs& v) { return v[0].select(0, -1) + v[0].select(0, 0); }, {x});
  check_grad([](const Inputs& v) { return v[0].narrow(2, 1, 1).squeeze(2).unsqueeze(0); }, {x});
  check_grad([](const Inputs& v) { return v[0].slice(0, 0, 1).expand({5, 4, 2}); }, {x});
  check_grad([](const Inputs& v) { return v[0].transpose(0, 1).contiguous().view({-1}); }, {x});
  check_grad([](const Inputs& v) { return v[0].flatten(1) * 1.5; }, {x});
  autograd::zero_grad({x});
  // a dtype round trip passes the gradient back in the input's dtype
  Tensor y = x.to(kFloat32);
  sum(y * 2.0).backward();
  CHECK(x.grad().dtype() == kFloat64);
  CHECK(values(x.grad()) == std::vector<double>(24, 2.0));
}

TEST_CASE("gradcheck: matmul in all its shapes") {
  Generator gen(5);
  check_grad([](const Inputs& v) { return matmul(v[0], v[1]); }, {leaf({3, 4}, gen), leaf({4, 2}, gen)});
  check_grad([](const Inputs& v) { return matmul(v[0], v[1]); }, {leaf({2, 3, 4}, gen), leaf({4, 5}, gen)});
  check_grad([](const Inputs& v) { return matmul(v[0], v[1]); }, {leaf({2, 1, 3, 4}, gen), leaf({3, 4, 2}, gen)});
  check_grad([](const Inputs& v) { return matmul(v[0], v[1]); }, {leaf({4}, gen), leaf({2, 4, 3}, gen)});
  check_grad([](const Inputs& v) { return matmul(v[0], v[1]); }, {leaf({3, 4}, gen), leaf({4}, gen)});
  check_grad([](const Inputs& v) { return matmul(v[0].t(), v[1]); }, {leaf({4, 3}, gen), leaf({4, 2}, gen)});
}

TEST_CASE("gradcheck: cat, stack, split, indexing") {
  Generator gen(6);
  Tensor a = leaf({2, 3}, gen), b = leaf({2, 1}, gen), c = leaf({2, 3}, gen);
  check_grad([](const Inputs& v) { return cat({v[0], v[1], v[0]}, 1); }, {a, b});
  check_grad([](const Inputs& v) { return stack({v[0], v[1] * 2.0}, 2); }, {a, c});
  check_grad([](const Inputs& v) { return split(v[0], 2, 1)[1] * 3.0 + chunk(v[0], 2, 1)[1]; }, {a});
  Tensor idx = tensor(std::vector<int64_t>{2, 0, 2, 1});
  check_grad([&](const Inputs& v) { return index_select(v[0], 1, idx); }, {a});
  Tensor gidx = tensor(std::vector<int64_t>{0, 2, 2, 1, 0, 0}).view({2, 3});
  check_grad([&](const Inputs& v) { return gather(v[0], 1, gidx); }, {a});
  Tensor w = leaf({5, 3}, gen);
  Tensor tokens = tensor(std::vector<int64_t>{4, 1, 4, 4, 0, 2}).view({2, 3});
  check_grad([&](const Inputs& v) { return embedding(v[0], tokens); }, {w});
}

TEST_CASE("gradcheck: softmax, norms, cross_entropy, linear_cross_entropy, dropout, attention") {
  Generator gen(7);
  Tensor x = leaf({3, 5}, gen), x3 = leaf({2, 3, 4}, gen);
  check_grad([](const Inputs& v) { return softmax(v[0], 1); }, {x});
  check_grad([](const Inputs& v) { return softmax(v[0], 0); }, {x3});
  check_grad([](const Inputs& v) { return causal_softmax(v[0]); }, {x3});               // Tq 3 < Tk 4
  check_grad([](const Inputs& v) {
    return scaled_dot_product_attention_varlen(v[0], v[1], v[2], tensor(std::vector<int64_t>{0, 2, 5}),
                                               tensor(std::vector<int64_t>{0, 3, 4}), {.causal = true});
  }, {leaf({5, 2, 3}, gen), leaf({4, 1, 3}, gen), leaf({4, 1, 3}, gen)});
  check_grad([](const Inputs& v) { return causal_softmax(v[0]); }, {leaf({2, 5, 3}, gen)});  // Tq 5 > Tk 3
  check_grad([](const Inputs& v) { return log_softmax(v[0], -1); }, {x3});
  check_grad([](const Inputs& v) { return log_softmax(v[0], 1); }, {x3});
  Tensor w = leaf({4}, gen), b = leaf({4}, gen), w2 = leaf({3, 4}, gen);
  check_grad([](const Inputs& v) { return layer_norm(v[0], {4}, v[1], v[2]); }, {x3, w, b});
  check_grad([](const Inputs& v) { return layer_norm(v[0], {3, 4}, v[1]); }, {x3, w2});
  check_grad([](const Inputs& v) { return layer_norm(v[0], {4}); }, {x3});
  check_grad([](const Inputs& v) { return layer_norm(v[0], {4}, {}, v[1]); }, {x3, b});
  check_grad([](const Inputs& v) { return rms_norm(v[0], {4}, v[1]); }, {x3, w});
  check_grad([](const Inputs& v) { return rms_norm(v[0], {3, 4}); }, {x3});
  Tensor target = tensor(std::vector<int64_t>{4, -100, 0});
  check_grad([&](const Inputs& v) { return cross_entropy(v[0], target); }, {x});
  check_grad([&](const Inputs& v) { return cross_entropy(v[0], target, -100, Reduction::Sum); }, {x});
  check_grad([&](const Inputs& v) { return cross_entropy(v[0], target, -100, Reduction::None); }, {x});
  check_grad([&](const Inputs& v) { return cross_entropy(v[0], target, -100, Reduction::Mean, 0.4); }, {x});
  Tensor t3 = tensor(std::vector<int64_t>{0, 2, 1, 1, 0, 2, 2, 1}).view({2, 4});
  check_grad([&](const Inputs& v) { return cross_entropy(v[0], t3); }, {x3});
  check_grad([](const Inputs& v) {
    Generator g(3);  // the same mask at every evaluation
    return dropout(v[0], 0.4, true, g);
  }, {x3});
  Tensor res = leaf({2, 3, 4}, gen);
  for (int part : {0, 1}) {  // the sum and the normalized sum, each differentiated
    check_grad([part](const Inputs& v) {
      auto [s, y] = add_layer_norm(v[0], v[1], {4}, v[2], v[3]);
      return part == 0 ? s * y : y;
    }, {x3, res, w, b});
    check_grad([part](const Inputs& v) {
      auto [s, y] = add_rms_norm(v[0], v[1], {4}, v[2]);
      return part == 0 ? s * y : y;
    }, {x3, res, w});
  }
  Tensor lw = leaf({5, 4}, gen), lb = leaf({5}, gen);
  check_grad([](const Inputs& v) { return linear(v[0], v[1], v[2]); }, {x3, lw, lb});
  check_grad([](const Inputs& v) { return linear(v[0], v[1]); }, {x3, lw});
  check_grad([](const Inputs& v) { return linear(v[0], v[1], v[2], Activation::GeluTanh); }, {x3, lw, lb});
  check_grad([](const Inputs& v) { return linear(v[0], v[1], {}, Activation::GeluTanh); }, {x3, lw});
  Tensor gate = leaf({2, 3}, gen), up = leaf({2, 3}, gen);
  check_grad([](const Inputs& v) { return swiglu(v[0], v[1]); }, {gate, up});
  Tensor head = leaf({6, 5}, gen);
  Tensor rows = tensor(std::vector<int64_t>{4, -100, 0, 5, 1});
  Tensor feats = leaf({5, 5}, gen);
  for (int64_t chunk : {0, 2})
    for (double z : {0.0, 0.4})
      check_grad([&](const Inputs& v) { return linear_cross_entropy(v[0], v[1], rows, -100, chunk, z); },
                 {feats, head});
  for (bool causal : {false, true}) {
    // The fused kernel pair (head dims of q and v equal), padded and packed.
    Tensor q = leaf({1, 4, 3, 2}, gen), k = leaf({1, 2, 5, 2}, gen), v2 = leaf({1, 2, 5, 2}, gen);
    SettingsGuard guard;
    settings().attention = AttentionBackend::Fused;
    check_grad([&](const Inputs& in) {
      return scaled_dot_product_attention(in[0], in[1], in[2], {.causal = causal});
    }, {q, k, v2});
    check_grad([&](const Inputs& in) {  // sequences of 2, 0 and 3 queries against 3, 1 and 2 keys
      return scaled_dot_product_attention_varlen(in[0], in[1], in[2], tensor(std::vector<int64_t>{0, 2, 2, 5}),
                                                 tensor(std::vector<int64_t>{0, 3, 4, 6}), {.causal = causal});
    }, {leaf({5, 4, 2}, gen), leaf({6, 2, 2}, gen), leaf({6, 2, 2}, gen)});
  }
  for (bool causal : {false, true}) {
    Tensor q = leaf({1, 4, 3, 2}, gen), k = leaf({1, 2, 5, 2}, gen), v = leaf({1, 2, 5, 3}, gen);
    check_grad([&](const Inputs& in) {
      return scaled_dot_product_attention(in[0], in[1], in[2], {.causal = causal});
    }, {q, k, v});
  }
}

TEST_CASE("gradients accumulate across backward calls and through shared subexpressions") {
  Tensor x = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor y = x * x;      // used twice below
  Tensor z = sum(y * y + y);  // dz/dx = (4 x^3 + 2 x)
  z.backward();
  CHECK(values(x.grad()) == std::vector<double>{6, 36});
  sum(x * 3.0).backward();
  CHECK(values(x.grad()) == std::vector<double>{9, 39});
  autograd::zero_grad({x});
  CHECK(!x.grad().defined());
  sum(x).backward();
  CHECK(values(x.grad()) == std::vector<double>{1, 1});
  autograd::zero_grad({x}, false);
  CHECK(values(x.grad()) == std::vector<double>{0, 0});
}

TEST_CASE("the graph is freed after backward unless retained") {
  Tensor x = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor y = sum(exp(x));
  y.backward({}, /*retain_graph=*/true);
  y.backward();
  CHECK(values(x.grad())[0] == Approx(2 * std::exp(1.0)));
  CHECK_THROWS_WITH(y.backward(), Catch::Contains("backward through the graph a second time"));
}

TEST_CASE("no_grad, detach and requires_grad") {
  Tensor x = ones({2}, kFloat64).requires_grad_();
  {
    NoGradGuard guard;
    Tensor y = x * 2.0;
    CHECK(!y.requires_grad());
    {
      autograd::EnableGradGuard enable;
      CHECK((x * 2.0).requires_grad());
    }
  }
  CHECK((x * 2.0).requires_grad());
  Tensor d = x.detach();
  CHECK(!d.requires_grad());
  CHECK(d.storage() == x.storage());
  CHECK(x.is_leaf());
  CHECK(!(x * 2.0).is_leaf());
  CHECK_THROWS_WITH((x * 2.0).requires_grad_(false), Catch::Contains("only change requires_grad on a leaf"));
  CHECK_THROWS_WITH(ones({2}, kInt64).requires_grad_(), Catch::Contains("only floating tensors"));
  CHECK_THROWS_WITH(ones({2}).backward(), Catch::Contains("does not require grad"));
  CHECK_THROWS_WITH(sum(x * 1.0).backward(ones({3}, kFloat64)), Catch::Contains("gradient of shape [3]"));
  CHECK_THROWS_WITH((x * 1.0).backward(), Catch::Contains("only for scalar outputs"));
  // an explicit gradient for a non-scalar root
  (x * 3.0).backward(tensor({1.0, 2.0}, kFloat64));
  CHECK(values(x.grad()) == std::vector<double>{3, 6});
}

TEST_CASE("post-accumulate hooks fire once, when the gradient is final") {
  Tensor w = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  std::vector<std::vector<double>> seen;
  w.register_post_accumulate_grad_hook([&](const Tensor& p) { seen.push_back(values(p.grad())); });
  // w is used four times (tied): the hook sees the sum of all contributions:
  // d/dw [2 sum(w) + sum(w^2) + (w . c) sum(w)] with c = w = (1, 2) held constant
  //   = 2 + 2 w + (w . c) + sum(w) c = (2 + 2 + 5 + 3, 2 + 4 + 5 + 6)
  Tensor loss = sum(w * 2.0) + sum(w * w) + sum(matmul(w, w.detach()) * w);
  loss.backward();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0] == std::vector<double>{12, 17});
  CHECK_THROWS_WITH((w * 2.0).register_post_accumulate_grad_hook([](const Tensor&) {}),
                    Catch::Contains("needs a leaf"));
}

TEST_CASE("retain_grad keeps a non-leaf gradient") {
  Tensor x = tensor({1.0, -2.0}, kFloat64).requires_grad_();
  Tensor h = x * 3.0;
  h.retain_grad();
  Tensor y = sum(h * h);
  y.backward();
  CHECK(values(h.grad()) == std::vector<double>{6, -12});
  CHECK(values(x.grad()) == std::vector<double>{18, -36});
  Tensor unretained = x * 2.0;
  sum(unretained).backward();
  CHECK(!unretained.grad().defined());
}

TEST_CASE("version counters catch in-place changes of saved tensors") {
  Tensor x = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  SECTION("modifying a saved output raises at backward") {
    Tensor y = exp(x);  // saves its output
    Tensor z = sum(y * 1.0);
    y.mul_(2.0);
    CHECK_THROWS_WITH(z.backward(), Catch::Contains("modified by an in-place operation"));
  }
  SECTION("in-place on a leaf that requires grad raises") {
    CHECK_THROWS_WITH(x.add_(1.0), Catch::Contains("leaf tensor that requires grad"));
    NoGradGuard guard;
    x.add_(1.0);  // allowed without recording
    CHECK(values(x) == std::vector<double>{2, 3});
  }
  SECTION("in-place on a non-leaf records its gradient") {
    Tensor y = x * 1.0;
    y.mul_(3.0);
    y.add_(x);
    sum(y).backward();
    CHECK(values(x.grad()) == std::vector<double>{4, 4});
  }
  SECTION("version bumps are visible through views") {
    Tensor base = zeros({4});
    Tensor view = base.narrow(0, 1, 2);
    uint32_t v0 = base.version();
    view.fill_(1);
    CHECK(base.version() == v0 + 1);
  }
}

namespace {
struct Cube : autograd::Function<Cube> {
  static Tensor forward(autograd::AutogradContext& ctx, const Tensor& x, double scale) {
    ctx.save_for_backward({x});
    ctx.saved_values = {scale};
    return x * x * x * scale;
  }
  static autograd::Grads backward(autograd::AutogradContext& ctx, const Tensor& g) {
    const Tensor& x = ctx.saved()[0];  // as autograd.h documents it: a reference into the context
    return {g * 3.0 * ctx.saved_values[0] * x * x};
  }
};

struct MulAdd : autograd::Function<MulAdd> {
  static Tensor forward(autograd::AutogradContext& ctx, const Tensor& a, const Tensor& b) {
    ctx.save_for_backward({a, b});
    return a * b + a;
  }
  static autograd::Grads backward(autograd::AutogradContext& ctx, const Tensor& g) {
    const auto& s = ctx.saved();
    return {ctx.needs_input_grad(0) ? g * (s[1] + 1.0) : Tensor(), ctx.needs_input_grad(1) ? g * s[0] : Tensor()};
  }
};
}  // namespace

namespace {
struct WrongSquare : autograd::Function<WrongSquare> {  // backward forgets the factor 2
  static Tensor forward(autograd::AutogradContext& ctx, const Tensor& x) {
    ctx.save_for_backward({x});
    return x * x;
  }
  static autograd::Grads backward(autograd::AutogradContext& ctx, const Tensor& g) { return {g * ctx.saved()[0]}; }
};
}  // namespace

TEST_CASE("the public gradcheck passes a right gradient and names a wrong one") {
  Generator gen(9);
  Tensor x = leaf({2, 3}, gen);
  CHECK(kiln::gradcheck([](const Inputs& v) { return Cube::apply(v[0], 2.0); }, {x}) < 1e-7);
  CHECK_THROWS_WITH(kiln::gradcheck([](const Inputs& v) { return WrongSquare::apply(v[0]); }, {x}),
                    Catch::Contains("[gradcheck] input 0 (float64[2, 3] on cpu): the gradient is off by 0.5 relative"));
  CHECK_THROWS_WITH(kiln::gradcheck([](const Inputs& v) { return v[0] * 2.0; }, {randn({2}, gen).requires_grad_()}),
                    Catch::Contains("must be contiguous float64 on the CPU"));
}

TEST_CASE("user-defined differentiable functions") {
  Generator gen(8);
  check_grad([](const Inputs& v) { return Cube::apply(v[0], 0.5); }, {leaf({3, 2}, gen)});
  check_grad([](const Inputs& v) { return MulAdd::apply(v[0], v[1]); }, {leaf({4}, gen), leaf({4}, gen)});
  Tensor a = leaf({4}, gen);
  Tensor b = randn({4}, gen, kFloat64);  // does not require grad
  sum(MulAdd::apply(a, b)).backward();
  KT_CHECK_CLOSE(a.grad(), values(b + 1.0), 1e-15);
  CHECK(!Cube::apply(randn({2}, gen, kFloat64), 1.0).requires_grad());
}

TEST_CASE("gradients come back in the input's dtype") {
  Tensor h = tensor({1.0, 2.0}, kFloat16).requires_grad_();
  Tensor f = tensor({3.0, 4.0}, kFloat32).requires_grad_();
  Tensor y = sum(h * f);  // float32
  CHECK(y.dtype() == kFloat32);
  y.backward();
  CHECK(h.grad().dtype() == kFloat16);
  CHECK(values(h.grad()) == std::vector<double>{3, 4});
  CHECK(values(f.grad()) == std::vector<double>{1, 2});
}
