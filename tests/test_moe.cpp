// Mixture of experts: top-k, the routing plan with its capacity and drop
// policies, token permutation and its inverse, the grouped GEMM, and the
// MoE layer against a naive float64 reference written here with loops
// (router, gates, capacity, experts, load-balancing and z losses), its
// gradients by finite differences of that reference.

#include <algorithm>
#include <numeric>

#include "helpers.h"

using namespace kiln;
using kt::values;

namespace {

std::vector<int64_t> ints(const Tensor& t) {
  std::vector<int64_t> out;
  for (double v : values(t)) out.push_back(static_cast<int64_t>(v));
  return out;
}

double gelu_tanh(double x) { return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
double silu(double x) { return x / (1 + std::exp(-x)); }

// The layer's parameters and input as plain arrays.
struct RefMoe {
  nn::MoeSpec spec;
  nn::MlpKind kind;
  int64_t N, C, H;                        // tokens, features, experts' hidden size
  std::vector<double> x, router, up, down;  // (N, C), (E, C), (E, U, C), (E, C, H)

  struct Result {
    std::vector<double> out;  // (N, C)
    double aux = 0, z = 0;
    std::vector<int64_t> choices;  // per expert, before drops
    int64_t dropped = 0;
  };

  Result forward() const {
    const int64_t E = spec.experts, k = spec.top_k, U = kind == nn::MlpKind::SwiGLU ? 2 * H : H;
    Result r;
    r.out.assign(N * C, 0.0);
    r.choices.assign(E, 0);
    std::vector<double> probs(N * E), lse(N);
    std::vector<std::vector<std::pair<int64_t, double>>> takes(E);  // (token, gate) per expert
    for (int64_t t = 0; t < N; ++t) {
      std::vector<double> logit(E);
      for (int64_t e = 0; e < E; ++e)
        for (int64_t c = 0; c < C; ++c) logit[e] += x[t * C + c] * router[e * C + c];
      const double m = *std::max_element(logit.begin(), logit.end());
      double s = 0;
      for (double l : logit) s += std::exp(l - m);
      lse[t] = m + std::log(s);
      for (int64_t e = 0; e < E; ++e) probs[t * E + e] = std::exp(logit[e] - lse[t]);
      std::vector<int64_t> order(E);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return logit[a] > logit[b]; });
      double top_sum = 0;
      for (int64_t j = 0; j < k; ++j) top_sum += std::exp(logit[order[j]] - m);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = order[j];
        const double g = spec.score == nn::RouterScore::TopKThenSoftmax ? std::exp(logit[e] - m) / top_sum
                                                                         : probs[t * E + e];
        takes[e].push_back({t, g});
        ++r.choices[e];
      }
    }
    const int64_t capacity = spec.capacity_factor > 0
                                 ? int64_t(std::ceil(double(N * k) / double(E) * spec.capacity_factor))
                                 : N * k;
    for (int64_t e = 0; e < E; ++e) {
      auto mine = takes[e];
      if (int64_t(mine.size()) > capacity) {
        if (spec.drop_policy == nn::DropPolicy::Probs)
          std::stable_sort(mine.begin(), mine.end(), [](auto& a, auto& b) { return a.second > b.second; });
        r.dropped += int64_t(mine.size()) - capacity;
        mine.resize(capacity);
      }
      for (auto [t, g] : mine) {
        std::vector<double> u(U, 0.0), h(H), y(C, 0.0);
        for (int64_t i = 0; i < U; ++i)
          for (int64_t c = 0; c < C; ++c) u[i] += up[(e * U + i) * C + c] * x[t * C + c];
        for (int64_t i = 0; i < H; ++i) h[i] = kind == nn::MlpKind::SwiGLU ? silu(u[i]) * u[H + i] : gelu_tanh(u[i]);
        for (int64_t c = 0; c < C; ++c)
          for (int64_t i = 0; i < H; ++i) y[c] += down[(e * C + c) * H + i] * h[i];
        for (int64_t c = 0; c < C; ++c) r.out[t * C + c] += g * y[c];
      }
    }
    for (int64_t e = 0; e < E; ++e) {
      double p = 0;
      for (int64_t t = 0; t < N; ++t) p += probs[t * E + e];
      r.aux += p * double(r.choices[e]);
    }
    r.aux *= double(E) * spec.aux_loss_coeff / (double(N * k) * double(N));
    for (int64_t t = 0; t < N; ++t) r.z += lse[t] * lse[t] / double(N) * spec.z_loss_coeff;
    return r;
  }
};

struct Case {
  const char* name;
  nn::MlpKind kind;
  nn::MoeSpec moe;
};

