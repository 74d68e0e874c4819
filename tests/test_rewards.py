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


def trl_reward(completions, **kwargs):
    # TRL's shape: completions by name, the row's columns (and prompts) in kwargs; None: not judged
    return [None if c == "dc" else float(c.strip() == a) for c, a in zip(completions, kwargs["answer"])]


def crashes(prompts, completions, **columns):
    return [c[0]["content"] for c in completions]  # a TRL conversational reward given text


def trl_conversational(completions, **kwargs):  # TRL's docs' shape for chat data
    pairs = zip(kwargs["prompts"], completions)
    return [float(c[0]["content"].strip() == p[-1]["content"].upper()) for p, c in pairs]


def trl_both_shapes(prompts, completions, **kwargs):  # TRL's other shape for chat data: hydratune's too
    return [float(c[0]["content"].strip() == p[-1]["content"].upper()) for p, c in zip(prompts, completions)]


def fails(prompts, completions, **kwargs):
    raise ValueError("my own bug")
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


def test_trl_shaped_rewards_none_values_and_a_crash(user_module):
    """TRL's `f(completions, **kwargs)` was refused (review G2); a None for a completion it does not judge is left
    out of the total, as TRL's nansum does (it was 'not a list of numbers'); the function's own error is one line
    naming its entry, not a traceback after the model loaded (G3, G4)."""
    rewards = build_rewards([{"_target_": f"{user_module}.trl_reward", "weight": 2.0},
                             {"_target_": "hydratune.rewards.length_penalty", "weight": 1.0, "target": 2}])  # fmt: skip
    total, per_function = score(rewards, PROMPTS, COMPLETIONS, COLUMNS)
    assert (
        per_function["trl_reward"][:2] == [1.0, 0.0]
        and per_function["trl_reward"][2] != per_function["trl_reward"][2]
    )
    assert total == pytest.approx([2.0 - 2 / 64, 0.0, 0.0])
    crash = build_rewards([{"_target_": f"{user_module}.crashes"}])
    with pytest.raises(UserError, match=r"^task.rewards\[0\] \(crashes\) raised TypeError: string indices"):
        score(crash, PROMPTS, COMPLETIONS, COLUMNS)


def test_chat_prompts_reach_trl_shaped_rewards_as_trl_hands_them(user_module):
    """With chat prompts a TRL reward reads `completions[i][0]["content"]` and the prompt's messages; it got text
    and crashed (review G3). hydratune's own (prompts, completions) functions keep getting text."""
    turns = [
        [{"role": "user", "content": "ab"}],
        [{"role": "user", "content": "ab"}],
        [{"role": "user", "content": "x"}],
    ]
    rewards = build_rewards([{"_target_": f"{user_module}.trl_conversational"}, {"_target_": "hydratune.rewards.exact_match"}],
                            conversational=True)  # fmt: skip
    _, per_function = score(rewards, PROMPTS, COMPLETIONS, COLUMNS, turns)
    assert per_function["trl_conversational"] == [1.0, 0.0, 0.0]
    assert per_function["exact_match"] == [1.0, 0.0, 1.0]  # text, as before
    # `f(prompts, completions, **kwargs)` is both shapes: text first (hydratune's), messages when text fails
    both = build_rewards([{"_target_": f"{user_module}.trl_both_shapes"}, {"_target_": f"{user_module}.my_reward"}],
                         conversational=True)  # fmt: skip
    for _ in range(2):  # the shape that worked is kept
        _, per_function = score(both, PROMPTS, COMPLETIONS, COLUMNS, turns)
        assert per_function["trl_both_shapes"] == [1.0, 0.0, 0.0] and per_function["my_reward"] == [
            0.0,
            1.0,
            1.0,
        ]
    assert both[0]._trl_shapes is True and both[1]._trl_shapes is False
    broken = build_rewards([{"_target_": f"{user_module}.fails"}], conversational=True)
    with pytest.raises(UserError, match=r"\(fails\) raised ValueError: my own bug"):  # its own error, once
        score(broken, PROMPTS, COMPLETIONS, COLUMNS, turns)


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
        (  # a traceback after the model loaded (review G4)
            [{"_target_": "hydratune.rewards.regex_match", "pattern": "<think>(.*</think>"}],
            r"task.rewards\[0\].pattern='<think>\(\.\*</think>': not a regular expression \(missing \)",
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


def write_run_config(run_dir, task: str = "reward", dataset: dict | None = None) -> None:
    """The .hydra/config.yaml a finished run of `task` leaves (what the reward-model checks read)."""
    import yaml

    dataset = dataset or {"format": "pairs", "max_seq_length": 64}
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"task": {"name": task}, "dataset": dataset})
    )


