// Module registration and state_dict round trips, Linear against its formula,
// SGD against hand-computed steps.

#include "helpers.h"

using namespace kiln;
using kt::values;

namespace {
struct Block : nn::Module {
  explicit Block(Generator& gen)
      : fc(register_module("fc", std::make_shared<nn::Linear>(nn::LinearOptions{3, 2}, gen))),
        scale(register_parameter("scale", ones({2}))),
        steps(register_buffer("steps", zeros({}, kInt64))) {}
  std::shared_ptr<nn::Linear> fc;
  Tensor scale, steps;
};
struct Net : nn::Module {
  explicit Net(Generator& gen)
      : first(register_module("first", std::make_shared<Block>(gen))),
        second(register_module("second", std::make_shared<Block>(gen))) {
    tied = register_parameter("tied", first->scale);  // shared with first.scale
  }
  std::shared_ptr<Block> first, second;
  Tensor tied;
};
}  // namespace

TEST_CASE("modules name their parameters and buffers, tied ones once") {
  Generator gen(1);
  Net net(gen);
  std::vector<std::string> names;
  for (auto& [name, p] : net.named_parameters()) names.push_back(name);
  // Own parameters first, then children's: the tied one is listed under its first name.
  CHECK(names == std::vector<std::string>{"tied", "first.fc.weight", "first.fc.bias", "second.scale",
                                          "second.fc.weight", "second.fc.bias"});
  CHECK(net.parameters().size() == 6);
  CHECK(net.named_parameters(false).size() == 7);
  auto sd = net.state_dict();
  CHECK(sd.count("first.steps"));
  CHECK(sd.count("tied") == 1);  // as PyTorch, state_dict keeps every name of a tied parameter
  CHECK(sd.at("tied").is_same(sd.at("first.scale")));
  CHECK(sd.at("first.fc.weight").sizes() == Shape{2, 3});
  net.eval();
  CHECK(!net.first->fc->is_training());
  net.train();
  CHECK(net.second->is_training());
}

TEST_CASE("state_dict round trip copies values and checks names and shapes") {
  Generator g1(1), g2(2);
  Net a(g1), b(g2);
  CHECK(values(a.first->fc->weight) != values(b.first->fc->weight));
  b.load_state_dict(a.state_dict());
  for (auto& [name, t] : a.state_dict()) CHECK(values(b.state_dict().at(name)) == values(t));
  CHECK(b.first->fc->weight.storage() != a.first->fc->weight.storage());  // copied, not aliased
  auto bad = a.state_dict();
  bad["first.scale"] = ones({3});
  CHECK_THROWS_WITH(b.load_state_dict(bad), Catch::Contains("'first.scale' has shape [3], the module expects [2]"));
  bad = a.state_dict();
  bad.erase("second.fc.bias");
  CHECK_THROWS_WITH(b.load_state_dict(bad), Catch::Contains("missing key 'second.fc.bias'"));
  bad = a.state_dict();
  bad["extra"] = ones({1});
  CHECK_THROWS_WITH(b.load_state_dict(bad), Catch::Contains("unexpected key 'extra'"));
}

TEST_CASE("Linear computes x W^T + b and initializes within 1/sqrt(in)") {
  Generator gen(3);
  nn::Linear fc({.in_features = 4, .out_features = 3, .dtype = kFloat64}, gen);
  for (double w : values(fc.weight)) CHECK(std::abs(w) <= 0.5);
  Tensor x = randn({5, 4}, gen, kFloat64);
  std::vector<double> xv = values(x), wv = values(fc.weight), bv = values(fc.bias), ref;
  for (int i = 0; i < 5; ++i)
    for (int o = 0; o < 3; ++o) {
      double s = bv[o];
      for (int k = 0; k < 4; ++k) s += xv[i * 4 + k] * wv[o * 4 + k];
      ref.push_back(s);
    }
  KT_CHECK_CLOSE(fc.forward(x), ref, 1e-14);
  CHECK_THROWS_WITH(fc.forward(zeros({2, 5}, kFloat64)), Catch::Contains("[Linear] expects input (..., 4)"));
  nn::Linear no_bias({.in_features = 2, .out_features = 2, .bias = false}, gen);
  CHECK(!no_bias.bias.defined());
  CHECK(no_bias.parameters().size() == 1);
}

