"""The SFT LightningModule: next-token loss over the trained tokens, normalised per optimizer step."""

from __future__ import annotations

import logging
import math

import torch

from hydratune.losses import linear_cross_entropy, token_nll
from hydratune.tasks.base import TaskModule

log = logging.getLogger(__name__)


class SFTModule(TaskModule):
    """Supervised fine-tuning of a causal LM.

    Args:
        fused_loss: compute the loss from the last hidden states in chunks, only at trained positions
            (`hydratune.losses.linear_cross_entropy`), instead of from the full `[batch, length, vocab]`
            logits, where the model allows it (`TaskModule.output_layer`). Same loss and gradients; with a
            real vocabulary the logits are the largest tensors of a step, and this never holds them whole.
        Others: as `TaskModule`.
    """

    def __init__(
        self,
        model: dict,
        peft: dict,
        optimizer: dict,
        scheduler: dict,
        gradient_checkpointing: bool = False,
        quantization: dict | None = None,
        hub_token: str | None = None,
        nan_policy: str = "stop",
        fused_loss: bool = True,
    ):
        super().__init__(
            model, peft, optimizer, scheduler, gradient_checkpointing, quantization, hub_token, nan_policy
        )

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            position_ids=batch.get("position_ids"),
            use_cache=False,
        ).logits

    def nll(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed NLL of the batch's trained tokens and their count."""
        plain = self.output_layer() if self.hparams.fused_loss else None
        if plain is None:
            return token_nll(self(batch), batch["labels"])
        decoder, head = plain
        hidden = decoder(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            position_ids=batch.get("position_ids"),
            use_cache=False,
        ).last_hidden_state
        return linear_cross_entropy(hidden, head.weight, batch["labels"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        nll, tokens = self.nll(batch)
        if not self.finite(nll):
            return None
        self.log(
            "train/loss",
            self.step_mean(nll, tokens),
            prog_bar=True,
            batch_size=batch["input_ids"].size(0),
        )
        # Divide by the trained tokens of the whole optimizer step (all accumulated micro-batches),
        # not by this micro-batch's: a mean of per-batch means over-weights short samples.
        # Lightning divides the returned loss by accumulate_grad_batches, hence the product.
        window = batch.get("window_tokens", tokens).clamp(min=1)
        return self.optimize(nll / window * self.trainer.accumulate_grad_batches)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        nll, tokens = self.nll(batch)
        self.add_to_validation(nll=nll.item(), tokens=tokens.item())

    def on_validation_epoch_end(self) -> None:
        # Token-weighted over the whole validation set and every rank, not a mean of batch means.
        totals = self.validation_totals()
        loss = totals.get("nll", 0.0) / max(totals.get("tokens", 0.0), 1)
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/ppl", math.exp(min(loss, 50.0)))
        if (
            self.trainer.is_global_zero and not self.trainer.sanity_checking
        ):  # as the other tasks say theirs (L8)
            log.info("step %d: val/loss %.4f (ppl %.2f)", self.global_step, loss, math.exp(min(loss, 50.0)))
