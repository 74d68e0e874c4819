"""The KTO LightningModule: unpaired completions flagged desirable or not (Ethayarajh et al. 2024).

Each batch holds B (prompt, completion) rows and B mismatched rows (a prompt with another row's completion)
whose log-probs estimate the reference point, the policy's KL from the reference model. The reference is the
model with its adapters switched off (LoRA) or a frozen copy of the starting weights.
"""

from __future__ import annotations

import logging

import torch

from hydratune.losses import kto_kl_estimate, kto_loss, sequence_logps
from hydratune.tasks.base import TaskModule

log = logging.getLogger(__name__)


class KTOModule(TaskModule):
    """KTO on unpaired data.

    Args:
        beta: the temperature of the implicit reward.
        desirable_weight, undesirable_weight: the loss weights of the two kinds of rows (the paper suggests
            keeping weight x count about equal, or up to 4:3 for desirable).
        fused_loss: with adapters (the output layer frozen), score completions from the last hidden states
            in chunks (`hydratune.losses.linear_sequence_logps`) instead of from the full logits.
        Others: as `TaskModule`.
    """

    plot_metrics = ("val/margin", "val/rewards/chosen", "val/rewards/rejected", "val/kl")
    val_loss_is_nll = False

    def __init__(
        self,
        model: dict,
        peft: dict,
        optimizer: dict,
        scheduler: dict,
        beta: float = 0.1,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
        gradient_checkpointing: bool = False,
        quantization: dict | None = None,
        hub_token: str | None = None,
        nan_policy: str = "stop",
        fused_loss: bool = True,
    ):
        super().__init__(
            model, peft, optimizer, scheduler, gradient_checkpointing, quantization, hub_token, nan_policy
        )

    def configure_model(self) -> None:
        if self.model is not None:
            return
        super().configure_model()
        self.keep_reference()

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits

    def row_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per-row loss and rewards of B rows (plus their B KL rows), and the batch's KL estimate."""
        hp = self.hparams
        rows = batch["desirable"].size(0)
        logps = self.answer_logps(batch)[0]
        if self.fused_scoring_head() is not None:
            with torch.no_grad(), self.adapters_off():
                ref = self.answer_logps(batch)[0]
        else:
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            ref = sequence_logps(self.reference_logits(**inputs), batch["labels"])[0]
        if self._trainer is not None and self.trainer.world_size > 1:
            # One reference point for every rank: the ranks' mean, clamped after averaging.
            kl = (logps[rows:] - ref[rows:]).mean().detach()
            kl = self.trainer.strategy.reduce(kl, reduce_op="mean").clamp(min=0)
        else:
            kl = kto_kl_estimate(logps[rows:], ref[rows:])
        out = kto_loss(
            logps[:rows],
            ref[:rows],
            batch["desirable"],
            kl,
            hp.beta,
            hp.desirable_weight,
            hp.undesirable_weight,
        )
        return out | {"kl": kl}

    @staticmethod
    def _reward_sums(out: dict, desirable: torch.Tensor) -> dict[str, float]:
        rewards = out["rewards"]
        return {
            "chosen": rewards[desirable].sum().item(),
            "chosen_rows": desirable.sum().item(),
            "rejected": rewards[~desirable].sum().item(),
            "rejected_rows": (~desirable).sum().item(),
        }

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.row_losses(batch)
        total = out["loss"].sum()
        if not self.finite(total):
            return None
        rows = out["loss"].size(0)
        sums = self._reward_sums(out, batch["desirable"].bool())
        chosen = sums["chosen"] / max(sums["chosen_rows"], 1)
        rejected = sums["rejected"] / max(sums["rejected_rows"], 1)
        self.log_dict(
            {
                "train/loss": self.step_mean(total, rows),
                "train/kl": out["kl"],
                "train/margin": chosen - rejected,
            },
            batch_size=rows,
        )
        # A mean over the rows of the whole optimizer step (window_tokens counts rows here).
        window = batch["window_tokens"].clamp(min=1) if "window_tokens" in batch else rows
        return self.optimize(total / window * self.trainer.accumulate_grad_batches)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.row_losses(batch)
        rows = out["loss"].size(0)
        sums = self._reward_sums(out, batch["desirable"].bool())
        self.add_to_validation(loss=out["loss"].sum().item(), rows=rows, kl=out["kl"].item() * rows, **sums)

    def on_validation_epoch_end(self) -> None:
        totals = self.validation_totals()
        n = max(totals.get("rows", 0.0), 1)
        chosen = totals.get("chosen", 0.0) / max(totals.get("chosen_rows", 0.0), 1)
        rejected = totals.get("rejected", 0.0) / max(totals.get("rejected_rows", 0.0), 1)
        loss = totals.get("loss", 0.0) / n
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/margin", chosen - rejected, prog_bar=True)
        self.log_dict(
            {
                "val/rewards/chosen": chosen,
                "val/rewards/rejected": rejected,
                "val/kl": totals.get("kl", 0.0) / n,
            }
        )
        log.info("step %d: val/loss %.4f, val/margin %.4f", self.global_step, loss, chosen - rejected)
