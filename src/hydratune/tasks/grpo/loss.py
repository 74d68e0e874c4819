"""The GRPO objective: group-relative advantages and the clipped policy-gradient loss with a KL term.

Notation (per completion i, token t; all log-probs are of the sampled token):
    A_i       = (r_i - mean(r_group)) / (s + eps)                 advantage, eps = 1e-4; s by task.scale_rewards:
                                                                  group (true): std(r_group); batch: the std
                                                                  of every reward of the micro-batch sampled
                                                                  on this device (PPO Lite; TRL's "batch"
                                                                  spans its whole generation batch, the same
                                                                  with one micro-batch per step on one
                                                                  device); none (false): no division (Dr.
                                                                  GRPO, Liu et al. 2025)
    rho_it    = exp(logp_it - old_logp_it)                        importance ratio vs the sampling policy
    clip_it   = clamp(rho_it, 1 - epsilon, 1 + epsilon_high)      epsilon_high defaults to epsilon
    kl_it     = exp(ref_it - logp_it) - (ref_it - logp_it) - 1    the k3 estimator of KL(policy || ref):
                                                                  >= 0, unbiased, zero where they agree
    l_it      = -min(rho_it * A_i, clip_it * A_i) + beta * kl_it

Aggregation over the [N, T] token grid (mask m_it = 1 on completion tokens):
    "grpo":    mean_i( sum_t m_it l_it / sum_t m_it )   each sequence weighs the same (DeepSeekMath, Shao
                                                        et al. 2024); long answers get a smaller
                                                        per-token weight, the length bias Dr. GRPO names
    "dr_grpo": sum_it m_it l_it / (N * max_tokens)      a constant normaliser (max_tokens = the
                                                        configured max completion length), so every
                                                        token weighs the same whatever its length
    "bnpo":    sum_it m_it l_it / max(sum_it m_it, 1)   a token mean over the micro-batch (TRL's bnpo)
    "dapo":    the same sum / the completion tokens of the whole accumulated batch on all devices (TRL's
               default, DAPO, Yu et al. 2025). TRL samples that batch before the first backward; hydratune
               samples each micro-batch in its own step, so the count is known only with one micro-batch
               per optimizer step on one device, where dapo is bnpo (rule grpo_dapo_window refuses others)

With one update per sample batch (num_iterations=1) old_logp is logp detached: rho = 1 in value, and
the gradient is the plain policy gradient A_i * grad(logp). A group whose rewards are all equal has
A = 0 and contributes no policy gradient (only the KL term's, which is zero while the policy equals
the reference). std is the unbiased sample std, as in TRL's GRPOTrainer (its nanstd).
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("grpo", "dr_grpo", "bnpo", "dapo")
# task.scale_rewards values (TRL's spellings and hydratune's booleans) -> what divides the centred rewards.
REWARD_SCALING = {True: "group", "group": "group", "batch": "batch", False: "none", "none": "none"}


def reward_scaling(value: bool | str) -> str:
    """The scaling (group, batch or none) a task.scale_rewards value names; TRL spells it either way."""
    if not isinstance(value, bool | str) or value not in REWARD_SCALING:
        raise ValueError(f"scale_rewards {value!r}: use true/group, batch or false/none")
    return REWARD_SCALING[value]


def group_advantages(
    rewards: torch.Tensor, num_generations: int, scale: bool | str = True, eps: float = 1e-4
) -> torch.Tensor:
    """Advantages [B*G] of rewards [B*G] laid out prompt-major (rows i*G .. i*G+G-1 are prompt i's).

    Mean-centred within each group; then divided by std + eps: the group's std (`scale` true or "group"),
    that of all the rewards given ("batch"), or not at all (false or "none").
    """
    if rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {num_generations}")
    scaling = reward_scaling(scale)
    groups = rewards.float().view(-1, num_generations)
    advantages = groups - groups.mean(dim=1, keepdim=True)
    if scaling == "group":
        std = groups.std(dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(groups[:, :1])
        advantages = advantages / (std + eps)
    elif scaling == "batch":
        std = groups.std() if groups.numel() > 1 else torch.zeros(())
        advantages = advantages / (std + eps)
    return advantages.view(-1)


def zero_spread_fraction(rewards: torch.Tensor, num_generations: int) -> float:
    """Share of groups whose rewards are all equal (they teach nothing: zero advantage)."""
    groups = rewards.float().view(-1, num_generations)
    return float((groups.max(dim=1).values == groups.min(dim=1).values).float().mean())


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float = 0.2,
    beta: float = 0.0,
    aggregation: str = "grpo",
    epsilon_high: float | None = None,
    max_tokens: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss (formulas in the module docstring) and detached statistics.

    Args:
        logps: [N, T] log-probs of the completion tokens under the policy being trained.
        old_logps: [N, T] the same under the policy that sampled them; None: `logps.detach()`.
        ref_logps: [N, T] under the reference model; None (or beta == 0): no KL term.
        advantages: [N], one per completion.
        mask: [N, T], 1 on completion tokens (up to and including the stop token).
        max_tokens: the "dr_grpo" normaliser; None: T.

    Returns:
        (loss, stats) with stats: kl (mean over tokens; 0 without a reference), clip_fraction (share of
        tokens where the clip is active: ratio below 1 - epsilon with A < 0, or above 1 + epsilon_high
        with A > 0), clip_low, clip_high, ratio_mean.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r}: use one of {', '.join(AGGREGATIONS)}")
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    mask = mask.to(logps.dtype)
    old_logps = logps.detach() if old_logps is None else old_logps
    adv = advantages.to(logps.dtype)[:, None]
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = None
    if ref_logps is not None and beta != 0:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl
    if aggregation == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    elif aggregation == "dr_grpo":
        loss = (per_token * mask).sum() / (mask.shape[0] * (max_tokens or mask.shape[1]))
    else:  # bnpo, and dapo where it is bnpo (one micro-batch per step on one device: the module docstring)
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)

    with torch.no_grad():
        tokens = mask.sum().clamp(min=1)
        low = ((ratio < 1 - epsilon) & (adv < 0)).to(mask.dtype) * mask
        high = ((ratio > 1 + epsilon_high) & (adv > 0)).to(mask.dtype) * mask
        stats = {
            "kl": float((kl * mask).sum() / tokens) if kl is not None else 0.0,
            "clip_fraction": float((low + high).sum() / tokens),
            "clip_low": float(low.sum() / tokens),
            "clip_high": float(high.sum() / tokens),
            "ratio_mean": float((ratio * mask).sum() / tokens),
        }
    return loss, stats


def token_logps(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probs [N, T] of `ids` [N, T] under `logits` [N, T, V] (logits at position t predict ids t).

    Divided by the sampling temperature first, so the ratio compares the distribution that was
    actually sampled from. Computed in float32.
    """
    logits = logits.float()
    if temperature not in (0, 1):
        logits = logits / temperature
    return torch.gather(logits.log_softmax(-1), -1, ids.unsqueeze(-1)).squeeze(-1)