def save_reward_model(
    tiny_model_dir, run_dir, adapter: bool, num_labels: int = 1, dataset: dict | None = None
):
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
    write_run_config(run_dir, "reward", dataset)
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
    with pytest.raises(UserError, match=r"task.reward_model=.*missing: no such directory"):
        RewardModelScorer(tmp_path / "missing")
    save_reward_model(tiny_model_dir, tmp_path, adapter=False, num_labels=2)
    with pytest.raises(UserError, match=r"task.reward_model=.*has 2 labels; a reward model has one"):
        RewardModelScorer(tmp_path)


@pytest.mark.parametrize(
    ("dataset", "marker"),
    [
        ({"format": "chat_pairs", "max_seq_length": 64}, "assistant"),  # the chat template's turns
        ({"format": "pairs", "max_seq_length": 64}, None),
        ({"format": "pairs", "max_seq_length": 6}, None),  # cut to the run's max_seq_length, as score cuts
    ],
)
def test_reward_model_scorer_reads_what_hydratune_score_reads(tiny_model_dir, tmp_path, dataset, marker):
    """GRPO's reward model gets each (prompt, completion) in the token layout `hydratune score` gives that
    reward run (its dataset.format, its chat template, its max_seq_length), not always the pairs layout."""
    from hydratune.export import find_artifact, load_artifact, run_settings
    from hydratune.tasks.reward.inference import score as score_cli

    save_reward_model(tiny_model_dir, tmp_path, adapter=True, dataset=dataset)
    scorer = RewardModelScorer(tmp_path)
    prompts, responses = ["lower: AZI", "shout: ab"], ["azi", "AB"]
    # What `hydratune score RUN --prompt P --response R` feeds the model: recorded at its forward.
    model, tokenizer = load_artifact(find_artifact(tmp_path))
    seen = []
    forward = model.forward
    model.forward = lambda input_ids, **kw: (
        seen.append(input_ids[0].tolist()) or forward(input_ids=input_ids, **kw)
    )
    expected = score_cli(model, tokenizer, prompts, responses, run_settings(tmp_path)[1])
    assert [scorer._encode(p, r) for p, r in zip(prompts, responses)] == seen
    assert scorer(prompts, responses) == pytest.approx(expected, abs=1e-5)
    with torch.autocast(
        "cpu", dtype=torch.bfloat16
    ):  # the policy's bf16-mixed step: not rounded to bf16 (G11)
        assert scorer(prompts, responses) == pytest.approx(expected, abs=1e-5)
    text = tokenizer.decode(seen[0])
    if marker:  # the chat layout, not `[BOS] prompt completion EOS`
        assert marker in text and not text.startswith(tokenizer.bos_token + "lower")
        assert seen[0] != scoring_ids_pairs(tokenizer, prompts[0], responses[0])
    elif dataset["max_seq_length"] > 10:
        assert seen[0] == scoring_ids_pairs(tokenizer, prompts[0], responses[0])
    else:  # cut to the limit in the prompt, from the left: the completion and its EOS are what is scored (G1)
        assert len(seen[0]) == dataset["max_seq_length"] and seen[0][0] == tokenizer.bos_token_id
        assert seen[0][-1] == tokenizer.eos_token_id
        assert seen[0][1:] == scoring_ids_pairs(tokenizer, prompts[0], responses[0])[-(len(seen[0]) - 1) :]


def test_a_long_prompt_is_cut_from_the_left_for_a_reward_model(tokenizer):
    """A chat prompt longer than the reward run's max_seq_length was cut from the right: every completion was
    scored on the prompt's start alone, so every reward was the same (review G1)."""
    from hydratune.data.pairs import scoring_ids

    prompt, answer = "a long prompt " * 10, "THE ANSWER"
    ids = scoring_ids(tokenizer, prompt, answer, 24)
    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
    assert len(ids) == 24 and ids[0] == tokenizer.bos_token_id
    assert ids[-len(answer_ids) - 1 :] == [*answer_ids, tokenizer.eos_token_id]
    assert scoring_ids(tokenizer, "hi", answer, 24) == scoring_ids(
        tokenizer, "hi", answer
    )  # short: untouched


def scoring_ids_pairs(tokenizer, prompt, response):
    ids = tokenizer(prompt + response, add_special_tokens=False).input_ids
    return [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]


