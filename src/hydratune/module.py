"""LightningModules. The Hugging Face model is built inside the module, from plain-dict hyperparameters."""

from __future__ import annotations

import logging
import math

import lightning as L
import torch
import torch.nn.functional as F

from hydratune.data.tokenize import IGNORE_INDEX
from hydratune.model import apply_peft, count_parameters, enable_gradient_checkpointing, load_model
from hydratune.optim import build_optimizer, build_scheduler, is_fused_backward, is_schedule_free

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


class NonFiniteLoss(RuntimeError):
    """A NaN/inf training loss under nan_policy=stop (train.run turns it into a one-line error)."""


def check_finite(module: L.LightningModule, loss: torch.Tensor, policy: str) -> bool:
    """Whether `loss` is finite. If not: nan_policy=skip logs it and the caller returns None, so Lightning
    skips backward and leaves the weights alone; nan_policy=stop raises NonFiniteLoss."""
    if torch.isfinite(loss).all():
        return True
    message = f"train/loss is {loss.item()} at step {module.global_step}"
    if policy != "skip":
        raise NonFiniteLoss(
            f"{message}: stopped (nan_policy=stop); lower optimizer.lr or set nan_policy=skip"
        )
    module.skipped_batches += 1
    log.warning("%s: batch skipped (nan_policy=skip; %d so far)", message, module.skipped_batches)
    return False


class SFTModule(L.LightningModule):
    """Supervised fine-tuning of a causal LM.

    Args:
        model: `from_pretrained` settings (the model config group, token removed).
        peft: the peft config group.
        optimizer: the optimizer config group (a `_target_` node).
        scheduler: the scheduler config group.
        gradient_checkpointing: recompute activations in backward to save memory.
        quantization: the quantization config group (base weights in 4 or 8 bits).
        hub_token: HF token for gated models; kept out of the saved hyperparameters.
        nan_policy: a non-finite training loss: "stop" (raise NonFiniteLoss) or "skip" (no update).
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
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["hub_token"])
        self._hub_token = hub_token
        self.model = None
        # Checkpoints hold only trainable weights, so loading one is not strict.
        self.strict_loading = False
        self._val_nll = 0.0
        self._val_tokens = 0
        # LOMO/AdaLomo update inside backward, so Lightning must not call backward itself.
        self.automatic_optimization = not is_fused_backward(optimizer)
        self._schedule_free = is_schedule_free(optimizer)
        self.skipped_batches = 0  # non-finite losses skipped under nan_policy=skip

    def configure_model(self) -> None:
        if self.model is not None:
            return
        model = load_model(self.hparams.model, self._hub_token, self.hparams.quantization)
        if self.hparams.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model = apply_peft(model, self.hparams.peft)
        self.model.train()  # from_pretrained returns eval mode; Lightning keeps modes as it finds them
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
        if not check_finite(self, nll, self.hparams.nan_policy):
            return None
        self.log(
            "train/loss",
            nll.detach() / tokens.clamp(min=1),
            prog_bar=True,
            batch_size=batch["input_ids"].size(0),
        )
        # Divide by the trained tokens of the whole optimizer step (all accumulated micro-batches),
        # not by this micro-batch's: a mean of per-batch means over-weights short samples.
        # Lightning divides the returned loss by accumulate_grad_batches, hence the product.
        window = batch.get("window_tokens", tokens).clamp(min=1)
        loss = nll / window * self.trainer.accumulate_grad_batches
        if not self.automatic_optimization:
            self._fused_backward_step(loss)
        return loss

    def _fused_backward_step(self, loss: torch.Tensor) -> None:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        lr = scheduler.get_last_lr()[0]

        def backward_and_update():
            if getattr(optimizer.optimizer, "clip_grad_norm", None):
                optimizer.optimizer.grad_norm(loss)  # LOMO needs the global norm before its fused pass
            optimizer.optimizer.fused_backward(loss, lr)

        optimizer.step(closure=backward_and_update)
        scheduler.step()

    def _schedule_free_mode(self, train: bool) -> None:
        # Schedule-free optimizers hold two weight sequences; eval mode puts the averaged one in place.
        if self._schedule_free and self._trainer is not None:
            for optimizer in self.trainer.optimizers:
                optimizer.train() if train else optimizer.eval()

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        self._schedule_free_mode(True)

    def on_validation_start(self) -> None:
        self._schedule_free_mode(False)

    def on_train_end(self) -> None:
        self._schedule_free_mode(False)

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
        optimizer = build_optimizer(self.hparams.optimizer, self.model)
        scheduler = build_scheduler(
            self.hparams.scheduler, optimizer, int(self.trainer.estimated_stepping_batches)
        )
        if self.hparams.scheduler["name"] == "reduce_lr_on_plateau":
            # Stepped on val/loss after each evaluation; strict=False: no value before the first one.
            config = {"scheduler": scheduler, "monitor": "val/loss", "strict": False}
            interval = self.trainer.val_check_interval
            if isinstance(interval, int):
                config |= {"interval": "step", "frequency": interval}
            return {"optimizer": optimizer, "lr_scheduler": config}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Keep what was trained; the frozen base weights are reloaded from the hub id or path.
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