std::vector<Case> cases() {
  using nn::DropPolicy;
  using nn::RouterScore;
  return {
      {"Mixtral: SwiGLU top-2, softmax over the top-k, dropless", nn::MlpKind::SwiGLU,
       {.experts = 4, .top_k = 2, .aux_loss_coeff = 0.1, .z_loss_coeff = 0.01}},
      {"Switch: GELU top-1, top-k of the softmax, capacity 1.0, smallest gates dropped", nn::MlpKind::GeluTanh,
       {.experts = 4, .top_k = 1, .score = RouterScore::SoftmaxThenTopK, .capacity_factor = 1.0,
        .aux_loss_coeff = 0.1}},
      {"top-2 at capacity 0.5, latest tokens dropped", nn::MlpKind::SwiGLU,
       {.experts = 3, .top_k = 2, .capacity_factor = 0.5, .drop_policy = DropPolicy::Position,
        .aux_loss_coeff = 0.05, .z_loss_coeff = 0.02}},
  };
}

// A layer of the case's spec with random parameters, and its reference.
std::pair<std::shared_ptr<nn::MoeLayer>, RefMoe> make_layer(const Case& c, int64_t B, int64_t T, Generator& gen) {
  const int64_t C = 6, H = 5;
  nn::BlockSpec spec{.d_model = C, .attention = {.heads = 2},
                     .mlp = {.kind = c.kind, .hidden = H, .bias = false, .moe = c.moe}};
  auto layer = std::make_shared<nn::MoeLayer>(spec, gen, kFloat64, kCPU);
  {
    NoGradGuard no_grad;
    layer->router.copy_(randn(layer->router.sizes(), gen, kFloat64));
    layer->up.copy_(randn(layer->up.sizes(), gen, kFloat64) * 0.5);
    layer->down.copy_(randn(layer->down.sizes(), gen, kFloat64) * 0.5);
  }
  RefMoe ref{c.moe, c.kind, B * T, C, H, {}, values(layer->router), values(layer->up), values(layer->down)};
  return {layer, ref};
}

}  // namespace

TEST_CASE("topk: the largest first, the lower index first among equals, gradients to the values taken") {
  Tensor x = tensor({1.0, 5.0, 3.0, 5.0, -2.0, 0.5, 0.5, 0.25}).view({2, 4});
  auto [v, i] = topk(x, 3);
  CHECK(values(v) == std::vector<double>{5, 5, 3, 0.5, 0.5, 0.25});
  CHECK(ints(i) == std::vector<int64_t>{1, 3, 2, 1, 2, 3});
  Generator gen(5);
  kt::check_grad([](const std::vector<Tensor>& in) { return topk(in[0], 2).first; }, {kt::leaf({3, 5}, gen)});
  CHECK_THROWS_WITH(topk(x, 5), Catch::Contains("[topk] k (5) must be in [1, 4]"));
}

TEST_CASE("routing: rows expert by expert in token order, capacity dropping by gate or by position") {
  // 4 tokens, top-2 over 3 experts.
  Tensor experts = tensor(std::vector<int64_t>{0, 2, 2, 0, 0, 1, 2, 1}).view({4, 2});
  Tensor gates = tensor({0.6, 0.4, 0.7, 0.3, 0.2, 0.8, 0.9, 0.1}).view({4, 2});
  nn::Routing r = nn::route(experts, gates, 3, -1, nn::DropPolicy::Probs);
  // Expert 0 takes choices 0, 3, 4; expert 1 takes 5, 7; expert 2 takes 1, 2, 6.
  CHECK(ints(r.permutation.row_choice) == std::vector<int64_t>{0, 3, 4, 5, 7, 1, 2, 6});
  CHECK(ints(r.permutation.slot) == std::vector<int64_t>{0, 5, 6, 1, 2, 3, 7, 4});
  CHECK(r.expert_rows == std::vector<int64_t>{3, 2, 3});
  CHECK(r.expert_choices == std::vector<int64_t>{3, 2, 3});
  CHECK(r.dropped == 0);
  // Capacity 2: expert 0 keeps its two largest gates (0.6, 0.3: choices 0, 3),
  // expert 2 its 0.7 and 0.9 (choices 2, 6).
  r = nn::route(experts, gates, 3, 2, nn::DropPolicy::Probs);
  CHECK(ints(r.permutation.row_choice) == std::vector<int64_t>{0, 3, 5, 7, 2, 6});
  CHECK(ints(r.permutation.slot) == std::vector<int64_t>{0, -1, 4, 1, -1, 2, 5, 3});
  CHECK(r.expert_rows == std::vector<int64_t>{2, 2, 2});
  CHECK(r.expert_choices == std::vector<int64_t>{3, 2, 3});
  CHECK(r.dropped == 2);
  // By position: the first two tokens of each expert.
  r = nn::route(experts, gates, 3, 2, nn::DropPolicy::Position);
  CHECK(ints(r.permutation.row_choice) == std::vector<int64_t>{0, 3, 5, 7, 1, 2});
  nn::MoeSpec spec{.experts = 3, .top_k = 2, .capacity_factor = 1.25};
  CHECK(nn::expert_capacity(10, spec) == 9);  // ceil(10 * 2 / 3 * 1.25) = ceil(8.33)
  CHECK_THROWS_WITH(nn::route(experts + 1, gates, 3, -1, nn::DropPolicy::Probs),
                    Catch::Contains("[route] token 0 chose expert 3 of 3"));
}

