// Trains a two-layer MLP to tell apart three interleaved spirals and prints its
// loss falling: a first look at kiln's tensors, autograd, layers and optimizer.

#include <cmath>
#include <vector>

#include <fmt/format.h>

#include <kiln/kiln.h>

using kiln::Tensor;

namespace {

// per_class points on each of `classes` spiral arms: x (n, 2) float32, y (n,) int64.
std::pair<Tensor, Tensor> spirals(int64_t per_class, int64_t classes, kiln::Generator& gen) {
  const int64_t n = per_class * classes;
  Tensor noise = kiln::randn({n}, gen) * 0.2;
  const float* eps = noise.data_ptr<float>();
  std::vector<float> x;
  std::vector<int64_t> y;
  for (int64_t c = 0; c < classes; ++c) {
    for (int64_t i = 0; i < per_class; ++i) {
      float r = static_cast<float>(i) / static_cast<float>(per_class);
      float angle = 4.0f * r + 2.0f * static_cast<float>(M_PI) * static_cast<float>(c) / static_cast<float>(classes) +
                    eps[c * per_class + i];
      x.push_back(r * std::sin(angle));
      x.push_back(r * std::cos(angle));
      y.push_back(c);
    }
  }
  return {kiln::tensor(x).view({n, 2}), kiln::tensor(y)};
}

struct MLP : kiln::nn::Module {
  MLP(int64_t in, int64_t hidden, int64_t out, kiln::Generator& gen)
      : fc1(register_module("fc1", std::make_shared<kiln::nn::Linear>(kiln::nn::LinearOptions{in, hidden}, gen))),
        fc2(register_module("fc2", std::make_shared<kiln::nn::Linear>(kiln::nn::LinearOptions{hidden, out}, gen))) {}
  Tensor forward(const Tensor& x) const { return fc2->forward(kiln::relu(fc1->forward(x))); }

  std::shared_ptr<kiln::nn::Linear> fc1, fc2;
};

}  // namespace

int main() {
  kiln::Generator gen(1234);
  const int64_t classes = 3, steps = 600;
  auto [x, y] = spirals(200, classes, gen);
  MLP model(2, 128, classes, gen);
  kiln::optim::SGD opt(model.parameters(), {.lr = 0.5, .momentum = 0.9});

  fmt::print("training a 2-128-{} MLP on {} spiral points, full batch, SGD with momentum\n", classes, x.size(0));
  double first = 0, last = 0;
  for (int64_t step = 0; step <= steps; ++step) {
    Tensor loss = kiln::cross_entropy(model.forward(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    last = loss.item<double>();
    if (step == 0) first = last;
    if (step % 50 == 0) {
      kiln::NoGradGuard no_grad;
      Tensor predicted = kiln::argmax(model.forward(x), 1);
      double accuracy = kiln::mean((predicted == y).to(kiln::kFloat32)).item<double>();
      fmt::print("step {:4d}/{}  loss {:.4f}  accuracy {:5.1f}%\n", step, steps, last, 100 * accuracy);
    }
  }
  fmt::print("loss fell from {:.4f} to {:.4f}\n", first, last);
  return last < 0.25 * first ? 0 : 1;
}
