"""Packing: bins respect the capacity, and a packed sample computes exactly what it computes alone."""

from __future__ import annotations

import datasets
import pytest
import torch

from hydratune.data.collate import PackedCollator, PadCollator
from hydratune.data.packing import pack_bins, pack_dataset
from hydratune.data.sampler import WindowBatchSampler, WindowDataset
from hydratune.data.tokenize import IGNORE_INDEX, tokenize_pair
from hydratune.losses import token_nll


@pytest.mark.parametrize("strategy", ["bfd", "greedy"])
def test_bins_hold_every_sample_once_within_capacity(strategy):
    lengths = [7, 3, 9, 1, 5, 5, 2, 8, 10, 4]
    bins = pack_bins(lengths, capacity=10, strategy=strategy)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    if strategy == "bfd":
        assert len(bins) == 6  # sum 54 -> at least 6 bins of 10; best-fit decreasing reaches it
    else:
        assert [i for b in bins for i in b] == list(range(len(lengths)))  # order kept


def _samples(tokenizer):
    pairs = [("abc: ", "ABC"), ("lower: HELLO -> ", "hello"), ("x", "yz"), ("caps: word -> ", "Word")]
    rows = [tokenize_pair(p, r, tokenizer, 64) for p, r in pairs]
    for row in rows:
        row["num_trained"] = sum(x != IGNORE_INDEX for x in row["labels"][1:])
    return rows


def test_packed_sample_has_the_same_logits_and_loss_as_alone(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    samples = _samples(tokenizer)
    packed = pack_dataset(datasets.Dataset.from_list(samples), capacity=64, strategy="greedy")
    assert len(packed) == 1 and packed[0]["num_samples"] == len(samples)
    batch = PackedCollator(tokenizer.pad_token_id)([packed[0]])
    assert "attention_mask" not in batch
    # throughput counts samples, not rows (review Q1), and the bench reads the collator's real tokens: with the
    # pad id equal to EOS, counting non-pad ids dropped each sample's EOS (Q2)
    from hydratune.bench import real_tokens

    assert int(batch["num_samples"]) == len(samples)
    assert real_tokens(batch, tokenizer.eos_token_id) == sum(len(s["input_ids"]) for s in samples)
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
        # Control: the same row with positions that do not restart is one long sequence.
        positions = torch.arange(batch["input_ids"].size(1))[None]
        leaky = model(input_ids=batch["input_ids"], position_ids=positions, use_cache=False).logits
    start = 0
    for sample in samples:
        n = len(sample["input_ids"])
        alone_batch = PadCollator(tokenizer.pad_token_id)([sample])
        with torch.no_grad():
            alone = model(
                **{k: alone_batch[k] for k in ("input_ids", "attention_mask")}, use_cache=False
            ).logits
        inside = logits[:, start : start + n]
        torch.testing.assert_close(inside, alone, atol=1e-5, rtol=1e-4)
        # Per-token loss of the sample, alone and packed.
        labels = torch.tensor([sample["labels"]])
        nll_alone, count = token_nll(alone, labels)
        nll_packed, _ = token_nll(inside, labels)
        torch.testing.assert_close(nll_packed / count, nll_alone / count, atol=1e-5, rtol=1e-4)
        if start > 0:  # the control does see its neighbours
            assert (leaky[:, start : start + n] - alone).abs().max() > 1e-3
        start += n
    # The packed row's loss is the sum of the samples' losses: no token predicts across a boundary.
    total, count = token_nll(logits, batch["labels"])
    assert count.item() == sum(s["num_trained"] for s in samples)


def test_window_tokens_match_trained_labels_of_packed_batches(tokenizer):
    samples = _samples(tokenizer) * 6
    packed = pack_dataset(datasets.Dataset.from_list(samples), capacity=32, strategy="bfd")
    sampler = WindowBatchSampler(packed["num_trained"], batch_size=2, accumulate=2, seed=0)
    collate, dataset = PackedCollator(tokenizer.pad_token_id), WindowDataset(packed)
    batches = [collate([dataset[key] for key in keys]) for keys in sampler]
    for start in range(0, len(batches), 2):
        window = batches[start : start + 2]
        trained = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in window)
        assert all(int(b["window_tokens"]) == trained for b in window)
    real = sum(int(b["real_tokens"]) for b in batches)
    assert real == sum(len(s["input_ids"]) for s in samples)


