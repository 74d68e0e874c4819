"""hydratune's preference losses against TRL's own trainers, on one batch: the same tiny model and LoRA weights
(B randomised, so the policy differs from the reference), the same token ids (checked), and each trainer's
`compute_loss` against the module's real path (`pair_losses`, `row_losses`, `scores`). TRL comes with the
`bench` extra that `make install` brings; where a loss differs from TRL's on purpose, docs/options.md says so."""

from __future__ import annotations

import tempfile

import pytest
import torch
from conftest import compose

from hydratune.config import to_plain
from hydratune.data.pairs import KTOCollator, PairCollator, tokenize_kto, tokenize_pairs
from hydratune.tasks.registry import get_task

trl = pytest.importorskip("trl", reason="TRL comes with the bench extra (make install)")

pytestmark = pytest.mark.filterwarnings("ignore")

# Answers of unequal lengths, so a sum and a mean over tokens differ.
PAIRS = [
    {"prompt": "copy: hello -> ", "chosen": "HELLO", "rejected": "hello there my friend"},
    {"prompt": "copy: sky -> ", "chosen": "SKY IS BLUE TODAY", "rejected": "s"},
    {"prompt": "copy: ab -> ", "chosen": "AB", "rejected": "abab"},
    {"prompt": "copy: planets -> ", "chosen": "PLANETS", "rejected": "planet"},
]


def module(tiny_model_dir, tokenizer, *overrides: str):
    """The task's module as `python train.py OVERRIDES` builds it, LoRA B drawn at random."""
    cfg = to_plain(compose(["scheduler=constant", *overrides]))
    cfg["model"]["pretrained_model_name_or_path"] = str(tiny_model_dir)
    built = get_task(cfg["task"]).module(cfg, None, tokenizer)
    built.configure_model()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for name, param in built.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05, generator=generator)
    built.model.eval()
    return built


def pair_batch(tokenizer, rows):
    tokenized = tokenize_pairs(rows, tokenizer, {"format": "pairs", "max_seq_length": 128})
    keys = [k for k in ("prompt_ids", "chosen_ids", "rejected_ids", "margin") if k in tokenized]
    pairs = [{k: tokenized[k][i] for k in keys} for i in range(len(rows))]
    return pairs, PairCollator(tokenizer.pad_token_id)(pairs)


