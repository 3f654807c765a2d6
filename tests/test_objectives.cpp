// The alignment losses (kiln/nn/objectives.h) against hand-computed values and
// against golden values from PyTorch written as TRL and DeepSpeed-Chat write
// them (tests/golden/make_objectives_golden.py), gradients included.

#include "helpers.h"

using namespace kiln;
using kt::values;

#ifndef KILN_GOLDEN_DIR
#error "KILN_GOLDEN_DIR must name tests/golden"
#endif

namespace {

const std::map<std::string, Tensor>& golden() {
  static const TensorFile file = load_safetensors(std::string(KILN_GOLDEN_DIR) + "/objectives.safetensors");
  return file.tensors;
}

Tensor g(const std::string& name) { return golden().at(name); }
Tensor leaf(const std::string& name) { return g(name).clone().requires_grad_(); }

// The script's fixed gradient direction: 0.5 .. 1.5 evenly over the elements.
Tensor ramp(const Tensor& like) {
  const int64_t n = like.numel();
  std::vector<double> w;
  for (int64_t i = 0; i < n; ++i) w.push_back(0.5 + static_cast<double>(i) / static_cast<double>(n - 1));
  return tensor(w).view(like.sizes());
}

void check(const Tensor& actual, const std::string& name, double tol = 1e-12) {
  INFO(name);
  REQUIRE(actual.numel() == g(name).numel());
  KT_CHECK_CLOSE(actual.reshape(g(name).sizes()), values(g(name)), tol);
}

}  // namespace

TEST_CASE("token log-probabilities: log_softmax gathered at the tokens, ignored positions zero") {
  Tensor logits = leaf("logits");
  Tensor lp = nn::token_log_probs(logits, g("tokens"));
  check(lp, "token_log_probs");
  sum(lp * ramp(lp)).backward();
  check(logits.grad(), "grad_logits");
  // By hand: two tokens of a vocabulary of 2 with equal logits.
  Tensor even = nn::token_log_probs(zeros({1, 2, 2}, kFloat64), tensor(std::vector<int64_t>{1, -100}).view({1, 2}));
  CHECK(values(even) == std::vector<double>{std::log(0.5), 0.0});
}

TEST_CASE("the reward model's pairwise loss") {
  Tensor c = leaf("chosen"), r = leaf("rejected");
  nn::PairwiseLoss l = nn::pairwise_reward_loss(c, r);
  check(l.loss, "pairwise_loss");
  l.loss.backward();
  check(c.grad(), "grad_pairwise_chosen");
  check(r.grad(), "grad_pairwise_rejected");
  // By hand: margins 2 and -1: loss mean(log(1 + e^-2), log(1 + e)), half the pairs right.
  nn::PairwiseLoss h = nn::pairwise_reward_loss(tensor(std::vector<double>{3, 0}), tensor(std::vector<double>{1, 1}));
  CHECK(h.loss.item<double>() == Approx((std::log1p(std::exp(-2.0)) + std::log1p(std::exp(1.0))) / 2).epsilon(1e-14));
  CHECK(h.accuracy == 0.5);
  CHECK(h.margin == 0.5);
  // Far apart scores stay finite (log sigmoid, not log of a sigmoid that rounded to 0).
  CHECK(nn::pairwise_reward_loss(tensor(std::vector<double>{-800}), tensor(std::vector<double>{0})).loss.item<double>() ==
        Approx(800));
}

TEST_CASE("DPO's sigmoid loss with label smoothing, and its rewards") {
  Tensor pc = leaf("policy_chosen"), pr = leaf("policy_rejected");
  nn::DPOLoss l = nn::dpo_loss(pc, pr, g("reference_chosen"), g("reference_rejected"), 0.1, 0.1);
  check(l.loss, "dpo_loss");
  check(l.chosen_rewards, "dpo_chosen_rewards");
  check(l.rejected_rewards, "dpo_rejected_rewards");
  l.loss.backward();
  check(pc.grad(), "grad_dpo_policy_chosen");
  check(pr.grad(), "grad_dpo_policy_rejected");
  // By hand: a policy equal to its reference has loss log 2 and zero rewards.
  Tensor same = tensor(std::vector<double>{-3, -5});
  nn::DPOLoss e = nn::dpo_loss(same, same, same, same, 0.5);
  CHECK(e.loss.item<double>() == Approx(std::log(2.0)).epsilon(1e-14));
  CHECK(e.margin == 0.0);
  CHECK_THROWS_WITH(nn::dpo_loss(same, same, same, same, 0.0), Catch::Contains("beta > 0"));
}

