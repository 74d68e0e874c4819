"""The classification LightningModule: `AutoModelForSequenceClassification`, cross-entropy on one label per
row, torchmetrics accuracy/F1/precision/recall and a confusion matrix at every evaluation.

Decoder models pool their last non-pad token (as transformers does), encoders their own pooler.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from hydratune.model import classifier_head, classifier_peft, load_model
from hydratune.tasks.base import TaskModule
from hydratune.tasks.classification.report import confusion_figure, metric_name

log = logging.getLogger(__name__)


class ClassificationModule(TaskModule):
    """Fine-tuning of a sequence classifier.

    Args:
        labels: label names by class id (from the data).
        pad_token_id: the tokenizer's pad id, written into the model config (decoder pooling needs it).
        class_weights: cross-entropy weight per class for the training loss (val/loss is unweighted).
        Others: as `TaskModule`.
    """

    # The loss is over classes, not tokens: no perplexity; accuracy and macro F1 are the run's summary lines.
    val_loss_is_nll = False
    plot_metrics = ("val/acc", "val/f1_macro")

    def __init__(
        self,
        model: dict,
        peft: dict,
        optimizer: dict,
        scheduler: dict,
        labels: list[str],
        pad_token_id: int | None,
        class_weights: list[float] | None = None,
        gradient_checkpointing: bool = False,
        quantization: dict | None = None,
        hub_token: str | None = None,
        nan_policy: str = "stop",
    ):
        super().__init__(
            model, peft, optimizer, scheduler, gradient_checkpointing, quantization, hub_token, nan_policy
        )
        from torchmetrics import MetricCollection
        from torchmetrics.classification import (
            MulticlassAccuracy,
            MulticlassConfusionMatrix,
            MulticlassF1Score,
            MulticlassPrecision,
            MulticlassRecall,
        )

        k = len(labels)
        self.val_metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(k, average="micro"),
                "f1_macro": MulticlassF1Score(k, average="macro"),
                "precision": MulticlassPrecision(k, average=None),
                "recall": MulticlassRecall(k, average=None),
                "confusion": MulticlassConfusionMatrix(k),
            }
        )
        weights = torch.tensor(class_weights, dtype=torch.float) if class_weights else None
        self.register_buffer("loss_weights", weights, persistent=False)
        self.last_confusion: torch.Tensor | None = None  # rows: true class, columns: predicted
        self.last_metrics: dict[str, float] = {}

    def build_model(self):
        hp = self.hparams
        head = classifier_head(hp.labels, hp.pad_token_id)
        return load_model(hp.model, self._hub_token, hp.quantization, head=head)

    def peft_config(self) -> dict:
        return classifier_peft(self.hparams.peft)

    def forward(self, batch: dict) -> torch.Tensor:
        """Class logits, shape (batch, num_labels)."""
        return self.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch).float(), batch["labels"], weight=self.loss_weights)
        if not self.finite(loss):
            return None
        rows = batch["labels"].size(0)
        self.log("train/loss", self.step_mean(loss * rows, rows), prog_bar=True, batch_size=rows)
        return self.optimize(loss)

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self.val_metrics.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch).float()
        loss_sum = F.cross_entropy(logits, batch["labels"], reduction="sum").item()
        self.add_to_validation(loss=loss_sum, rows=batch["labels"].size(0))
        self.val_metrics.update(logits.argmax(-1), batch["labels"])

    def on_validation_epoch_end(self) -> None:
        results = self.val_metrics.compute()  # torchmetrics reduces over every rank
        totals = self.validation_totals()
        loss = totals.get("loss", 0.0) / max(totals.get("rows", 0.0), 1)
        scalars = {
            "val/loss": loss,
            "val/acc": float(results["acc"]),
            "val/f1_macro": float(results["f1_macro"]),
        }
        for i, name in enumerate(self.hparams.labels):
            scalars[f"val/precision/{metric_name(name)}"] = float(results["precision"][i])
            scalars[f"val/recall/{metric_name(name)}"] = float(results["recall"][i])
        # The check of exported weights that are not the last step's (load_best_model_at_end: report.finish) is
        # no point of the loggers' curves, which would show best.ckpt's scores at the last step (review L12).
        # (Lightning refuses one key logged with two settings of `logger` in a trainer: not logged at all.)
        curve = not getattr(self, "checking_export", False)
        if curve:
            self.log("val/loss", loss, prog_bar=True)
            self.log("val/acc", scalars["val/acc"], prog_bar=True)
            self.log_dict({k: v for k, v in scalars.items() if k not in ("val/loss", "val/acc")})
        self.last_metrics = scalars
        self.last_confusion = results["confusion"].cpu()
        sanity = self._trainer is not None and self.trainer.sanity_checking
        self.evaluated_step = None if sanity else self.global_step
        log.info(
            "%s: val/loss %.4f, val/acc %.4f, val/f1_macro %.4f",
            f"step {self.global_step}" if curve else "the exported weights", loss, scalars["val/acc"],
            scalars["val/f1_macro"],
        )  # fmt: skip
        if self._trainer is not None and not self.trainer.sanity_checking and curve:
            self._log_confusion_figure()

    def _log_confusion_figure(self) -> None:
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_figure"):  # TensorBoard's SummaryWriter
                figure = confusion_figure(self.last_confusion, self.hparams.labels)
                experiment.add_figure("val/confusion_matrix", figure, global_step=self.global_step)
