"""The DPO LightningModule: chosen and rejected answers in one forward pass, a preference loss of the DPO
family (`hydratune.losses.preference_loss`), implicit rewards logged as rewards/chosen, rewards/rejected,
margin and accuracy.

The reference model: with LoRA, the same weights with the adapters switched off (no second copy); with
full fine-tuning, a frozen copy made when the model is built, or (`precompute_ref_logps`) the reference
log-probs of every pair computed once with the starting weights before training. The reference-free
losses (orpo, simpo) need none.
"""

from __future__ import annotations

import logging

import torch

from hydratune.losses import (
    MEAN_LOGP_LOSSES,
    REFERENCE_FREE_LOSSES,
    preference_loss,
    sequence_logps,
)
from hydratune.tasks.base import TaskModule

log = logging.getLogger(__name__)


class DPOModule(TaskModule):
    """Preference optimisation of a causal LM.

    Args:
        loss: sigmoid (DPO) | ipo | hinge | orpo | simpo.
        beta: the loss's temperature (DPO's beta, IPO's tau, ORPO's lambda, SimPO's beta).
        label_smoothing: the assumed share of flipped labels (conservative DPO; sigmoid and simpo).
        sft_weight: weight of an NLL term on the chosen answer (LLaMA-Factory's pref_ftx).
        simpo_gamma: SimPO's target reward margin.
        precompute_ref_logps: full fine-tuning: reference log-probs computed once before training.
        fused_loss: with adapters (the output layer frozen), score answers from the last hidden states in
            chunks (`hydratune.losses.linear_sequence_logps`) instead of from the full logits.
        Others: as `TaskModule`.
    """

    plot_metrics = ("val/accuracy", "val/margin", "val/rewards/chosen", "val/rewards/rejected")
    val_loss_is_nll = False

    def __init__(
        self,
        model: dict,
        peft: dict,
        optimizer: dict,
        scheduler: dict,
        loss: str = "sigmoid",
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        sft_weight: float = 0.0,
        simpo_gamma: float = 0.5,
        precompute_ref_logps: bool = False,
        fused_loss: bool = True,
        gradient_checkpointing: bool = False,
        quantization: dict | None = None,
        hub_token: str | None = None,
        nan_policy: str = "stop",
    ):
        super().__init__(
            model, peft, optimizer, scheduler, gradient_checkpointing, quantization, hub_token, nan_policy
        )
        # precompute_ref_logps: split -> (chosen, rejected) log-probs of every pair; saved in checkpoints so
        # a resumed run keeps the starting model's values (its weights are no longer the starting ones).
        self._ref_logps: dict[str, tuple[list[float], list[float]]] = {}

    # ---------------------------------------------------------------------------- reference model

    def configure_model(self) -> None:
        if self.model is not None:
            return
        super().configure_model()
        if not (self.hparams.loss in REFERENCE_FREE_LOSSES or self.hparams.precompute_ref_logps):
            self.keep_reference()

    def on_fit_start(self) -> None:
        self._attach_reference_logps()

    def on_validation_start(self) -> None:
        super().on_validation_start()
        self._attach_reference_logps()

    def _attach_reference_logps(self) -> None:
        """precompute_ref_logps: add the reference log-probs of every pair to the datasets as columns the
        collator batches. They come from the checkpoint on a resume (the weights are no longer the starting
        ones), else from the `datasets` cache beside the tokenized data (keyed by the tokenized split, the
        starting model and the loss's kind of log-prob: a second run on the same data and model computes
        nothing), else they are computed now, with the weights still the starting ones."""
        hp = self.hparams
        if not hp.precompute_ref_logps or hp.loss in REFERENCE_FREE_LOSSES or self._trainer is None:
            return
        datamodule = self.trainer.datamodule
        for split, attr in (("train", "train_dataset"), ("validation", "val_dataset")):
            dataset = getattr(datamodule, attr, None)
            if dataset is None or "ref_chosen_logps" in dataset.column_names:
                continue
            if split in self._ref_logps:
                chosen, rejected = self._ref_logps[split]
                dataset = dataset.add_column("ref_chosen_logps", chosen).add_column(
                    "ref_rejected_logps", rejected
                )
            else:
                dataset = self._with_reference_logps(dataset, datamodule.collate, split)
                self._ref_logps[split] = (
                    list(dataset["ref_chosen_logps"]),
                    list(dataset["ref_rejected_logps"]),
                )
            setattr(datamodule, attr, dataset)

    def _with_reference_logps(self, dataset, collate, split: str, batch_size: int = 16):
        """`dataset` with ref_chosen_logps / ref_rejected_logps columns: a cached `datasets.map`."""
        from hydratune.data.ops import fingerprint

        average = self.hparams.loss in MEAN_LOGP_LOSSES
        # In the training step's precision (bf16-mixed: under its autocast), so that at the start the policy's
        # log-probs equal the reference's and every margin is 0, as with a reference computed each step.
        precision = self.trainer.precision_plugin
        key = fingerprint(
            dataset._fingerprint,
            self._starting_model_identity(),
            average,
            self.trainer.precision,
            "ref-logps-2",
        )
        was_training = self.model.training
        self.model.eval()
        computed = []

        @torch.no_grad()
        def add(batch: dict) -> dict:
            rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
            inputs = {k: v.to(self.device) for k, v in collate(rows).items()}
            with precision.forward_context():
                logps = sequence_logps(self.forward(inputs), inputs["labels"], average=average)[0].tolist()
            computed.append(len(rows))
            return {"ref_chosen_logps": logps[: len(rows)], "ref_rejected_logps": logps[len(rows) :]}

        try:
            dataset = dataset.map(add, batched=True, batch_size=batch_size, new_fingerprint=key,
                                  desc=f"reference log-probs ({split})")  # fmt: skip
        finally:
            self.model.train(was_training)
        how = "computed once" if computed else "read from the data cache"
        log.info("reference log-probs of %d %s pairs %s", len(dataset), split, how)
        return dataset

    def _starting_model_identity(self) -> dict:
        """What identifies the starting weights in a cache key: the model settings, the hub commit, and for a
        local folder the size and modification time of its weight files."""
        from pathlib import Path

        settings = dict(self.hparams.model)
        path = Path(str(settings.get("pretrained_model_name_or_path", "")))
        files = []
        if path.is_dir():
            for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
                stat = f.stat()
                files.append((f.name, stat.st_size, stat.st_mtime_ns))
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        commit = getattr(base.config, "_commit_hash", None)
        return {
            "model": settings,
            "quantization": self.hparams.quantization,
            "commit": commit,
            "files": files,
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._ref_logps:
            checkpoint["reference_logps"] = self._ref_logps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._ref_logps = {k: tuple(v) for k, v in checkpoint.get("reference_logps", {}).items()}

    @torch.no_grad()
    def reference_logps(self, batch: dict) -> torch.Tensor | None:
        """[2B] reference log-probs of the batch's rows, or None for the reference-free losses."""
        hp = self.hparams
        if hp.loss in REFERENCE_FREE_LOSSES:
            return None
        if "ref_chosen_logps" in batch:
            return torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]).to(self.device)
        average = hp.loss in MEAN_LOGP_LOSSES
        if hp.precompute_ref_logps and not self.uses_adapters and not self._reference:
            # The evaluation before training: Lightning builds its dataloader before on_validation_start adds
            # the precomputed columns to the data. At step 0 the weights are the reference's own.
            if self.global_step:
                raise RuntimeError(
                    f"precompute_ref_logps: a batch without reference log-probs at step {self.global_step}"
                )
            if self.fused_scoring_head() is not None:
                return self.answer_logps(batch, average)[0]
            logits = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
            )
            return sequence_logps(logits.logits, batch["labels"], average=average)[0]
        if self.fused_scoring_head() is not None:
            with self.adapters_off():
                return self.answer_logps(batch, average)[0]
        logits = self.reference_logits(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return sequence_logps(logits, batch["labels"], average=average)[0]

    # ---------------------------------------------------------------------------------- the loss

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits

    def pair_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per-pair loss and rewards of a batch of B pairs (2B rows: chosen, then rejected)."""
        hp = self.hparams
        logps, counts = self.answer_logps(batch, self.hparams.loss in MEAN_LOGP_LOSSES)
        half = logps.size(0) // 2
        ref = self.reference_logps(batch)
        chosen_nll = None
        if hp.sft_weight or hp.loss == "orpo":  # the mean NLL per token of each chosen answer
            sums = logps[:half] * counts[:half] if hp.loss in MEAN_LOGP_LOSSES else logps[:half]
            chosen_nll = -sums / counts[:half].clamp(min=1)
        out = preference_loss(
            logps[:half], logps[half:],
            None if ref is None else ref[:half], None if ref is None else ref[half:],
            loss=hp.loss, beta=hp.beta, label_smoothing=hp.label_smoothing, simpo_gamma=hp.simpo_gamma,
            chosen_nll=chosen_nll, sft_weight=hp.sft_weight,
        )  # fmt: skip
        if hp.loss == "ipo":
            # IPO's loss reads mean log-ratios per token; its rewards (and so accuracy and margin) are of the
            # summed ones, as for the other losses with a reference and as TRL logs them.
            ratios = ((logps - ref) * counts).detach()
            out["chosen_rewards"], out["rejected_rewards"] = hp.beta * ratios[:half], hp.beta * ratios[half:]
        # the answers' summed log-probs, as TRL logs them (logps/chosen falling is DPO's usual warning sign)
        sums = (logps * counts if hp.loss in MEAN_LOGP_LOSSES else logps).detach()
        out["chosen_logps"], out["rejected_logps"] = sums[:half], sums[half:]
        if chosen_nll is not None:
            out["nll"] = chosen_nll.detach()
        return out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.pair_losses(batch)
        total = out["loss"].sum()
        if not self.finite(total):
            return None
        pairs = out["loss"].size(0)
        margin = out["chosen_rewards"] - out["rejected_rewards"]
        self.log_dict(
            {
                "train/loss": self.step_mean(total, pairs),
                "train/accuracy": (margin > 0).float().mean(),
                "train/margin": margin.mean(),
                "train/rewards/chosen": out["chosen_rewards"].mean(),
                "train/rewards/rejected": out["rejected_rewards"].mean(),
                "train/logps/chosen": out["chosen_logps"].mean(),
                "train/logps/rejected": out["rejected_logps"].mean(),
                **({"train/nll": out["nll"].mean()} if "nll" in out else {}),
            },
            batch_size=pairs,
        )
        # A mean over the pairs of the whole optimizer step (every accumulated micro-batch and rank), as
        # SFT's loss is a mean over its tokens: `window_tokens` counts pairs here (one unit each).
        window = batch["window_tokens"].clamp(min=1) if "window_tokens" in batch else pairs
        return self.optimize(total / window * self.trainer.accumulate_grad_batches)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.pair_losses(batch)
        margin = out["chosen_rewards"] - out["rejected_rewards"]
        self.add_to_validation(
            loss=out["loss"].sum().item(),
            pairs=out["loss"].size(0),
            correct=(margin > 0).sum().item(),
            margin=margin.sum().item(),
            chosen=out["chosen_rewards"].sum().item(),
            rejected=out["rejected_rewards"].sum().item(),
            chosen_logps=out["chosen_logps"].sum().item(),
            rejected_logps=out["rejected_logps"].sum().item(),
        )

    def on_validation_epoch_end(self) -> None:
        totals = self.validation_totals()
        n = max(totals.get("pairs", 0.0), 1)
        scalars = {
            "val/loss": totals.get("loss", 0.0) / n,
            "val/accuracy": totals.get("correct", 0.0) / n,
            "val/margin": totals.get("margin", 0.0) / n,
            "val/rewards/chosen": totals.get("chosen", 0.0) / n,
            "val/rewards/rejected": totals.get("rejected", 0.0) / n,
            "val/logps/chosen": totals.get("chosen_logps", 0.0) / n,
            "val/logps/rejected": totals.get("rejected_logps", 0.0) / n,
        }
        self.log("val/accuracy", scalars.pop("val/accuracy"), prog_bar=True)
        self.log_dict(scalars)
        log.info(
            "step %d: val/loss %.4f, val/accuracy %.3f, val/margin %.4f",
            self.global_step, scalars["val/loss"], totals.get("correct", 0.0) / n, scalars["val/margin"],
        )  # fmt: skip
