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
  optim::SGD opt({p}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01});
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
  optim::SGD nes({q}, {.lr = 0.1, .momentum = 0.5, .nesterov = true});
  q.set_grad(tensor({2.0}, kFloat64));
  nes.step();
  CHECK(q.item<double>() == Approx(1.0 - 0.1 * (2.0 + 0.5 * 2.0)));
  CHECK_THROWS_WITH(optim::SGD({q}, {.lr = -1}), Catch::Contains("[SGD] learning rate must be >= 0"));
  CHECK_THROWS_WITH(optim::SGD({q}, {.nesterov = true}), Catch::Contains("Nesterov momentum needs momentum > 0"));
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
