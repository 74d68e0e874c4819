"""`task=classification`: a sequence classifier (AutoModelForSequenceClassification), cross-entropy on one
label per row. The dataset needs text_column and label_column (e.g. dataset=topics); labels come from the data."""

from __future__ import annotations

from hydratune.rules import Rule
from hydratune.tasks.task import Task, data_kwargs, module_kwargs


class ClassificationTask(Task):
    name = "classification"
    generative = False
    summary_metrics = ("val/acc", "val/f1_macro")
    metric_aliases = {"val/accuracy": "val/acc", "val/f1": "val/f1_macro", "val/f1_score": "val/f1_macro"}
    rules = (
        Rule(
            "classification_packing",
            "task, dataset.packing",
            lambda c: bool((c.get("dataset") or {}).get("packing")),
            "a classifier pools one token per row, so rows cannot be packed together: set dataset.packing=false",
        ),
    )

    def check(self, cfg: dict) -> None:
        """task.class_weights' form (its length is checked against the classes once the data are read)."""
        from hydratune.errors import UserError

        setting = self.settings.get("class_weights")
        numbers = isinstance(setting, list | tuple) and all(
            isinstance(w, int | float) and not isinstance(w, bool) for w in setting
        )
        if setting not in (None, "none", "balanced") and not numbers:
            raise UserError(
                f"task.class_weights={setting!r}: use null, balanced, or a list of numbers (one per class)"
            )

    def datamodule(self, tokenizer, cfg: dict):
        from hydratune.tasks.classification.data import ClassificationDataModule

        return ClassificationDataModule(tokenizer, **data_kwargs(cfg))

    def module(self, cfg: dict, datamodule, tokenizer):
        from hydratune.tasks.classification.data import class_weights
        from hydratune.tasks.classification.module import ClassificationModule

        datamodule.setup()  # the labels found in the data decide the size of the model's head
        weights = class_weights(self.settings.get("class_weights"), datamodule.class_counts)
        return ClassificationModule(
            **module_kwargs(cfg),
            labels=datamodule.labels,
            pad_token_id=tokenizer.pad_token_id,
            class_weights=weights,
        )

    def finish(self, trainer, module, datamodule, run_dir):
        from hydratune.tasks.classification.report import finish

        return finish(trainer, module, datamodule, run_dir)  # final metrics, confusion_matrix.png

    def quick_data_report(self, splits, tokenizer, dataset_cfg, notes):
        from hydratune.data.labels import unread_classifier_columns
        from hydratune.data.peek import classification_report

        notes += [f"warning: {line}" for line in unread_classifier_columns(dataset_cfg)]
        report = classification_report(splits, tokenizer, dataset_cfg, notes)
        self.check_weights(report, complete=splits["train"].complete)
        return report

    def check_weights(self, report: dict, complete: bool = True) -> None:
        """task.class_weights as a list: one number per class of the data (it failed as training started)."""
        from hydratune.errors import UserError

        weights, train = self.settings.get("class_weights"), report.get("train")
        if not isinstance(weights, list | tuple) or not isinstance(train, dict) or "labels" not in train:
            return
        classes = len(train["labels"])
        if len(weights) < classes or (complete and len(weights) != classes):
            raise UserError(
                f"task.class_weights has {len(weights)} numbers but the data have {classes} classes "
                f"({', '.join(train['labels'][:8])}): give one number per class, or balanced"
            )

    def full_data_report(self, cfg: dict, tokenizer) -> dict:
        from hydratune.data.labels import unread_classifier_columns
        from hydratune.data.ops import build_splits
        from hydratune.data.peek import Rows, classification_report

        splits = build_splits(cfg["dataset"], cfg["paths"].get("cache_dir"))
        rows = {name: Rows.from_dataset(split, name) for name, split in splits.items()}
        notes = [f"warning: {line}" for line in unread_classifier_columns(cfg["dataset"])]
        report = classification_report(rows, tokenizer, cfg["dataset"], notes)
        self.check_weights(report)
        return report | ({"notes": notes} if notes else {})

    def inspect(self, cfg: dict, tokenizer, samples: int) -> list[str]:
        from hydratune.tasks.classification.report import inspect_lines

        datamodule = self.datamodule(tokenizer, cfg)
        datamodule.setup("fit")
        return inspect_lines(datamodule, tokenizer, samples)

    def predict(self, model, tokenizer, texts, pairs, dataset_cfg: dict, batch_size: int) -> list[dict]:
        """`hydratune predict`: one {label, probabilities} per text, with the run's own text encoding."""
        from hydratune.tasks.classification.report import predict

        return predict(
            model, tokenizer, texts, pairs, dataset_cfg.get("max_seq_length"),
            dataset_cfg.get("pair_separator", "\n"), batch_size,
        )  # fmt: skip
