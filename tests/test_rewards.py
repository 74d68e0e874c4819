"""Reward functions, the task.rewards builder, and scoring with a saved reward model."""

from __future__ import annotations

import pytest
import torch

from hydratune.errors import UserError
from hydratune.rewards import (
    RewardModelScorer,
    build_rewards,
    exact_match,
    length_penalty,
    regex_match,
    score,
)

PROMPTS = ["shout: ab -> ", "shout: ab -> ", "rev: cd -> "]
COMPLETIONS = [" AB\n", "ab", "dc"]
COLUMNS = {"answer": ["AB", "AB", "dc"], "other": [1, 2, 3]}


def test_exact_match_strips_whitespace_and_reads_the_named_column():
    assert exact_match(PROMPTS, COMPLETIONS, **COLUMNS) == [1.0, 0.0, 1.0]
    assert exact_match(PROMPTS, ["1", "2", "4"], column="other", **COLUMNS) == [1.0, 1.0, 0.0]
    with pytest.raises(UserError, match="no column 'solution'"):
        exact_match(PROMPTS, COMPLETIONS, column="solution", **COLUMNS)


def test_regex_match_full_or_anywhere():
    completions = ["<answer>7</answer>", "I think <answer>7</answer>", "7"]
    assert regex_match(PROMPTS, completions, pattern=r"<answer>\d+</answer>") == [1.0, 0.0, 0.0]
    assert regex_match(PROMPTS, completions, pattern=r"<answer>\d+</answer>", full=False) == [1.0, 1.0, 0.0]


def test_length_penalty_is_zero_at_the_target():
    assert length_penalty(PROMPTS, ["abcd", "ab", "abcdefgh"], target=4, scale=2.0) == [0.0, -1.0, -2.0]


USER_MODULE = """
def my_reward(prompts, completions, answer):
    # A user's function without **columns: it receives only the columns it names.
    return [float(len(c) == len(a)) for c, a in zip(completions, answer)]


def wrong_length(prompts, completions, **columns):
    return [1.0]
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's own reward functions in an importable module (as `_target_: my_rewards.my_reward`)."""
    (tmp_path / "my_rewards.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards"


def test_builder_binds_kwargs_and_combines_with_weights(user_module):
    rewards = build_rewards(
        [
            {"_target_": "hydratune.rewards.exact_match", "weight": 1.0},
            {"_target_": "hydratune.rewards.length_penalty", "weight": 0.5, "target": 2, "scale": 1.0},
            {"_target_": f"{user_module}.my_reward", "weight": 2.0},
            {"_target_": "hydratune.rewards.exact_match", "weight": 0.25, "column": "other"},
        ]
    )
    assert [r.name for r in rewards] == ["exact_match_0", "length_penalty", "my_reward", "exact_match_3"]
    total, per_function = score(rewards, PROMPTS, COMPLETIONS, COLUMNS)
    assert per_function["exact_match_0"] == [1.0, 0.0, 1.0]
    assert per_function["length_penalty"] == [-2.0, 0.0, 0.0]
    assert per_function["my_reward"] == [0.0, 1.0, 1.0]
    assert per_function["exact_match_3"] == [0.0, 0.0, 0.0]
    assert total == pytest.approx([1.0 - 1.0 + 0.0, 0.0 + 0.0 + 2.0, 1.0 + 0.0 + 2.0])


def test_bound_config_values_win_over_a_dataset_column_of_the_same_name():
    rewards = build_rewards([{"_target_": "hydratune.rewards.length_penalty", "target": 2, "scale": 1.0}])
    total, _ = score(rewards, PROMPTS, COMPLETIONS, {**COLUMNS, "target": [100, 100, 100]})
    assert total == [-2.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"weight": 1.0}], r"task.rewards\[0\]: each reward is a mapping with _target_"),
        (
            [{"_target_": "hydratune.rewards.exact_match"}, {"_target_": "hydratune.rewards.nope"}],
            r"task.rewards\[1\]._target_=hydratune.rewards.nope: cannot import it",
        ),
        (
            [{"_target_": "no_such_package.reward"}],
            r"task.rewards\[0\]._target_=no_such_package.reward: cannot import",
        ),
        (
            [{"_target_": "os.path.basename"}],
            r"task.rewards\[0\]: os.path.basename must take \(prompts, completions",
        ),
        (
            [{"_target_": "hydratune.rewards.exact_match", "colum": "x"}],
            r"task.rewards\[0\].colum: .* no parameter",
        ),
        (
            [{"_target_": "hydratune.rewards.exact_match", "weight": "high"}],
            r"task.rewards\[0\].weight='high'",
        ),
        ([{"_target_": "hydratune.synthetic.OPERATIONS"}], r"task.rewards\[0\]._target_=.* is not callable"),
        ([], r"task.rewards: no reward"),
    ],
)
def test_bad_entries_get_one_line_naming_the_entry(entries, message):
    with pytest.raises(UserError, match=message) as err:
        build_rewards(entries)
    assert "\n" not in str(err.value)


