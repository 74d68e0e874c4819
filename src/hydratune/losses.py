"""Preference and reward losses: pure torch functions on per-sequence log-probabilities and scores.

No Lightning and no model here: a task computes log-probs with `sequence_logps` from one forward pass,
then calls the loss. Every loss returns one value per pair (or per row), unreduced, so the caller
chooses the normalisation (per pair across accumulation and DDP, as SFT's is per token).

Shapes: `B` pairs (or rows), `T` positions, `V` vocabulary entries. Log-probs are natural logarithms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hydratune.data.tokenize import IGNORE_INDEX

PREFERENCE_LOSSES = ("sigmoid", "robust", "ipo", "hinge", "orpo", "simpo")
# Losses that read length-normalised (mean per answer token) log-probs; the others read sums.
MEAN_LOGP_LOSSES = ("ipo", "orpo", "simpo")
# Losses without a reference model.
REFERENCE_FREE_LOSSES = ("orpo", "simpo")


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token negative log-likelihood over trained tokens, and their count.

    Position t predicts token t+1; labels equal to -100 are skipped.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return nll, (shift_labels != IGNORE_INDEX).sum()


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, average: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each row's label tokens: the sum (or the mean per token) over the row.

    Position t predicts token t+1 (causal LM), so `logits[:, :-1]` is scored against `labels[:, 1:]`;
    labels equal to -100 (prompt, padding) are skipped. Each token's log-prob is `logit[label] -
    logsumexp(logits)`, exactly `log_softmax(...)[label]` but without keeping a `[B, T, V]` log-softmax
    tensor: full-precision logits go through one `logsumexp` (a `[B, T]` result; autograd keeps only
    the logits themselves); lower-precision ones are upcast one row at a time, so the forward holds at
    most a `[T, V]` float32 temporary at once (autograd keeps each row's upcast copy when the logits
    need gradients, as `log_softmax(logits.float())` would).

    Args:
        logits: `[B, T, V]` model outputs.
        labels: `[B, T]` token ids, -100 where nothing is scored.
        average: divide each row's sum by its number of scored tokens (rows with none give 0).

    Returns:
        `(logps [B], token_counts [B])`: float32 log-probs and the number of scored tokens per row.
    """
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != IGNORE_INDEX
    index = labels.masked_fill(~mask, 0).unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        token_logps = logits.gather(-1, index).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    else:
        rows = []
        for row_logits, row_index in zip(logits, index):
            row_logits = row_logits.float()
            rows.append(row_logits.gather(-1, row_index).squeeze(-1) - torch.logsumexp(row_logits, dim=-1))
        token_logps = torch.stack(rows)
    token_logps = token_logps.float() * mask
    counts = mask.sum(-1)
    logps = token_logps.sum(-1)
    if average:
        logps = logps / counts.clamp(min=1)
    return logps, counts


