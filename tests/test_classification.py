"""task=classification: labels from the data, bad input, pooling, metrics, export parity, the example run."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose, fit_repeated, run_cli

from hydratune.config import to_plain
from hydratune.data.labels import build_label_names, encode_texts
from hydratune.errors import UserError
from hydratune.export import load_artifact
from hydratune.tasks.classification.data import (
    ClassificationCollator,
    ClassificationDataModule,
    class_weights,
)
from hydratune.tasks.classification.module import ClassificationModule
from hydratune.tasks.classification.report import predict

# ------------------------------------------------------------------------------------------- labels


def test_string_labels_sorted_and_int_labels_keep_their_ids():
    names, mapping = build_label_names(["b", "a", "c", "a"], None, "train")
    assert names == ["a", "b", "c"] and mapping == {"a": 0, "b": 1, "c": 2}
    names, mapping = build_label_names([1, 0, 2, 1], None, "train")
    assert names == ["0", "1", "2"] and mapping == {0: 0, 1: 1, 2: 2}
    # Given names: the order of strings, or the names of integer ids.
    assert build_label_names(["neg", "pos"], ["pos", "neg"], "train")[1] == {"pos": 0, "neg": 1}
    assert build_label_names([0, 1], ["neg", "pos"], "train")[0] == ["neg", "pos"]


@pytest.mark.parametrize(
    ("values", "names", "message"),
    [
        (["a", "a"], None, "at least 2 classes"),
        ([0, "a"], None, "mix integers and strings"),
        (["a", "b", "zz"], ["a", "b"], "does not list"),
        ([0, 1, 5], ["x", "y"], "integer labels [5]"),
    ],
)
def test_bad_label_sets_are_one_line_errors(values, names, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        build_label_names(values, names, "the train split")
    assert "\n" not in str(err.value)


def test_class_weights():
    assert class_weights(None, [10, 30]) is None
    assert class_weights("balanced", [10, 30]) == pytest.approx([2.0, 2 / 3])
    assert class_weights([1, 3], [10, 30]) == [1.0, 3.0]
    with pytest.raises(UserError, match="task.class_weights"):
        class_weights([1, 2, 3], [10, 30])


def test_pairs_are_joined_for_tokenizers_without_a_separator(tokenizer):
    joined = encode_texts(tokenizer, ["ab"], ["cd"], separator="|")
    assert joined == encode_texts(tokenizer, ["ab|cd"])
    whole = encode_texts(tokenizer, ["abc"])[0]  # BOS first: the tokenizer adds it, as Llama's do
    assert whole[0] == tokenizer.bos_token_id
    assert encode_texts(tokenizer, ["abcdef"], max_length=len(whole)) == [whole]  # the cut counts BOS
    # a pair too long loses the end of its first text, not its second text (review L10: MNLI's hypothesis)
    premise, hypothesis = "a man plays a guitar on a stage tonight", "music"
    cut = encode_texts(tokenizer, [premise], [hypothesis], max_length=20, separator="|")[0]
    assert len(cut) == 20 and tokenizer.decode(cut).endswith("|music")
    assert tokenizer.decode(cut).startswith(tokenizer.bos_token + "a man")


# --------------------------------------------------------------------------------------------- data


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _datamodule(tmp_path, tokenizer, train: list[dict], val: list[dict], **cfg):
    tmp_path.mkdir(parents=True, exist_ok=True)
    sources = [
        {
            "loader": "json",
            "data_files": {
                "train": _write(tmp_path / "train.jsonl", train),
                "validation": _write(tmp_path / "val.jsonl", val),
            },
        }
    ]
    dataset = {"sources": sources, "text_column": "text", "label_column": "label", "batch_size": 4} | cfg
    dm = ClassificationDataModule(tokenizer, dataset, cache_dir=str(tmp_path / "cache"))
    dm.setup()
    return dm


def test_missing_and_unknown_labels_are_dropped_with_counted_warnings(tmp_path, tokenizer, caplog):
    train = [
        {"text": "good", "label": "pos"},
        {"text": "bad", "label": "neg"},
        {"text": "meh", "label": None},
    ]
    train += [{"text": "", "label": "pos"}]
    val = [
        {"text": "fine", "label": "pos"},
        {"text": "odd", "label": "neutral"},
        {"text": "odd", "label": "neutral"},
    ]
    with caplog.at_level(logging.WARNING, logger="hydratune.tasks.classification.data"):
        dm = _datamodule(tmp_path, tokenizer, train, val)
    assert dm.labels == ["neg", "pos"]
    assert len(dm.train_dataset) == 2 and dm.class_counts == [1, 1]
    assert [s["label"] for s in dm.val_dataset] == [1]
    text = caplog.text
    assert "dropped 1 of 4 train rows with no 'label'" in text
    assert "dropped 1 of 4 train rows with an empty 'text'" in text
    assert "dropped 2 of 3 validation rows with labels the train split does not have: {'neutral': 2}" in text


def test_glue_minus_one_labels_are_unlabelled_rows_not_a_class(tmp_path, tokenizer, caplog):
    """GLUE's test rows (and datasets' ClassLabel) write -1 for no label. It was a third class '-1' that shifted
    every class id by one (id2label {0: '-1', 1: '0', 2: '1'}); such rows are dropped and counted (review L1)."""
    train = [{"text": f"row {i}", "label": i % 2} for i in range(6)] + [{"text": "test row", "label": -1}] * 2
    with caplog.at_level(logging.WARNING, logger="hydratune.tasks.classification.data"):
        dm = _datamodule(tmp_path, tokenizer, train, train)
    assert dm.labels == ["0", "1"] and dm.class_counts == [3, 3]
    assert sorted(set(dm.train_dataset["label"])) == [0, 1]
    assert (
        "dropped 2 of 8 train rows with no 'label' (empty, or negative as the -1 of unlabelled rows)"
        in caplog.text
    )
    # regression scores and label lists say what they are, not "neither an integer nor a string" (L9)
    for label, what in ((1.8, "a fractional score (regression"), ([1, 2], "a list of labels (multi-label")):
        with pytest.raises(
            UserError, match=r"label .* is " + re.escape(what) + r".*does not do multi-label or regression"
        ):
            odd = [{"text": "a", "label": label}] * 2
            _datamodule(tmp_path / str(what[2]), tokenizer, odd, odd)


def test_an_unread_pair_column_and_cut_texts_are_warnings_and_no_validation_trains_unevaluated(
    tmp_path, tokenizer, caplog
):
    """MNLI's hypothesis without text_pair_column trained on the premise alone, and a max_seq_length that cut
    every text, without a word (L4, L5). A train-only file was refused; it trains unevaluated, as SFT does."""
    rows = [{"premise": f"a man plays a guitar on the stage {i}", "hypothesis": f"somebody is making music now {i}",
             "label": i % 2} for i in range(8)]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="hydratune.tasks.classification.data"):
        _datamodule(tmp_path / "a", tokenizer, rows, rows, text_column="premise", max_seq_length=12)
    assert (
        "column 'hypothesis' holds text (8 of 8 rows) that task=classification does not read: it never reaches the "
        "model; read it as the second text of a pair (dataset.text_pair_column=hypothesis)"
    ) in caplog.text
    assert "dataset.max_seq_length=12: 8 of 8 train texts are longer and cut short" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hydratune.tasks.classification.data"):
        dm = _datamodule(
            tmp_path / "b",
            tokenizer,
            rows,
            rows,
            text_column="premise",
            text_pair_column="hypothesis",
            max_seq_length=12,
        )
    assert "does not read" not in caplog.text
    # the cut is the tokenizer's: the same ids as one encoding with max_length
    assert (
        dm.train_dataset["input_ids"][0]
        == encode_texts(tokenizer, [rows[0]["premise"]], [rows[0]["hypothesis"]], 12)[0]
    )
    only_train = {"loader": "json", "data_files": {"train": _write(tmp_path / "t.jsonl", rows)}}
    dm = ClassificationDataModule(
        tokenizer,
        {"sources": [only_train], "text_column": "premise", "label_column": "label", "batch_size": 4},
        cache_dir=str(tmp_path / "cache"),
    )
    dm.setup()
    assert len(dm.train_dataset) == 8 and dm.val_dataset is None


def test_a_mapped_column_the_classifier_does_not_read_is_a_warning(tmp_path, tokenizer, caplog):
    """A `map` op making a column other than the text, pair and label columns changes nothing the classifier
    sees: said, with the key that would read it (V9)."""
    rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    with caplog.at_level(logging.WARNING, logger="hydratune.tasks.classification.data"):
        _datamodule(tmp_path, tokenizer, rows, rows, ops=[{"map": {"review": "{text}!"}}])
    assert (
        "dataset.ops[0].map makes column 'review', which nothing reads (classification reads label, text): map "
        "onto one of those, or point the format at it (e.g. dataset.text_column=review)"
    ) in caplog.text


def test_absent_text_column_and_single_class_are_errors(tmp_path, tokenizer):
    rows = [{"sentence": "a", "label": 0}, {"sentence": "b", "label": 1}]
    with pytest.raises(
        UserError, match=r"dataset.text_column='text': no such column in the train split \(columns"
    ):
        _datamodule(tmp_path, tokenizer, rows, rows)
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": 1}]
    with pytest.raises(UserError, match="every labelled row has the label 1"):
        _datamodule(tmp_path, tokenizer, rows, rows)
    with pytest.raises(UserError, match="dataset.label_column is not set"):
        ClassificationDataModule(tokenizer, {"sources": [], "text_column": "text"})


def test_classification_with_packing_is_a_preflight_error():
    from hydratune import rules
    from hydratune.preflight import check_config
    from hydratune.tasks.registry import task_class

    cfg = to_plain(compose(["task=classification", "dataset=topics", "+dataset.packing=true"]))
    task_rules = task_class(cfg["task"]).rules
    assert any("dataset.packing=false" in v for v in rules.violations(cfg, task_rules))
    with pytest.raises(UserError, match="dataset.packing=false"):
        check_config(cfg)
    sft = to_plain(compose(["dataset=topics", "+dataset.packing=true"]))
    assert not any("pools one token" in v for v in rules.violations(sft, task_class(sft["task"]).rules))
    cfg["dataset"]["packing"] = False
    assert not any("packing" in v for v in rules.violations(cfg, task_rules))


# ------------------------------------------------------------------------------------------- module


def _module(tiny_model_dir, peft: str = "lora", labels=("neg", "pos"), **kwargs) -> ClassificationModule:
    cfg = compose(
        ["task=classification", "dataset=topics", f"peft={peft}", "scheduler=constant", "optimizer.lr=5e-3"]
    )
    model_cfg = to_plain(cfg.model)
    model_cfg.pop("token")
    model_cfg["pretrained_model_name_or_path"] = str(tiny_model_dir)
    module = ClassificationModule(
        model=model_cfg,
        peft=to_plain(cfg.peft),
        optimizer=to_plain(cfg.optimizer),
        scheduler=to_plain(cfg.scheduler),
        labels=list(labels),
        pad_token_id=0,
        **kwargs,
    )
    module.configure_model()
    return module


def _batch(tokenizer, n: int = 8) -> dict:
    # Unequal lengths (padding matters); the label is whether the text ends in "x".
    texts = [("ab" * (i + 1)) + ("x" if i % 2 else "y") for i in range(n)]
    ids = encode_texts(tokenizer, texts)
    return ClassificationCollator(tokenizer.pad_token_id)(
        [{"input_ids": x, "label": i % 2} for i, x in enumerate(ids)]
    )


def test_padded_batch_pools_each_rows_last_real_token(tiny_model_dir, tokenizer):
    module = _module(tiny_model_dir).eval()
    batch = _batch(tokenizer, 4)
    with torch.no_grad():
        together = module(batch)
        for i in range(4):
            n = int(batch["attention_mask"][i].sum())
            alone = module({"input_ids": batch["input_ids"][i : i + 1, :n]})
            assert torch.allclose(together[i], alone[0], atol=1e-5)


def test_lora_trains_the_head_and_learns(tiny_model_dir, tokenizer):
    module = _module(tiny_model_dir, class_weights=[1.0, 2.0])
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert any("score" in n and "modules_to_save" in n for n in trainable), trainable
    assert any("lora_A" in n for n in trainable)
    losses = fit_repeated(module, _batch(tokenizer), steps=30)
    assert losses[-1] < 0.5 * losses[0], losses


def test_validation_metrics_match_a_direct_count(tiny_model_dir, tokenizer):
    module = _module(tiny_model_dir, peft="none", labels=("neg", "pos", "other"))
    batch = _batch(tokenizer)
    batch["labels"][0] = 2
    module.eval()
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(value))
    module.log_dict = lambda values, **kw: logged.update(values)
    module.on_validation_epoch_start()
    with torch.no_grad():
        module.validation_step(batch, 0)
        preds = module(batch).argmax(-1)
    module.on_validation_epoch_end()
    labels = batch["labels"]
    assert logged["val/acc"] == pytest.approx(float((preds == labels).float().mean()))
    for k, name in enumerate(("neg", "pos", "other")):
        true_k = int((labels == k).sum())
        hits = int(((preds == k) & (labels == k)).sum())
        assert logged[f"val/recall/{name}"] == pytest.approx(hits / true_k if true_k else 0.0)
    assert {"val/loss", "val/f1_macro", "val/precision/neg"} <= set(logged)
    confusion = module.last_confusion
    assert int(confusion.sum()) == len(labels)
    assert [int(confusion[k].sum()) for k in range(3)] == [int((labels == k).sum()) for k in range(3)]


def test_final_metrics_evaluate_again_only_for_weights_not_yet_evaluated(tiny_model_dir, tokenizer, tmp_path):
    """The run's end evaluates the exported weights once: not again when the last evaluation was of them."""
    from types import SimpleNamespace

    from hydratune.checkpoint import load_trainable_weights
    from hydratune.tasks.classification.report import finish

    module = _module(tiny_model_dir, peft="none")
    module.log = module.log_dict = lambda *args, **kwargs: None
    module.eval()
    module.on_validation_epoch_start()
    with torch.no_grad():
        module.validation_step(_batch(tokenizer), 0)
    module.on_validation_epoch_end()  # the evaluation of step 0's weights
    validations = []  # each a check of the exported weights, kept out of the loggers' curves (review L12)
    trainer = SimpleNamespace(
        global_step=0, strategy=None, validate=lambda *a, **k: validations.append(int(module.checking_export))
    )
    metrics = finish(trainer, module, None, tmp_path)
    assert validations == [] and metrics["val_acc"] == module.last_metrics["val/acc"]
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    trainer.global_step = 3  # trained past the last evaluation
    finish(trainer, module, None, tmp_path)
    assert validations == [1]
    trainer.global_step = 0  # the evaluated step, but load_best_model_at_end put other weights in
    torch.save({"state_dict": module.state_dict()}, tmp_path / "best.ckpt")
    load_trainable_weights(module, tmp_path / "best.ckpt")
    finish(trainer, module, None, tmp_path)
    assert validations == [1, 1] and not module.checking_export