TEST_CASE("permute and unpermute: a round trip under gates summing to one, gradients by finite differences") {
  Generator gen(11);
  Tensor experts = tensor(std::vector<int64_t>{1, 0, 2, 1, 1, 2, 0, 2, 1, 0}).view({5, 2});
  Tensor x = kt::leaf({5, 3}, gen);
  Tensor w = softmax(randn({5, 2}, gen, kFloat64), -1);
  nn::Routing r = nn::route(experts, w, 3, -1, nn::DropPolicy::Probs);
  KT_CHECK_CLOSE(moe_unpermute(moe_permute(x, r.permutation), w, r.permutation), values(x), 1e-12);
  // With drops (capacity 2 for experts of 3, 4 and 3 choices), through a per-row scaling so that rows differ.
  nn::Routing dropped = nn::route(experts, w, 3, 2, nn::DropPolicy::Probs);
  REQUIRE(dropped.dropped == 4);
  for (const nn::Routing* plan : {&r, &dropped}) {
    Tensor scale = randn({plan->permutation.row_choice.size(0), 1}, gen, kFloat64);
    kt::check_grad(
        [&](const std::vector<Tensor>& in) {
          return moe_unpermute(moe_permute(in[0], plan->permutation) * scale, in[1], plan->permutation);
        },
        {x, w.detach().clone().requires_grad_()});
  }
  CHECK_THROWS_WITH(moe_unpermute(moe_permute(x, r.permutation), w.to(kFloat32), r.permutation),
                    Catch::Contains("[moe_unpermute] gates must be float64"));
}

TEST_CASE("grouped_linear: each group through its own weight, an empty group included") {
  Generator gen(12);
  Tensor x = kt::leaf({7, 4}, gen), w = kt::leaf({3, 5, 4}, gen);
  const std::vector<int64_t> groups{3, 0, 4};
  Tensor y = grouped_linear(x, w, groups);
  Tensor expect = cat({matmul(x.narrow(0, 0, 3), w.select(0, 0).t()), matmul(x.narrow(0, 3, 4), w.select(0, 2).t())});
  KT_CHECK_CLOSE(y, values(expect), 1e-12);
  kt::check_grad([&](const std::vector<Tensor>& in) { return grouped_linear(in[0], in[1], groups); }, {x, w});
  CHECK_THROWS_WITH(grouped_linear(x, w, {3, 3, 3}), Catch::Contains("3 groups of rows summing to 9"));
}

TEST_CASE("the MoE layer matches a naive float64 mixture of experts, auxiliary losses included") {
  for (const Case& c : cases()) {
    INFO(c.name);
    Generator gen(21);
    const int64_t B = 2, T = 5;
    auto [layer, ref] = make_layer(c, B, T, gen);
    Tensor x = randn({B, T, ref.C}, gen, kFloat64);
    ref.x = values(x);
    const RefMoe::Result expect = ref.forward();
    Tensor out = layer->forward(x);
    KT_CHECK_CLOSE(out, expect.out, 1e-12);
    const nn::MoeStats& s = layer->stats();
    CHECK(s.aux_loss == Approx(expect.aux).epsilon(1e-12));
    CHECK(s.z_loss == Approx(expect.z).epsilon(1e-12).margin(1e-15));
    CHECK(s.expert_choices == expect.choices);
    CHECK(s.dropped == expect.dropped);
    CHECK(s.forwards == 1);
    if (c.moe.capacity_factor > 0) CHECK(expect.dropped > 0);  // the case exercises dropping
  }
}

