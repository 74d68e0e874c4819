"""The reward-model LightningModule: a sequence classifier with one output (the reward), trained on pairs with
the Bradley-Terry loss (chosen scored above rejected, by an optional margin)."""

from __future__ import annotations

import logging

import torch

from hydratune.losses import bradley_terry_loss
from hydratune.model import classifier_head, classifier_peft, load_model
from hydratune.tasks.base import TaskModule

log = logging.getLogger(__name__)

REWARD_LABEL = "reward"  # the one label of an exported reward model (config.id2label)


class RewardModule(TaskModule):
    """Reward modelling.

    Args:
        pad_token_id: the tokenizer's pad id (decoder models score the last token that is not padding).
        margin: how far the chosen reward must exceed the rejected one (0: plain Bradley-Terry); a `margin`
            column in the data gives each pair its own, in its place (TRL's RewardTrainer).
        center_rewards_coefficient: weight of `(chosen + rejected)^2`, which keeps the rewards centred on 0
            (Eisenstein et al. 2023; TRL's RewardConfig option of the same name). 0 or None: no such term.
        Others: as `TaskModule`.
    """

    plot_metrics = ("val/accuracy", "val/margin")
    val_loss_is_nll = False

    def __init__(
        self,
        model: dict,
        peft: dict,
        optimizer: dict,
        scheduler: dict,
        pad_token_id: int | None,
        margin: float = 0.0,
        center_rewards_coefficient: float | None = None,
        gradient_checkpointing: bool = False,
        quantization: dict | None = None,
        hub_token: str | None = None,
        nan_policy: str = "stop",
    ):
        super().__init__(
            model, peft, optimizer, scheduler, gradient_checkpointing, quantization, hub_token, nan_policy
        )

    def build_model(self):
        hp = self.hparams
        head = classifier_head([REWARD_LABEL], hp.pad_token_id)
        return load_model(hp.model, self._hub_token, hp.quantization, head=head)

    def peft_config(self) -> dict:
        return classifier_peft(self.hparams.peft)

    def forward(self, batch: dict) -> torch.Tensor:
        """One reward per row, shape (rows,)."""
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]

    def scores(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        rewards = self(batch).float()
        half = rewards.size(0) // 2
        return rewards[:half], rewards[half:]

    def pair_losses(self, batch: dict, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        """Each pair's loss: Bradley-Terry with the pair's margin (its column, or task.margin), plus the centring
        term when asked."""
        margin = batch.get("margin")
        if margin is None and self.hparams.margin:
            margin = torch.full_like(chosen, self.hparams.margin)
        losses = bradley_terry_loss(chosen, rejected, None if margin is None else margin.to(chosen))
        if self.hparams.center_rewards_coefficient:
            losses = losses + self.hparams.center_rewards_coefficient * (chosen + rejected) ** 2
        return losses

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        chosen, rejected = self.scores(batch)
        losses = self.pair_losses(batch, chosen, rejected)
        total = losses.sum()
        if not self.finite(total):
            return None
        pairs = losses.size(0)
        self.log_dict(
            {
                "train/loss": self.step_mean(total, pairs),
                "train/accuracy": (chosen > rejected).float().mean(),
                "train/margin": (chosen - rejected).mean().detach(),
            },
            batch_size=pairs,
        )
        # A mean over the pairs of the whole optimizer step (window_tokens counts pairs here).
        window = batch["window_tokens"].clamp(min=1) if "window_tokens" in batch else pairs
        return self.optimize(total / window * self.trainer.accumulate_grad_batches)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        chosen, rejected = self.scores(batch)
        self.add_to_validation(
            loss=self.pair_losses(batch, chosen, rejected).sum().item(),
            pairs=chosen.size(0),
            correct=(chosen > rejected).sum().item(),
            margin=(chosen - rejected).sum().item(),
        )

    def on_validation_epoch_end(self) -> None:
        totals = self.validation_totals()
        n = max(totals.get("pairs", 0.0), 1)
        loss, accuracy = totals.get("loss", 0.0) / n, totals.get("correct", 0.0) / n
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/accuracy", accuracy, prog_bar=True)
        self.log("val/margin", totals.get("margin", 0.0) / n)
        log.info("step %d: val/loss %.4f, val/accuracy %.3f", self.global_step, loss, accuracy)