def test_a_function_returning_the_wrong_number_of_values_is_named(user_module):
    rewards = build_rewards([{"_target_": f"{user_module}.wrong_length"}])
    with pytest.raises(
        UserError, match=r"task.rewards\[0\] \(wrong_length\) returned 1 values for 3 completions"
    ):
        score(rewards, PROMPTS, COMPLETIONS, COLUMNS)


def save_reward_model(tiny_model_dir, run_dir, adapter: bool, num_labels: int = 1):
    """A random reward model (Llama + scalar head) exported as a task=reward run would be."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hydratune.export import export_artifact

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=num_labels)
    if adapter:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules="all-linear"))
        with torch.no_grad():  # LoRA B starts at zero: make the adapter matter
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    export_artifact(model.eval(), tokenizer, run_dir)
    return model, tokenizer


@pytest.mark.parametrize("adapter", [False, True])
def test_reward_model_scores_prompt_and_completion(tiny_model_dir, tmp_path, adapter):
    model, tokenizer = save_reward_model(tiny_model_dir, tmp_path, adapter)
    assert (tmp_path / ("adapter" if adapter else "model")).is_dir()
    scorer = RewardModelScorer(tmp_path, batch_size=2)
    prompts = ["Hello", "shout: ab -> ", "x"]
    completions = [" world", "AB\n", "a much longer completion than the others"]
    scores = scorer(prompts, completions)
    # Each text alone, unpadded, through the model that was saved: BOS + prompt + completion + EOS.
    expected = []
    for p, c in zip(prompts, completions):
        ids = [
            tokenizer.bos_token_id,
            *tokenizer(p + c, add_special_tokens=False).input_ids,
            tokenizer.eos_token_id,
        ]
        with torch.no_grad():
            expected.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(scores)) == 3
    # Usable as a reward function, through the builder's task.reward_model door.
    rewards = build_rewards([], reward_model=str(tmp_path))
    total, per_function = score(rewards, prompts, completions)
    assert total == pytest.approx(expected, abs=1e-5) and list(per_function) == ["reward_model"]
    # Or as a weighted entry of task.rewards, beside a function.
    rewards = build_rewards(
        [
            {"_target_": "hydratune.rewards.RewardModelScorer", "run_dir": str(tmp_path), "weight": 0.5},
            {"_target_": "hydratune.rewards.length_penalty", "weight": 1.0, "target": 0, "scale": 1.0},
        ]
    )
    total, per_function = score(rewards, prompts, completions)
    lengths = [len(c) for c in completions]
    assert total == pytest.approx([0.5 * e - n for e, n in zip(expected, lengths)], abs=1e-5)
    with pytest.raises(UserError, match=r"task.rewards\[0\]: hydratune.rewards.RewardModelScorer\(run\)"):
        build_rewards([{"_target_": "hydratune.rewards.RewardModelScorer", "run": str(tmp_path)}])


def test_reward_model_errors_name_the_key(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match=r"task.reward_model=.*has no merged/ or adapter/ or model/"):
        RewardModelScorer(tmp_path / "missing")
    save_reward_model(tiny_model_dir, tmp_path, adapter=False, num_labels=2)
    with pytest.raises(UserError, match=r"task.reward_model=.*has 2 labels; a reward model has one"):
        RewardModelScorer(tmp_path)
