"""`task=sft`: supervised fine-tuning of a causal LM, next-token loss on the trained tokens (dataset.train_on)."""

from __future__ import annotations

from hydratune.tasks.task import Task, data_kwargs, module_kwargs


class SFTTask(Task):
    name = "sft"

    def datamodule(self, tokenizer, cfg: dict, prepared: bool = True):
        from hydratune.tasks.sft.data import SFTDataModule

        return SFTDataModule(tokenizer, **data_kwargs(cfg), prepared=prepared)

    def module(self, cfg: dict, datamodule, tokenizer):
        from hydratune.tasks.sft.module import SFTModule

        return SFTModule(**module_kwargs(cfg), fused_loss=bool(self.settings.get("fused_loss", True)))

    def quick_data_report(self, splits, tokenizer, dataset_cfg, notes):
        from hydratune.data.formats import CHAT_FORMATS, READ_FIX, check_config, read_columns
        from hydratune.data.ops import unread_map_columns, unread_text_columns
        from hydratune.data.peek import Fallback, sft_report

        fmt = check_config(dataset_cfg)
        unread = unread_map_columns(
            dataset_cfg, read_columns(fmt, dataset_cfg), f"dataset.format={fmt}", READ_FIX
        )
        notes += [f"warning: {line}" for line in unread]
        train = splits.get("train")
        if train is not None:  # Dolly's context, a second text column: text that never reaches the model
            reads = read_columns(fmt, dataset_cfg)
            text = unread_text_columns(
                train.rows, train.column_names, dataset_cfg, reads, f"dataset.format={fmt}"
            )
            notes += text
        if fmt in CHAT_FORMATS:
            raise Fallback(f"format={fmt} renders rows with the chat template (transformers)")
        return sft_report(splits, tokenizer, dataset_cfg, notes)

    def full_data_report(self, cfg: dict, tokenizer) -> dict:
        datamodule = self.datamodule(tokenizer, cfg, prepared=False)  # the samples, unpacked
        datamodule.setup("fit")
        # Per split: rows, samples kept, dropped (no trained token / too long), truncation rate,
        # trained-token fraction, packing efficiency (see hydratune.tasks.sft.data.tokenize_split).
        report = {split: stats for split, stats in datamodule.stats.items()}
        samples = datamodule.train_samples
        report["examples"] = [tokenizer.decode(samples[i]["input_ids"]) for i in range(min(3, len(samples)))]
        return report

    def prompt_text(
        self, dataset_cfg: dict, tokenizer, prompt: str, input: str = "", system: str = ""
    ) -> str:
        from hydratune.data.formats import prompt_text

        return prompt_text(dataset_cfg, tokenizer, prompt, input, system)

    def inspect(self, cfg: dict, tokenizer, samples: int) -> list[str]:
        from hydratune.tasks.sft.report import inspect_lines

        datamodule = self.datamodule(tokenizer, cfg, prepared=False)  # the samples, unpacked
        datamodule.setup("fit")
        return inspect_lines(datamodule, tokenizer, cfg["dataset"], samples)
