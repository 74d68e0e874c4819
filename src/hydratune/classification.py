"""`task=classification`: labels built from the data, a DataModule, a LightningModule with torchmetrics,
and loading/predicting with an exported classifier (adapter/, merged/ or model/).

The model is `AutoModelForSequenceClassification`: decoder models pool their last non-pad token (as
transformers does), encoders their own pooler. Texts are encoded by `encode_texts` in training,
evaluation, prediction and the export parity check alike.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from hydratune.data.labels import VAL_SPLITS, build_label_names, encode_texts
from hydratune.data.labels import label_key as _label_key
from hydratune.data.labels import missing as _missing
from hydratune.data.ops import build_splits
from hydratune.data.sampler import eval_loader, train_loader
from hydratune.errors import UserError
from hydratune.model import apply_peft, count_parameters, enable_gradient_checkpointing, load_classifier
from hydratune.module import SFTModule, check_finite

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- data


def class_weights(setting, counts: list[int]) -> list[float] | None:
    """Loss weights per class: None, `balanced` (n / (k * count)), or an explicit list of k numbers."""
    if setting in (None, "none"):
        return None
    k = len(counts)
    if setting == "balanced":
        total = sum(counts)
        return [total / (k * max(c, 1)) for c in counts]
    if (
        isinstance(setting, list | tuple)
        and len(setting) == k
        and all(isinstance(w, int | float) for w in setting)
    ):
        return [float(w) for w in setting]
    raise UserError(
        f"task.class_weights={setting!r}: use null, balanced, or a list of {k} numbers (one per class)"
    )


class ClassificationCollator:
    """Right-pads `input_ids` with the pad id; `labels` is one class id per row."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(s["input_ids"]) for s in samples)
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for i, sample in enumerate(samples):
            n = len(sample["input_ids"])
            input_ids[i, :n] = torch.as_tensor(sample["input_ids"])
            attention_mask[i, :n] = 1
        labels = torch.tensor([s["label"] for s in samples], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class ClassificationDataModule(L.LightningDataModule):
    """Train/validation data for sequence classification.

    Args:
        tokenizer: the model's tokenizer (needs a pad token).
        cfg: the dataset config as a plain dict: sources, text_column, text_pair_column, label_column,
            labels, pair_separator, max_seq_length, batch_size, eval_batch_size, num_workers.
        seed: seeds the shuffling of the training set.
        cache_dir: where `datasets` keeps loaded files.

    After `setup()`: `labels` (names by id) and `class_counts` (train rows per class).
    """

    def __init__(self, tokenizer, cfg: dict, seed: int = 0, cache_dir: str | None = None):
        super().__init__()
        for key in ("text_column", "label_column"):
            if not cfg.get(key):
                raise UserError(
                    f"dataset.{key} is not set: task=classification needs a dataset with text_column and "
                    "label_column (e.g. dataset=topics)"
                )
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.seed = seed
        self.cache_dir = cache_dir
        self.labels: list[str] = []
        self.class_counts: list[int] = []
        self.train_dataset = None
        self.val_dataset = None
        self.collate = ClassificationCollator(tokenizer.pad_token_id)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        splits = build_splits(self.cfg, self.cache_dir)  # sources, then dataset.ops (filters, maps, split)
        val_name = next((n for n in VAL_SPLITS if n in splits), None)
        if "train" not in splits or val_name is None:
            raise UserError(
                f"dataset.sources: classification needs a train and a validation split (found: {', '.join(splits)})"
            )
        train_rows = self._rows(splits["train"], "train")
        where = f"the train split ({self.cfg['label_column']!r} column)"
        self.labels, mapping = build_label_names(
            [_label_key(r["label"], where) for r in train_rows], self.cfg.get("labels"), where
        )
        self.train_dataset = self._encode(train_rows, mapping, "train")
        self.val_dataset = self._encode(self._rows(splits[val_name], val_name), mapping, val_name)
        if len(self.val_dataset) == 0:
            raise UserError(f"dataset: the {val_name} split has no usable row (see the warnings above)")
        counts = Counter(self.train_dataset["label"])
        self.class_counts = [counts.get(i, 0) for i in range(len(self.labels))]
        log.info(
            "classification: %d labels %s; %d train and %d %s rows",
            len(self.labels), dict(zip(self.labels, self.class_counts)), len(self.train_dataset),
            len(self.val_dataset), val_name,
        )  # fmt: skip

    def _rows(self, dataset, split: str) -> list[dict]:
        """Rows as {text, pair, label}; rows missing any of them are dropped with a counted warning."""
        text_col, pair_col, label_col = (
            self.cfg["text_column"], self.cfg.get("text_pair_column"), self.cfg["label_column"]
        )  # fmt: skip
        for key, column in (
            ("text_column", text_col),
            ("text_pair_column", pair_col),
            ("label_column", label_col),
        ):
            if column and column not in dataset.column_names:
                raise UserError(
                    f"dataset.{key}={column!r}: no such column in the {split} split "
                    f"(columns: {', '.join(dataset.column_names)})"
                )
        texts, labels = dataset[text_col], dataset[label_col]
        pairs = dataset[pair_col] if pair_col else [None] * len(texts)
        rows, no_text, no_label = [], 0, 0
        for text, pair, label in zip(texts, pairs, labels):
            if _missing(text) or (pair_col and _missing(pair)):
                no_text += 1
            elif _missing(label):
                no_label += 1
            else:
                rows.append({"text": text, "pair": pair, "label": label})
        for count, what in ((no_text, f"an empty {text_col!r}" + (f" or {pair_col!r}" if pair_col else "")),
                            (no_label, f"no {label_col!r}")):  # fmt: skip
            if count:
                log.warning("dropped %d of %d %s rows with %s", count, len(texts), split, what)
        return rows

    def _encode(self, rows: list[dict], mapping: dict, split: str):
        """A `datasets.Dataset` of input_ids and label (class id); rows whose label the train split never
        had are dropped with a warning."""
        import datasets

        where = f"the {split} split"
        unknown: Counter = Counter()
        kept = []
        for row in rows:
            key = _label_key(row["label"], where)
            if key in mapping:
                kept.append((row, mapping[key]))
            else:
                unknown[key] += 1
        if unknown:
            log.warning(
                "dropped %d of %d %s rows with labels the train split does not have: %s",
                sum(unknown.values()), len(rows), split, dict(unknown.most_common(5)),
            )  # fmt: skip
        if not kept:
            return datasets.Dataset.from_dict({"input_ids": [], "label": []})
        pair_col = self.cfg.get("text_pair_column")
        ids = encode_texts(
            self.tokenizer,
            [r["text"] for r, _ in kept],
            [r["pair"] for r, _ in kept] if pair_col else None,
            self.cfg.get("max_seq_length"),
            self.cfg.get("pair_separator", "\n"),
        )
        return datasets.Dataset.from_dict({"input_ids": ids, "label": [y for _, y in kept]})

    def train_dataloader(self) -> DataLoader:
        """SFT's sampler with one unit per row (see hydratune.data.sampler.train_loader)."""
        rows = [1] * len(self.train_dataset)
        return train_loader(self.train_dataset, rows, self.cfg, self.trainer, self.seed, self.collate)

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.val_dataset, self.cfg, self.collate)


