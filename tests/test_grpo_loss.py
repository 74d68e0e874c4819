"""The GRPO loss against a closed form computed in plain Python on hand-made log-probs and groups."""

from __future__ import annotations

import math

import pytest
import torch

from hydratune.tasks.grpo.loss import group_advantages, grpo_loss, zero_spread_fraction

G = 3
# Three prompts x three generations; the middle group's rewards are all equal (zero spread).
REWARDS = [1.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.0, 2.0, 1.0]
LENGTHS = [3, 1, 2, 3, 3, 2, 1, 3, 2]  # completion tokens per row (mask), T = 3
T = 3


def python_advantages(rewards, g, scale, eps=1e-4):
    out = []
    for start in range(0, len(rewards), g):
        group = rewards[start : start + g]
        mean = sum(group) / g
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (g - 1))
        out += [(r - mean) / (std + eps) if scale else r - mean for r in group]
    return out


def hand_logps():
    """logps, old_logps (some ratios far outside 1 +- 0.2) and ref log-probs, as nested lists."""
    logps = [[-0.1 * (i + 1) - 0.05 * t for t in range(T)] for i in range(len(REWARDS))]
    shifts = [0.5, -0.5, 0.0, 0.1, -0.3]  # logp - old_logp: ratios e^0.5, e^-0.5, 1, e^0.1, e^-0.3
    old = [[lp - shifts[(i + t) % len(shifts)] for t, lp in enumerate(row)] for i, row in enumerate(logps)]
    ref = [[lp + 0.2 * ((i + t) % 3 - 1) for t, lp in enumerate(row)] for i, row in enumerate(logps)]
    return logps, old, ref


def python_loss(logps, old, ref, adv, epsilon, beta, aggregation, epsilon_high=None):
    """(loss, d loss / d logp per token) by the formulas of the module docstring."""
    high = epsilon if epsilon_high is None else epsilon_high
    n = len(logps)
    rows, grads = [], []
    for i in range(n):
        terms, row_grad = [], []
        for t in range(T):
            if t >= LENGTHS[i]:
                terms.append(0.0)
                row_grad.append(0.0)
                continue
            ratio = math.exp(logps[i][t] - old[i][t])
            clipped = min(max(ratio, 1 - epsilon), 1 + high)
            unclipped_term, clipped_term = ratio * adv[i], clipped * adv[i]
            policy = -min(unclipped_term, clipped_term)
            # The gradient flows through the ratio only where the unclipped term is the smaller one.
            g = -adv[i] * ratio if unclipped_term <= clipped_term else 0.0
            d = ref[i][t] - logps[i][t]
            kl = math.exp(d) - d - 1
            terms.append(policy + beta * kl)
            row_grad.append(g + beta * (1 - math.exp(d)))
        rows.append(terms)
        grads.append(row_grad)
    if aggregation == "grpo":
        loss = sum(sum(r) / LENGTHS[i] for i, r in enumerate(rows)) / n
        grads = [[g / LENGTHS[i] / n for g in row] for i, row in enumerate(grads)]
    else:
        loss = sum(sum(r) for r in rows) / (n * T)
        grads = [[g / (n * T) for g in row] for row in grads]
    return loss, grads


def tensors(logps, old, ref):
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in LENGTHS])
    lp = torch.tensor(logps, dtype=torch.float64, requires_grad=True)
    return lp, torch.tensor(old, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64), mask


@pytest.mark.parametrize("scale", [True, False])
def test_group_advantages_match_closed_form(scale):
    adv = group_advantages(torch.tensor(REWARDS), G, scale=scale)
    assert adv.tolist() == pytest.approx(python_advantages(REWARDS, G, scale), abs=1e-6)
    assert adv[3:6].tolist() == [0.0, 0.0, 0.0]  # equal rewards: exactly zero, not 0/eps noise
    assert zero_spread_fraction(torch.tensor(REWARDS), G) == pytest.approx(1 / 3)