def test_a_reward_model_directory_is_checked_without_loading_anything(tmp_path):
    from hydratune.rewards import check_rewards

    with pytest.raises(UserError, match=r"^task.reward_model=\S*nope: no such directory; give the directory"):
        check_rewards([], reward_model=str(tmp_path / "nope"))
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(UserError, match=r"^task.reward_model=\S*run: no .hydra/config.yaml"):
        check_rewards([], reward_model=str(run))
    write_run_config(run, "dpo")
    (run / "adapter").mkdir()
    with pytest.raises(
        UserError, match=r"a task=dpo run, not a reward model; give the directory of a task=reward"
    ):
        check_rewards([], reward_model=str(run))
    # The same check for a reward model listed in task.rewards, named by its entry.
    entry = {"_target_": "hydratune.rewards.RewardModelScorer", "run_dir": str(run)}
    with pytest.raises(UserError, match=r"^task.rewards\[0\]=\S*run: a task=dpo run"):
        check_rewards([entry])
    write_run_config(run, "reward")
    (run / "adapter").rmdir()
    with pytest.raises(UserError, match=r"has no merged/ or adapter/ or model/ directory"):
        check_rewards([], reward_model=str(run))
    (run / "adapter").mkdir()
    check_rewards([entry], reward_model=str(run))  # a task=reward run with its artifact: nothing loads here


