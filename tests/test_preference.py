"""Preference tasks (dpo, reward, kto) end to end on the tiny models: the loss at the start is the closed
form, chosen and rejected share one forward without changing a log-prob, training moves the metrics the
right way, the artifacts load in transformers/peft, and `hydratune score` and `inspect` work."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import ROOT, compose, fit_repeated, run_cli

from hydratune.config import to_plain
from hydratune.data.pairs import PairCollator
from hydratune.errors import UserError
from hydratune.losses import sequence_logps
from hydratune.preflight import check_config
from hydratune.tasks.registry import get_task
from hydratune.tasks.task import module_kwargs


def _cfg(tiny_model_dir, *overrides: str) -> dict:
    cfg = to_plain(compose(["scheduler=constant", *overrides]))
    cfg["model"]["pretrained_model_name_or_path"] = str(tiny_model_dir)
    return cfg


def _pairs(tokenizer, n: int = 4) -> list[dict]:
    """Pairs of unequal lengths: the chosen answer in capitals, the rejected one as written."""

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    words = ["ab", "hello", "sky", "planets", "x", "queue"][:n]
    return [
        {
            "prompt_ids": [tokenizer.bos_token_id, *ids(f"copy: {w} -> ")],
            "chosen_ids": [*ids(w.upper()), tokenizer.eos_token_id],
            "rejected_ids": [*ids(w), tokenizer.eos_token_id],
        }
        for w in words
    ]


def _module(task: str, cfg: dict, tokenizer, **settings):
    task_cfg = {**cfg["task"], **settings}
    return get_task(task_cfg).module(cfg, None, tokenizer)


def _lora_b_off_zero(module) -> None:
    """LoRA B starts at zero (the adapted model is the base); give it values so the policy differs from the
    reference and the base."""
    with torch.no_grad():
        for name, p in module.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05, generator=torch.Generator().manual_seed(1))


def test_preference_tasks_need_pair_data_before_anything_loads():
    check_config(to_plain(compose(["task=dpo"])))  # task=dpo brings dataset=preference
    check_config(to_plain(compose(["task=kto"])))
    with pytest.raises(UserError, match=r"dataset.format.*dataset=preference"):
        check_config(to_plain(compose(["task=dpo", "dataset=sample"])))
    with pytest.raises(UserError, match=r"task.loss must be one of sigmoid, robust, ipo, hinge, orpo, simpo"):
        check_config(to_plain(compose(["task=dpo", "task.loss=dpo"])))
    # From 0.5 on the loss prefers the rejected answers; ipo, hinge and orpo never read it.
    with pytest.raises(UserError, match=r"task.label_smoothing .* must be in \[0, 0.5\)"):
        check_config(to_plain(compose(["task=dpo", "task.label_smoothing=0.7"])))
    with pytest.raises(UserError, match=r"read by the sigmoid, robust, simpo losses only"):
        check_config(to_plain(compose(["task=dpo", "task.loss=ipo", "task.label_smoothing=0.1"])))
    check_config(to_plain(compose(["task=dpo", "task.loss=robust", "task.label_smoothing=0.1"])))
    with pytest.raises(UserError, match=r"dataset.format.*dataset=kto"):
        check_config(to_plain(compose(["task=kto", "dataset=preference"])))
    # Values that passed before (review D5, D6): KTO against itself, rewards pulled the wrong way.
    for overrides, match in [
        (
            ["task=kto", "dataset.batch_size=1"],
            r"a batch of one compares a row with itself: set dataset.batch_size=2",
        ),
        (["task=kto", "task.beta=-1"], r"task.beta is the implicit reward's temperature and must be > 0"),
        (["task=kto", "task.undesirable_weight=0"], r"must be > 0: use e.g. task.undesirable_weight=1.0"),
        (["task=reward", "task.margin=-1"], r"task.margin .* must be >= 0"),
        # a null or a quoted number is refused by the rule, not a TypeError inside it (review V7, V10)
        (["task=dpo", "task.loss=robust", "task.label_smoothing=null"], r"must be in \[0, 0.5\)"),
        (["task=dpo", "task.label_smoothing='0.1'"], r"must be in \[0, 0.5\)"),
        (["task=kto", "task.beta='0.1'"], r"task.beta is the implicit reward's temperature"),
        (["task=kto", "task.desirable_weight='1'"], r"must be > 0"),
        (["task=kto", "dataset.eval_batch_size=1"], r"dataset.eval_batch_size=2 or more"),
        (["task=reward", "task.center_rewards_coefficient=-0.1"], r"must be >= 0 \(or null\)"),
        # TRL's spellings and a setting orpo never reads (review P10)
        (["task=dpo", "task.loss=[sigmoid,sft]"], r"task.loss=sigmoid task.sft_weight=W"),
        (
            ["task=dpo", "task.loss=orpo", "task.sft_weight=0.5"],
            r"not read by task.loss=orpo.*task.sft_weight=0",
        ),
        (["task=dpo", "+task.max_length=512"], r"^task.max_length: .*is dataset.max_seq_length here"),
        (["task=dpo", "+task.truncation_mode=keep_end"], r"^task.truncation_mode: .*keep_start"),
    ]:
        with pytest.raises(UserError, match=match):
            check_config(to_plain(compose(overrides)))


def test_chosen_and_rejected_in_one_forward_give_each_rows_own_logps(tiny_model_dir, tokenizer):
    """Right padding and the attention mask: a row's log-prob in the 2B batch equals the row alone."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    pairs = _pairs(tokenizer)
    batch = PairCollator(tokenizer.pad_token_id)(pairs)
    with torch.no_grad():
        together = sequence_logps(model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits,
                                  batch["labels"])[0]  # fmt: skip
        for i, pair in enumerate(pairs):
            for k, answer in ((i, pair["chosen_ids"]), (len(pairs) + i, pair["rejected_ids"])):
                ids = torch.tensor([pair["prompt_ids"] + answer])
                labels = torch.tensor([[-100] * len(pair["prompt_ids"]) + answer])
                alone = sequence_logps(model(input_ids=ids).logits, labels)[0]
                torch.testing.assert_close(together[k], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loss", ["sigmoid", "robust", "ipo", "hinge"])
def test_dpo_starts_at_the_closed_form_and_overfits(tiny_model_dir, tokenizer, loss):
    """LoRA starts as the identity, so the policy is the reference: h = 0, and the first loss is
    log 2 (sigmoid), (1/(2 beta))^2 (ipo) or 1 (hinge). Training on one batch makes every pair right."""
    cfg = _cfg(tiny_model_dir, "task=dpo", f"task.loss={loss}", "task.sft_weight=0", "optimizer.lr=5e-3")
    module = _module("dpo", cfg, tokenizer)
    module.configure_model()
    batch = PairCollator(tokenizer.pad_token_id)(_pairs(tokenizer))
    first = module.pair_losses(batch)
    closed_form = {"sigmoid": math.log(2), "robust": math.log(2), "ipo": (1 / (2 * 0.1)) ** 2, "hinge": 1.0}
    expected = closed_form[loss]
    torch.testing.assert_close(first["loss"], torch.full((4,), expected), atol=1e-5, rtol=1e-5)
    assert torch.all(first["chosen_rewards"] == 0) and torch.all(first["rejected_rewards"] == 0)
    losses = fit_repeated(module, batch, steps=25)
    assert losses[-1] < 0.5 * losses[0], losses
    after = module.pair_losses(batch)
    assert torch.all(after["chosen_rewards"] > after["rejected_rewards"])


def test_ipo_rewards_are_of_summed_log_ratios(tiny_model_dir, tokenizer):
    """IPO's loss reads mean log-ratios per answer token, but its rewards (and the accuracy and margin from
    them) are beta x the summed log-ratios, as for the other losses and as TRL logs them: from the means a
    margin could have the other sign than TRL's on the same batch."""
    from hydratune.data.pairs import PairCollator

    cfg = _cfg(tiny_model_dir, "task=dpo", "task.loss=ipo", "task.sft_weight=0")
    module = _module("dpo", cfg, tokenizer)
    module.configure_model()
    _lora_b_off_zero(module)
    batch = PairCollator(tokenizer.pad_token_id)(_pairs(tokenizer))
    with torch.no_grad():
        out = module.pair_losses(batch)
        policy = module.answer_logps(batch)[0]
        with module.adapters_off():
            reference = module.answer_logps(batch)[0]
    half = policy.size(0) // 2
    rewards = 0.1 * (policy - reference)
    torch.testing.assert_close(out["chosen_rewards"], rewards[:half], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["rejected_rewards"], rewards[half:], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("loss", ["sigmoid", "simpo"])
def test_dpo_fused_scoring_matches_the_logits_path(tiny_model_dir, tokenizer, loss):
    """With LoRA, answers scored from hidden states (the default) give the logits path's losses, rewards and
    LoRA gradients, for the policy and for the adapters-off reference."""
    batch = PairCollator(tokenizer.pad_token_id)(_pairs(tokenizer))
    out = {}
    for fused in (False, True):
        torch.manual_seed(0)
        cfg = _cfg(tiny_model_dir, "task=dpo", f"task.loss={loss}", f"task.fused_loss={fused}")
        module = _module("dpo", cfg, tokenizer)
        module.configure_model()
        assert (module.fused_scoring_head() is not None) == fused
        _lora_b_off_zero(module)
        result = module.pair_losses(batch)
        result["loss"].sum().backward()
        grads = {n: p.grad for n, p in module.model.named_parameters() if p.requires_grad}
        out[fused] = (result, grads)
    for key in ("loss", "chosen_rewards", "rejected_rewards"):
        torch.testing.assert_close(out[True][0][key], out[False][0][key], atol=1e-5, rtol=1e-5)
    assert out[True][0]["chosen_rewards"].abs().sum() > 0  # the policy is not the reference here
    for name, grad in out[False][1].items():
        torch.testing.assert_close(out[True][1][name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_kto_fused_scoring_matches_the_logits_path(tiny_model_dir, tokenizer):
    """task=kto with LoRA scores completions and KL rows from hidden states (the default): the same losses,
    KL estimate, rewards and LoRA gradients as through the logits."""
    from hydratune.data.pairs import KTOCollator

    samples = [
        {"prompt_ids": p["prompt_ids"], "completion_ids": p[key], "label": key == "chosen_ids"}
        for p, key in zip(_pairs(tokenizer), ["chosen_ids", "rejected_ids", "chosen_ids", "rejected_ids"])
    ]
    batch = KTOCollator(tokenizer.pad_token_id)(samples)
    out = {}
    for fused in (False, True):
        torch.manual_seed(0)
        module = _module("kto", _cfg(tiny_model_dir, "task=kto", f"task.fused_loss={fused}"), tokenizer)
        module.configure_model()
        assert (module.fused_scoring_head() is not None) == fused
        _lora_b_off_zero(module)
        result = module.row_losses(batch)
        result["loss"].sum().backward()
        out[fused] = (result, {n: p.grad for n, p in module.model.named_parameters() if p.requires_grad})
    for key in ("loss", "rewards", "kl"):
        torch.testing.assert_close(out[True][0][key], out[False][0][key], atol=1e-5, rtol=1e-5)
    assert out[True][0]["rewards"].abs().sum() > 0  # the policy is not the reference here
    for name, grad in out[False][1].items():
        torch.testing.assert_close(out[True][1][name], grad, atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("loss", ["orpo", "simpo"])
def test_reference_free_losses_train(tiny_model_dir, tokenizer, loss):
    cfg = _cfg(tiny_model_dir, "task=dpo", f"task.loss={loss}", "task.sft_weight=0", "optimizer.lr=5e-3")
    module = _module("dpo", cfg, tokenizer)
    batch = PairCollator(tokenizer.pad_token_id)(_pairs(tokenizer))
    module.configure_model()
    assert module.reference_logps(batch) is None  # no reference forward at all
    losses = fit_repeated(module, batch, steps=25)
    assert losses[-1] < losses[0], losses
    after = module.pair_losses(batch)
    assert (after["chosen_rewards"] > after["rejected_rewards"]).float().mean() >= 0.75


@pytest.mark.parametrize("bias", ["none", "lora_only"])  # lora_only: peft's own disable_adapter path
def test_lora_reference_is_the_base_model_and_the_adapters_come_back(tiny_model_dir, tokenizer, bias):
    """With LoRA the reference is the base weights with every adapter switched off, and afterwards the
    adapters are on and trainable again."""
    from transformers import AutoModelForCausalLM

    cfg = _cfg(tiny_model_dir, "task=dpo", f"peft.config.bias={bias}")
    module = _module("dpo", cfg, tokenizer)
    module.configure_model()
    _lora_b_off_zero(module)
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    batch = PairCollator(tokenizer.pad_token_id)(_pairs(tokenizer))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        expected = base(**inputs).logits
        policy = module.model(**inputs).logits
    for _ in range(2):  # the second call reuses the listed layers
        reference = module.reference_logits(**inputs)
        if bias == "none":  # a trained bias makes the adapters-off model differ from the base (peft warns)
            torch.testing.assert_close(reference, expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(reference, policy, atol=1e-4)
        with torch.no_grad():
            torch.testing.assert_close(module.model(**inputs).logits, policy)
        assert {n for n, p in module.model.named_parameters() if p.requires_grad} == trainable


@pytest.mark.parametrize("peft", ["lora", "dora"])
def test_merged_adapters_decode_as_the_adapted_model_and_leave_the_base_untouched(
    tiny_model_dir, tokenizer, peft
):
    """GRPO samples with each LoRA update folded into a temporary weight copy: the same completions as
    through the adapters, the base weights bit-identical afterwards, the adapters on again. DoRA (and other
    kinds) decode through the adapters as they are."""
    from hydratune.tasks.grpo.sampling import sample

    cfg = _cfg(tiny_model_dir, "task=dpo", f"peft={peft}")
    module = _module("dpo", cfg, tokenizer)
    module.configure_model()
    _lora_b_off_zero(module)
    base_before = {n: p.detach().clone() for n, p in module.model.named_parameters() if "base_layer" in n}
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    prompts = ["copy: sky -> ", "copy: planets -> "]
    plain = sample(module.model, tokenizer, prompts, 4, max_new_tokens=8, temperature=1.0, seed=3)
    batch = PairCollator(tokenizer.pad_token_id)(_pairs(tokenizer))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        policy = module.model(**inputs).logits
        with module.merged_adapters():
            merged_logits = module.model(**inputs).logits
            merged = sample(module.model, tokenizer, prompts, 4, max_new_tokens=8, temperature=1.0, seed=3)
    torch.testing.assert_close(merged_logits, policy, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(policy, module.reference_logits(**inputs), atol=1e-3)  # the adapters matter
    assert bool(module._mergeable) == (peft == "lora")
    assert merged.texts == plain.texts
    for name, p in module.model.named_parameters():
        if name in base_before:
            assert torch.equal(p, base_before[name]), name
    assert {n for n, p in module.model.named_parameters() if p.requires_grad} == trainable
    again = sample(module.model, tokenizer, prompts, 4, max_new_tokens=8, temperature=1.0, seed=3)
    assert again.texts == plain.texts


def test_grpo_scores_completions_with_only_their_logits(tiny_model_dir, tokenizer):
    """GRPO asks the model for the logits of the completion positions alone (`logits_to_keep`): the same
    per-token log-probs as slicing the full logits, for the policy and the reference."""
    from hydratune.tasks.grpo.loss import token_logps

    module = _module(
        "grpo", _cfg(tiny_model_dir, "task=grpo", "task.beta=0.04", "task.temperature=0.7"), tokenizer
    )
    module.configure_model()
    _lora_b_off_zero(module)
    batch = PairCollator(tokenizer.pad_token_id)(_pairs(tokenizer))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    completion = batch["input_ids"][:, -5:]
    assert module._keeps_logits()
    for reference in (False, True):
        full = module.reference_logits(**inputs) if reference else module.model(**inputs).logits
        expected = token_logps(full[:, -6:-1], completion, 0.7)
        got = module._completion_logps(inputs, completion, reference=reference)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    module._logits_to_keep = False  # a model without the argument: the full logits, sliced
    expected = token_logps(module.model(**inputs).logits[:, -6:-1], completion, 0.7)
    torch.testing.assert_close(module._completion_logps(inputs, completion), expected, atol=1e-5, rtol=1e-5)


def test_grpo_sampling_prefills_with_the_last_position_logits_only(tiny_model_dir, tokenizer, monkeypatch):
    """The prefill asks for the last position's logits alone (`logits_to_keep=1`): the same completions for a
    seed as with every position's logits."""
    from transformers import AutoModelForCausalLM

    from hydratune.tasks.grpo import sampling

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = ["copy: sky -> ", "copy: planets -> ", "x"]
    assert sampling.takes_logits_to_keep(model)
    kept = sampling.sample(model, tokenizer, prompts, 4, max_new_tokens=8, temperature=1.0, seed=3)
    monkeypatch.setattr(sampling, "takes_logits_to_keep", lambda _: False)
    full = sampling.sample(model, tokenizer, prompts, 4, max_new_tokens=8, temperature=1.0, seed=3)
    assert kept.texts == full.texts


def test_full_finetune_reference_is_a_frozen_copy_or_precomputed(tiny_model_dir, tokenizer):
    cfg = _cfg(tiny_model_dir, "task=dpo", "task.sft_weight=0", "peft=none", "optimizer.lr=1e-3")
    module = _module("dpo", cfg, tokenizer)
    module.configure_model()
    assert len(module._reference) == 1
    assert not any(p.requires_grad for p in module._reference[0].parameters())
    # The copy is not a submodule: not in the checkpoint, not trained.
    assert not any("_reference" in name for name, _ in module.named_parameters())
    batch = PairCollator(tokenizer.pad_token_id)(_pairs(tokenizer))
    torch.testing.assert_close(module.pair_losses(batch)["loss"], torch.full((4,), math.log(2)))
    fit_repeated(module, batch, steps=5)
    # The reference did not move with the policy.
    ref = module.reference_logps(batch)
    fresh = _module("dpo", cfg, tokenizer)
    fresh.configure_model()
    torch.testing.assert_close(ref, fresh.reference_logps(batch))

    cfg = _cfg(tiny_model_dir, "task=dpo", "peft=none", "task.precompute_ref_logps=true")
    module = _module("dpo", cfg, tokenizer)
    module.configure_model()
    assert module._reference == []  # no copy: the log-probs come with the data


@pytest.mark.slow
def test_dpo_with_an_nll_term_learns_the_preference_and_its_answers(tmp_path):
    """`python train.py task=dpo task.sft_weight=1.0` (RPO): held-out preference accuracy and greedy answers that
    follow the chosen behaviour (capitals after `copy:`), from a start that follows it in few cases. Pure DPO
    (the default, as TRL's) ranks the pairs but leaves greedy answers as they were on this model."""
    from hydratune.export import load_artifact
    from hydratune.generate import generate

    run_dir = tmp_path / "dpo"
    result = run_cli(
        [
            "train.py",
            "task=dpo",
            "task.sft_weight=1.0",
            "logger=csv",
            f"hydra.run.dir={run_dir}",
            "trainer.enable_progress_bar=false",
        ]  # fmt: skip
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["initial_val_accuracy"] <= 0.5 and metrics["val_accuracy"] >= 0.9, metrics
    for key in ("val_margin", "val_rewards_chosen", "val_rewards_rejected", "val_loss"):
        assert key in metrics
    # TRL's log-prob curves, the NLL term apart (review P9): the chosen answers' log-probs rise
    import csv

    rows = list(csv.DictReader(next((run_dir / "csv").rglob("metrics.csv")).open()))
    assert {"train/nll", "train/logps/chosen", "train/logps/rejected", "val/logps/rejected"} <= set(rows[0])
    chosen = [float(r["val/logps/chosen"]) for r in rows if r.get("val/logps/chosen")]
    assert len(chosen) >= 2 and chosen[-1] > chosen[0], chosen
    assert "val/rewards/chosen: " in result.stdout
    rows = [
        json.loads(line) for line in (ROOT / "data" / "preference" / "eval.jsonl").read_text().splitlines()
    ]
    model, tokenizer = load_artifact(run_dir / "adapter")
    answers = generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=12)
    follows = sum(a.strip() == r["chosen"] for a, r in zip(answers, rows)) / len(rows)
    base, _ = load_artifact(ROOT / "assets" / "tiny-llama")
    before = generate(base, tokenizer, [r["prompt"] for r in rows], max_new_tokens=12)
    followed_before = sum(a.strip() == r["chosen"] for a, r in zip(before, rows)) / len(rows)
    assert followed_before <= 0.3 and follows >= 0.8, (followed_before, follows)


@pytest.mark.slow
def test_reward_model_ranks_held_out_pairs_and_scores(tmp_path):
    from transformers import AutoModelForSequenceClassification

    run_dir = tmp_path / "reward"
    result = run_cli(
        ["train.py", "task=reward", "trainer.max_steps=30", "trainer.val_check_interval=15",
         f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false", "peft=none"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_accuracy"] >= 0.9, metrics
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    assert model.config.num_labels == 1 and model.config.id2label[0] == "reward"
    out = run_cli(["-m", "hydratune.cli", "score", str(run_dir), "--prompt", "copy: stone -> ",
                   "--response", "STONE", "--prompt", "copy: stone -> ", "--response", "stone"])  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    chosen, rejected = (json.loads(line)["reward"] for line in out.stdout.splitlines())
    assert chosen > rejected
    # A file of held-out pairs: each answer scored as above, and the share ranked right
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "copy: stone -> ", "chosen": "STONE", "rejected": "stone"}) + "\n")
    out = run_cli(["-m", "hydratune.cli", "score", str(run_dir), "--file", str(pairs)])
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout)
    assert (row["reward_chosen"], row["reward_rejected"]) == (pytest.approx(chosen), pytest.approx(rejected))
    assert "1 pairs: chosen scored above rejected in 1 (100.0%)" in out.stderr
    # README's plain-transformers scoring: the tokenizer writes BOS, the text ends with EOS, as in training.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    ids = tokenizer("copy: stone -> STONE" + tokenizer.eos_token, return_tensors="pt")
    assert float(model(**ids).logits[0, 0]) == pytest.approx(chosen, abs=1e-5)


@pytest.mark.slow
def test_kto_moves_the_held_out_margin(tmp_path):
    run_dir = tmp_path / "kto"
    result = run_cli(
        ["train.py", "task=kto", "trainer.max_steps=12", "trainer.val_check_interval=6",
         f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["initial_val_margin"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["val_margin"] > 0.1, metrics
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_inspect_shows_pairs_and_classification_rows():
    from hydratune.cli.inspect import inspect_data

    text = inspect_data(["task=dpo"], samples=2)
    assert "train: 2000 pairs from 2000 rows" in text and "chosen:" in text and "rejected:" in text
    text = inspect_data(["task=classification", "dataset=topics"], samples=2)
    assert "labels: 4 (food, sports, tech, weather)" in text and "--- train[0] label '" in text
    assert "pairs" not in text and "[[" not in text  # not the SFT view


def test_module_kwargs_keep_the_token_out_of_hyperparameters(tiny_model_dir):
    cfg = _cfg(tiny_model_dir)
    cfg["model"]["token"] = "hf_secret"
    kwargs = module_kwargs(cfg)
    assert kwargs["hub_token"] == "hf_secret" and "token" not in kwargs["model"]
    assert cfg["model"]["token"] == "hf_secret"  # the run's own config keeps it for the other readers


@pytest.mark.slow
def test_precomputed_reference_logps_are_cached_with_the_tokenized_data(tmp_path):
    """task.precompute_ref_logps=true: computed once with the starting weights and in the training step's
    precision (the first loss is log 2, policy == reference), kept in the `datasets` cache beside the
    tokenized pairs, and read from there by a second run on the same data, model and precision."""
    runs = []
    for name, precision in (("first", "32-true"), ("second", "32-true"), ("bf16", "bf16-mixed")):
        run_dir = tmp_path / name
        result = run_cli([
            "train.py", "task=dpo", "peft=none", "task.precompute_ref_logps=true", "task.sft_weight=0",
            "trainer.max_steps=1", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}",
            "trainer.enable_progress_bar=false", f"eval_before_training={name == 'second'}",
            f"trainer.precision={precision}",
            "dataset.ops=[{select_rows:{first:128}}]",  # the first 128 pairs of each split: enough to cache
        ])  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append((run_dir / "train.log").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["train_loss"] == pytest.approx(math.log(2), abs=1e-5)
        if name == "second":  # the evaluation before training: its batches were built before the columns
            assert metrics["initial_val_margin"] == pytest.approx(0.0, abs=1e-6)
    assert "train pairs computed once" in runs[0] and "validation pairs computed once" in runs[0]
    assert "train pairs read from the data cache" in runs[1], runs[1][-2000:]
    # bf16-mixed: computed again, under the training step's autocast (fp32 values would make the first
    # margins non-zero: a loss of 0.6879 instead of log 2 before this was fixed).
    assert "train pairs computed once" in runs[2], runs[2][-2000:]
