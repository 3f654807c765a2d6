#pragma once
// The losses of the alignment stages, for any model that gives logits or
// scalar scores: the token log-probabilities they are built on, the reward
// model's pairwise loss (InstructGPT), DPO (Rafailov et al. 2023), PPO's
// clipped policy and value losses with generalized advantage estimation
// (Schulman et al. 2017, 2016; InstructGPT's recipe as DeepSpeed-Chat and
// OpenRLHF implement it), and GRPO's group-normalized advantages and k3 KL
// (DeepSeekMath). Supervised fine-tuning needs none of them: it is the
// causal loss on labels that are -100 outside the answers.
//
// Token tensors are (B, T); a mask (B, T) of 0/1 in the losses' dtype, or
// bool, marks the tokens that count (the response). Every loss is computed
// in float32 (float64 for float64 inputs) and differentiable where a
// gradient makes sense; what is reported beside a loss is detached.

#include <functional>

#include "kiln/tensor.h"

namespace kiln::nn {

// log p(tokens[b, t]) under logits (B, T, V): (B, T), float32 (float64 for
// float64 logits). Positions whose token is ignore_index get 0.
Tensor token_log_probs(const Tensor& logits, const Tensor& tokens, int64_t ignore_index = -100);

// Sum of x (B, T) over the tokens where mask is set, per row: (B).
Tensor masked_sum(const Tensor& x, const Tensor& mask);
// Mean of x over every token where mask is set (the token mean), a scalar;
// with tokens > 0, the masked sum divided by tokens instead of the mask's count.
Tensor masked_mean(const Tensor& x, const Tensor& mask, double tokens = 0);

// What pairwise_reward_loss returns.
struct PairwiseLoss {
  Tensor loss;      // mean of -log sigmoid(chosen - rejected)
  double accuracy;  // share of pairs with chosen > rejected
  double margin;    // mean of chosen - rejected
};
// The reward model's loss on scores (N) of chosen and rejected answers.
PairwiseLoss pairwise_reward_loss(const Tensor& chosen, const Tensor& rejected);

// What dpo_loss returns.
struct DPOLoss {
  Tensor loss;              // mean over pairs
  Tensor chosen_rewards;    // beta (log pi(chosen) - log ref(chosen)), (N), detached
  Tensor rejected_rewards;  // beta (log pi(rejected) - log ref(rejected)), (N), detached
  double accuracy;  // share of pairs whose chosen reward beats the rejected one
  double margin;    // mean of chosen_rewards - rejected_rewards
};
// DPO's sigmoid loss from sequence log-probabilities (N) of the policy and
// the frozen reference: -log sigmoid(beta ((pc - pr) - (rc - rr))), with
// label smoothing (conservative DPO) when label_smoothing > 0.
DPOLoss dpo_loss(const Tensor& policy_chosen, const Tensor& policy_rejected, const Tensor& reference_chosen,
                 const Tensor& reference_rejected, double beta = 0.1, double label_smoothing = 0.0);

// What gae returns.
struct Advantages {
  Tensor advantages;  // (B, T), zero outside the mask
  Tensor returns;     // advantages + values
};
// Generalized advantage estimation over each row's masked tokens (the
// response, in order): delta_t = r_t + gamma V_{t+1} - V_t with V = 0 after
// the last token, A_t = delta_t + gamma lambda A_{t+1}. No gradient.
Advantages gae(const Tensor& rewards, const Tensor& values, const Tensor& mask, double gamma = 1.0,
               double lambda = 0.95);
// Advantages whitened over the masked tokens: (A - mean) / sqrt(var + 1e-8). With
// all_sum (summing a float64 tensor over the data-parallel ranks in place),
// the mean and std are those of every rank's tokens together.
Tensor whiten(const Tensor& advantages, const Tensor& mask, const std::function<void(Tensor&)>& all_sum = {});

// What ppo_policy_loss returns.
struct PolicyLoss {
  Tensor loss;           // token mean of -min(ratio A, clip(ratio, 1 - eps, 1 + eps) A)
  double clip_fraction;  // share of tokens where the clipped term was taken
  double approx_kl;      // token mean of (ratio - 1) - log ratio (k3 of old to new)
};
// PPO's clipped surrogate over the masked tokens; ratio = exp(log_probs - old_log_probs).
// tokens as masked_mean's: under data parallelism, the whole batch's masked
// tokens over the ranks, so that averaged gradients are those of one process.
PolicyLoss ppo_policy_loss(const Tensor& log_probs, const Tensor& old_log_probs, const Tensor& advantages,
                           const Tensor& mask, double clip = 0.2, double tokens = 0);
// PPO's clipped value loss: 0.5 max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2), token mean
// (tokens as ppo_policy_loss's).
Tensor ppo_value_loss(const Tensor& values, const Tensor& old_values, const Tensor& returns, const Tensor& mask,
                      double clip = 0.2, double tokens = 0);
// The KL penalty folded into PPO's reward: -beta (log pi - log ref) on every
// masked token, plus each row's score on its last masked token. (B, T), no gradient.
Tensor kl_penalized_rewards(const Tensor& log_probs, const Tensor& reference_log_probs, const Tensor& scores,
                            const Tensor& mask, double beta);

// The k3 estimator of KL(pi || ref) per token (DeepSeekMath, Schulman's
// approximations): exp(ref - log pi) - (ref - log pi) - 1, never negative.
Tensor kl_k3(const Tensor& log_probs, const Tensor& reference_log_probs);
// GRPO: rewards (P G) of G samples for each of P prompts, normalized within
// each group: (r - mean) / (std + 1e-4), std with Bessel's correction as TRL.
Tensor group_advantages(const Tensor& rewards, int64_t group_size);
// What grpo_loss returns.
struct GRPOLoss {
  Tensor loss;           // mean over sequences of each one's token mean of -(min(ratio A, clip A) - beta k3)
  double kl;             // token mean of k3
  double clip_fraction;  // share of tokens where the clipped term was taken
};
// GRPO's loss: sequence advantages (B) spread over each sequence's masked tokens.
GRPOLoss grpo_loss(const Tensor& log_probs, const Tensor& old_log_probs, const Tensor& reference_log_probs,
                   const Tensor& advantages, const Tensor& mask, double clip = 0.2, double beta = 0.04);

}  // namespace kiln::nn