def save_outside_reward_model(tiny_model_dir, folder, num_labels: int = 1):
    """A reward model saved as TRL's RewardTrainer or a torchtune HF checkpoint leaves it: a plain
    *ForSequenceClassification folder with its tokenizer, no hydratune run around it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=num_labels)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.eval(), tokenizer


def test_a_reward_model_from_elsewhere_scores_through_its_own_chat_template(tiny_model_dir, tmp_path):
    """task.reward_model may name a saved sequence classifier that hydratune did not train: each prompt is a
    user turn and each completion the assistant's, through the model's own chat template."""
    model, tokenizer = save_outside_reward_model(tiny_model_dir, tmp_path / "rm")
    assert tokenizer.chat_template
    scorer = build_rewards([], reward_model=str(tmp_path / "rm"))[0].fn
    prompts, completions = ["lower: AZI", "shout: ab", "x"], ["azi", "AB", "a much longer completion"]
    expected = []
    for p, c in zip(prompts, completions):
        turns = [{"role": "user", "content": p}, {"role": "assistant", "content": c}]
        text = tokenizer.apply_chat_template(turns, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False).input_ids
        ids = ids if ids[0] == tokenizer.bos_token_id else [tokenizer.bos_token_id, *ids]
        ids = ids if tokenizer.eos_token_id in ids[-2:] else [*ids, tokenizer.eos_token_id]  # the turn's end
        with torch.no_grad():
            expected.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
    assert scorer(prompts, completions) == pytest.approx(expected, abs=1e-5)  # batched, right-padded
    assert len(set(expected)) == 3
    # Without a chat template, the two texts joined, as TRL's reward trainer reads plain-text pairs.
    tokenizer.chat_template = None
    model.save_pretrained(tmp_path / "plain")
    tokenizer.save_pretrained(tmp_path / "plain")
    plain = RewardModelScorer(tmp_path / "plain")
    ids = [tokenizer.bos_token_id, *tokenizer("x" + completions[2], add_special_tokens=False).input_ids]
    ids.append(tokenizer.eos_token_id)
    assert plain._encode("x", completions[2]) == ids


def test_a_reward_model_is_found_in_the_hub_cache_by_its_id(tiny_model_dir, tmp_path, monkeypatch):
    """A hub id (owner/name) is read from the hub cache, laid out as `hf download` leaves it, with the hub
    offline; one that is not cached is a one-line refusal naming the key and the download command."""
    from hydratune.rewards import check_rewards

    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny-rm" / "snapshots" / ("a" * 40)
    save_outside_reward_model(tiny_model_dir, snapshot)
    (cache / "models--acme--tiny-rm" / "refs").mkdir()
    (cache / "models--acme--tiny-rm" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))  # HF_HUB_CACHE, read at import
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert RewardModelScorer.check("acme/tiny-rm") == snapshot
    assert RewardModelScorer("acme/tiny-rm")(["hi"], ["there"])[0] != 0.0
    with pytest.raises(
        UserError,
        match=r"^task.reward_model=acme/other-rm: not a folder on this disk and not in the hub cache.*hf download acme/other-rm",
    ):
        check_rewards([], reward_model="acme/other-rm")


def test_a_saved_model_that_is_not_a_reward_model_is_refused_before_loading(tiny_model_dir, tmp_path):
    from hydratune.rewards import check_rewards

    save_outside_reward_model(tiny_model_dir, tmp_path / "two", num_labels=2)
    with pytest.raises(
        UserError, match=r"^task.reward_model=\S+two: the model has 2 labels; a reward model has one"
    ):
        check_rewards([], reward_model=str(tmp_path / "two"))
    # The base causal LM itself, as a reward model: refused from its config.json.
    with pytest.raises(
        UserError, match=r"^task.reward_model=\S+: a LlamaForCausalLM, not a sequence classifier"
    ):
        check_rewards([], reward_model=str(tiny_model_dir))
    # A causal-LM adapter, and a weighted entry of task.rewards named by its index.
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text('{"task_type": "CAUSAL_LM"}')
    entry = {"_target_": "hydratune.rewards.RewardModelScorer", "run_dir": str(tmp_path / "lora")}
    with pytest.raises(UserError, match=r"^task.rewards\[0\]=\S+lora: an adapter of task type CAUSAL_LM"):
        check_rewards([entry])
    # A folder that is neither a run nor a saved model.
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        UserError, match=r"no .hydra/config.yaml; .*\(or a saved reward model: a folder with config.json\)"
    ):
        check_rewards([], reward_model=str(tmp_path / "empty"))


def test_the_columns_the_rewards_read_are_checked_against_the_data(user_module):
    from hydratune.rewards import check_reward_columns, columns_read

    default = [{"_target_": "hydratune.rewards.exact_match", "weight": 1.0}]
    with pytest.raises(UserError) as err:
        check_reward_columns(default, ["target"], "train")
    assert str(err.value) == (
        "task.rewards[0] (exact_match) reads column 'answer', which the train split lacks (columns besides the "
        "prompt: target); set task.rewards.0.column=target"
    )
    check_reward_columns([{**default[0], "column": "target"}], ["target"], "train")
    # A user's function names the column as a parameter without a default: it needs that column.
    mine = [*default, {"_target_": f"{user_module}.my_reward"}]
    assert [(w, c) for w, c, *_ in columns_read(mine)] == [
        ("task.rewards[0]", "answer"),
        ("task.rewards[1]", "answer"),
    ]
    with pytest.raises(
        UserError, match=r"task.rewards\[1\] \(my_reward\) reads column 'answer', which the validation"
    ):
        check_reward_columns([{**default[0], "column": "target"}, mine[1]], ["target", "id"], "validation")
    # Functions that read no column (or only through **columns) need none.
    check_reward_columns([{"_target_": "hydratune.rewards.length_penalty"}], [], "train")


def test_a_user_module_that_does_not_import_says_how_to_make_it_importable(tmp_path, monkeypatch):
    entries = [{"_target_": "nu_rewards_mod.is_lowercase", "weight": 1.0}]
    with pytest.raises(UserError) as err:
        build_rewards(entries)
    assert "No module named 'nu_rewards_mod'" in str(err.value)
    assert "put nu_rewards_mod.py beside train.py, or run with PYTHONPATH=" in str(err.value)
    # A module that imports but lacks a dependency of its own is not told to fix its path.
    (tmp_path / "nu_rewards_dep.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match=r"No module named 'no_such_dependency_xyz'\)$"):
        build_rewards([{"_target_": "nu_rewards_dep.f"}])


def test_gsm8k_answers_are_compared_after_their_marker_and_unmatchable_ones_are_said(caplog):
    """GSM8K's references are multi-line solutions ending "#### 20": under the default stop "\\n" no
    completion could equal one, and the run only said that all groups scored alike (review F10)."""
    import datasets

    from hydratune.rewards import exact_match, unmatchable_references

    refs = {"answer": ["He has 9+11=20 apples.\n#### 20", "#### 7"]}
    assert exact_match(["q", "q"], ["So #### 20", "7"], after="####", **refs) == [1.0, 1.0]
    assert exact_match(["q", "q"], ["So #### 20", "7"], **refs) == [0.0, 0.0]
    data = datasets.Dataset.from_dict(refs)
    entry = {"_target_": "hydratune.rewards.exact_match", "weight": 1.0, "column": "answer"}
    [line] = unmatchable_references([entry], ["\n"], data)
    assert line.startswith("task.rewards[0] (exact_match): column 'answer' holds task.stop's '\\n' (row 0)")
    assert "\"+task.rewards.0.after='####'\" for GSM8K" in line
    assert unmatchable_references([{**entry, "after": "####"}], ["\n"], data) == []
    assert unmatchable_references([entry], [], data) == []