TEST_CASE("GAE against TRL's loop, and whitening") {
  const Tensor mask = g("mask");
  nn::Advantages a = nn::gae(g("rewards"), g("values"), mask, 0.99, 0.95);
  check(a.advantages, "gae_advantages");
  check(a.returns, "gae_returns");
  check(nn::whiten(a.advantages, mask), "whitened", 1e-10);
  // By hand, one row of three tokens, gamma 0.5, lambda 1: A_2 = r_2 - V_2, A_1 = r_1 + 0.5 V_2 - V_1 + 0.5 A_2.
  Tensor r = tensor(std::vector<double>{1, 2, 4}).view({1, 3}), v = tensor(std::vector<double>{0.5, 1, 2}).view({1, 3});
  nn::Advantages h = nn::gae(r, v, ones({1, 3}, kFloat64), 0.5, 1.0);
  const double a2 = 4 - 2, a1 = 2 + 0.5 * 2 - 1 + 0.5 * a2, a0 = 1 + 0.5 * 1 - 0.5 + 0.5 * a1;
  KT_CHECK_CLOSE(h.advantages, (std::vector<double>{a0, a1, a2}), 1e-15);
}

TEST_CASE("PPO's clipped policy and value losses, and the KL-penalized rewards") {
  const Tensor mask = g("mask");
  Tensor lp = leaf("log_probs");
  nn::PolicyLoss p = nn::ppo_policy_loss(lp, g("old_log_probs"), g("advantages"), mask, 0.2);
  check(p.loss, "policy_loss");
  p.loss.backward();
  check(lp.grad(), "grad_policy_log_probs");
  CHECK(p.clip_fraction > 0);  // the inputs reach past the clip range
  CHECK(p.clip_fraction < 1);
  CHECK(p.approx_kl > 0);
  Tensor v = leaf("new_values");
  Tensor vl = nn::ppo_value_loss(v, g("old_values"), g("returns"), mask, 0.2);
  check(vl, "value_loss");
  vl.backward();
  check(v.grad(), "grad_value_new_values");
  check(nn::kl_penalized_rewards(g("log_probs"), g("reference_log_probs"), g("scores"), mask, 0.05), "kl_rewards");
  // By hand: a ratio of e^0.5 with advantage 1 is clipped to 1.2; with advantage -1 it is not.
  Tensor one = zeros({1, 1}, kFloat64), half = full({1, 1}, 0.5, kFloat64), m = ones({1, 1}, kFloat64);
  CHECK(nn::ppo_policy_loss(half, one, ones({1, 1}, kFloat64), m).loss.item<double>() == Approx(-1.2));
  CHECK(nn::ppo_policy_loss(half, one, full({1, 1}, -1.0, kFloat64), m).loss.item<double>() == Approx(std::exp(0.5)));
}

TEST_CASE("GRPO: group-normalized advantages, k3 KL, the loss") {
  check(nn::group_advantages(g("grpo_rewards"), 3), "grpo_advantages");
  check(nn::kl_k3(g("log_probs"), g("reference_log_probs")), "k3");
  Tensor lp = leaf("log_probs");
  nn::GRPOLoss l = nn::grpo_loss(lp, g("old_log_probs"), g("reference_log_probs"), g("sequence_advantages"),
                                 g("mask"), 0.2, 0.04);
  check(l.loss, "grpo_loss");
  l.loss.backward();
  check(lp.grad(), "grad_grpo_log_probs");
  // By hand: k3 is zero where the policy is the reference, and positive elsewhere.
  CHECK(nn::kl_k3(full({1, 1}, -2.0, kFloat64), full({1, 1}, -2.0, kFloat64)).item<double>() == 0.0);
  CHECK(nn::kl_k3(full({1, 1}, -1.0, kFloat64), full({1, 1}, -2.0, kFloat64)).item<double>() ==
        Approx(std::exp(-1.0)));
  // A group whose rewards are equal has zero advantages, not NaN.
  CHECK(values(nn::group_advantages(full({3}, 2.0, kFloat64), 3)) == std::vector<double>{0, 0, 0});
  CHECK_THROWS_WITH(nn::group_advantages(zeros({5}), 2), Catch::Contains("groups of G >= 2"));
}