TEST_CASE("MoE layer gradients: the output's and the auxiliary losses', by finite differences of the reference") {
  for (const Case& c : cases()) {
    INFO(c.name);
    Generator gen(22);
    const int64_t B = 2, T = 4;
    auto [layer, ref] = make_layer(c, B, T, gen);
    Tensor x = randn({B, T, ref.C}, gen, kFloat64).requires_grad_();
    ref.x = values(x);
    Tensor w = randn({B, T, ref.C}, gen, kFloat64);
    layer->set_aux_loss_scale(0.5);  // two micro-batches: the auxiliary losses count half
    sum(layer->forward(x) * w).backward();
    const std::vector<double> wv = values(w);
    auto loss = [&] {
      const RefMoe::Result r = ref.forward();
      double l = 0.5 * (r.aux + r.z);
      for (size_t i = 0; i < wv.size(); ++i) l += r.out[i] * wv[i];
      return l;
    };
    const std::pair<const char*, std::pair<std::vector<double>*, Tensor>> params[] = {
        {"x", {&ref.x, x}}, {"router", {&ref.router, layer->router}}, {"up", {&ref.up, layer->up}},
        {"down", {&ref.down, layer->down}}};
    for (const auto& [name, p] : params) {
      INFO("gradient of " << name);
      std::vector<double>& v = *p.first;
      std::vector<double> numeric(v.size());
      for (size_t i = 0; i < v.size(); ++i) {
        const double saved = v[i], eps = 1e-6;
        v[i] = saved + eps;
        const double hi = loss();
        v[i] = saved - eps;
        const double lo = loss();
        v[i] = saved;
        numeric[i] = (hi - lo) / (2 * eps);
      }
      REQUIRE(p.second.grad().defined());
      CHECK(kt::rel_error(values(p.second.grad()), numeric) < 1e-6);
    }
  }
}

TEST_CASE("MoE language models: the spec's layers take experts, and the spec survives its JSON") {
  nn::ModelSpec spec = nn::LlamaConfig{.vocab_size = 64, .hidden_size = 16, .intermediate_size = 24,
                                       .num_hidden_layers = 3, .num_attention_heads = 2,
                                       .max_position_embeddings = 16}
                           .spec();
  spec.block.mlp.moe = nn::MoeSpec{.experts = 4, .top_k = 2, .capacity_factor = 1.5, .z_loss_coeff = 1e-3,
                                   .every = 2};
  Generator gen(3);
  nn::TransformerLM model(spec, gen);
  CHECK(model.layers->at<nn::Block>(0).moe);
  CHECK(model.layers->at<nn::Block>(1).mlp);
  CHECK(model.layers->at<nn::Block>(2).moe);
  CHECK(model.num_parameters() == spec.num_parameters());
  const int64_t expert = 3 * 16 * 24;
  CHECK(spec.num_parameters() - spec.num_parameters(/*active=*/true) == 2 * (4 - 2) * expert);
  CHECK(model.state_dict().count("layers.2.mlp.router") == 1);
  const nn::ModelSpec back = nn::spec_from_json(nn::spec_to_json(spec));
  REQUIRE(back.block.mlp.moe);
  CHECK(back.block.mlp.moe->capacity_factor == 1.5);
  CHECK(back.block.mlp.moe->every == 2);
  CHECK(nn::spec_to_json(back) == nn::spec_to_json(spec));

  // The loss backpropagates into every expert that took tokens, and the stats count both MoE layers.
  Tensor idx = randint(0, 64, {2, 8}, gen), targets = randint(0, 64, {2, 8}, gen);
  model.loss(idx, targets).backward();
  CHECK(model.layers->at<nn::Block>(0).moe->router.grad().defined());
  const nn::MoeStats s = model.moe_stats();
  CHECK(s.forwards == 2);
  CHECK(s.choices == 2 * 2 * 16);
  CHECK(model.moe_stats().forwards == 0);  // reset

  nn::BlockSpec bad = spec.block;
  bad.mlp.moe->top_k = 5;
  CHECK_THROWS_WITH(bad.check(), Catch::Contains("MoE top-k (5) must be in [1, experts (4)]"));
  bad = spec.block;
  bad.mlp.bias = true;
  CHECK_THROWS_WITH(bad.check(), Catch::Contains("MoE experts have no biases"));
}

TEST_CASE("an MoE block recomputed in backward gives the stored activations' gradients, auxiliary losses included") {
  nn::BlockSpec spec{.d_model = 16, .attention = {.heads = 4},
                     .mlp = {.kind = nn::MlpKind::SwiGLU, .hidden = 12, .bias = false,
                             .moe = nn::MoeSpec{.experts = 4, .top_k = 2, .capacity_factor = 1.0,
                                                .aux_loss_coeff = 0.1, .z_loss_coeff = 0.01}}};
  auto gradients = [&](bool recompute) {
    spec.recompute = recompute;
    Generator init(3), drop(4);
    nn::Block block(spec, drop, kFloat64);
    block.reset_parameters(init, 0.3, 0.3);
    Tensor x = randn({2, 7, 16}, init, kFloat64).requires_grad_();
    Tensor y = block.forward(x);
    sum(y * randn(y.sizes(), init, kFloat64)).backward();
    std::vector<std::vector<double>> out{values(x.grad())};
    for (const Tensor& p : block.parameters()) out.push_back(values(p.grad()));
    CHECK(block.moe->stats().forwards == 1);  // the replay's forward, counted once
    return out;
  };
  CHECK(gradients(true) == gradients(false));
}
