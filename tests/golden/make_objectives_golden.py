#!/usr/bin/env python3
"""Golden values for kiln's alignment losses (nn/include/kiln/nn/objectives.h), from PyTorch.

Never run by the build or CI; it needs torch and safetensors. Each loss is
written out here as its reference implements it (TRL's DPOTrainer and
GRPOTrainer, TRL's PPO advantage loop and masked_whiten, DeepSpeed-Chat's PPO
actor, critic and reward), in float64, on random inputs with ragged response
masks, with the gradients of each loss with respect to its inputs.

  python3 tests/golden/make_objectives_golden.py   # writes tests/golden/objectives.safetensors
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
B, T, V, G = 4, 7, 11, 3
BETA, LABEL_SMOOTHING, CLIP, VALUE_CLIP, KL_COEF, GRPO_BETA = 0.1, 0.1, 0.2, 0.2, 0.05, 0.04
GAMMA, LAMBDA = 0.99, 0.95


def leaf(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale).requires_grad_()


def main():
    torch.manual_seed(2024)
    out = {}
    # Each row's response: tokens start..end of T (the prompt before it, padding after).
    mask = torch.zeros(B, T, dtype=torch.float64)
    for b, (start, end) in enumerate([(2, 7), (1, 4), (3, 6), (0, 7)]):
        mask[b, start:end] = 1
    out["mask"] = mask

    logits, tokens = leaf(B, T, V), torch.randint(0, V, (B, T))
    tokens[1, 5] = -100
    lp = torch.log_softmax(logits, -1).gather(2, tokens.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    lp = lp.masked_fill(tokens == -100, 0.0)
    (lp * torch.linspace(0.5, 1.5, B * T, dtype=torch.float64).view(B, T)).sum().backward()
    out.update(logits=logits.detach(), tokens=tokens, token_log_probs=lp.detach(), grad_logits=logits.grad)

    chosen, rejected = leaf(B), leaf(B)
    loss = -F.logsigmoid(chosen - rejected).mean()
    loss.backward()
    out.update(chosen=chosen.detach(), rejected=rejected.detach(), pairwise_loss=loss.detach().reshape(1),
               grad_pairwise_chosen=chosen.grad, grad_pairwise_rejected=rejected.grad)

    pc, pr, rc, rr = leaf(B, scale=5), leaf(B, scale=5), leaf(B, scale=5), leaf(B, scale=5)
    logits_dpo = (pc - pr) - (rc - rr)  # TRL's dpo_loss, loss_type "sigmoid"
    losses = (-F.logsigmoid(BETA * logits_dpo) * (1 - LABEL_SMOOTHING)
              - F.logsigmoid(-BETA * logits_dpo) * LABEL_SMOOTHING)
    losses.mean().backward()
    out.update(policy_chosen=pc.detach(), policy_rejected=pr.detach(), reference_chosen=rc.detach(),
               reference_rejected=rr.detach(), dpo_loss=losses.mean().detach().reshape(1),
               dpo_chosen_rewards=(BETA * (pc - rc)).detach(), dpo_rejected_rewards=(BETA * (pr - rr)).detach(),
               grad_dpo_policy_chosen=pc.grad, grad_dpo_policy_rejected=pr.grad)

    # TRL's advantage loop over masked rewards and values (zero outside the response).
    rewards, values = torch.randn(B, T, dtype=torch.float64) * mask, torch.randn(B, T, dtype=torch.float64) * mask
    lastgaelam, reversed_adv = 0, []
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t < T - 1 else 0.0
        delta = rewards[:, t] + GAMMA * nextvalues - values[:, t]
        lastgaelam = delta + GAMMA * LAMBDA * lastgaelam
        reversed_adv.append(lastgaelam)
    advantages = torch.stack(reversed_adv[::-1], 1) * mask
    out.update(rewards=rewards, values=values, gae_advantages=advantages, gae_returns=(advantages + values) * mask)
    mean = (advantages * mask).sum() / mask.sum()  # TRL's masked_whiten, unbiased variance
    var = ((advantages - mean) ** 2 * mask).sum() / mask.sum() * (mask.sum() / (mask.sum() - 1))
    out["whitened"] = (advantages - mean) * torch.rsqrt(var + 1e-8) * mask

    log_probs, old_log_probs = leaf(B, T, scale=0.3), torch.randn(B, T, dtype=torch.float64) * 0.3
    adv = torch.randn(B, T, dtype=torch.float64)
    ratio = torch.exp(log_probs - old_log_probs)  # DeepSpeed-Chat's actor_loss_fn
    pg = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - CLIP, 1 + CLIP))
    policy_loss = (pg * mask).sum() / mask.sum()
    policy_loss.backward()
    out.update(log_probs=log_probs.detach(), old_log_probs=old_log_probs, advantages=adv,
               policy_loss=policy_loss.detach().reshape(1), grad_policy_log_probs=log_probs.grad)

    new_values, old_values, returns = leaf(B, T), torch.randn(B, T, dtype=torch.float64), torch.randn(B, T, dtype=torch.float64)
    clipped = torch.clamp(new_values, old_values - VALUE_CLIP, old_values + VALUE_CLIP)  # DeepSpeed-Chat's critic_loss_fn
    value_loss = 0.5 * (torch.max((new_values - returns) ** 2, (clipped - returns) ** 2) * mask).sum() / mask.sum()
    value_loss.backward()
    out.update(new_values=new_values.detach(), old_values=old_values, returns=returns,
               value_loss=value_loss.detach().reshape(1), grad_value_new_values=new_values.grad)

    ref_log_probs, scores = torch.randn(B, T, dtype=torch.float64) * 0.3, torch.randn(B, dtype=torch.float64)
    kl_rewards = -KL_COEF * (log_probs.detach() - ref_log_probs) * mask  # DeepSpeed-Chat's compute_rewards
    for b in range(B):
        kl_rewards[b, int(mask[b].nonzero().max())] += scores[b]
    out.update(reference_log_probs=ref_log_probs, scores=scores, kl_rewards=kl_rewards)

    grpo_rewards = torch.randn(B * G, dtype=torch.float64)  # TRL's GRPOTrainer
    grouped = grpo_rewards.view(-1, G)
    grpo_adv = (grpo_rewards - grouped.mean(1).repeat_interleave(G)) / (grouped.std(1).repeat_interleave(G) + 1e-4)
    out.update(grpo_rewards=grpo_rewards, grpo_advantages=grpo_adv)
    seq_adv = torch.randn(B, dtype=torch.float64)
    lp2 = log_probs.detach().clone().requires_grad_()
    per_token_kl = torch.exp(ref_log_probs - lp2) - (ref_log_probs - lp2) - 1
    coef = torch.exp(lp2 - old_log_probs)
    per_token = -(torch.min(coef * seq_adv.unsqueeze(1), torch.clamp(coef, 1 - CLIP, 1 + CLIP) * seq_adv.unsqueeze(1))
                  - GRPO_BETA * per_token_kl)
    grpo = ((per_token * mask).sum(1) / mask.sum(1)).mean()
    grpo.backward()
    out.update(sequence_advantages=seq_adv, k3=per_token_kl.detach(), grpo_loss=grpo.detach().reshape(1),
               grad_grpo_log_probs=lp2.grad)

    path = os.path.join(HERE, "objectives.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata={"torch": torch.__version__})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