# ------------------------------------------------------------------------------------------- module


def classifier_peft(peft_cfg: dict) -> dict:
    """The peft config group adapted to a classifier: LoRA with task_type SEQ_CLS (peft then trains and
    saves the `score`/`classifier` head as modules_to_save); `freeze` keeps the head trainable."""
    peft_cfg = json.loads(json.dumps(peft_cfg))  # a deep copy of plain values
    if peft_cfg.get("method") == "lora":
        peft_cfg["config"]["task_type"] = "SEQ_CLS"
    elif peft_cfg.get("method") == "freeze":
        peft_cfg["trainable_modules"] = [*(peft_cfg.get("trainable_modules") or []), "score", "classifier"]
    return peft_cfg


class ClassificationModule(SFTModule):
    """Fine-tuning of `AutoModelForSequenceClassification`; the optimizer, scheduler and checkpoint
    logic are SFTModule's.

    Args:
        labels: label names by class id (from the data).
        pad_token_id: the tokenizer's pad id, written into the model config (decoder pooling needs it).
        class_weights: cross-entropy weight per class for the training loss (val/loss is unweighted).
        Others: as `SFTModule`.
    """

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
        self._val_loss_sum, self._val_rows = 0.0, 0

    def configure_model(self) -> None:
        if self.model is not None:
            return
        hp = self.hparams
        model = load_classifier(hp.model, hp.labels, hp.pad_token_id, self._hub_token, hp.quantization)
        if hp.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model = apply_peft(model, classifier_peft(hp.peft))
        self.model.train()
        trainable, total = count_parameters(self.model)
        log.info(
            "parameters: %s trainable of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total
        )

    def forward(self, batch: dict) -> torch.Tensor:
        """Class logits, shape (batch, num_labels)."""
        return self.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch).float(), batch["labels"], weight=self.loss_weights)
        if not check_finite(self, loss, self.hparams.nan_policy):
            return None
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch["labels"].size(0))
        if not self.automatic_optimization:
            self._fused_backward_step(loss)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()
        self._val_loss_sum, self._val_rows = 0.0, 0

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch).float()
        self._val_loss_sum += F.cross_entropy(logits, batch["labels"], reduction="sum").item()
        self._val_rows += batch["labels"].size(0)
        self.val_metrics.update(logits.argmax(-1), batch["labels"])

    def on_validation_epoch_end(self) -> None:
        results = self.val_metrics.compute()
        loss = self._val_loss_sum / max(self._val_rows, 1)
        scalars = {
            "val/loss": loss,
            "val/acc": float(results["acc"]),
            "val/f1_macro": float(results["f1_macro"]),
        }
        for i, name in enumerate(self.hparams.labels):
            scalars[f"val/precision/{_metric_name(name)}"] = float(results["precision"][i])
            scalars[f"val/recall/{_metric_name(name)}"] = float(results["recall"][i])
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/acc", scalars["val/acc"], prog_bar=True)
        self.log_dict({k: v for k, v in scalars.items() if k not in ("val/loss", "val/acc")})
        self.last_metrics = scalars
        self.last_confusion = results["confusion"].cpu()
        log.info(
            "step %d: val/loss %.4f, val/acc %.4f, val/f1_macro %.4f",
            self.global_step, loss, scalars["val/acc"], scalars["val/f1_macro"],
        )  # fmt: skip
        if self._trainer is not None and not self.trainer.sanity_checking:
            self._log_confusion_figure()

    def _log_confusion_figure(self) -> None:
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_figure"):  # TensorBoard's SummaryWriter
                figure = confusion_figure(self.last_confusion, self.hparams.labels)
                experiment.add_figure("val/confusion_matrix", figure, global_step=self.global_step)