def preference_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    loss: str = "sigmoid",
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.5,
    chosen_nll: torch.Tensor | None = None,
    sft_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The loss of each preference pair, for DPO and its family.

    Inputs are `[B]` tensors. `sigmoid` and `hinge` take summed answer log-probs; `ipo`, `orpo` and
    `simpo` take mean log-probs per answer token (`sequence_logps(..., average=True)`; see
    `MEAN_LOGP_LOSSES`), as TRL does. With `h = (pi_c - ref_c) - (pi_r - ref_r)` (the log-ratio margin),
    `eps = label_smoothing` and `logsig = log(sigmoid(.))`:

    - `sigmoid` (DPO, Rafailov et al. 2023; with eps > 0 the conservative DPO of Mitchell 2023):
      `-(1 - eps) * logsig(beta * h) - eps * logsig(-beta * h)`.
    - `robust` (Chowdhury et al. 2024, an unbiased loss under label noise eps < 0.5; TRL's `robust`):
      `(-(1 - eps) * logsig(beta * h) + eps * logsig(-beta * h)) / (1 - 2 * eps)`.
    - `ipo` (Azar et al. 2023, eq. 17, beta = tau): `(h - 1 / (2 * beta))^2`, on mean log-probs.
    - `hinge` (SLiC, Zhao et al. 2023): `relu(1 - beta * h)`.
    - `orpo` (Hong et al. 2024, reference-free; beta = lambda): with mean log-probs `c`, `r`,
      `log_odds = (c - r) - (log(1 - e^c) - log(1 - e^r))`, loss `nll_c - beta * logsig(log_odds)`,
      where `nll_c` is `chosen_nll` or, by default, `-c` (mean NLL of the chosen answer tokens).
    - `simpo` (Meng et al. 2024, reference-free): with mean log-probs `c`, `r` and margin `gamma`,
      `-(1 - eps) * logsig(beta * (c - r) - gamma) - eps * logsig(-(beta * (c - r) - gamma))`.

    Rewards are `beta * (pi - ref)` for the reference-based losses and `beta * pi` for the
    reference-free ones (detached, for logging). `sft_weight > 0` adds `sft_weight * chosen_nll` to a
    reference-based loss (LLaMA-Factory's `pref_ftx`); ORPO has its NLL term built in.

    Returns:
        `{"loss": [B], "chosen_rewards": [B], "rejected_rewards": [B]}`.
    """
    if loss not in PREFERENCE_LOSSES:
        raise ValueError(f"loss={loss!r} is not known; use one of: {', '.join(PREFERENCE_LOSSES)}")
    if loss in REFERENCE_FREE_LOSSES:
        chosen_rewards, rejected_rewards = beta * chosen_logps, beta * rejected_logps
        if loss == "orpo":
            c, r = chosen_logps.float(), rejected_logps.float()
            log_odds = (c - r) - (_log1mexp(c) - _log1mexp(r))
            nll = -c if chosen_nll is None else chosen_nll
            losses = nll - beta * F.logsigmoid(log_odds)
        else:
            z = beta * (chosen_logps - rejected_logps) - simpo_gamma
            losses = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    else:
        if ref_chosen_logps is None or ref_rejected_logps is None:
            raise ValueError(f"loss={loss!r} needs the reference log-probs")
        chosen_ratio = chosen_logps - ref_chosen_logps
        rejected_ratio = rejected_logps - ref_rejected_logps
        h = chosen_ratio - rejected_ratio
        if loss == "sigmoid":
            losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(
                -beta * h
            )
        elif loss == "robust":
            losses = (
                -(1 - label_smoothing) * F.logsigmoid(beta * h) + label_smoothing * F.logsigmoid(-beta * h)
            ) / (1 - 2 * label_smoothing)
        elif loss == "ipo":
            losses = (h - 1 / (2 * beta)) ** 2
        else:
            losses = torch.relu(1 - beta * h)
        chosen_rewards, rejected_rewards = beta * chosen_ratio, beta * rejected_ratio
    if sft_weight and loss != "orpo":
        if chosen_nll is None:
            raise ValueError("sft_weight > 0 needs chosen_nll (the mean NLL of each chosen answer)")
        losses = losses + sft_weight * chosen_nll
    return {
        "loss": losses,
        "chosen_rewards": chosen_rewards.detach(),
        "rejected_rewards": rejected_rewards.detach(),
    }


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """`log(1 - exp(x))` for x < 0, stable at both ends (Maechler 2012)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def kto_kl_estimate(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's reference point: the batch estimate of KL(policy || reference), a detached scalar >= 0.

    The KL rows are mismatched (prompt, completion) pairs: the completions of a batch rotated by one
    (row i's prompt with row i-1's completion; `KTOCollator(kl=True)` builds them), so the estimate
    uses the same answers as the rewards, under prompts they were not written for. The estimate is
    `mean(policy_kl_logps - ref_kl_logps)` over the batch (summed log-probs), clamped at 0 and detached:
    no gradient flows through the reference point. Under DDP, average it over ranks before the clamp
    (TRL gathers it).
    """
    return (policy_kl_logps - ref_kl_logps).mean().detach().clamp(min=0)


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable_mask: torch.Tensor,
    kl_ref_point: torch.Tensor | float,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """KTO (Ethayarajh et al. 2024, eq. 7; as TRL's `loss_type="kto"`) on unpaired rows.

    With `ratio = policy_logps - ref_logps` (summed answer log-probs) and `z0 = kl_ref_point`
    (see `kto_kl_estimate`), each row's loss is
    `desirable_weight * (1 - sigmoid(beta * (ratio - z0)))` for a desirable completion and
    `undesirable_weight * (1 - sigmoid(beta * (z0 - ratio)))` for an undesirable one.

    Args:
        policy_logps, ref_logps: `[B]` summed log-probs of each completion.
        desirable_mask: `[B]` bool, True for desirable completions.

    Returns:
        `{"loss": [B], "rewards": [B] = beta * ratio (detached)}`.
    """
    ratio = policy_logps - ref_logps
    desirable = desirable_mask.bool()
    loss = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (ratio - kl_ref_point))),
        undesirable_weight * (1 - torch.sigmoid(beta * (kl_ref_point - ratio))),
    )
    return {"loss": loss, "rewards": (beta * ratio).detach()}


def bradley_terry_loss(
    chosen_scores: torch.Tensor, rejected_scores: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """A reward model's pairwise loss: `-log(sigmoid(chosen - rejected - margin))`, `[B]` in and out.

    `margin` (optional, `[B]`) asks the chosen score to exceed the rejected one by that much, as in
    Llama 2's reward models (Touvron et al. 2023) and TRL's RewardTrainer.
    """
    diff = chosen_scores - rejected_scores
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)


# ---------------------------------------------------------------- next-token loss from hidden states

# Logit elements computed at once by `linear_cross_entropy` (32 MiB of float32): the `[tokens, vocab]`
# logits of a whole batch never exist, only one chunk of them.
CHUNK_ELEMENTS = 2**23


class _Chunks:
    """The output layer's logits of `hidden` (`[rows, H]`), a chunk of `chunk_rows` rows at a time, each chunk's
    float32 softmax and its rows' log-probabilities of their labels, and the softmax less one-hot cast for
    the gradient matmuls, in two buffers reused by every chunk.

    Matmuls run in the autocast dtype under autocast (the weight and the rows cast once here, not per chunk:
    a frozen weight is not in autocast's cache), else in `hidden`'s dtype; the softmax in float32. Reused
    buffers because a new float32 chunk (`CHUNK_ELEMENTS` * 4 bytes) is above glibc's largest mmap
    threshold: each would be fresh pages, faulted in again for every chunk.
    """

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor, chunk_rows: int):
        device = hidden.device.type
        self.dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        self.hidden, self.weight = hidden.to(self.dtype), weight.to(self.dtype)
        self.chunk_rows = chunk_rows
        shape = (min(chunk_rows, hidden.size(0)), weight.size(0))
        self.logits = hidden.new_empty(shape, dtype=self.dtype)
        # float32 logits are softmaxed in place
        self.probs = (
            self.logits if self.dtype == torch.float32 else hidden.new_empty(shape, dtype=torch.float32)
        )

    def __iter__(self):
        return iter(range(0, self.hidden.size(0), self.chunk_rows))

    def softmax(self, start: int, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The chunk at `start`: its float32 softmax (a view of a reused buffer, valid until the next call)
        and each row's float32 log-probability of its label (`labels`: `[rows, 1]`).

        One softmax pass and two max reductions, not a log-softmax and a second pass for its exp: the
        softmax at a row's largest logit is exactly `1 / sum(exp(logits - max))`, so `logsumexp =
        max(logits) - log(max(softmax))`, a value never below `1 / vocab` (no underflow, unlike the
        softmax at the label)."""
        rows = self.hidden[start : start + self.chunk_rows]
        logits = torch.mm(rows, self.weight.T, out=self.logits[: rows.size(0)])
        top = logits.amax(-1, keepdim=True).float()
        label_logits = logits.gather(-1, labels).float()  # before the float32 case overwrites them
        probs = self.probs[: rows.size(0)]
        if self.probs is not self.logits:
            probs.copy_(logits)
        torch._softmax(probs, -1, False, out=probs)
        return probs, label_logits - (top - probs.amax(-1, keepdim=True).log())

    def softmax_less_one_hot(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`softmax - one_hot(labels)`, the gradient of the summed NLL by the logits, made in place from the
        chunk's float32 softmax and handed back in the matmul dtype (cast into the logits buffer, free by then)."""
        probs.scatter_add_(-1, labels, torch.full_like(labels, -1.0, dtype=probs.dtype))
        if self.probs is self.logits:
            return probs
        return self.logits[: probs.size(0)].copy_(probs)


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T` against `labels`, chunk by chunk over the rows, with the
    gradients taken in the forward pass (each chunk's logits are dropped before the next chunk), as fused
    linear cross-entropy kernels do. Matmuls follow the ambient autocast; the softmax runs in float32."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_rows):
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        chunks = _Chunks(hidden, weight, chunk_rows)
        with torch.autocast(hidden.device.type, enabled=False):  # _Chunks casts for the matmuls itself
            for start in chunks:
                y = labels[start : start + chunk_rows].unsqueeze(-1)
                probs, label_logps = chunks.softmax(start, y)
                total -= label_logps.sum()
                d_logits = chunks.softmax_less_one_hot(probs, y)
                if want_hidden:
                    grad_hidden[start : start + chunk_rows] = d_logits @ chunks.weight
                if want_weight:
                    grad_weight += (d_logits.T @ chunks.hidden[start : start + chunk_rows]).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_output.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_output).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None


def _chunked_nll(hidden, weight, labels, chunk_rows) -> torch.Tensor:
    """`_LinearCrossEntropy`'s value alone, where no gradient is wanted (evaluation)."""
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    chunks = _Chunks(hidden, weight, chunk_rows)
    with torch.autocast(hidden.device.type, enabled=False):
        for start in chunks:
            total -= chunks.softmax(start, labels[start : start + chunk_rows].unsqueeze(-1))[1].sum()
    return total


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL straight from the last hidden states and the output layer's weight, and the
    number of trained tokens: `token_nll(hidden @ weight.T, labels)` without the `[B, T, V]` logits.

    Only the positions with a label are scored (prompt and padding positions cost no output-layer work),
    in chunks of about `chunk_elements` logits, each upcast to float32 for the softmax and dropped once
    its gradients are taken, so the loss adds one chunk of memory instead of several copies of the
    logits (the model output, its float32 upcast and the log-softmax autograd keeps). The gradients are
    those of `F.cross_entropy(..., reduction="sum")` on the same logits.

    Args:
        hidden: `[B, T, H]` hidden states after the final norm (what the output layer reads).
        weight: `[V, H]` output layer weight (no bias).
        labels: `[B, T]` token ids, -100 where nothing is trained; position t predicts t+1.
    """
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    rows = hidden[:, :-1][mask]
    targets = shift_labels[mask]
    chunk_rows = max(1, chunk_elements // weight.size(0))
    if torch.is_grad_enabled() and (rows.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(rows, weight, targets, chunk_rows), mask.sum()
    return _chunked_nll(rows, weight, targets, chunk_rows), mask.sum()


class _LinearTokenLogps(torch.autograd.Function):
    """Log-probability of each row's label under `hidden @ weight.T`, chunk by chunk, with the gradient for
    `hidden` taken in the forward pass (as `_LinearCrossEntropy`). The weight must be frozen: its gradient
    would need each token's incoming gradient, which only the backward pass knows."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_rows):
        want_hidden = ctx.needs_input_grad[0]
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        out = torch.empty(hidden.size(0), dtype=torch.float32, device=hidden.device)
        chunks = _Chunks(hidden, weight, chunk_rows)
        with torch.autocast(hidden.device.type, enabled=False):  # _Chunks casts for the matmuls itself
            for start in chunks:
                y = labels[start : start + chunk_rows].unsqueeze(-1)
                probs, label_logps = chunks.softmax(start, y)
                out[start : start + chunk_rows] = label_logps.squeeze(-1)
                if want_hidden:
                    # d(log p_y)/d(logits) = one_hot - softmax: the sign taken on the `[rows, H]` product
                    # rather than on the `[rows, vocab]` chunk.
                    d_logits = chunks.softmax_less_one_hot(probs, y)
                    grad_hidden[start : start + chunk_rows] = (d_logits @ chunks.weight).neg_()
        ctx.save_for_backward(grad_hidden)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (grad_hidden,) = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_output.unsqueeze(-1).to(grad_hidden.dtype)
        return grad_hidden, None, None, None


def linear_sequence_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    average: bool = False,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logps(hidden @ weight.T, labels, average)` from the last hidden states and a frozen output
    layer, without the `[B, T, V]` logits: only labelled positions are scored, in chunks of about
    `chunk_elements` logits (see `linear_cross_entropy`).

    Returns:
        `(logps [B], token_counts [B])` as `sequence_logps`.
    """
    if weight.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "linear_sequence_logps needs a frozen output layer; use sequence_logps on the logits"
        )
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    rows = hidden[:, :-1][mask]
    if not torch.is_grad_enabled():
        rows = rows.detach()  # no gradient work in the forward pass either
    row_of_token = mask.nonzero()[:, 0]
    chunk_rows = max(1, chunk_elements // weight.size(0))
    token_logps = _LinearTokenLogps.apply(rows, weight, shift_labels[mask], chunk_rows)
    logps = torch.zeros(labels.size(0), dtype=torch.float32, device=hidden.device)
    logps = logps.index_add(0, row_of_token, token_logps)
    counts = mask.sum(-1)
    if average:
        logps = logps / counts.clamp(min=1)
    return logps, counts