TEST_CASE("SGD steps as torch.optim.SGD") {
  Tensor p = tensor({1.0, -2.0}, kFloat64).requires_grad_();
  optim::SGD opt(std::vector<Tensor>{p}, {.lr = 0.1, .momentum = 0.9}, /*weight_decay=*/0.01);
  // step 1: g = grad + wd p; buf = g; p -= lr buf
  p.set_grad(tensor({0.5, 0.5}, kFloat64));
  opt.step();
  double g1a = 0.5 + 0.01 * 1.0, g1b = 0.5 + 0.01 * -2.0;
  double p1a = 1.0 - 0.1 * g1a, p1b = -2.0 - 0.1 * g1b;
  KT_CHECK_CLOSE(p, (std::vector<double>{p1a, p1b}), 1e-15);
  // step 2: buf = 0.9 buf + g
  p.set_grad(tensor({-1.0, 0.25}, kFloat64));
  opt.step();
  double g2a = -1.0 + 0.01 * p1a, g2b = 0.25 + 0.01 * p1b;
  KT_CHECK_CLOSE(p, (std::vector<double>{p1a - 0.1 * (0.9 * g1a + g2a), p1b - 0.1 * (0.9 * g1b + g2b)}), 1e-15);
  opt.zero_grad();
  CHECK(!p.grad().defined());
  // Nesterov
  Tensor q = tensor({1.0}, kFloat64).requires_grad_();
  optim::SGD nes(std::vector<Tensor>{q}, {.lr = 0.1, .momentum = 0.5, .nesterov = true});
  q.set_grad(tensor({2.0}, kFloat64));
  nes.step();
  CHECK(q.item<double>() == Approx(1.0 - 0.1 * (2.0 + 0.5 * 2.0)));
  CHECK_THROWS_WITH(optim::SGD(std::vector<Tensor>{q}, {.lr = -1}), Catch::Contains("[SGD] learning rate must be finite and >= 0"));
  CHECK_THROWS_WITH(optim::SGD(std::vector<Tensor>{q}, {.nesterov = true}), Catch::Contains("Nesterov momentum needs momentum > 0"));
}

