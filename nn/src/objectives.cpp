#include "kiln/nn/objectives.h"

#include <cmath>
#include <vector>

#include "kiln/autograd.h"
#include "kiln/ops.h"

namespace kiln::nn {

namespace {

// The dtype the losses run in: float64 for float64 inputs, else float32.
Tensor in_loss_dtype(const Tensor& x) { return x.dtype() == kFloat64 ? x : x.to(kFloat32); }

Tensor as_weights(const Tensor& mask, const Tensor& like) { return mask.to(like.dtype()); }

void check_tokens(const char* op, const Tensor& x, const Tensor& mask) {
  KILN_CHECK(x.dim() == 2 && mask.sizes() == x.sizes() && x.device() == mask.device(),
             "[{}] expects per-token tensors (B, T) and a mask of the same shape and device, got [{}] on {} and [{}] "
             "on {}", op, fmt::join(x.sizes(), ", "), x.device(), fmt::join(mask.sizes(), ", "), mask.device());
}

void check_same(const char* op, const Tensor& a, const Tensor& b, const char* what) {
  KILN_CHECK(a.sizes() == b.sizes() && a.device() == b.device(), "[{}] {} must match: got [{}] on {} and [{}] on {}",
             op, what, fmt::join(a.sizes(), ", "), a.device(), fmt::join(b.sizes(), ", "), b.device());
}

// log sigmoid(x) = min(x, 0) - log(1 + exp(-|x|)), stable for every x.
Tensor log_sigmoid(const Tensor& x) { return minimum(x, zeros_like(x)) - log(exp(neg(abs(x))) + 1.0); }

double item(const Tensor& t) { return t.detach().item<double>(); }

}  // namespace

Tensor token_log_probs(const Tensor& logits, const Tensor& tokens, int64_t ignore_index) {
  KILN_CHECK(logits.dim() == 3 && tokens.dim() == 2 && logits.size(0) == tokens.size(0) &&
                 logits.size(1) == tokens.size(1) && !is_floating(tokens.dtype()),
             "[token_log_probs] expects logits (B, T, V) and integer tokens (B, T), got [{}] and {} [{}]",
             fmt::join(logits.sizes(), ", "), tokens.dtype(), fmt::join(tokens.sizes(), ", "));
  Tensor ignored = tokens == ignore_index;
  Tensor index = masked_fill(tokens.to(kInt64), ignored, 0).unsqueeze(-1);
  Tensor lp = gather(log_softmax(in_loss_dtype(logits), -1), 2, index).squeeze(-1);
  return masked_fill(lp, ignored, 0.0);
}

Tensor masked_sum(const Tensor& x, const Tensor& mask) {
  check_tokens("masked_sum", x, mask);
  return sum(x * as_weights(mask, x), {1});
}

Tensor masked_mean(const Tensor& x, const Tensor& mask, double tokens) {
  check_tokens("masked_mean", x, mask);
  Tensor w = as_weights(mask, x);
  if (tokens > 0) return sum(x * w) / tokens;
  return sum(x * w) / maximum(sum(w), ones({}, TensorOptions(x.dtype()).device(x.device())));
}

PairwiseLoss pairwise_reward_loss(const Tensor& chosen, const Tensor& rejected) {
  check_same("pairwise_reward_loss", chosen, rejected, "chosen and rejected scores");
  KILN_CHECK(chosen.dim() == 1 && chosen.numel() > 0, "[pairwise_reward_loss] expects scores (N), got [{}]",
             fmt::join(chosen.sizes(), ", "));
  Tensor d = in_loss_dtype(chosen) - in_loss_dtype(rejected);
  Tensor dd = d.detach();
  return {mean(neg(log_sigmoid(d))), item(mean((dd > 0).to(kFloat64))), item(mean(dd.to(kFloat64)))};
}

DPOLoss dpo_loss(const Tensor& pc, const Tensor& pr, const Tensor& rc, const Tensor& rr, double beta,
                 double label_smoothing) {
  for (const Tensor* t : {&pr, &rc, &rr}) check_same("dpo_loss", pc, *t, "the four log-probabilities");
  KILN_CHECK(pc.dim() == 1 && pc.numel() > 0 && beta > 0 && label_smoothing >= 0 && label_smoothing < 0.5,
             "[dpo_loss] expects sequence log-probabilities (N), beta > 0 and label_smoothing in [0, 0.5), got [{}], "
             "{} and {}", fmt::join(pc.sizes(), ", "), beta, label_smoothing);
  Tensor logits = (in_loss_dtype(pc) - in_loss_dtype(pr)) - (in_loss_dtype(rc) - in_loss_dtype(rr));
  Tensor losses = neg(log_sigmoid(logits * beta)) * (1.0 - label_smoothing) -
                  log_sigmoid(logits * -beta) * label_smoothing;
  Tensor chosen = ((in_loss_dtype(pc) - in_loss_dtype(rc)) * beta).detach();
  Tensor rejected = ((in_loss_dtype(pr) - in_loss_dtype(rr)) * beta).detach();
  return {mean(losses), chosen, rejected, item(mean((chosen > rejected).to(kFloat64))),
          item(mean((chosen - rejected).to(kFloat64)))};
}

Advantages gae(const Tensor& rewards, const Tensor& values, const Tensor& mask, double gamma, double lambda) {
  check_tokens("gae", rewards, mask);
  check_same("gae", rewards, values, "rewards and values");
  NoGradGuard no_grad;
  const int64_t B = rewards.size(0), T = rewards.size(1);
  Tensor r = rewards.to(kCPU, kFloat64).contiguous(), v = values.to(kCPU, kFloat64).contiguous();
  Tensor m = mask.to(kCPU, kFloat64).contiguous();
  std::vector<double> adv(static_cast<size_t>(B * T), 0.0);
  const double *rp = r.data_ptr<double>(), *vp = v.data_ptr<double>(), *mp = m.data_ptr<double>();
  for (int64_t b = 0; b < B; ++b) {
    double running = 0, next_value = 0;  // past the last token: no value
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t i = b * T + t;
      if (mp[i] == 0) continue;
      const double delta = rp[i] + gamma * next_value - vp[i];
      running = delta + gamma * lambda * running;
      adv[static_cast<size_t>(i)] = running;
      next_value = vp[i];
    }
  }
  const DType dtype = in_loss_dtype(rewards).dtype();
  Tensor a = tensor(adv).view({B, T}).to(rewards.device(), dtype);
  return {a, (a + values.to(dtype)) * as_weights(mask, a)};
}

