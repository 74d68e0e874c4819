"""The preference and reward losses against the papers' formulas, computed by hand in plain Python."""

from __future__ import annotations

import math

import pytest
import torch

from hydratune.losses import (
    bradley_terry_loss,
    kto_kl_estimate,
    kto_loss,
    preference_loss,
    sequence_logps,
)

# A 2-pair batch of known log-probs: policy and reference, chosen and rejected.
PI_C, PI_R = [-3.0, -7.5], [-4.0, -6.0]
REF_C, REF_R = [-3.5, -7.0], [-3.8, -6.5]
# Mean (per-token) log-probs for the length-normalised losses.
MEAN_C, MEAN_R = [-0.4, -1.3], [-0.9, -0.7]


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def close(actual: torch.Tensor, expected: list[float]) -> None:
    assert actual.tolist() == pytest.approx(expected, abs=1e-6, rel=1e-6)


def margins() -> list[float]:
    return [(pc - rc) - (pr - rr) for pc, rc, pr, rr in zip(PI_C, REF_C, PI_R, REF_R)]


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_sigmoid_dpo_and_conservative_dpo(smoothing):
    beta = 0.3
    out = preference_loss(t(PI_C), t(PI_R), t(REF_C), t(REF_R), "sigmoid", beta, label_smoothing=smoothing)
    expected = [-(1 - smoothing) * logsig(beta * h) - smoothing * logsig(-beta * h) for h in margins()]
    close(out["loss"], expected)
    close(out["chosen_rewards"], [beta * (p - r) for p, r in zip(PI_C, REF_C)])
    close(out["rejected_rewards"], [beta * (p - r) for p, r in zip(PI_R, REF_R)])


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_robust_dpo_is_unbiased_under_label_noise(smoothing):
    """Chowdhury et al. 2024, TRL's `robust`: the two logsigmoid terms with opposite signs, over 1 - 2 eps."""
    beta = 0.3
    out = preference_loss(t(PI_C), t(PI_R), t(REF_C), t(REF_R), "robust", beta, label_smoothing=smoothing)
    expected = [
        (-(1 - smoothing) * logsig(beta * h) + smoothing * logsig(-beta * h)) / (1 - 2 * smoothing)
        for h in margins()
    ]
    close(out["loss"], expected)
    close(out["chosen_rewards"], [beta * (p - r) for p, r in zip(PI_C, REF_C)])


def test_ipo_and_hinge():
    beta = 0.25
    ipo = preference_loss(t(PI_C), t(PI_R), t(REF_C), t(REF_R), "ipo", beta)
    close(ipo["loss"], [(h - 1 / (2 * beta)) ** 2 for h in margins()])
    hinge = preference_loss(t(PI_C), t(PI_R), t(REF_C), t(REF_R), "hinge", beta)
    close(hinge["loss"], [max(0.0, 1 - beta * h) for h in margins()])


def test_orpo_odds_ratio_plus_chosen_nll():
    beta = 0.1
    out = preference_loss(t(MEAN_C), t(MEAN_R), loss="orpo", beta=beta)
    expected = []
    for c, r in zip(MEAN_C, MEAN_R):
        odds_c, odds_r = math.exp(c) / (1 - math.exp(c)), math.exp(r) / (1 - math.exp(r))
        expected.append(-c - beta * logsig(math.log(odds_c / odds_r)))
    close(out["loss"], expected)
    close(out["chosen_rewards"], [beta * c for c in MEAN_C])
    # An explicit NLL replaces the default one.
    nll = [0.7, 0.2]
    out = preference_loss(t(MEAN_C), t(MEAN_R), loss="orpo", beta=beta, chosen_nll=t(nll))
    close(out["loss"], [e + c + n for e, c, n in zip(expected, MEAN_C, nll)])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_simpo_length_normalised_with_margin(smoothing):
    beta, gamma = 2.0, 0.5
    out = preference_loss(
        t(MEAN_C), t(MEAN_R), loss="simpo", beta=beta, simpo_gamma=gamma, label_smoothing=smoothing
    )
    z = [beta * c - beta * r - gamma for c, r in zip(MEAN_C, MEAN_R)]
    close(out["loss"], [-(1 - smoothing) * logsig(x) - smoothing * logsig(-x) for x in z])
    close(out["rejected_rewards"], [beta * r for r in MEAN_R])


