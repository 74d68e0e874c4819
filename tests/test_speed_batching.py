"""Length-grouped batches (`dataset.group_by_length`): little padding, and still deterministic, complete,
resumable, shardable across ranks, and normalised by the window's trained tokens."""

from __future__ import annotations

import json
import random

import datasets
import pytest
from conftest import compose

from hydratune.config import to_plain
from hydratune.data.collate import PackedCollator
from hydratune.data.packing import pack_bins, pack_dataset
from hydratune.data.sampler import ResumableDataLoader, WindowBatchSampler, WindowDataset
from hydratune.data.tokenize import IGNORE_INDEX
from hydratune.errors import UserError
from hydratune.tasks.sft.data import SFTDataModule, check_config


def _lengths(n: int, seed: int = 0, low: int = 20, high: int = 500) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(n)]


def _indices(batches) -> list[list[int]]:
    return [[i for i, _ in batch] for batch in batches]


def _efficiency(batches, lengths: list[int]) -> float:
    """Non-pad share of the batch tensors when every batch is padded to its longest member."""
    real = sum(lengths[i] for batch in batches for i in batch)
    return real / sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)


def test_grouped_batches_are_deterministic_per_seed_and_epoch():
    lengths = _lengths(1000)

    def epoch(seed: int, number: int) -> list[list[int]]:
        sampler = WindowBatchSampler([1] * 1000, 8, seed=seed, lengths=lengths)
        sampler.set_epoch(number)
        return _indices(sampler)

    assert epoch(3, 0) == epoch(3, 0)
    assert epoch(3, 0) != epoch(4, 0)  # another seed, another order
    assert epoch(3, 0) != epoch(3, 1)  # and a new order every epoch


@pytest.mark.parametrize("n", [1000, 997])  # 997: a short last batch
def test_grouped_batches_cover_every_item_once_per_epoch(n):
    lengths = _lengths(n)
    sampler = WindowBatchSampler([1] * n, 8, accumulate=3, seed=0, lengths=lengths)
    for number in range(3):
        sampler.set_epoch(number)
        batches = _indices(sampler)
        assert sorted(i for batch in batches for i in batch) == list(range(n))
        assert len(batches) == len(sampler)
        assert sum(len(batch) < 8 for batch in batches) == (n % 8 > 0)


def test_grouped_batches_have_little_padding_and_a_random_order():
    lengths = _lengths(4000)
    grouped = _indices(WindowBatchSampler([1] * 4000, 8, seed=0, lengths=lengths))
    plain = _indices(WindowBatchSampler([1] * 4000, 8, seed=0))
    # Uniform 20-500 tokens: padding to the longest of 8 random samples wastes a lot.
    assert _efficiency(plain, lengths) < 0.75
    assert _efficiency(grouped, lengths) > 0.97
    # The batches are not in length order: the longest goes first, the rest are shuffled.
    longest = [max(lengths[i] for i in batch) for batch in grouped]
    assert longest[0] == max(lengths)
    assert longest[1:] != sorted(longest[1:], reverse=True) and longest[1:] != sorted(longest[1:])


@pytest.mark.parametrize(("ranks", "n"), [(2, 1200), (3, 1200), (3, 1000)])
def test_grouped_batches_shard_the_global_batches_of_one_process(ranks, n):
    # 3 ranks: mega-batches of 50 local batches would not align with global batches of 3 local ones.
    lengths, tokens = _lengths(n), [(i % 7) + 1 for i in range(n)]
    one = list(WindowBatchSampler(tokens, 4 * ranks, accumulate=2, seed=5, lengths=lengths))
    shards = [
        list(WindowBatchSampler(tokens, 4, 2, seed=5, lengths=lengths, num_replicas=ranks, rank=r))
        for r in range(ranks)
    ]
    full = n // (4 * ranks)
    assert all(len(shard) == full for shard in shards)
    assert len(one) == full + (n % (4 * ranks) > 0)  # one process also trains the short batch, last
    for k, shard_batches in enumerate(zip(*shards)):
        # Rank r holds slice r of the 1-process batch ...
        assert [i for batch in shard_batches for i, _ in batch] == [i for i, _ in one[k]]
        if len(one) == full or k < full - full % 2:  # (the last window of one process has the short batch)
            # ... and divides by its share of the window's trained tokens (DDP averages the gradients).
            assert {w for batch in shard_batches for _, w in batch} == {one[k][0][1] / ranks}
    covered = [i for shard in shards for batch in shard for i, _ in batch]
    assert len(covered) == len(set(covered)) == full * 4 * ranks


