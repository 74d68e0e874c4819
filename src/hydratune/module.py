"""LightningModules. The Hugging Face model is built inside the module, from plain-dict hyperparameters."""

from __future__ import annotations

import logging
import math

import lightning as L
import torch
import torch.nn.functional as F

from hydratune.data.tokenize import IGNORE_INDEX
from hydratune.model import apply_peft, count_parameters, enable_gradient_checkpointing, load_model
from hydratune.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


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


class SFTModule(L.LightningModule):
    """Supervised fine-tuning of a causal LM.

    Args:
        model: `from_pretrained` settings (the model config group, token removed).
        peft: the peft config group.
        optimizer: the optimizer config group (a `_target_` node).
        scheduler: the scheduler config group.
        gradient_checkpointing: recompute activations in backward to save memory.
        hub_token: HF token for gated models; kept out of the saved hyperparameters.
    """

    def __init__(
        self,
        model: dict,
        peft: dict,
        optimizer: dict,
        scheduler: dict,
        gradient_checkpointing: bool = False,
        hub_token: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["hub_token"])
        self._hub_token = hub_token
        self.model = None
        # Checkpoints hold only trainable weights, so loading one is not strict.
        self.strict_loading = False
        self._val_nll = 0.0
        self._val_tokens = 0

    def configure_model(self) -> None:
        if self.model is not None:
            return
        model = load_model(self.hparams.model, self._hub_token)
        if self.hparams.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model = apply_peft(model, self.hparams.peft)
        trainable, total = count_parameters(self.model)
        log.info(
            "parameters: %s trainable of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total
        )

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            position_ids=batch.get("position_ids"),
            use_cache=False,
        ).logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        nll, tokens = token_nll(self(batch), batch["labels"])
        loss = nll / tokens.clamp(min=1)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].size(0))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_nll, self._val_tokens = 0.0, 0

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        nll, tokens = token_nll(self(batch), batch["labels"])
        self._val_nll += nll.item()
        self._val_tokens += tokens.item()

    def on_validation_epoch_end(self) -> None:
        # Token-weighted over the whole validation set, not a mean of batch means.
        loss = self._val_nll / max(self._val_tokens, 1)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log("val/ppl", math.exp(min(loss, 50.0)), sync_dist=True)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.hparams.optimizer, self.model.named_parameters())
        scheduler = build_scheduler(
            self.hparams.scheduler, optimizer, int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Keep what was trained; the frozen base weights are reloaded from the hub id or path.
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
