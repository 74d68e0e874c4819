"""Classification's report and inference: the confusion matrix figure, the end-of-run evaluation, and
`predict` with an exported classifier (adapter/, merged/ or model/)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from hydratune.data.labels import encode_texts
from hydratune.tasks.classification.data import ClassificationCollator

log = logging.getLogger(__name__)


def metric_name(label: str) -> str:
    """A label as it may appear in a metric name (letters, digits and -_. kept)."""
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


def finish(trainer, module, datamodule, run_dir: Path) -> dict:
    """After fit (and after load_best_model_at_end put the best weights back): the metrics of the weights
    about to be exported (evaluated once more unless the last evaluation was of them) and
    confusion_matrix.png. Returns this task's metrics.json entries."""
    import matplotlib.pyplot as plt

    from hydratune.sharding import is_fsdp

    if getattr(datamodule, "val_dataset", ()) is None or not getattr(trainer, "limit_val_batches", 1):
        return {}  # no validation split: trained unevaluated (train.py said so)
    if not is_fsdp(trainer):
        if module.evaluated_step != trainer.global_step:
            module.checking_export = True
            try:
                trainer.validate(module, datamodule=datamodule, verbose=False)
            finally:
                module.checking_export = False
    elif module.last_confusion is None:
        return {}
    else:  # Lightning cannot run a stage after fit() on a model FSDP wrapped in configure_model
        log.info("classification: final metrics are those of the last evaluation in training (FSDP)")
    metrics = {k.replace("/", "_"): round(v, 6) for k, v in module.last_metrics.items()}
    metrics["labels"] = list(module.hparams.labels)
    metrics["confusion_matrix"] = module.last_confusion.tolist()  # rows: true label, columns: predicted
    figure = confusion_figure(module.last_confusion, module.hparams.labels)
    figure.savefig(run_dir / "confusion_matrix.png", dpi=100)
    plt.close(figure)
    return metrics


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


def inspect_lines(datamodule, tokenizer, samples: int) -> list[str]:
    """`hydratune inspect` for classification: label counts per split, lengths, and rows with their label."""
    from collections import Counter

    from hydratune.data.display import histogram

    labels = datamodule.labels
    lines = [f"labels: {len(labels)} ({', '.join(labels)})"]
    for split, data in (("train", datamodule.train_dataset), ("validation", datamodule.val_dataset)):
        counts = Counter(data["label"])
        lengths = [len(ids) for ids in data["input_ids"]]
        lines += [
            f"{split}: {len(data)} rows; per label: "
            + ", ".join(f"{name} {counts.get(i, 0)}" for i, name in enumerate(labels)),
            "  length histogram (tokens, rows):",
            *histogram(lengths),
        ]
    lines.append("rows (label: text as the model reads it):")
    for i in range(min(samples, len(datamodule.train_dataset))):
        row = datamodule.train_dataset[i]
        lines.append(f"--- train[{i}] label {labels[row['label']]!r} ({len(row['input_ids'])} tokens)")
        lines.append(tokenizer.decode(row["input_ids"]))
    return lines