Tensor whiten(const Tensor& advantages, const Tensor& mask, const std::function<void(Tensor&)>& all_sum) {
  check_tokens("whiten", advantages, mask);
  NoGradGuard no_grad;
  Tensor a = in_loss_dtype(advantages), w = as_weights(mask, a);
  // Two passes (the mean, then the squared deviations), each summed over the ranks when asked.
  auto summed = [&](const std::vector<Tensor>& parts) {
    Tensor s = stack(parts).to(kFloat64);
    if (all_sum) all_sum(s);
    return s.to(kCPU);
  };
  Tensor first = summed({sum(w), sum(a * w)});
  const double n = first[0].item<double>();
  KILN_CHECK(n > 1, "[whiten] needs at least two masked tokens, got {}", n);
  const double mu = first[1].item<double>() / n;
  const double var = summed({sum((a - mu) * (a - mu) * w)})[0].item<double>() / (n - 1);  // unbiased, as TRL's masked_whiten
  return (a - mu) * (1.0 / std::sqrt(var + 1e-8)) * w;
}

PolicyLoss ppo_policy_loss(const Tensor& log_probs, const Tensor& old_log_probs, const Tensor& advantages,
                           const Tensor& mask, double clip, double tokens) {
  check_tokens("ppo_policy_loss", log_probs, mask);
  check_same("ppo_policy_loss", log_probs, old_log_probs, "log_probs and old_log_probs");
  check_same("ppo_policy_loss", log_probs, advantages, "log_probs and advantages");
  Tensor log_ratio = in_loss_dtype(log_probs) - in_loss_dtype(old_log_probs).detach();
  Tensor ratio = exp(log_ratio), a = in_loss_dtype(advantages).detach();
  Tensor unclipped = ratio * a, clipped = clamp(ratio, 1.0 - clip, 1.0 + clip) * a;
  Tensor loss = masked_mean(neg(minimum(unclipped, clipped)), mask, tokens);
  NoGradGuard no_grad;
  const double clip_fraction = item(masked_mean((clipped < unclipped).to(a.dtype()), mask));
  const double approx_kl = item(masked_mean(ratio - 1.0 - log_ratio, mask));
  return {loss, clip_fraction, approx_kl};
}

