"""Per-step work of hydratune's own callbacks: cheaper, with the same logged values."""

from __future__ import annotations

import lightning as L
import torch
from conftest import Repeat, batch_samples, make_module

from hydratune.callbacks import GradNorm
from hydratune.data.collate import PadCollator


class _Record(L.Callback):
    """After GradNorm: the logged norm, and the norm computed from the gradients another way."""

    def __init__(self):
        self.logged: list[float] = []
        self.reference: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.reference.append(float(torch.nn.utils.get_total_norm(grads)))
        self.logged.append(float(trainer.callback_metrics["train/grad_norm"]))


def test_grad_norm_is_the_norm_of_the_trained_gradients_before_clipping(tiny_model_dir, tokenizer):
    torch.manual_seed(0)
    module = make_module(tiny_model_dir, overrides=["optimizer.lr=1e-2"])
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    record = _Record()
    trainer = L.Trainer(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[GradNorm(), record],
        accelerator="cpu",
        gradient_clip_val=1e-3,  # clipping happens after the norm is taken: it must not change it
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Repeat(batch), batch_size=None))
    assert len(record.logged) == 3
    assert all(norm > 1e-3 for norm in record.logged)  # above the clip value: measured before clipping
    torch.testing.assert_close(record.logged, record.reference, rtol=1e-5, atol=0)