def test_packing_a_filtered_dataset_packs_the_rows_it_shows(tokenizer):
    from hydratune.data.packing import row_lengths

    rows = _samples(tokenizer)
    shown = datasets.Dataset.from_list(rows).filter(lambda r: len(r["input_ids"]) > 8)  # an indices mapping
    kept = [r for r in rows if len(r["input_ids"]) > 8]
    assert 0 < len(kept) < len(rows)
    packed = pack_dataset(shown, capacity=256, strategy="greedy")
    assert sum(packed["num_samples"]) == len(kept)
    assert packed[0]["input_ids"] == [t for r in kept for t in r["input_ids"]]
    assert row_lengths(packed) == [len(ids) for ids in packed["input_ids"]]
    assert row_lengths(shown) == [len(r["input_ids"]) for r in kept]


@pytest.mark.parametrize("strategy", ["bfd", "greedy"])
def test_packed_columns_are_the_samples_laid_end_to_end(strategy):
    """Every packed row holds its bin's samples in order: their tokens, their labels with each sample's first
    label ignored, positions restarting at 0; num_trained and num_samples summed per row. Checked row by row
    against the bins on a filtered dataset (an indices mapping) of random lengths."""
    import random

    rng = random.Random(0)
    samples = []
    for i in range(300):
        n = rng.randint(1, 90)
        ids = [rng.randint(3, 30000) for _ in range(n)]
        prompt = rng.randint(0, n - 1)
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        samples.append(
            {"input_ids": ids, "labels": labels, "num_trained": rng.randint(0, n), "keep": i % 7 != 3}
        )
    shown = datasets.Dataset.from_list(samples).filter(lambda r: r["keep"])
    kept = [s for s in samples if s["keep"]]
    packed = pack_dataset(shown, capacity=128, strategy=strategy)
    bins = pack_bins([len(s["input_ids"]) for s in kept], 128, strategy)
    assert len(packed) == len(bins)
    for row, members in zip(packed, bins):
        parts = [kept[i] for i in members]
        assert row["input_ids"] == [t for s in parts for t in s["input_ids"]]
        assert row["labels"] == [x for s in parts for x in [IGNORE_INDEX, *s["labels"][1:]]]
        assert row["position_ids"] == [p for s in parts for p in range(len(s["input_ids"]))]
        assert row["num_trained"] == sum(s["num_trained"] for s in parts)
        assert row["num_samples"] == len(parts)
    assert len(pack_dataset(shown.select([]), capacity=128, strategy=strategy)) == 0


def _cached_samples(tmp_path, n: int = 200):
    """A tokenized-like dataset that lives in a cache file, as tokenize_split's output does."""
    import random

    rng = random.Random(1)
    rows = []
    for _ in range(n):
        ids = [rng.randint(3, 30000) for _ in range(rng.randint(1, 90))]
        rows.append({"input_ids": ids, "labels": ids, "num_trained": len(ids) - 1})
    memory = datasets.Dataset.from_list(rows)
    cached = memory.map(lambda r: r, cache_file_name=str(tmp_path / "cache-tokenized.arrow"))
    assert cached.cache_files
    return memory, cached


def test_packed_rows_of_a_cached_dataset_are_cached_beside_it_and_read_back(tmp_path, monkeypatch):
    import hydratune.data.packing as packing

    memory, cached = _cached_samples(tmp_path)
    packed = pack_dataset(cached, capacity=128, strategy="bfd")
    files = sorted(tmp_path.glob("packed-*.arrow"))
    assert len(files) == 1 and packed.cache_files[0]["filename"] == str(files[0])  # memory-mapped
    assert packed.to_list() == pack_dataset(memory, capacity=128, strategy="bfd").to_list()
    assert packed.features["labels"].feature.dtype == "int32"

    def no_packing(*args):
        raise AssertionError("packed again although the cache holds the rows")

    monkeypatch.setattr(packing, "pack_table", no_packing)
    assert pack_dataset(cached, capacity=128, strategy="bfd").to_list() == packed.to_list()
    monkeypatch.undo()
    pack_dataset(cached, capacity=64, strategy="bfd")  # another capacity: another file
    pack_dataset(cached, capacity=128, strategy="greedy")
    assert len(list(tmp_path.glob("packed-*.arrow"))) == 3
    assert not list(tmp_path.glob(".*partial"))


def test_a_failed_cache_write_leaves_no_file_and_a_read_only_cache_packs_in_memory(tmp_path, monkeypatch):
    import pyarrow as pa

    memory, cached = _cached_samples(tmp_path)
    expected = pack_dataset(memory, capacity=128).to_list()

    class Full:  # the disk fills up halfway through the file
        def __init__(self, sink, schema):
            self.sink = sink

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write_table(self, table):
            self.sink.write(b"half a file")
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(pa.ipc, "new_stream", Full)
    packed = pack_dataset(cached, capacity=128)
    assert packed.to_list() == expected and not packed.cache_files
    assert not list(tmp_path.glob("packed-*")) and not list(tmp_path.glob(".packed-*"))