def trl_trainer(cls, config, ours, tiny_model_dir, tokenizer, rows, **extra):
    """A TRL trainer on the tiny base with `ours`' LoRA weights copied in."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    trainer = cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=ours.model.peft_config["default"],
        **extra,
    )
    state = dict(ours.model.named_parameters())
    with torch.no_grad():
        for name, param in trainer.model.named_parameters():
            if "lora_" in name:
                param.copy_(state[name])
    trainer.model.eval()
    return trainer


def common(tmp: str, rows: list) -> dict:
    return dict(output_dir=tmp, report_to=[], use_cpu=True, bf16=False, per_device_train_batch_size=len(rows))


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (["task.loss=sigmoid"], {"loss_type": ["sigmoid"]}),
        (["task.loss=robust", "task.label_smoothing=0.1"], {"loss_type": ["robust"], "label_smoothing": 0.1}),
        (["task.loss=ipo"], {"loss_type": ["ipo"]}),
        (["task.loss=hinge"], {"loss_type": ["hinge"]}),
        (["task.loss=sigmoid", "task.beta=0.5"], {"loss_type": ["sigmoid"], "beta": 0.5}),
    ],
)
def test_dpo_losses_equal_trls_dpo_trainer(tiny_model_dir, tokenizer, ours, theirs):
    from trl import DPOConfig, DPOTrainer

    dpo = module(tiny_model_dir, tokenizer, "task=dpo", *ours)
    pairs, batch = pair_batch(tokenizer, PAIRS)
    with torch.no_grad():
        out = dpo.pair_losses(batch)
    with tempfile.TemporaryDirectory() as tmp:
        config = DPOConfig(**common(tmp, PAIRS), max_length=None, **{"beta": 0.1, **theirs})
        trainer = trl_trainer(DPOTrainer, config, dpo, tiny_model_dir, tokenizer, PAIRS)
        rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]
        for row, pair in zip(rows, pairs):  # the same token ids
            assert [row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")] == [
                pair[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")
            ]
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, trainer.data_collator(rows))
        logged = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    torch.testing.assert_close(out["loss"].mean(), loss, rtol=1e-5, atol=1e-6)
    for ours_key, trl_key in (("chosen_rewards", "rewards/chosen"), ("rejected_rewards", "rewards/rejected"),
                              ("chosen_logps", "logps/chosen"), ("rejected_logps", "logps/rejected")):  # fmt: skip
        assert out[ours_key].mean().item() == pytest.approx(logged[trl_key], rel=1e-4, abs=1e-5), trl_key


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_simpo_equals_trls_cpo_trainer(tiny_model_dir, tokenizer, smoothing):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    simpo = module(tiny_model_dir, tokenizer, "task=dpo", "task.loss=simpo", "task.beta=2.0",
                   "task.simpo_gamma=0.5", f"task.label_smoothing={smoothing}")  # fmt: skip
    _, batch = pair_batch(tokenizer, PAIRS)
    with torch.no_grad():
        ours = simpo.pair_losses(batch)["loss"].mean()
    with tempfile.TemporaryDirectory() as tmp:
        config = CPOConfig(**common(tmp, PAIRS), max_length=128, remove_unused_columns=False, loss_type="simpo",
                           cpo_alpha=0.0, beta=2.0, simpo_gamma=0.5, label_smoothing=smoothing)  # fmt: skip
        trainer = trl_trainer(CPOTrainer, config, simpo, tiny_model_dir, tokenizer, PAIRS)
        rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]
        with torch.no_grad():
            loss, _ = trainer.get_batch_loss_metrics(trainer.model, trainer.data_collator(rows), "train")
    torch.testing.assert_close(ours, loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("desirable", "undesirable"), [(1.0, 1.0), (1.0, 2.0)])
def test_kto_equals_trls_kto_trainer(tiny_model_dir, tokenizer, desirable, undesirable):
    from trl import KTOConfig, KTOTrainer

    rows = [
        {"prompt": "copy: hello -> ", "completion": "HELLO", "label": True},
        {"prompt": "copy: sky -> ", "completion": "sky is blue today", "label": False},
        {"prompt": "copy: ab -> ", "completion": "AB", "label": True},
        {"prompt": "copy: planets -> ", "completion": "plan", "label": False},
        {"prompt": "copy: queue -> ", "completion": "QUEUE", "label": True},
        {"prompt": "copy: x -> ", "completion": "xx", "label": True},
    ]
    kto = module(tiny_model_dir, tokenizer, "task=kto", f"task.desirable_weight={desirable}",
                 f"task.undesirable_weight={undesirable}")  # fmt: skip
    tokenized = tokenize_kto(rows, tokenizer, {"format": "kto", "max_seq_length": 128})
    samples = [
        {k: tokenized[k][i] for k in ("prompt_ids", "completion_ids", "label")} for i in range(len(rows))
    ]
    with torch.no_grad():
        out = kto.row_losses(KTOCollator(tokenizer.pad_token_id, kl=True, max_length=128)(samples))
    with tempfile.TemporaryDirectory() as tmp:
        config = KTOConfig(**common(tmp, rows), max_length=128, beta=0.1, desirable_weight=desirable,
                           undesirable_weight=undesirable)  # fmt: skip
        trainer = trl_trainer(KTOTrainer, config, kto, tiny_model_dir, tokenizer, rows)
        theirs = [trainer.train_dataset[i] for i in range(len(rows))]
        for row, sample in zip(theirs, samples):
            assert (row["prompt_ids"], row["completion_ids"]) == (
                sample["prompt_ids"],
                sample["completion_ids"],
            )
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, trainer.data_collator(theirs))
        logged = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    torch.testing.assert_close(out["loss"].mean(), loss, rtol=1e-5, atol=1e-6)
    assert out["kl"].item() == pytest.approx(logged["kl"], rel=1e-4)


@pytest.mark.parametrize("centring", [None, 0.1])
def test_reward_loss_with_margins_and_centring_equals_trls_reward_trainer(
    tiny_model_dir, tokenizer, centring
):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    rows = [{**pair, "margin": m} for pair, m in zip(PAIRS, (1.0, 0.5, 2.0, 0.0))]
    reward = module(tiny_model_dir, tokenizer, "task=reward", "peft=none",
                    f"task.center_rewards_coefficient={'null' if centring is None else centring}")  # fmt: skip
    with torch.no_grad():
        reward.model.score.weight.normal_(std=0.5, generator=torch.Generator().manual_seed(3))
    _, batch = pair_batch(tokenizer, rows)
    assert batch["margin"].tolist() == [1.0, 0.5, 2.0, 0.0]
    with torch.no_grad():
        chosen, rejected = reward.scores(batch)
        ours = reward.pair_losses(batch, chosen, rejected).mean()
    with tempfile.TemporaryDirectory() as tmp:
        config = RewardConfig(**common(tmp, rows), max_length=128, center_rewards_coefficient=centring)
        trainer = RewardTrainer(model=reward.model, args=config, train_dataset=Dataset.from_list(rows),
                                processing_class=tokenizer)  # fmt: skip
        theirs = [trainer.train_dataset[i] for i in range(len(rows))]
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, trainer.data_collator(theirs))
    torch.testing.assert_close(ours, loss, rtol=1e-5, atol=1e-6)
