"""task=grpo through `python train.py`: the checks before anything loads, learning on the shipped prompts,
completions.jsonl, and an exact resume (the sampling is seeded by the step, the reused samples travel in the
checkpoint)."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from conftest import ROOT, compose, run_cli
from safetensors.torch import load_file

from hydratune.config import to_plain
from hydratune.errors import UserError
from hydratune.preflight import check_config


def test_grpo_config_is_checked_before_anything_loads():
    check_config(to_plain(compose(["task=grpo"])))
    with pytest.raises(UserError, match=r"task.num_generations=8"):
        check_config(to_plain(compose(["task=grpo", "task.num_generations=1"])))
    with pytest.raises(UserError, match=r"list task.rewards or set task.reward_model"):
        check_config(to_plain(compose(["task=grpo", "task.rewards=[]"])))
    with pytest.raises(UserError, match=r"task.aggregation must be grpo, dr_grpo, bnpo or dapo"):
        check_config(to_plain(compose(["task=grpo", "task.aggregation=mean"])))


def _grpo_violations(*overrides: str) -> list[str]:
    from hydratune.rules import violations
    from hydratune.tasks.grpo import GRPOTask

    return violations(to_plain(compose(["task=grpo", *overrides])), GRPOTask.rules)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["task.aggregation=dapo", "trainer.accumulate_grad_batches=2"], "use task.aggregation=bnpo"),
        (["task.aggregation=dapo", "trainer.devices=2"], "trainer.accumulate_grad_batches=1 on one device"),
        (["task.aggregation=dapo", "+trainer.num_nodes=2"], "use task.aggregation=bnpo"),
        (["task.aggregation=dapo", "trainer=ddp"], "use task.aggregation=bnpo"),
        (["task.scale_rewards=mean"], "set task.scale_rewards=group"),
        (["task.scale_rewards=1.0"], "set task.scale_rewards=group"),
        (["task.epsilon=0"], "set task.epsilon=0.2"),
        (["task.epsilon=1.5"], "set task.epsilon=0.2"),
        (["task.epsilon_high=0.1"], "at least task.epsilon"),
        (["task.epsilon_high=high"], "at least task.epsilon"),
        (["task.beta=-0.1"], "task.beta weighs the KL term"),
        (["task.temperature=0"], "set task.temperature=1.0"),
        (["task.top_p=0"], "set task.top_p=1.0"),
        (["task.top_p=1.2"], "set task.top_p=1.0"),
        (["task.num_iterations=0"], "set task.num_iterations=1"),
        (["task.num_iterations=1.5"], "set task.num_iterations=1"),
    ],
)
def test_grpo_settings_out_of_range_are_refused_in_one_line(overrides, says):
    found = _grpo_violations(*overrides)
    assert len(found) == 1 and says in found[0], found


@pytest.mark.parametrize(
    "overrides",
    [
        ["task.aggregation=bnpo", "trainer.accumulate_grad_batches=4", "trainer.devices=2"],
        ["task.aggregation=dapo"],  # trainer.accumulate_grad_batches=1 on one device: dapo is bnpo
        ["task.aggregation=dapo", "trainer.devices=[0]"],
        ["task.aggregation=dr_grpo", "task.scale_rewards=none"],
        ["task.scale_rewards=batch", "task.epsilon=0.2", "task.epsilon_high=0.28", "task.beta=0.04"],
        ["task.scale_rewards=group", "task.scale_rewards=false", "task.temperature=0.7", "task.top_p=1.0"],
        ["task.num_iterations=3", "task.epsilon_high=0.2"],
    ],
)
def test_grpo_settings_in_range_pass(overrides):
    assert _grpo_violations(*overrides) == []


def test_dapo_is_refused_at_fit_start_where_its_window_is_not_one_micro_batch():
    """The module says what rule grpo_dapo_window says, for a module built without preflight."""
    from types import SimpleNamespace

    from hydratune.tasks.grpo.module import GRPOModule

    def fit_start(aggregation, accumulation, world_size):
        run = SimpleNamespace(
            hparams=SimpleNamespace(aggregation=aggregation),
            trainer=SimpleNamespace(accumulate_grad_batches=accumulation, world_size=world_size),
        )
        GRPOModule.on_fit_start(run)

    fit_start("dapo", 1, 1)
    fit_start("bnpo", 4, 2)
    for accumulation, world_size in ((2, 1), (1, 2)):
        with pytest.raises(UserError, match=r"use task.aggregation=bnpo"):
            fit_start("dapo", accumulation, world_size)


def test_grpo_brings_its_prompts_and_run_length_and_the_command_line_wins():
    cfg = to_plain(compose(["task=grpo"]))
    assert cfg["dataset"]["prompt_column"] == "prompt" and cfg["trainer"]["max_steps"] == 80
    cfg = to_plain(compose(["task=grpo", "trainer.max_steps=7", "optimizer.lr=5e-4"]))
    assert cfg["trainer"]["max_steps"] == 7 and cfg["optimizer"]["lr"] == 5e-4


@pytest.mark.slow
def test_grpo_raises_held_out_exact_match(tmp_path):
    """The smaller version of the issue's criterion: 20 steps of the default task=grpo."""
    run_dir = tmp_path / "grpo"
    result = run_cli(
        ["train.py", "task=grpo", "trainer.max_steps=20", "trainer.val_check_interval=20",
         f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["initial_val_reward"] <= 0.3, metrics
    assert metrics["val_reward"] >= metrics["initial_val_reward"] + 0.15, metrics
    rows = [json.loads(line) for line in (run_dir / "completions.jsonl").read_text().splitlines()]
    assert {row["step"] for row in rows} == {0, 20}
    assert all({"prompt", "completion", "reward", "advantage"} <= set(row) for row in rows)
    # each reward function's own value too (review G10): the default task's one exact_match, weight 1
    assert all(row["reward/exact_match"] == row["reward"] for row in rows)
    # Per prompt, the advantages of its group sum to zero (mean-centred within the group).
    first = [row["advantage"] for row in rows if row["step"] == 0][:8]
    assert abs(sum(first)) < 1e-3
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file() and (run_dir / "loss.png").is_file()
    # The model stops where its training samples stopped (task.stop "\n"), also under a plain generate
    # (review X1: it ran on past the answer).
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")
    newline = tokenizer("\n", add_special_tokens=False).input_ids
    assert GenerationConfig.from_pretrained(run_dir / "adapter").eos_token_id == [
        tokenizer.eos_token_id,
        *newline,
    ]


def _grpo_command(run_dir, *extra):
    return ["train.py", "task=grpo", "trainer.max_steps=4", "trainer.val_check_interval=4",
            "callbacks.model_checkpoint.save_steps=2", "task.num_iterations=2", "task.beta=0.04",
            "dataset.batch_size=4", "task.num_generations=4", "eval_before_training=false", "logger=csv",
            "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "trainer.deterministic=true",
            f"hydra.run.dir={run_dir}", *extra]  # fmt: skip


@pytest.mark.slow
def test_grpo_resumes_exactly_from_a_step_checkpoint(tmp_path):
    env = {"OMP_NUM_THREADS": "1"}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_cli(_grpo_command(straight), env=env).returncode == 0
    step2 = straight / "checkpoints" / "step=000002.ckpt"
    assert "grpo_samples" in torch.load(step2, weights_only=False)  # the reused batch of samples
    result = run_cli(_grpo_command(resumed, f"ckpt_path='{step2}'"), env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    def losses(run_dir):
        with open(run_dir / "csv" / "metrics.csv") as f:
            return {int(r["step"]): r["train/loss"] for r in csv.DictReader(f) if r.get("train/loss")}

    after = {s: v for s, v in losses(straight).items() if s > 2}
    assert after and {s: losses(resumed)[s] for s in after} == after
    with open(
        straight / "csv" / "metrics.csv"
    ) as f:  # TRL's clip ratios and per-group reward std (review G10)
        logged = [r for r in csv.DictReader(f) if r.get("train/clip_fraction")]
    for row in logged:
        low, high, both = (float(row[f"train/clip_{k}"]) for k in ("low", "high", "fraction"))
        assert low + high == pytest.approx(both, abs=1e-6) and float(row["train/group_reward_std"]) >= 0
    want = load_file(straight / "adapter" / "adapter_model.safetensors")
    got = load_file(resumed / "adapter" / "adapter_model.safetensors")
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert os.path.getsize(resumed / "completions.jsonl") > 0


# ------------------------------------------------------------------ checks before any model loads


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _sources(tmp_path, train, validation=None):
    train = _jsonl(tmp_path / "train.jsonl", train)
    validation = _jsonl(tmp_path / "eval.jsonl", validation or [json.loads(line) for line in train.open()])
    return f"dataset.sources=[{{loader:json,data_files:{{train:{train},validation:{validation}}}}}]"


def test_a_reward_column_the_data_lacks_fails_preflight_in_one_line(tmp_path):
    from hydratune.preflight import run_preflight

    rows = [{"prompt": f"lower: A{i} -> ", "target": f"a{i}"} for i in range(4)]
    overrides = ["task=grpo", _sources(tmp_path, rows), f"paths.cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(UserError) as err:
        run_preflight(overrides)
    assert str(err.value) == (
        "task.rewards[0] (exact_match) reads column 'answer', which the train split lacks (columns besides the "
        "prompt: target); set task.rewards.0.column=target"
    )
    report = run_preflight([*overrides, "task.rewards.0.column=target"])  # the override it names works
    assert report["train"]["prompts"] == 4


def test_stop_strings_default_by_prompt_format_and_are_checked_before_a_model_loads(tmp_path):
    """task.stop: a newline stopped chat answers at their first line, unlike TRL (EOS only; review G6); a written
    `\\n` could not be given on a command line (G5); a stop string of several tokens was a traceback once the
    model had loaded (G5). A train-only file was refused (G7): it trains unevaluated, as every task does."""
    from hydratune.preflight import run_preflight
    from hydratune.tasks.registry import get_task

    task = get_task({"name": "grpo", "stop": None})
    assert task.stop({"dataset": {"prompt_format": "chat"}}) == [] and task.stop({"dataset": {}}) == ["\n"]
    assert get_task({"name": "grpo", "stop": ["\\n", "."]}).stop({}) == ["\n", "."]
    rows = [{"prompt": f"lower: A{i} -> ", "answer": f"a{i}"} for i in range(4)]
    overrides = ["task=grpo", _sources(tmp_path, rows), f"paths.cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(
        UserError, match=r"^task.stop: '</answer>' is \d+ tokens of this tokenizer; each stop"
    ):
        run_preflight([*overrides, "task.stop=['</answer>']"])
    train = tmp_path / "train_only.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    only = f"dataset.sources=[{{loader:json,data_files:{{train:{train}}}}}]"
    report = run_preflight(["task=grpo", only, f"paths.cache_dir={tmp_path / 'cache'}"])
    assert report["train"]["prompts"] == 4 and "validation" not in report


def test_a_user_reward_module_is_imported_and_checked_by_preflight(project, tmp_path):
    """preflight imports the user's reward functions as training will (a file beside train.py is on the path)
    and checks their signature, so an import or signature mistake costs seconds, not a model load."""
    entries = "task.rewards=[{_target_:nu_myrewards.is_lowercase,weight:1.0}]"
    model = f"model.pretrained_model_name_or_path={ROOT / 'assets' / 'tiny-llama'}"  # the checkout's
    with pytest.raises(UserError, match=r"cannot import it \(No module named 'nu_myrewards'\).*PYTHONPATH="):
        check_config(to_plain(compose(["task=grpo", model, entries])))
    (project / "nu_myrewards.py").write_text(
        "def is_lowercase(prompts, completions, **columns):\n    return [1.0 for c in completions]\n"
        "def one_argument(texts):\n    return [1.0 for c in texts]\n"
        "def trl_shape(completions, **kwargs):\n    return [float(len(c) > 2) for c in completions]\n"
    )
    check_config(
        to_plain(compose(["task=grpo", model, entries]))
    )  # beside train.py (HYDRATUNE_ROOT): imports
    with pytest.raises(UserError, match=r"task.rewards\[0\]: nu_myrewards.one_argument must take \(prompts"):
        check_config(to_plain(compose(["task=grpo", model, entries.replace("is_lowercase", "one_argument")])))
    # TRL's shape, `f(completions, **kwargs)`, was refused (review G2): it passes
    check_config(to_plain(compose(["task=grpo", model, entries.replace("is_lowercase", "trl_shape")])))


def test_a_reward_model_that_is_not_a_reward_run_fails_the_config_check(tmp_path):
    run = tmp_path / "dpo_run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        "task:\n  name: dpo\n  beta: 0.1\ndataset:\n  format: pairs\n"
    )
    (run / "adapter").mkdir()
    with pytest.raises(UserError, match=r"^task.reward_model=\S+dpo_run: a task=dpo run, not a reward model"):
        check_config(to_plain(compose(["task=grpo", f"task.reward_model={run}"])))
    with pytest.raises(UserError, match=r"^task.reward_model=\S+gone: no such directory"):
        check_config(to_plain(compose(["task=grpo", f"task.reward_model={tmp_path / 'gone'}"])))


# --------------------------------------------------------------------- conversational prompts


def _prompts(tmp_path, tokenizer, rows, *overrides):
    from hydratune.tasks.registry import get_task

    cfg = to_plain(
        compose(["task=grpo", _sources(tmp_path, rows), f"paths.cache_dir={tmp_path / 'c'}", *overrides])
    )
    task = get_task(cfg["task"])
    datamodule = task.datamodule(tokenizer, cfg)
    datamodule.setup("fit")
    return task, cfg, datamodule


def test_message_list_prompts_are_rendered_with_the_chat_template(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    turn = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    rows = [{"prompt": turn("hush: AB"), "answer": "ab"}, {"prompt": turn("lower: CD"), "answer": "cd"}]
    task, cfg, dm = _prompts(tmp_path, tokenizer, rows, "dataset.chat_template=chatml")
    chat = "<s><|im_start|>user\nhush: AB<|im_end|>\n<|im_start|>assistant\n"  # BOS first, as training
    assert dm.train_dataset["prompt"] == [chat, chat.replace("hush: AB", "lower: CD")]
    assert dm.stats["train"] == {"rows": 2, "prompts": 2} and dm.train_dataset["answer"] == ["ab", "cd"]
    # prompt_format=chat: text prompts are user turns too, and `hydratune generate` renders its prompt so.
    text_rows = [{"prompt": "hush: AB", "answer": "ab"}]
    options = ("dataset.chat_template=chatml", "dataset.prompt_format=chat")
    task, cfg, dm = _prompts(tmp_path, tokenizer, text_rows, *options)
    assert dm.train_dataset["prompt"] == [chat]
    assert task.prompt_text(cfg["dataset"], tokenizer, "hush: AB") == chat
    assert task.prompt_text({"template": None}, tokenizer, "hush: AB") == "hush: AB"


def test_a_chat_reward_model_reads_each_prompt_as_its_conversation(tmp_path, tiny_model_dir):
    """A reward model with a chat template gets a conversational prompt's own turns (and a text prompt as
    one user turn, before the alpaca template wraps it), rendered once by its template: not the policy's
    rendering of the prompt wrapped in a second user turn."""
    from test_rewards import save_outside_reward_model
    from transformers import AutoTokenizer

    from hydratune.rewards import RewardModelScorer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hush: AB"}]
    rows = [{"prompt": conversation, "answer": "ab"}, {"prompt": conversation, "answer": "ab"}]
    _, _, dm = _prompts(tmp_path, tokenizer, rows, "dataset.chat_template=chatml")
    batch = dm.collate([dm.train_dataset[0], dm.train_dataset[1]])
    assert batch["turns"] == [conversation, conversation] and list(batch["columns"]) == ["answer"]
    _, rm_tokenizer = save_outside_reward_model(tiny_model_dir, tmp_path / "rm")
    scorer = RewardModelScorer(tmp_path / "rm")
    full = [*conversation, {"role": "assistant", "content": "ab"}]
    once = rm_tokenizer(
        rm_tokenizer.apply_chat_template(full, tokenize=False), add_special_tokens=False
    ).input_ids
    seen = scorer._encode(batch["prompts"][0], "ab", batch["turns"][0])
    assert seen[1:] == once[: len(seen) - 1] and "Be brief." in rm_tokenizer.decode(seen)
    assert "<|im_start|>" not in rm_tokenizer.decode(seen)  # the policy's chatml is not in it
    # The scorer gets the turns through task.rewards' call, as the GRPO step makes it.
    from hydratune.rewards import build_rewards, score

    rewards = build_rewards(
        [{"_target_": "hydratune.rewards.RewardModelScorer", "run_dir": str(tmp_path / "rm")}]
    )
    with_turns = score(rewards, batch["prompts"], ["ab", "ab"], batch["columns"], batch["turns"])[0]
    assert with_turns == pytest.approx(scorer(batch["prompts"], ["ab", "ab"], batch["turns"]), abs=1e-6)
    assert with_turns != pytest.approx(score(rewards, batch["prompts"], ["ab", "ab"], batch["columns"])[0])
    # Alpaca-template text prompts: the instruction as the user's turn.
    _, _, dm = _prompts(
        tmp_path, tokenizer, [{"prompt": "hush: AB", "answer": "ab"}] * 2, "dataset.template=alpaca"
    )
    batch = dm.collate([dm.train_dataset[0]])
    assert "### Instruction" in batch["prompts"][0] and batch["turns"] == [
        [{"role": "user", "content": "hush: AB"}]
    ]


MESSAGE = [{"role": "user", "content": "lower: AB"}]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [7, 8],
            r"1: column 'prompt' holds int '7'; a prompt is text or a list of \{role, content\} messages",
        ),
        (["lower: AB -> ", None], r"2: column 'prompt' holds NoneType"),
        (
            [MESSAGE, [{"role": "robot", "content": "x"}]],
            r"2: column 'prompt' holds .*robot.*; each message needs",
        ),
        (
            [MESSAGE, [*MESSAGE, {"role": "assistant", "content": "a"}]],
            r"2: column 'prompt' ends with an assistant",
        ),
    ],
)
def test_a_prompt_that_is_neither_text_nor_messages_names_its_row(tmp_path, tokenizer, rows, message):
    rows = [{"prompt": prompt, "answer": "ab"} for prompt in rows]
    with pytest.raises(UserError, match=r"^dataset: the train split's row " + message) as err:
        _prompts(tmp_path, tokenizer, rows, "dataset.chat_template=chatml")
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------ what rewards receive


def test_rewards_receive_completions_without_the_stop_string_and_the_loss_keeps_it(
    tiny_model_dir, tokenizer, tmp_path, monkeypatch
):
    from hydratune.tasks.grpo.module import GRPOModule
    from hydratune.tasks.grpo.sampling import sample

    prompts = ["lower: AB -> ", "hello there"]
    free = sample(_tiny_lm(tiny_model_dir), tokenizer, prompts, 1, 8, temperature=0.0)
    # A token the greedy completion of prompt 0 reaches, that is one token as text: the stop string.
    stop_id = next(
        int(t) for t in free.completion_ids[0, 1:]
        if tokenizer(tokenizer.decode([int(t)]), add_special_tokens=False).input_ids == [int(t)]
    )  # fmt: skip
    stop = tokenizer.decode([stop_id])
    (tmp_path / "nu_seen_rewards.py").write_text(
        "SEEN = []\ndef record(prompts, completions, **columns):\n"
        "    SEEN.extend(completions)\n    return [0.0 for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = to_plain(compose(["task=grpo", "peft=none"]))
    cfg["model"]["pretrained_model_name_or_path"] = str(tiny_model_dir)
    module = GRPOModule(
        model={k: v for k, v in cfg["model"].items() if k != "token"}, peft=cfg["peft"], optimizer=cfg["optimizer"],
        scheduler=cfg["scheduler"], rewards=[{"_target_": "nu_seen_rewards.record"}], stop=[stop], max_new_tokens=8,
    )  # fmt: skip
    module.configure_model()
    monkeypatch.setattr(GRPOModule, "tokenizer", property(lambda self: tokenizer))
    out = module._sample_and_score(
        {"prompts": prompts, "columns": {}}, seed=0, generations=1, temperature=0.0
    )
    import nu_seen_rewards

    samples = out["samples"]
    assert samples.texts[0].endswith(stop)  # what was sampled (completions.jsonl shows it)
    assert nu_seen_rewards.SEEN[0] == samples.texts[0].removesuffix(stop)  # what the reward read
    assert nu_seen_rewards.SEEN == samples.answers
    # The loss covers the stop token: the mask reaches it.
    length = int(samples.completion_mask[0].sum())
    assert int(samples.completion_ids[0, length - 1]) == stop_id


def _tiny_lm(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def test_steps_whose_groups_all_scored_alike_are_said_to_teach_nothing(caplog):
    """Equal rewards in a group give zero advantages: when (nearly) every group since the last evaluation was
    so, the run says it learns nothing instead of printing train loss 0.0000 alone."""
    from types import SimpleNamespace

    from hydratune.tasks.grpo.module import GRPOModule

    run = SimpleNamespace(_spread=[3.0, 3])  # three steps, every group without spread
    with caplog.at_level("WARNING"):
        GRPOModule.warn_if_no_signal(run)
    assert "100% of the sampled groups of the last 3 steps scored all their completions alike" in caplog.text
    assert run._spread == [0.0, 0]
    caplog.clear()
    run._spread = [1.5, 3]  # half of them: there is something to learn
    with caplog.at_level("WARNING"):
        GRPOModule.warn_if_no_signal(run)
    assert caplog.text == ""


def _samples_used(monkeypatch, tmp_path, steps: int, **trainer_kwargs) -> list[int]:
    """Which batch of samples (by its advantages' storage) each micro-batch trained on, in a GRPO run of the
    shipped prompts with task.num_iterations=2 and accumulation 2."""
    import lightning as L

    import hydratune.tasks.grpo.module as grpo_module
    from hydratune.model import load_tokenizer
    from hydratune.tasks.registry import get_task

    cfg = to_plain(compose(["task=grpo", "task.num_iterations=2", "trainer.accumulate_grad_batches=2",
                            "dataset.batch_size=2", "task.num_generations=2", "task.max_new_tokens=3"]))  # fmt: skip
    tokenizer = load_tokenizer(cfg["model"])
    task = get_task(cfg["task"])
    datamodule = task.datamodule(tokenizer, cfg)
    datamodule.setup("fit")
    module = task.module(cfg, datamodule, tokenizer)
    used, kept, loss = [], [], grpo_module.grpo_loss

    def spy(logps, old, ref, advantages, *args, **kwargs):
        kept.append(advantages)  # alive, so that a later batch's storage cannot reuse its address
        used.append(advantages.data_ptr())
        return loss(logps, old, ref, advantages, *args, **kwargs)

    monkeypatch.setattr(grpo_module, "grpo_loss", spy)
    trainer = L.Trainer(
        max_steps=steps, accumulate_grad_batches=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
        **trainer_kwargs,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    return used


def test_each_micro_batch_of_a_window_reuses_its_own_samples(monkeypatch, tmp_path):
    """task.num_iterations=2 with accumulation 2: the reuse step trained both micro-batches on the window's
    last samples, the first micro-batch's never again."""
    used = _samples_used(monkeypatch, tmp_path, 4)
    assert len(used) == 8 and used[0] != used[1] and used[4] != used[5]
    assert used[2:4] == used[0:2] and used[6:8] == used[4:6]  # step 2 reuses step 1's, step 4 step 3's


def test_a_short_window_leaves_no_old_samples_to_reuse(monkeypatch, tmp_path):
    """An epoch of 5 batches ends on a window of one: the reuse step after it trained its second micro-batch on
    samples from 3 steps before (review V6). Windows: [0 1] [2 3] [4] | [0 1]; step 3 samples, step 4 reuses."""
    used = _samples_used(monkeypatch, tmp_path, 4, limit_train_batches=5)
    assert len(used) == 7 and used[5] == used[4]  # step 4's first micro-batch: step 3's samples
    assert used[6] not in used[:5]  # its second: new ones (step 3 had none for it), not step 1's