@pytest.mark.parametrize("aggregation", ["grpo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_loss_and_gradient_match_closed_form(aggregation, beta):
    logps, old, ref = hand_logps()
    adv = python_advantages(REWARDS, G, True)
    expected, expected_grad = python_loss(logps, old, ref, adv, 0.2, beta, aggregation)
    lp, old_t, ref_t, mask = tensors(logps, old, ref)
    loss, stats = grpo_loss(
        lp, old_t, ref_t, torch.tensor(adv, dtype=torch.float64), mask, 0.2, beta, aggregation
    )
    loss.backward()
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert lp.grad.tolist() == [pytest.approx(row, abs=1e-12) for row in expected_grad]
    assert stats["kl"] == (pytest.approx(sum_kl(logps, ref) / sum(LENGTHS)) if beta else 0.0)


def sum_kl(logps, ref):
    return sum(
        math.exp(ref[i][t] - logps[i][t]) - (ref[i][t] - logps[i][t]) - 1
        for i in range(len(logps))
        for t in range(LENGTHS[i])
    )


def test_zero_advantage_group_gets_no_gradient():
    logps, old, ref = hand_logps()
    lp, old_t, _, mask = tensors(logps, old, ref)
    adv = group_advantages(torch.tensor(REWARDS, dtype=torch.float64), G)
    loss, _ = grpo_loss(lp, old_t, None, adv, mask, epsilon=0.2, beta=0.0)
    loss.backward()
    assert torch.count_nonzero(lp.grad[3:6]) == 0
    assert torch.count_nonzero(lp.grad[[0, 6, 7]] * mask[[0, 6, 7]]) > 0  # the other groups do learn


def test_clipping_active_and_inactive():
    """ratio e^0.5 (> 1.2): clipped (no gradient) where A > 0, not where A < 0; ratio 1: never."""
    lp = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[-0.5, 0.0], [-0.5, 0.0]], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.ones(2, 2)
    loss, stats = grpo_loss(lp, old, None, adv, mask, epsilon=0.2)
    loss.backward()
    r = math.exp(0.5)
    # grpo: mean over each row's 2 tokens, then over the 2 rows.
    assert loss.item() == pytest.approx((-(1.2 + 1.0) + (r + 1.0)) / 2 / 2)
    assert lp.grad.tolist() == [pytest.approx([0.0, -0.25]), pytest.approx([r / 4, 0.25])]
    assert stats["clip_fraction"] == 0.25 and stats["clip_high"] == 0.25 and stats["clip_low"] == 0.0
    # A wider upper bound (DAPO's clip-higher) lets the same token through.
    lp.grad = None
    loss, stats = grpo_loss(lp, old, None, adv, mask, epsilon=0.2, epsilon_high=1.0)
    loss.backward()
    assert lp.grad[0, 0].item() == pytest.approx(-r / 4) and stats["clip_fraction"] == 0.0


def test_one_update_per_batch_is_the_plain_policy_gradient():
    """old_logps=None: the ratio is 1, the loss is -mean(A) and the gradient is -A / (N * len)."""
    lp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([2.0, -1.0], dtype=torch.float64)
    loss, stats = grpo_loss(lp, None, None, adv, torch.ones(2, 2))
    loss.backward()
    assert loss.item() == pytest.approx(-(2.0 - 1.0) / 2)
    assert lp.grad.tolist() == [[-0.5, -0.5], [0.25, 0.25]]
    assert stats["clip_fraction"] == 0.0 and stats["ratio_mean"] == 1.0


def test_dr_grpo_uses_the_given_normaliser():
    lp = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    adv = torch.tensor([1.0, 1.0], dtype=torch.float64)
    loss, _ = grpo_loss(lp, None, None, adv, mask, aggregation="dr_grpo", max_tokens=8)
    assert loss.item() == pytest.approx(-3 / (2 * 8))
    with pytest.raises(ValueError, match="aggregation"):
        grpo_loss(lp, None, None, adv, mask, aggregation="token_mean")


# -- TRL 1.16's token-level aggregations and reward scalings, transcribed from GRPOTrainer ------------


def trl_per_token_loss(logps, old, ref, adv, epsilon, epsilon_high, beta):
    """GRPOTrainer._compute_loss up to the aggregation (importance_sampling_level "token", delta None)."""
    coef_1 = torch.exp(logps - old)
    coef_2 = torch.clamp(coef_1, 1 - epsilon, 1 + epsilon_high)
    per_token_loss = -torch.min(coef_1 * adv[:, None], coef_2 * adv[:, None])
    if beta != 0.0:
        per_token_kl = torch.exp(ref - logps) - (ref - logps) - 1
        per_token_loss = per_token_loss + beta * per_token_kl
    return per_token_loss


def trl_aggregate(per_token_loss, mask, loss_type):
    """TRL's bnpo and dapo in training, on one process with gradient_accumulation_steps = steps_per_generation
    = 1 (the setting where rule grpo_dapo_window lets hydratune's dapo run): the generation batch is this
    one, so `num_items_in_batch` is its completion tokens."""
    num_processes = current_gradient_accumulation_steps = steps_per_generation = 1
    if loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
        return loss / current_gradient_accumulation_steps
    num_items_in_batch = mask.sum()  # accelerator.gather(loss_mask.sum()).sum()
    normalizer = num_items_in_batch.clamp(min=1.0) / num_processes
    normalizer = normalizer * current_gradient_accumulation_steps / steps_per_generation
    return (per_token_loss * mask).sum() / normalizer


@pytest.mark.parametrize("aggregation", ["bnpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_token_level_aggregations_equal_trls_on_a_ragged_mask(aggregation, beta):
    """Rows of 1 to 3 completion tokens: a token mean weighs each token alike, unlike grpo's mean of row
    means (the assertion against grpo makes sure the ragged mask tells them apart)."""
    logps, old, ref = hand_logps()
    adv = torch.tensor(python_advantages(REWARDS, G, True), dtype=torch.float64)
    lp, old_t, ref_t, mask = tensors(logps, old, ref)
    loss, _ = grpo_loss(lp, old_t, ref_t, adv, mask, 0.2, beta, aggregation, epsilon_high=0.28)
    (grad,) = torch.autograd.grad(loss, lp)
    trl_lp = lp.detach().clone().requires_grad_(True)
    expected = trl_aggregate(
        trl_per_token_loss(trl_lp, old_t, ref_t, adv, 0.2, 0.28, beta), mask, aggregation
    )
    (expected_grad,) = torch.autograd.grad(expected, trl_lp)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.allclose(grad, expected_grad, rtol=0, atol=1e-15)
    per_row, _ = grpo_loss(lp, old_t, ref_t, adv, mask, 0.2, beta, "grpo", epsilon_high=0.28)
    assert per_row.item() != pytest.approx(loss.item(), rel=1e-3)


def test_a_token_mean_of_an_empty_mask_is_zero_not_nan():
    lp = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    loss, _ = grpo_loss(lp, None, None, torch.ones(2), torch.zeros(2, 3), aggregation="bnpo")
    assert loss.item() == 0.0


def trl_advantages(rewards, num_generations, scale_rewards):
    """GRPOTrainer._generate_and_score_completions, multi_objective_aggregation "sum_then_normalize"."""

    def nanstd(tensor, dim=None, keepdim=False):  # trl.trainer.utils.nanstd
        mean = torch.nanmean(tensor, dim=dim, keepdim=True)
        variance = torch.nanmean((tensor - mean) ** 2, dim=dim, keepdim=True)
        count = torch.sum(~torch.isnan(tensor), dim=dim, keepdim=True)
        variance *= count / (count - 1)
        if not keepdim:
            variance = variance.squeeze(dim) if dim is not None else variance.squeeze()
        return torch.sqrt(variance)

    scale_rewards = {True: "group", False: "none"}.get(scale_rewards, scale_rewards)  # GRPOConfig
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    else:  # batch
        std_rewards = nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return advantages


@pytest.mark.parametrize("scale", [True, "group", "batch", False, "none"])
def test_reward_scalings_equal_trls(scale):
    rewards = torch.tensor(REWARDS)
    expected = trl_advantages(rewards.clone(), G, scale)
    assert group_advantages(rewards, G, scale=scale).tolist() == pytest.approx(expected.tolist(), abs=1e-6)


def test_batch_scaling_divides_every_group_by_one_std():
    """batch: centred per group, one divisor for all (groups of different spread keep their sizes apart)."""
    rewards = torch.tensor([0.0, 1.0, 0.0, 10.0])  # group spreads 1 and 10
    batch = group_advantages(rewards, 2, scale="batch")
    centred = group_advantages(rewards, 2, scale="none")
    assert torch.allclose(batch, centred / (rewards.std() + 1e-4))
    assert batch[3] / batch[1] == pytest.approx(10.0)  # group scaling would make them equal
    with pytest.raises(ValueError, match="scale_rewards 'mean': use true/group, batch or false/none"):
        group_advantages(rewards, 2, scale="mean")