def _loader(lengths: list[int], accumulate: int = 2) -> ResumableDataLoader:
    n = len(lengths)
    sampler = WindowBatchSampler(
        [length // 2 for length in lengths], batch_size=4, accumulate=accumulate, seed=7, lengths=lengths
    )
    data = WindowDataset([{"i": i} for i in range(n)])
    return ResumableDataLoader(
        data,
        batch_sampler=sampler,
        collate_fn=lambda rows: ([r["i"] for r in rows], rows[0]["window_tokens"]),
    )


@pytest.mark.parametrize("consumed", [0, 1, 5, 12, 24])
def test_grouped_loader_resumes_mid_epoch_with_the_next_unseen_batch(consumed):
    lengths = _lengths(100, seed=1)
    whole = _loader(lengths)
    whole.batch_sampler.set_epoch(2)
    expected = list(whole)
    first = _loader(lengths)
    first.batch_sampler.set_epoch(2)
    batches = iter(first)
    seen = [next(batches) for _ in range(consumed)]
    state = first.state_dict()
    resumed = _loader(lengths)
    resumed.load_state_dict(state)
    resumed.batch_sampler.set_epoch(2)
    assert seen + list(resumed) == expected  # same batches, same window token counts
    resumed.batch_sampler.set_epoch(3)
    assert len(list(resumed)) == len(whole)


def _packed(tokenizer, n: int = 60):
    rng = random.Random(0)
    rows = []
    for _ in range(n):
        size = rng.randint(3, 40)
        ids = (
            [tokenizer.bos_token_id] + [rng.randrange(5, 60) for _ in range(size)] + [tokenizer.eos_token_id]
        )
        labels = [IGNORE_INDEX] * (size // 2 + 1) + ids[size // 2 + 1 :]
        rows.append(
            {"input_ids": ids, "labels": labels, "num_trained": sum(x != IGNORE_INDEX for x in labels[1:])}
        )
    return pack_dataset(datasets.Dataset.from_list(rows), capacity=64, strategy="bfd")


def test_window_tokens_match_trained_labels_of_grouped_packed_batches(tokenizer):
    packed = _packed(tokenizer)
    lengths = [len(ids) for ids in packed["input_ids"]]
    sampler = WindowBatchSampler(packed["num_trained"], batch_size=2, accumulate=3, seed=0, lengths=lengths)
    collate, dataset = PackedCollator(tokenizer.pad_token_id), WindowDataset(packed)
    batches = [collate([dataset[key] for key in keys]) for keys in sampler]
    for start in range(0, len(batches), 3):
        window = batches[start : start + 3]
        trained = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in window)
        assert all(int(b["window_tokens"]) == trained for b in window)
    assert sum(int(b["real_tokens"]) for b in batches) == sum(lengths)


def test_packed_rows_of_a_bench_like_dataset_reach_95_percent():
    # Samples of 150-512 tokens (the benchmark's Alpaca-like rows): many rows hold a single sample, so
    # row lengths spread from ~150 to 512 and padding to the longest row of the batch wastes ~10%.
    lengths = _lengths(4000, low=150, high=512)
    rows = [sum(lengths[i] for i in row) for row in pack_bins(lengths, 512)]
    plain = _indices(WindowBatchSampler([1] * len(rows), 8, seed=42))
    grouped = _indices(WindowBatchSampler([1] * len(rows), 8, seed=42, lengths=rows))
    assert _efficiency(plain, rows) < 0.95
    assert _efficiency(grouped, rows) >= 0.95


def _epoch_efficiency(dm: SFTDataModule) -> float:
    real = total = 0
    for batch in dm.train_dataloader():
        mask = batch.get("attention_mask")
        real += int(mask.sum()) if mask is not None else int(batch["real_tokens"])
        total += batch["input_ids"].numel()
    return real / total


def test_shipped_sample_packed_reaches_95_percent_padding_efficiency(tokenizer, tmp_path):
    cfg = to_plain(compose(["dataset=packed"]).dataset)
    assert cfg["group_by_length"] is None  # the default: packed rows are grouped
    dm = SFTDataModule(tokenizer, cfg, seed=42, cache_dir=str(tmp_path))
    dm.setup("fit")
    grouped = _epoch_efficiency(dm)
    plain = SFTDataModule(tokenizer, cfg | {"group_by_length": False}, seed=42, cache_dir=str(tmp_path))
    plain.setup("fit")
    ungrouped = _epoch_efficiency(plain)
    assert grouped >= 0.95
    assert grouped > ungrouped + 0.02  # the grouping, not the data, makes the difference


@pytest.mark.parametrize(
    ("packing", "group", "expected"),
    [
        (True, None, "rows"),
        (False, None, None),
        (True, True, "rows"),
        (False, True, "samples"),
        (True, False, None),
    ],
)
def test_group_by_length_chooses_what_is_grouped(packing, group, expected, tokenizer, tmp_path):
    cfg = to_plain(compose(["dataset=packed"]).dataset) | {"packing": packing, "group_by_length": group}
    dm = SFTDataModule(tokenizer, cfg, seed=0, cache_dir=str(tmp_path))
    dm.setup("fit")
    lengths = dm.train_dataloader().batch_sampler.lengths
    if expected is None:
        assert lengths is None
    elif expected == "rows":
        assert lengths == [len(ids) for ids in dm.train_dataset["input_ids"]] and len(lengths) < len(
            dm.train_samples
        )
    else:
        assert lengths == [len(ids) for ids in dm.train_samples["input_ids"]]


def test_group_by_length_rejects_other_values():
    cfg = to_plain(compose(["dataset=packed"]).dataset) | {"group_by_length": "rows"}
    with pytest.raises(UserError, match=r"dataset.group_by_length='rows'.*true, false or null"):
        check_config(cfg)


def _find(node, key: str):
    """Every value stored under `key` anywhere in a nested checkpoint dict."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from ([v] if k == key else []) + list(_find(v, key))
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _find(v, key)


@pytest.mark.slow
def test_packed_grouped_run_resumes_mid_epoch_exactly(tiny_model_dir, tmp_path):
    import torch
    from conftest import run_cli
    from safetensors.torch import load_file
    from test_resume import step_losses

    # Samples of ~40-200 tokens, so packed rows of 256 differ in length and grouping reorders them.
    rng = random.Random(0)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    rows = [
        {"instruction": "Upper-case it.", "input": " ".join(rng.choices(words, k=rng.randint(1, 12)))}
        for _ in range(44)
    ]
    lines = [json.dumps(row | {"output": row["input"].upper()}) + "\n" for row in rows]
    train, val = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("".join(lines[:40]))
    val.write_text("".join(lines[40:]))

    def train_py(run_dir, steps: int, *extra: str) -> None:
        result = run_cli(
            [
                "train.py",
                f"model.pretrained_model_name_or_path={tiny_model_dir}",
                f"dataset.sources.0.data_files.train={train}",
                f"dataset.sources.0.data_files.validation={val}",
                "dataset.packing=true",  # group_by_length: null groups the packed rows
                "dataset.max_seq_length=256",
                "dataset.batch_size=2",
                "peft.config.lora_dropout=0.1",  # random numbers drawn in training must resume too
                "scheduler=constant",  # the LR does not depend on max_steps
                "optimizer.lr=1e-2",
                f"trainer.max_steps={steps}",
                # Epochs set too (as every imported HF-style config has): Lightning's step estimate used to
                # build the loader before the resumed state was restored, so a resumed epoch started over.
                "trainer.max_epochs=50",
                "trainer.accumulate_grad_batches=2",
                "+trainer.limit_val_batches=0",
                "trainer.log_every_n_steps=1",
                "trainer.deterministic=true",
                "callbacks.model_checkpoint.save_steps=4",
                "eval_before_training=false",
                "eval_generations.num_prompts=0",
                "logger=csv",
                f"hydra.run.dir={run_dir}",
                *extra,
            ],
            env={"OMP_NUM_THREADS": "1"},
        )
        assert result.returncode == 0, result.stderr[-3000:]

    straight, first, resumed = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    train_py(straight, 10)
    train_py(first, 6)
    checkpoint = first / "checkpoints" / "step=000004.ckpt"
    state = torch.load(checkpoint, weights_only=False)
    assert [c for c in _find(state, "consumed") if c > 0], "step 4 should fall inside an epoch"
    train_py(resumed, 10, f"ckpt_path='{checkpoint}'")  # quoted: the file name holds '='
    expected, got = step_losses(straight), step_losses(resumed)
    after = {step: loss for step, loss in expected.items() if step > 4}
    assert len(after) >= 6 and {step: got[step] for step in after} == after
    want, have = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (straight, resumed))
    assert all(torch.equal(want[name], have[name]) for name in want)