def test_sft_weight_adds_the_chosen_nll():
    nll = [1.5, 0.5]
    base = preference_loss(t(PI_C), t(PI_R), t(REF_C), t(REF_R), "sigmoid", 0.1)
    mixed = preference_loss(
        t(PI_C), t(PI_R), t(REF_C), t(REF_R), "sigmoid", 0.1, chosen_nll=t(nll), sft_weight=0.5
    )
    close(mixed["loss"], [b + 0.5 * n for b, n in zip(base["loss"].tolist(), nll)])
    with pytest.raises(ValueError, match="chosen_nll"):
        preference_loss(t(PI_C), t(PI_R), t(REF_C), t(REF_R), "sigmoid", 0.1, sft_weight=0.5)


def test_unknown_loss_and_missing_reference_are_refused():
    with pytest.raises(ValueError, match="simpo"):
        preference_loss(t(PI_C), t(PI_R), t(REF_C), t(REF_R), "dpo")
    with pytest.raises(ValueError, match="reference"):
        preference_loss(t(PI_C), t(PI_R), loss="ipo")


def test_kto_with_the_batch_kl_reference_point():
    beta, wd, wu = 0.2, 1.0, 1.33
    policy, ref, desirable = [-3.0, -5.0, -2.0], [-3.4, -4.0, -2.5], [True, False, False]
    policy_kl, ref_kl = [-6.0, -4.0, -5.0], [-6.5, -4.2, -4.9]
    z0 = max(0.0, sum(p - r for p, r in zip(policy_kl, ref_kl)) / 3)
    point = kto_kl_estimate(t(policy_kl), t(ref_kl))
    assert point.item() == pytest.approx(z0, abs=1e-9)
    out = kto_loss(t(policy), t(ref), torch.tensor(desirable), point, beta, wd, wu)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [
        wd * (1 - sig(beta * (p - r - z0))) if d else wu * (1 - sig(beta * (z0 - (p - r))))
        for p, r, d in zip(policy, ref, desirable)
    ]
    close(out["loss"], expected)
    close(out["rewards"], [beta * (p - r) for p, r in zip(policy, ref)])
    # The estimate never goes negative.
    assert kto_kl_estimate(t([-9.0]), t([-1.0])).item() == 0.0


def test_bradley_terry_with_and_without_margin():
    chosen, rejected, margin = [1.2, -0.3], [0.2, 0.5], [0.5, 1.0]
    close(bradley_terry_loss(t(chosen), t(rejected)), [-logsig(c - r) for c, r in zip(chosen, rejected)])
    close(
        bradley_terry_loss(t(chosen), t(rejected), t(margin)),
        [-logsig(c - r - m) for c, r, m in zip(chosen, rejected, margin)],
    )


def naive_logps(logits, labels):
    """The plain way: full log_softmax, gather, mask, per row."""
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    labels = labels[:, 1:]
    out = []
    for i in range(labels.shape[0]):
        out.append(
            sum(logp[i, j, labels[i, j]].item() for j in range(labels.shape[1]) if labels[i, j] != -100)
        )
    return out


def test_sequence_logps_matches_a_full_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g) * 3
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[0, :3] = -100  # a prompt
    labels[1, 5:] = -100  # padding
    labels[2, :] = -100  # nothing scored
    logps, counts = sequence_logps(logits, labels)
    assert counts.tolist() == [4, 4, 0]
    close(logps, naive_logps(logits, labels))
    mean, _ = sequence_logps(logits, labels, average=True)
    close(mean, [s / max(n, 1) for s, n in zip(naive_logps(logits, labels), [4, 4, 0])])
    # Low-precision logits are scored row by row in float32, the same as upcasting everything first.
    half = logits.bfloat16()
    close(sequence_logps(half, labels)[0], naive_logps(half.float(), labels))


def test_gradients_are_finite():
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(4, 6, 9, generator=g) * 4).requires_grad_()
    labels = torch.randint(0, 9, (4, 6), generator=g)
    labels[:, :2] = -100
    total = 0
    summed, _ = sequence_logps(logits, labels)
    mean, _ = sequence_logps(logits, labels, average=True)
    ref = summed.detach() - 0.3
    for loss in ("sigmoid", "ipo", "hinge"):
        src = mean if loss == "ipo" else summed
        total = total + preference_loss(src[:2], src[2:], ref[:2], ref[2:], loss, 0.1)["loss"].sum()
    for loss in ("orpo", "simpo"):
        total = total + preference_loss(mean[:2], mean[2:], loss=loss, beta=0.5)["loss"].sum()
    total = total + kto_loss(summed, ref, torch.tensor([1, 0, 1, 0]), 0.1)["loss"].sum()
    total = total + bradley_terry_loss(summed[:2], summed[2:]).sum()
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