# ------------------------------------------------------------------------------------------- export


def test_exports_load_with_plain_transformers_and_peft_and_agree(tiny_model_dir, tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from hydratune.export import export_artifact, logit_parity, merge_adapter

    module = _module(tiny_model_dir)
    fit_repeated(module, _batch(tokenizer), steps=5)
    module.eval()
    batch = _batch(tokenizer)
    with torch.no_grad():
        expected = module(batch)
    adapter = export_artifact(module.model, tokenizer, tmp_path)
    assert adapter.name == "adapter"

    # Plain peft: the base rebuilt from the saved config (labels, head size), then the adapter.
    config = AutoConfig.from_pretrained(adapter)
    assert config.id2label == {0: "neg", 1: "pos"} and config.pad_token_id == 0
    # the class that has the head (the base's config said LlamaForCausalLM), and the cache training turned off
    assert config.architectures == ["LlamaForSequenceClassification"] and config.use_cache is True
    saved = json.loads((adapter / "tokenizer_config.json").read_text())
    assert not {"local_files_only", "is_local"} & set(saved), saved  # how this process loaded it
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, config=config)
    loaded = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        got = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(expected, got, atol=1e-5)
    # the one line the adapter's card gives AutoPeft (told the labels, it builds this head, not LABEL_0/1)
    from peft import AutoPeftModelForSequenceClassification

    told = AutoPeftModelForSequenceClassification.from_pretrained(
        adapter, num_labels=2, id2label=config.id2label, label2id=config.label2id
    ).eval()
    with torch.no_grad():
        got = told(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert told.config.id2label == {0: "neg", 1: "pos"} and torch.allclose(expected, got, atol=1e-5)

    merged = merge_adapter(adapter, tmp_path / "merged")
    assert logit_parity(adapter, merged) < 1e-4
    plain = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    assert plain.config.label2id == {"neg": 0, "pos": 1}
    texts = tokenizer.batch_decode(
        [row[mask.bool()] for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
    )
    rows = predict(*load_artifact(merged), texts)
    assert [r["label"] for r in rows] == [("neg", "pos")[int(i)] for i in expected.argmax(-1)]
    assert all(sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4) for r in rows)


def test_full_finetune_exports_model_dir(tiny_model_dir, tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from hydratune.export import export_artifact

    module = _module(tiny_model_dir, peft="none")
    fit_repeated(module, _batch(tokenizer), steps=2)
    module.eval()
    out = export_artifact(module.model, tokenizer, tmp_path)
    assert out.name == "model"
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    batch = _batch(tokenizer)
    with torch.no_grad():
        assert torch.allclose(
            module(batch), model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits
        )


# ------------------------------------------------------------------------------------ the example run


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~2 min alone on 2 cores; a training run and two CLI runs on a busy machine
def test_topics_experiment_reaches_90_percent_and_predicts(tmp_path):
    """The shipped example: >= 90% validation accuracy; `hydratune predict` agrees on the eval file."""
    run_dir = tmp_path / "topics"
    result = run_cli(
        [
            "train.py",
            "experiment=topics_lora",
            f"hydra.run.dir={run_dir}",
            "trainer.enable_progress_bar=false",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_acc"] >= 0.9, metrics
    assert "val_ppl" not in metrics  # a loss over classes has no perplexity
    # a classifier trains rows, not tokens: trained_tokens read 0
    assert "trained_tokens" not in metrics and metrics["tokens_seen"] > 0
    assert f"val/acc: {metrics['initial_val_acc']:.4f} -> {metrics['val_acc']:.4f}" in result.stdout
    assert metrics["labels"] == ["food", "sports", "tech", "weather"]
    assert (run_dir / "confusion_matrix.png").stat().st_size > 1000
    assert json.loads((run_dir / "adapter" / "config.json").read_text())["id2label"]["3"] == "weather"

    eval_file = ROOT / "data" / "topics" / "eval.jsonl"
    out = run_cli(["-m", "hydratune.cli", "predict", str(run_dir), "--input", str(eval_file)])
    assert out.returncode == 0, out.stderr[-2000:]
    predicted = [json.loads(line) for line in out.stdout.splitlines()]
    truth = [json.loads(line)["label"] for line in eval_file.read_text().splitlines()]
    accuracy = sum(p["label"] == y for p, y in zip(predicted, truth)) / len(truth)
    assert len(predicted) == len(truth) and accuracy == pytest.approx(metrics["val_acc"], abs=1e-6)

    out = run_cli(
        ["-m", "hydratune.cli", "predict", str(run_dir), "--text", "my sister wrote about the pizza"]
    )
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout)
    assert set(row["probabilities"]) == set(metrics["labels"]) and row["label"] in metrics["labels"]


@pytest.mark.slow
def test_encoder_classifier_trains_exports_and_predicts(tmp_path):
    """A BERT-style encoder (its [CLS] pooler, token type ids) through the same task, from a checkpoint
    that already has a 2-label head: the head is replaced by one for the data's 4 labels."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from hydratune.tiny import save_tiny_encoder

    encoder = save_tiny_encoder(tmp_path / "encoder", num_labels=2)
    run_dir = tmp_path / "run"
    result = run_cli(
        [
            "train.py",
            "experiment=topics_lora",
            f"model.pretrained_model_name_or_path={encoder}",
            "trainer.max_steps=40",
            "trainer.val_check_interval=40",
            "+trainer.limit_val_batches=2",
            "optimizer.lr=5e-3",
            "logger=csv",
            f"hydra.run.dir={run_dir}",
            "trainer.enable_progress_bar=false",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["labels"] == ["food", "sports", "tech", "weather"]
    assert metrics["best_val_loss"] < metrics["initial_val_loss"]  # it learned something in 40 steps
    assert [step for step, _ in metrics["val_curve"]] == [0, 40]  # the final check of the export is no point

    adapter = run_dir / "adapter"
    config = AutoConfig.from_pretrained(adapter)
    assert config.model_type == "bert" and config.num_labels == 4
    base = AutoModelForSequenceClassification.from_pretrained(
        encoder, config=config, ignore_mismatched_sizes=True
    )
    model = PeftModel.from_pretrained(base, adapter).eval()
    texts = ["my sister wrote about the pizza", "our team talked about the stadium"]
    rows = predict(*load_artifact(adapter), texts)
    tokenizer = load_artifact(adapter)[1]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0] == tokenizer.cls_token_id  # the encoder's own template
    with torch.no_grad():
        logits = model(**batch).logits
    assert [r["label"] for r in rows] == [config.id2label[int(i)] for i in logits.argmax(-1)]


def test_train_loader_shards_by_rank_and_resumes_mid_epoch(tmp_path, tokenizer):
    from types import SimpleNamespace

    cfg = to_plain(compose(["task=classification", "dataset=topics", "dataset.batch_size=8"]).dataset)
    datamodule = ClassificationDataModule(tokenizer, cfg, seed=3, cache_dir=str(tmp_path / "cache"))
    datamodule.setup()
    n = len(datamodule.train_dataset)

    def loader(world: int = 1, rank: int = 0):
        datamodule.trainer = SimpleNamespace(world_size=world, global_rank=rank, accumulate_grad_batches=1)
        return datamodule.train_dataloader()

    ranks = [[i for batch in loader(2, r).batch_sampler for i, _ in batch] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) >= n // 2 - 8
    assert not set(ranks[0]) & set(ranks[1])  # no row trained twice in an epoch

    first = loader()
    batches = iter(first)
    for _ in range(3):
        next(batches)
    state = first.state_dict()  # what a checkpoint after 3 batches holds
    expected = next(batches)
    resumed = loader()
    resumed.load_state_dict(state)
    got = next(iter(resumed))
    assert torch.equal(got["input_ids"], expected["input_ids"]) and torch.equal(
        got["labels"], expected["labels"]
    )


def test_predict_input_file_errors_name_the_line(tmp_path):
    from hydratune.cli.predict import _rows_from_file

    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a", "other": 1}\n\n{"text": "b"}\n')
    assert _rows_from_file(str(good), "text", None) == (["a", "b"], None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": 3}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: no text in column 'text'"):
        _rows_from_file(str(bad), "text", None)
    bad.write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        _rows_from_file(str(bad), "text", None)