TEST_CASE("a small model trains: loss falls on a separable problem") {
  Generator gen(4);
  nn::Linear fc({.in_features = 2, .out_features = 2}, gen);
  Tensor x = randn({64, 2}, gen);
  Tensor y = (x.select(1, 0) + x.select(1, 1) > 0).to(kInt64);
  optim::SGD opt(fc.parameters(), {.lr = 0.5});
  double first = 0, last = 0;
  for (int step = 0; step < 100; ++step) {
    Tensor loss = cross_entropy(fc.forward(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  CHECK(last < 0.3 * first);
}

TEST_CASE("AdamW steps as torch.optim.AdamW") {
  Tensor p = tensor({0.5, -1.0}, kFloat64).requires_grad_();
  optim::AdamW opt({{{p}, 0.1}}, {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8});
  std::vector<double> pv = {0.5, -1.0}, m = {0, 0}, v = {0, 0};
  std::vector<std::vector<double>> grads = {{0.3, -0.2}, {-0.1, 0.4}, {0.25, 0.05}};
  for (int t = 1; t <= 3; ++t) {
    p.set_grad(tensor(grads[t - 1], kFloat64));
    opt.step();
    for (int i = 0; i < 2; ++i) {
      double g = grads[t - 1][i];
      pv[i] *= 1 - 0.01 * 0.1;
      m[i] = 0.9 * m[i] + 0.1 * g;
      v[i] = 0.99 * v[i] + 0.01 * g * g;
      double mhat = m[i] / (1 - std::pow(0.9, t)), vhat = v[i] / (1 - std::pow(0.99, t));
      pv[i] -= 0.01 * mhat / (std::sqrt(vhat) + 1e-8);
    }
    KT_CHECK_CLOSE(p, pv, 1e-14);
  }
  // state_dict round trip: a fresh optimizer continues identically
  Tensor q = p.detach().clone().requires_grad_();
  optim::AdamW resumed({{{q}, 0.1}}, {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8});
  resumed.load_state_dict(opt.state_dict());
  CHECK(resumed.steps() == 3);
  p.set_grad(tensor({0.1, 0.1}, kFloat64));
  q.set_grad(tensor({0.1, 0.1}, kFloat64));
  opt.step();
  resumed.step();
  CHECK(values(p) == values(q));
}

TEST_CASE("fused updates check their arguments") {
  Tensor p = zeros({3}, kBFloat16), g = zeros({3}), m = zeros({3}), v = zeros({3});
  CHECK_THROWS_WITH(adamw_update_(p, g, m, v, {1e-3, 0.9, 0.999, 1e-8, 0.0, 0.1, 0.001}),
                    Catch::Contains("[adamw_update] parameters must be float32 or float64 master weights"));
  Tensor q = zeros({3});
  Tensor wrong = zeros({4});
  CHECK_THROWS_WITH(lion_update_(q, wrong, m, {1e-3, 0.9, 0.99, 0.0}),
                    Catch::Contains("[lion_update] gradient float32[4] on cpu does not match parameter float32[3]"));
  Tensor m64 = zeros({3}, kFloat64);
  CHECK_THROWS_WITH(lion_update_(q, g, m64, {1e-3, 0.9, 0.99, 0.0}), Catch::Contains("optimizer state float64[3]"));
  Tensor q64 = zeros({3}, kFloat64);
  CHECK_THROWS_WITH(lion_update_(std::vector<Tensor>{q, q64}, {g, g}, {m, m64}, {1e-3, 0.9, 0.99, 0.0}),
                    Catch::Contains("one call updates parameters of one dtype"));
  CHECK_THROWS_WITH(lion_update_(std::vector<Tensor>{q}, {g, g}, {m}, {1e-3, 0.9, 0.99, 0.0}),
                    Catch::Contains("1 parameters but 2 gradients"));
}

TEST_CASE("a fused update of many tensors equals the updates one by one") {
  Generator gen(3);
  const AdamWStep adamw{1e-2, 0.9, 0.99, 1e-8, 0.1, 0.1, 0.01};
  const LionStep lion{1e-2, 0.9, 0.99, 0.1};
  std::vector<Tensor> p, g, m, v;
  for (int64_t n : {1, 70000, 5}) {  // one tensor spans two CUDA chunks
    p.push_back(randn({n}, gen));
    g.push_back(randn({n}, gen, kBFloat16));
    m.push_back(randn({n}, gen) * 0.1);
    v.push_back(rand({n}, gen));
  }
  auto copy = [](const std::vector<Tensor>& ts) {
    std::vector<Tensor> out;
    for (const Tensor& t : ts) out.push_back(t.clone());
    return out;
  };
  std::vector<Tensor> p1 = copy(p), m1 = copy(m), v1 = copy(v), p2 = copy(p), m2 = copy(m);
  adamw_update_(p, g, m, v, adamw);
  lion_update_(p2, g, m2, lion);
  for (size_t i = 0; i < p.size(); ++i) {
    Tensor lp = p1[i].clone(), lm = m1[i].clone();
    adamw_update_(p1[i], g[i], m1[i], v1[i], adamw);
    lion_update_(lp, g[i], lm, lion);
    CHECK(values(p[i]) == values(p1[i]));
    CHECK(values(v[i]) == values(v1[i]));
    CHECK(values(p2[i]) == values(lp));
    CHECK(values(m2[i]) == values(lm));
  }
}

TEST_CASE("cast_cached keeps a parameter's low-precision copy; the fused updates write it") {
  Generator gen(4);
  Tensor p = randn({3, 70001}, gen).requires_grad_();  // spans two CUDA chunks
  Tensor c1 = cast_cached(p, kBFloat16);
  CHECK(c1.dtype() == kBFloat16);
  CHECK(values(c1) == values(p.detach().to(kBFloat16)));
  CHECK(cast_cached(p, kBFloat16).data_ptr() == c1.data_ptr());  // cast once, reused
  CHECK(cast_cached(p, kFloat32).is_same(p));
  // Differentiable: the gradient reaches the master weight in its dtype.
  Tensor w = randn({3, 70001}, gen, kBFloat16);
  sum(cast_cached(p, kBFloat16) * w).backward();
  CHECK(p.grad().dtype() == kFloat32);
  CHECK(values(p.grad()) == values(w.to(kFloat32)));
  {  // A change to the parameter outside the optimizer is seen by the next cast.
    NoGradGuard no_grad;
    p.mul_(2.0);
  }
  CHECK(values(cast_cached(p, kBFloat16)) == values(p.detach().to(kBFloat16)));
  // Non-leaf tensors are cast, never cached.
  Tensor y = p * 1.0;
  CHECK(values(cast_cached(y, kFloat16)) == values(y.detach().to(kFloat16)));
  CHECK(y.impl()->compute_copy == nullptr);

  // AdamW and Lion write the copy in the same pass as the weight: it is
  // current without another cast.
  Tensor q = randn({5}, gen).requires_grad_();
  cast_cached(q, kFloat16);
  Tensor m = zeros({3, 70001}), v = zeros({3, 70001}), mq = zeros({5}), vq = zeros({5});
  Tensor g = randn({3, 70001}, gen), gq = randn({5}, gen);
  adamw_update_({p, q}, {g, gq}, {m, mq}, {v, vq}, {1e-2, 0.9, 0.99, 1e-8, 0.1, 0.1, 0.01});
  for (const Tensor& t : {p, q}) {
    const ComputeCopy& copy = *t.impl()->compute_copy;
    CHECK(copy.version == t.version());
    CHECK(values(copy.data) == values(t.detach().to(copy.data.dtype())));
  }
  lion_update_({p}, {g}, {m}, {1e-2, 0.9, 0.99, 0.1});
  CHECK(p.impl()->compute_copy->version == p.version());
  CHECK(values(p.impl()->compute_copy->data) == values(p.detach().to(kBFloat16)));
}

TEST_CASE("Lion steps by the sign of the interpolated momentum") {
  Tensor p = tensor({1.0, -1.0, 0.5}, kFloat64).requires_grad_();
  optim::Lion opt({{{p}, 0.5}}, {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.99});
  std::vector<double> pv = {1.0, -1.0, 0.5}, m = {0, 0, 0};
  std::vector<std::vector<double>> grads = {{0.3, -0.2, 0.0}, {-0.5, 0.4, 0.1}};
  for (int t = 0; t < 2; ++t) {
    p.set_grad(tensor(grads[t], kFloat64));
    opt.step();
    for (int i = 0; i < 3; ++i) {
      double g = grads[t][i], c = 0.9 * m[i] + 0.1 * g;
      pv[i] = pv[i] * (1 - 0.1 * 0.5) - 0.1 * double((c > 0) - (c < 0));
      m[i] = 0.99 * m[i] + 0.01 * g;
    }
    KT_CHECK_CLOSE(p, pv, 1e-15);
  }
}

TEST_CASE("decay groups, schedules, clipping") {
  Generator gen(5);
  nn::Linear fc({.in_features = 3, .out_features = 2}, gen);
  nn::LayerNorm ln({.normalized_shape = {2}});
  auto named = fc.named_parameters();
  for (auto& np : ln.named_parameters()) named.push_back(np);
  auto groups = optim::decay_groups(named, 0.1);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].params.size() == 1);  // fc.weight
  CHECK(groups[0].weight_decay == 0.1);
  CHECK(groups[1].params.size() == 3);  // fc.bias, ln.weight, ln.bias
  CHECK(groups[1].weight_decay == 0.0);

  optim::LRSchedule cos{.max_lr = 1.0, .min_lr = 0.1, .warmup = 10, .total = 110};
  CHECK(cos.at(0) == Approx(0.1));
  CHECK(cos.at(9) == Approx(1.0));
  CHECK(cos.at(60) == Approx(0.55));
  CHECK(cos.at(110) == Approx(0.1));
  CHECK(cos.at(500) == Approx(0.1));
  optim::LRSchedule lin{.max_lr = 1.0, .min_lr = 0.0, .warmup = 0, .total = 100, .decay = optim::LRSchedule::Decay::Linear};
  CHECK(lin.at(25) == Approx(0.75));
  CHECK(optim::LRSchedule::parse("linear") == optim::LRSchedule::Decay::Linear);
  CHECK_THROWS_WITH(optim::LRSchedule::parse("steps"), Catch::Contains("unknown schedule 'steps'"));

  Tensor a = zeros({2}, kFloat64).requires_grad_(), b = zeros({1}, kFloat64).requires_grad_();
  a.set_grad(tensor({3.0, 0.0}, kFloat64));
  b.set_grad(tensor({4.0}, kFloat64));
  CHECK(optim::clip_grad_norm({a, b}, 1.0) == Approx(5.0));
  CHECK(values(a.grad())[0] == Approx(0.6));
  CHECK(values(b.grad())[0] == Approx(0.8));
  CHECK(optim::clip_grad_norm({a, b}, 10.0) == Approx(1.0));
  CHECK(values(b.grad())[0] == Approx(0.8));
}

TEST_CASE("Module::to casts parameters in place") {
  Generator gen(6);
  nn::Linear fc({.in_features = 3, .out_features = 2}, gen);
  Tensor handle = fc.weight;
  std::vector<double> before = values(fc.weight);
  fc.to(kCPU, kFloat64);
  CHECK(handle.dtype() == kFloat64);  // the same tensor, converted
  CHECK(fc.weight.dtype() == kFloat64);
  CHECK(values(handle) == before);
  CHECK(fc.forward(zeros({1, 3}, kFloat64)).dtype() == kFloat64);
  CHECK(fc.num_parameters() == 8);
}

TEST_CASE("Sequential applies its children in order; frozen parameters get no gradient") {
  Generator gen(7);
  nn::Sequential net;
  auto fc1 = net.push_back(std::make_shared<nn::Linear>(nn::LinearOptions{3, 4, true, kFloat64}, gen));
  net.push_back(std::make_shared<nn::Lambda>([](const Tensor& x) { return relu(x); }));
  auto fc2 = net.push_back(std::make_shared<nn::Linear>(nn::LinearOptions{4, 2, true, kFloat64}, gen));
  CHECK(net.size() == 3);
  Tensor x = randn({5, 3}, gen, kFloat64);
  KT_CHECK_CLOSE(net.forward(x), values(fc2->forward(relu(fc1->forward(x)))), 0.0);
  std::vector<std::string> names;
  for (auto& [name, p] : net.named_parameters()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  fc1->weight.requires_grad_(false);  // frozen
  sum(net.forward(x)).backward();
  CHECK(!fc1->weight.grad().defined());
  CHECK(fc1->bias.grad().defined());
  auto groups = optim::decay_groups(net.named_parameters(), 0.1);
  CHECK(groups[0].params.size() == 1);  // fc2.weight only: the frozen weight is left out
}

TEST_CASE("named_modules, children and apply walk the tree; a printout shows it as PyTorch does") {
  Generator gen(9);
  Net net(gen);
  std::vector<std::string> names;
  for (auto& [name, m] : net.named_modules()) names.push_back(name + ":" + m->type_name());
  CHECK(names == std::vector<std::string>{":Net", "first:Block", "first.fc:Linear", "second:Block", "second.fc:Linear"});
  CHECK(net.children() == std::vector<nn::Module*>{net.first.get(), net.second.get()});
  CHECK(net.named_children()[1].first == "second");
  std::vector<std::string> order;  // children before their parent
  net.apply([&](nn::Module& m) { order.push_back(m.type_name()); });
  CHECK(order == std::vector<std::string>{"Linear", "Block", "Linear", "Block", "Net"});

  nn::ModuleList list;
  for (int i = 0; i < 3; ++i) list.push_back(std::make_shared<Block>(gen));
  list.push_back(std::make_shared<nn::Dropout>(0.1, gen));
  list.push_back(std::make_shared<nn::LayerNorm>(nn::NormOptions{.normalized_shape = {4}, .bias = false}));
  CHECK(nn::to_string(list) ==
        "ModuleList(\n"
        "  (0-2): 3 x Block(\n"
        "    (fc): Linear(in_features=3, out_features=2, bias=true)\n"
        "  )\n"
        "  (3): Dropout(p=0.1)\n"
        "  (4): LayerNorm([4], eps=1e-05, affine=true, bias=false)\n"
        ")");
  CHECK(&list.at<Block>(1) == list.children()[1]);
  CHECK_THROWS_WITH(list.at<nn::Linear>(3), Catch::Contains("[ModuleList] item 3 is a Dropout, not a Linear"));
  CHECK_THROWS_WITH(list.at<Block>(5), Catch::Contains("index 5 out of range for 5 modules"));
  static_assert(!std::is_copy_constructible_v<nn::Linear> && !std::is_copy_assignable_v<Net>,
                "a copy of a module would share its parameters");
}

TEST_CASE("optimizers from a parameter list, rates per group, and another optimizer's state refused") {
  Tensor a = ones({2}, kFloat64).requires_grad_(), b = ones({2}, kFloat64).requires_grad_();
  optim::SGD sgd({{{a}, 0.0, 1.0}, {{b}, 0.0, 0.5}}, {.lr = 0.1});  // b's group at half the rate
  sum(a * 2.0 + b * 2.0).backward();
  sgd.step();
  CHECK(values(a) == std::vector<double>{0.8, 0.8});
  CHECK(values(b) == std::vector<double>{0.9, 0.9});

  Tensor p = ones({3}, kFloat64).requires_grad_();
  optim::AdamW adamw(std::vector<Tensor>{p}, {.lr = 0.01});
  optim::Lion lion(std::vector<Tensor>{p}, {.lr = 0.01});
  optim::SGD momentum(std::vector<Tensor>{p}, {.lr = 0.01, .momentum = 0.9});
  for (optim::Optimizer* o : std::initializer_list<optim::Optimizer*>{&adamw, &lion, &momentum}) {
    sum(p * p).backward();
    o->step();
    o->zero_grad();
  }
  CHECK_THROWS_WITH(adamw.load_state_dict(momentum.state_dict()),
                    Catch::Contains("[AdamW] optimizer state '0.momentum' is not one of AdamW's (exp_avg, exp_avg_sq)"));
  CHECK_THROWS_WITH(adamw.load_state_dict(lion.state_dict()),
                    Catch::Contains("[AdamW] optimizer state of parameter 0 lacks 'exp_avg_sq'"));
  CHECK_THROWS_WITH(lion.load_state_dict(adamw.state_dict()), Catch::Contains("'0.exp_avg_sq' is not one of Lion's"));
  const std::vector<double> m = values(adamw.state_dict().at("0.exp_avg"));
  adamw.load_state_dict(adamw.state_dict());  // its own loads; the refusals above changed nothing
  CHECK(values(adamw.state_dict().at("0.exp_avg")) == m);
  CHECK(adamw.steps() == 1);
}

TEST_CASE("StepLR and ReduceLROnPlateau as torch's") {
  optim::LRSchedule step{.max_lr = 1.0, .warmup = 2, .decay = optim::LRSchedule::Decay::Step, .step_size = 3,
                         .gamma = 0.5};
  std::vector<double> rates;
  for (int64_t s = 0; s < 10; ++s) rates.push_back(step.at(s));
  CHECK(rates == std::vector<double>{0.5, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25});
  CHECK(optim::LRSchedule::parse("step") == optim::LRSchedule::Decay::Step);

  Tensor p = ones({1}).requires_grad_();
  optim::SGD sgd(std::vector<Tensor>{p}, {.lr = 1.0});
  optim::ReduceLROnPlateau plateau(sgd, {.factor = 0.5, .patience = 2, .cooldown = 1, .min_lr = 0.2});
  std::vector<bool> reduced;
  std::vector<double> lr;
  for (double metric : {10.0, 9.0, 9.5, 9.2, 9.1, 9.3, 9.4, 9.4, 9.4, 8.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0}) {
    reduced.push_back(plateau.step(metric));
    lr.push_back(sgd.lr());
  }
  // Reductions on the third evaluation past the best (patience 2); the
  // cooldown skips one evaluation; min_lr 0.2 caps the third and stops a fourth.
  CHECK(reduced == std::vector<bool>{false, false, false, false, true, false, false, false, true, false, false, false,
                                     true, false, false, false, false, false});
  CHECK(lr.back() == 0.2);
  CHECK(plateau.best() == 8.0);
}