Tensor ppo_value_loss(const Tensor& values, const Tensor& old_values, const Tensor& returns, const Tensor& mask,
                      double clip, double tokens) {
  check_tokens("ppo_value_loss", values, mask);
  check_same("ppo_value_loss", values, old_values, "values and old_values");
  check_same("ppo_value_loss", values, returns, "values and returns");
  Tensor v = in_loss_dtype(values), old = in_loss_dtype(old_values).detach(), ret = in_loss_dtype(returns).detach();
  Tensor v_clipped = old + clamp(v - old, -clip, clip);
  Tensor loss = maximum((v - ret) * (v - ret), (v_clipped - ret) * (v_clipped - ret)) * 0.5;
  return masked_mean(loss, mask, tokens);
}

Tensor kl_penalized_rewards(const Tensor& log_probs, const Tensor& reference_log_probs, const Tensor& scores,
                            const Tensor& mask, double beta) {
  check_tokens("kl_penalized_rewards", log_probs, mask);
  check_same("kl_penalized_rewards", log_probs, reference_log_probs, "log_probs and reference_log_probs");
  KILN_CHECK(scores.dim() == 1 && scores.size(0) == log_probs.size(0),
             "[kl_penalized_rewards] expects one score per row ({}), got [{}]", log_probs.size(0),
             fmt::join(scores.sizes(), ", "));
  NoGradGuard no_grad;
  Tensor lp = in_loss_dtype(log_probs), w = as_weights(mask, lp);
  Tensor rewards = (lp - in_loss_dtype(reference_log_probs)) * -beta * w;
  // Each row's last masked token gets the score.
  const int64_t T = log_probs.size(1);
  Tensor positions = arange(T, TensorOptions(kInt64).device(lp.device())).view({1, T});
  Tensor last = max(where(w > 0, positions, full({1, T}, int64_t{-1}, TensorOptions(kInt64).device(lp.device()))), 1,
                    true);
  return rewards + (positions == last).to(lp.dtype()) * in_loss_dtype(scores).view({-1, 1});
}

Tensor kl_k3(const Tensor& log_probs, const Tensor& reference_log_probs) {
  check_same("kl_k3", log_probs, reference_log_probs, "log_probs and reference_log_probs");
  Tensor d = in_loss_dtype(reference_log_probs) - in_loss_dtype(log_probs);
  return exp(d) - d - 1.0;
}

Tensor group_advantages(const Tensor& rewards, int64_t group_size) {
  KILN_CHECK(rewards.dim() == 1 && group_size >= 2 && rewards.numel() % group_size == 0,
             "[group_advantages] expects rewards (P G) for groups of G >= 2, got [{}] and G = {}",
             fmt::join(rewards.sizes(), ", "), group_size);
  NoGradGuard no_grad;
  Tensor r = in_loss_dtype(rewards).view({-1, group_size});
  Tensor mu = mean(r, {1}, true);
  Tensor std = sqrt(sum((r - mu) * (r - mu), {1}, true) / static_cast<double>(group_size - 1));
  return ((r - mu) / (std + 1e-4)).reshape({-1});
}

GRPOLoss grpo_loss(const Tensor& log_probs, const Tensor& old_log_probs, const Tensor& reference_log_probs,
                   const Tensor& advantages, const Tensor& mask, double clip, double beta) {
  check_tokens("grpo_loss", log_probs, mask);
  check_same("grpo_loss", log_probs, old_log_probs, "log_probs and old_log_probs");
  check_same("grpo_loss", log_probs, reference_log_probs, "log_probs and reference_log_probs");
  KILN_CHECK(advantages.dim() == 1 && advantages.size(0) == log_probs.size(0),
             "[grpo_loss] expects one advantage per sequence ({}), got [{}]", log_probs.size(0),
             fmt::join(advantages.sizes(), ", "));
  Tensor lp = in_loss_dtype(log_probs);
  Tensor ratio = exp(lp - in_loss_dtype(old_log_probs).detach());
  Tensor a = in_loss_dtype(advantages).detach().view({-1, 1});
  Tensor unclipped = ratio * a, clipped = clamp(ratio, 1.0 - clip, 1.0 + clip) * a;
  Tensor kl = kl_k3(lp, reference_log_probs.detach());
  Tensor per_token = neg(minimum(unclipped, clipped) - kl * beta);
  Tensor w = as_weights(mask, lp);
  Tensor per_sequence = sum(per_token * w, {1}) / maximum(sum(w, {1}), ones({1}, TensorOptions(lp.dtype()).device(lp.device())));
  Tensor loss = mean(per_sequence);
  NoGradGuard no_grad;
  return {loss, item(masked_mean(kl, mask)), item(masked_mean((clipped < unclipped).to(lp.dtype()), mask))};
}

}  // namespace kiln::nn