def _metric_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def confusion_figure(matrix: torch.Tensor, labels: list[str], title: str = "validation confusion matrix"):
    """A matplotlib figure of a confusion matrix (rows: true label, columns: predicted), counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = 2.5 + 0.6 * len(labels)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = float(matrix.max()) or 1.0
    for i in range(len(labels)):
        for j in range(len(labels)):
            value = int(matrix[i, j])
            ax.text(j, i, value, ha="center", va="center", color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ end of run


def finish(
    trainer, module: ClassificationModule, datamodule: ClassificationDataModule, run_dir: Path
) -> dict:
    """After fit (and after load_best_model_at_end put the best weights back): evaluate the weights about
    to be exported once more and write confusion_matrix.png. Returns this task's metrics.json entries."""
    import matplotlib.pyplot as plt

    trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {k.replace("/", "_"): round(v, 6) for k, v in module.last_metrics.items()}
    metrics["labels"] = list(module.hparams.labels)
    metrics["confusion_matrix"] = module.last_confusion.tolist()  # rows: true label, columns: predicted
    figure = confusion_figure(module.last_confusion, module.hparams.labels)
    figure.savefig(run_dir / "confusion_matrix.png", dpi=100)
    plt.close(figure)
    return metrics


# ------------------------------------------------------------------------------- exported artifacts


@torch.no_grad()
def predict(
    model,
    tokenizer,
    texts: list[str],
    pairs: list[str] | None = None,
    max_length: int | None = None,
    separator: str = "\n",
    batch_size: int = 32,
) -> list[dict]:
    """One {label, probabilities: {label: p}} per text, labels from the model config's id2label."""
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    ids = encode_texts(tokenizer, texts, pairs, max_length, separator)
    collate = ClassificationCollator(tokenizer.pad_token_id)
    out = []
    for start in range(0, len(ids), batch_size):
        batch = collate([{"input_ids": x, "label": 0} for x in ids[start : start + batch_size]])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for row in logits.float().softmax(-1):
            probs = {id2label[i]: round(float(p), 6) for i, p in enumerate(row)}
            out.append({"label": id2label[int(row.argmax())], "probabilities": probs})
    return out
