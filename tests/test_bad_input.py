"""Bad input matrix: each mistake exits non-zero with one line naming the key (or file) and the fix,
no traceback, and the files of an existing run are left exactly as they were."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

# (command-line overrides for train.py, substrings the error line must contain)
TRAIN_CASES = [
    (["peft=lorra"], ["peft=lorra", "did you mean peft=lora"]),
    (["peft.method=lorra"], ["peft.method='lorra'", "did you mean peft.method=lora"]),
    (
        ["model.pretrained_model_name_or_path=/nonexistent/model"],
        ["model.pretrained_model_name_or_path=/nonexistent/model", "no such folder"],
    ),
    (
        ["model.pretrained_model_name_or_path=hydratune-tests/no-such-model"],  # the tests' hub is offline
        ["model.pretrained_model_name_or_path=hydratune-tests/no-such-model", "not in the hub cache"],
    ),
    (
        ["peft.config.target_modules=[q_proj,attn]"],
        ["peft.config.target_modules", "no module named attn", "available: down_proj"],
    ),
    (["optimizer=adamw"], ["optimizer=adamw", "options:"]),
    (["scheduler=cosin"], ["did you mean scheduler=cosine"]),
    (["logger=tensorbord"], ["did you mean logger=tensorboard"]),
    # an experiment's logger.wandb.project under a command line that chose logger=none
    (["logger=none", "+logger.wandb.project=p"], ["logger.wandb", "logger=wandb", "~logger.wandb"]),
    (["trainer.max_stepz=3"], ["trainer.max_stepz", "did you mean trainer.max_steps"]),
    (["+optimizer.lrr=1"], ["optimizer.lrr", "did you mean optimizer.lr"]),
    (["+peft.config.rank=8"], ["peft.config.rank", "unknown config key"]),
    (["+foo=1"], ["foo", "unknown config key"]),
    (["optimizer.lr=0"], ["optimizer.lr=0", "> 0"]),
    (["optimizer.lr=-1e-4"], ["optimizer.lr", "> 0"]),
    (["optimizer.lr=fast"], ["optimizer.lr='fast' is not a number", "> 0"]),
    (["optimizer.betas=[0.9,1.2]"], ["optimizer.betas", "[0, 1)"]),
    (["optimizer.weight_decay=-0.1"], ["optimizer.weight_decay", ">= 0"]),
    (["peft.config.r=0"], ["peft.config.r=0", "integer > 0"]),
    (["peft.config.lora_dropout=1.5"], ["peft.config.lora_dropout", "[0, 1)"]),
    (["dataset.max_seq_length=8"], ["dataset.max_seq_length", ">= 16"]),
    (["dataset.batch_size=0"], ["dataset.batch_size", "> 0"]),
    # split's blocks after the first start mid-conversation (review C9)
    (["dataset=chat", "dataset.truncation=split"], ["dataset.truncation=split", "dataset.format=messages"]),
    (["trainer.max_steps=-5"], ["trainer.max_steps", "-1"]),
    (["trainer.accumulate_grad_batches=0"], ["trainer.accumulate_grad_batches", ">= 1"]),
    (["trainer.precision=fp8"], ["trainer.precision", "bf16-mixed"]),
    (["scheduler.warmup_ratio=1.5"], ["scheduler.warmup_ratio", "[0, 1)"]),
    (["callbacks.early_stopping.patience=-1"], ["callbacks.early_stopping.patience", ">= 0"]),
    (["seed=-1"], ["seed", ">= 0"]),
    (["model.dtype=float64"], ["model.dtype", "bfloat16"]),
    (["model.attn_implementation=flash"], ["model.attn_implementation", "sdpa"]),
    (["name=../escape"], ["name=", "'..'"]),
    (["name=a/b"], ["name=", "'/'"]),
    (["peft=none", "quantization=nf4"], ["quantization, peft", "peft=lora"]),
    (["peft=qlora", "quantization=none"], ["peft=qlora", "quantization=nf4"]),
    (["optimizer=lomo", "optimizer.clip_grad_norm=0.5"], ["trainer.gradient_clip_val", "=null"]),
    (
        [
            "optimizer=lomo",
            "peft=none",
            "trainer.gradient_clip_val=null",
            "trainer.accumulate_grad_batches=2",
        ],
        ["trainer.accumulate_grad_batches=1"],
    ),
    (["optimizer=galore_adamw"], ["peft=none"]),
    # options that passed preflight and failed after the model loaded, or did nothing (review X1-X6)
    (["quantization=nf4", "peft=freeze"], ["quantization, peft", "peft=lora"]),
    (
        ["peft=freeze", "peft.trainable_layers=0", "peft.trainable_modules=[]"],
        ["trains nothing", "peft.trainable_layers=2"],
    ),
    (["peft=freeze", "peft.trainable_layers=9"], ["peft.trainable_layers=9", "has 4 decoder layers"]),
    (
        ["peft.config.init_lora_weights=loftq", "quantization=nf4"],
        ["init_lora_weights", "quantization=none"],
    ),
    (["peft.config.init_lora_weights=pissa", "quantization=nf4"], ["init_lora_weights", "quantization=none"]),
    (["dataset=kto"], ["dataset.format=kto", "task=kto"]),
    # Hydra's "not set by the chosen options" pointed at SFT datasets before the rule could speak (review X11)
    (["task=dpo", "dataset.packing=true"], ["task, dataset.packing", "set dataset.packing=false"]),
    (["dataset=preference"], ["dataset.format=pairs", "task=dpo"]),
    (["dataset=grpo"], ["prompts alone", "task=grpo"]),
    (["optimizer.loraplus_lr_ratio=16", "peft=none"], ["optimizer.loraplus_lr_ratio", "peft=lora"]),
    (["optimizer=adafactor", "optimizer.relative_step=true"], ["optimizer.relative_step", "optimizer.lr"]),
    (
        ["scheduler=warmup_stable_decay", "scheduler.kwargs.decay_type=foo"],
        ["scheduler.kwargs.decay_type", "cosine"],
    ),
    (
        ["optimizer=adamw_torch_fused", "trainer.precision=16-mixed"],
        ["fp16 gradients", "gradient_clip_val=null"],
    ),
    (["trainer=fsdp", "trainer.accelerator=cpu"], ["trainer.strategy", "trainer=ddp"]),
    (["trainer=deepspeed_zero2", "trainer.accelerator=cpu"], ["trainer=ddp"]),
    (
        ["trainer=fsdp", "trainer.accelerator=gpu", "callbacks.model_checkpoint.load_best_model_at_end=true"],
        ["callbacks.model_checkpoint.load_best_model_at_end=false", "trainer=ddp"],
    ),
    (
        ["trainer.precision=16-mixed", "model.dtype=bfloat16", "peft=none"],
        ["trainer.precision=16-mixed", "trainer.precision=bf16-mixed"],
    ),
    # found when the data were prepared, after Hydra had made the run folder
    (
        ["dataset=chat", "dataset.chat_template=chatm"],
        ["dataset.chat_template='chatm'", "did you mean chatml?"],
    ),
    (["dataset.format=alpacaa"], ["dataset.format='alpacaa' is not known; did you mean alpaca?"]),
    (["task=classification", "dataset=topics", "task.class_weights=foo"], ["task.class_weights='foo'"]),
    # a group given with + (Hydra: "Multiple values for experiment. To override a value use 'override ...'")
    (
        ["+experiment=topics_lora"],
        ["+experiment=topics_lora: experiment is a config group already: drop the +"],
    ),
    (["+peft=lora"], ["drop the + (peft=lora)"]),
    # a setting of another task: a sweep over it would give identical jobs, and with + nothing reads it
    (["task.beta=0.2"], ["task.beta is a setting of task=dpo, task=grpo, task=kto", "e.g. task=dpo"]),
    (["+task.beta=0.2"], ["task.beta: task=sft has no such setting", "choose that task (e.g. task=dpo)"]),
    (["task=grpo", "+task.margin=1"], ["task.margin: task=grpo has no such setting (task=reward read it)"]),
    # Lightning's checkpoint names hold '=', which Hydra's override grammar reads as syntax
    (
        ["ckpt_path=/runs/a/checkpoints/step=000015.ckpt"],
        ["ckpt_path=/runs/a/checkpoints/step=000015.ckpt", "quote the value", "'ckpt_path=\"/runs/a/"],
    ),
    (
        ["ckpt_path='/runs/a/checkpoints/step=000015.ckpt'"],
        ["ckpt_path=/runs/a/checkpoints/step", "no such file"],
    ),
]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("optimizer.lr", "3e-4x", "optimizer.lr='3e-4x' is not a number: use a number > 0"),
        ("optimizer.lr", -1.0, "optimizer.lr=-1.0 is out of range: use a number > 0"),
        ("trainer.max_steps", "ten", "trainer.max_steps='ten' is not an integer: use an integer > 0"),
        ("trainer.max_steps", True, "trainer.max_steps=True is not an integer"),
        ("dataset.max_seq_length", 1000.0, "is not an integer: write dataset.max_seq_length=1000"),
        ("dataset.max_seq_length", 8.0, "is not an integer: use an integer >= 16"),
        ("dataset.batch_size", 2.5, "dataset.batch_size=2.5 is not an integer"),
        ("trainer.val_check_interval", 2.5, "is out of range: use an integer > 0 (batches) or a fraction"),
        ("optimizer.weight_decay", [0.1], "optimizer.weight_decay=[0.1] is not a number"),
        ("nan_policy", "ignore", "nan_policy='ignore' is not allowed: use stop or skip"),
    ],
)
def test_a_bad_value_is_called_what_it_is(key, value, expected):
    """'out of range' is for a number of the right kind; a word, a bool or a float where an integer goes
    (Hydra reads 1e3 as 1000.0) says so, and a whole float names the override that works."""
    from hydratune.errors import UserError
    from hydratune.schema import check_ranges

    *parents, leaf = key.split(".")
    cfg: dict = {}
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    with pytest.raises(UserError) as caught:
        check_ranges(cfg)
    assert expected in str(caught.value)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory) -> Path:
    """A finished run directory that no failed command may touch."""
    run = tmp_path_factory.mktemp("existing") / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (run / ".hydra" / "overrides.yaml").write_text("[]\n")
    (run / "metrics.json").write_text('{"val_loss": 0.5}\n')
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"\x00\xffweights")
    return run


def _assert_one_line_error(result: subprocess.CompletedProcess, expected: list[str]) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"


@pytest.mark.parametrize(("args", "expected"), TRAIN_CASES, ids=[" ".join(a) for a, _ in TRAIN_CASES])
def test_train_rejects_bad_config(args, expected, existing_run):
    before = _digest(existing_run)
    result = run_cli(["train.py", *args, f"hydra.run.dir={existing_run}/../bad"], timeout=120)
    _assert_one_line_error(result, expected)
    assert _digest(existing_run) == before
    assert not (existing_run.parent / "bad").exists(), "a failed preflight must not create a run dir"


def test_a_checkpoint_cut_short_is_named_before_any_model_loads(tmp_path, existing_run):
    import torch

    from hydratune.preflight import check_resume_file

    whole = tmp_path / "checkpoints" / "step=000015.ckpt"
    whole.parent.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}, "global_step": 15}, whole)
    check_resume_file(whole, "ckpt_path")  # a whole archive passes
    cut = whole.with_name("last.ckpt")
    cut.write_bytes(
        whole.read_bytes()[: whole.stat().st_size // 2]
    )  # as a full disk or a killed copy leaves it
    before = _digest(existing_run)
    result = run_cli(["train.py", f"ckpt_path='{cut}'", f"hydra.run.dir={existing_run}/../bad"], timeout=120)
    _assert_one_line_error(result, [f"ckpt_path={cut}", "not a readable checkpoint", "step=*.ckpt"])
    assert _digest(existing_run) == before and not (existing_run.parent / "bad").exists()


def test_a_damaged_checkpoint_or_a_foreign_zip_is_one_line(tmp_path):
    """torch.load does not check the archive's checksums: bytes flipped inside a tensor loaded silently. A zip
    that is not a torch archive was a raw RuntimeError from inside torch (R8)."""
    import zipfile

    import torch

    from hydratune.errors import UserError
    from hydratune.preflight import check_resume_file

    whole = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4096, dtype=torch.float32)}, "global_step": 3}, whole)
    data = bytearray(whole.read_bytes())
    tensor = data.find(torch.tensor([1000.0]).numpy().tobytes())
    assert tensor > 0  # the float 1000.0 of the stored tensor
    data[tensor : tensor + 4] = b"\xff\xff\xff\xff"  # one float of the tensor
    flipped = tmp_path / "flipped.ckpt"
    flipped.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"^ckpt_path=\S+flipped.ckpt: damaged \(\S+ fails its checksum\)"):
        check_resume_file(flipped, "ckpt_path")
    other = tmp_path / "other.ckpt"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(UserError, match=r"a zip archive, but not a torch.save checkpoint"):
        check_resume_file(other, "ckpt_path")


GOOD_ROW = '{"instruction": "Reverse the word.", "input": "abc", "output": "cba"}\n'
# (train file, validation file, substrings of the error line; {train}/{validation} stand for the paths)
DATA_CASES = [
    (
        GOOD_ROW + GOOD_ROW.replace('"cba"', "3"),
        GOOD_ROW,
        ["{train}:2", "'output'", "a number (3)", "a string"],
    ),
    # The three below are said by the quick look at the first rows, before the run folder exists.
    (
        GOOD_ROW + GOOD_ROW.replace('"cba"', "null"),
        GOOD_ROW,
        ["{train}:2", "no 'output' in this row", "null"],
    ),
    (
        GOOD_ROW,
        '{"prompt": "abc", "completion": "cba"}\n',
        ["'instruction'", "{validation}", "prompt, completion"],
    ),
    (GOOD_ROW, "", ["{validation}", "the file is empty"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("train", "validation", "expected"), DATA_CASES, ids=["number", "null", "schemas", "empty"]
)
def test_train_rejects_bad_data_naming_file_line_and_column(train, validation, expected, tmp_path):
    """Before any weight loads, one line: file, line, column, what was expected. What the quick look at the first
    rows can judge it says before Hydra makes the run folder (about 0.5 s, not 6)."""
    files = {"train": tmp_path / "train.jsonl", "validation": tmp_path / "validation.jsonl"}
    files["train"].write_text(train)
    files["validation"].write_text(validation)
    args = [f"dataset.sources.0.data_files.{split}={path}" for split, path in files.items()]
    result = run_cli(["train.py", *args, f"hydra.run.dir={tmp_path / 'run'}"], timeout=300)
    _assert_one_line_error(result, [e.format(**files) for e in expected])
    assert not (tmp_path / "run" / "checkpoints").exists()
    if "a number (3)" not in expected:  # a column of mixed types is left to datasets, as training reads it
        assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_bf16_alias_trains_and_merges(tmp_path):
    """model.dtype=bf16 export.merge=true: the alias is bfloat16 everywhere (merge, parity check, rules)."""
    run_dir = tmp_path / "run"
    result = run_cli(
        ["train.py", "model.dtype=bf16", "export.merge=true", "trainer.max_steps=1", "eval_before_training=false",
         "eval_generations.num_prompts=0", f"hydra.run.dir={run_dir}"],
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["merge_max_abs_logit_diff"] <= 1e-1  # the bfloat16 tolerance
    assert json.loads((run_dir / "merged" / "config.json").read_text())["dtype"] == "bfloat16"


def test_a_run_folder_that_cannot_be_made_is_one_line_before_hydra_makes_it(tmp_path):
    """A path under a file (or a read-only folder) was Hydra's traceback from its mkdir."""
    (tmp_path / "data.csv").write_text("a\n")
    result = run_cli(["train.py", f"hydra.run.dir={tmp_path / 'data.csv' / 'run'}"], timeout=120)
    _assert_one_line_error(result, [f"{tmp_path / 'data.csv'} is a file", "choose another hydra.run.dir"])


def test_finished_run_directory_is_not_reused(existing_run):
    before = _digest(existing_run)
    result = run_cli(["train.py", f"hydra.run.dir={existing_run}"], timeout=120)
    _assert_one_line_error(result, ["hydra.run.dir=", "finished run"])
    assert _digest(existing_run) == before


def test_resume_auto_on_a_finished_run_without_checkpoints_is_refused(existing_run):
    """resume=auto on a finished run trained with callbacks=none found no checkpoint, "started fresh" in the same
    folder and replaced its adapter, metrics.json and config, appending a second run's rows to its logs (review
    L15). Refused as the same folder without resume=auto is, before Hydra writes."""
    before = _digest(existing_run)
    result = run_cli(
        ["train.py", f"hydra.run.dir={existing_run}", "callbacks=none", "resume=auto"], timeout=120
    )
    _assert_one_line_error(
        result, ["finished run with no checkpoint to continue from", "nothing was written"]
    )
    assert _digest(existing_run) == before


def test_a_run_folder_in_training_or_stopped_is_refused_before_hydra_rewrites_its_config(tmp_path):
    """The run lock refused a second launch into a folder being trained, but only after Hydra had rewritten that
    run's .hydra/ configs (its name, format and steps), misleading generate and resume=auto (review K1); a stopped
    run's folder without resume trained from step 0 over its checkpoints (K4). Both are refused first."""
    import socket
    import time

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("name: mine\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"state")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".hydratune.lock").write_text(
            json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": time.strftime("%H:%M")})
        )
        before = _digest(run)
        for extra in ([], ["resume=auto"]):
            result = run_cli(["train.py", f"hydra.run.dir={run}", "dataset=chat", *extra], timeout=120)
            _assert_one_line_error(
                result,
                [f"hydra.run.dir={run} is being trained by process {holder.pid}", "nothing was written"],
            )
            assert _digest(run) == before
    finally:
        holder.kill()
        holder.wait()
    result = run_cli(["train.py", f"hydra.run.dir={run}", "dataset=chat"], timeout=120)  # the holder is gone
    _assert_one_line_error(
        result, ["holds a stopped run (checkpoints/last.ckpt): add resume=auto to continue it"]
    )
    assert _digest(run) == before


def test_resume_auto_onto_a_run_in_training_is_refused_before_a_folder_is_made(tmp_path):
    """The lock refused it once Hydra had made a new run folder, left behind with .hydra/ and train.log (K11)."""
    import socket

    from hydratune.errors import UserError
    from hydratune.preflight import check_command_line

    run = tmp_path / "outputs" / "live" / "2026-12-02_10-00-00"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"state")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".hydratune.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(
            UserError, match=rf"resume=auto would continue {run}, which process {holder.pid} is training"
        ):
            check_command_line([f"paths.log_dir={tmp_path / 'outputs'}", "name=live", "resume=auto"])
    finally:
        holder.kill()
        holder.wait()
    check_command_line(
        [f"paths.log_dir={tmp_path / 'outputs'}", "name=live", "resume=auto"]
    )  # it ended: fine
    assert sorted(p.name for p in (tmp_path / "outputs" / "live").iterdir()) == [run.name]


def test_printing_the_config_with_a_mistake_in_it_is_one_line():
    """`--cfg job peft=lorra` skipped the check and printed Hydra's multi-line error (review K13)."""
    for args, expected in (
        (["peft=lorra"], "did you mean peft=lora?"),
        (["optimizer.lrr=1"], "did you mean optimizer.lr?"),
    ):
        result = run_cli(["train.py", "--cfg", "job", *args], timeout=120)
        _assert_one_line_error(result, [expected])
    result = run_cli(["train.py", "--cfg", "job", "optimizer.lr=3e-4"], timeout=120)
    assert result.returncode == 0 and "lr: 0.0003" in result.stdout


SWEEP_CASES = [
    (["optimizer.lr=1e-4,-1"], ["sweep job 1", "optimizer.lr=-1", "> 0", "nothing was launched"]),
    (["optimizer=sgd,adamw"], ["sweep job 1", "optimizer=adamw", "options:"]),
    (["peft=lora,qlora", "quantization=none"], ["sweep job 1", "peft=qlora", "quantization=nf4"]),
    (["optimizer.lr=range(1,3)", "peft.config.r=8,0"], ["sweep job 1", "peft.config.r=0"]),
    # every bad job is named at once, by what varies between the jobs
    (
        ["optimizer.lr=-1,-2,3e-3", "peft.config.r=8,16"],
        [
            "sweep job 0",
            "also bad: jobs 1 (optimizer.lr=-1 peft.config.r=16), 2 (optimizer.lr=-2 peft.config.r=8), 3 (",
        ],
    ),
]


@pytest.mark.parametrize(("args", "expected"), SWEEP_CASES, ids=[" ".join(a) for a, _ in SWEEP_CASES])
def test_sweep_checks_every_job_before_launching(args, expected, tmp_path):
    """A sweep (and a SLURM submission) is refused as a whole when any of its jobs is bad."""
    sweep_dir = tmp_path / "sweep"
    result = run_cli(["train.py", "-m", *args, f"hydra.sweep.dir={sweep_dir}"], timeout=120)
    _assert_one_line_error(result, expected)
    assert not sweep_dir.exists(), "no job may start (or be submitted) when one of them is bad"


def test_sweep_checks_the_data_of_each_job_before_launching(tmp_path):
    """A malformed line in one job's data failed that job only when it started (on SLURM, after queueing); the
    data of every distinct setup is now looked at first, as a single run's is (review S10)."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder in (good / "sample", bad / "sample"):  # the default dataset's layout under paths.data_dir
        folder.mkdir(parents=True)
        for split in ("train", "eval"):
            rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(4)]
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (bad / "sample" / "train.jsonl").write_text(
        '{"instruction": "q", "input": "", "output": "a"}\n{"instruction": oops\n'
    )
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        [
            "train.py",
            "-m",
            f"paths.data_dir={good},{bad}",
            "optimizer.lr=1e-4,3e-4",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        timeout=120,
    )
    _assert_one_line_error(
        result,
        ["sweep job 2", f"paths.data_dir={bad}", "train.jsonl:2: malformed JSON", "nothing was launched"],
    )
    assert not sweep_dir.exists()


def test_sweep_jobs_expand_the_grid_and_leave_sampled_values_to_the_sweeper():
    from hydratune.preflight import MAX_CHECKED_JOBS, sweep_jobs

    assert sweep_jobs(["a=1,2", "b=x", "c=interval(0,1)"]) == [["a=1", "b=x"], ["a=2", "b=x"]]
    many = sweep_jobs(["a=range(0,9)", "b=range(0,9)"])  # 81 > MAX_CHECKED_JOBS: each value once
    assert len(many) == 17 <= MAX_CHECKED_JOBS + 1
    assert {j[0] for j in many} == {f"a={i}" for i in range(9)}
    assert {j[1] for j in many} == {f"b={i}" for i in range(9)}


def test_debug_env_shows_the_traceback():
    result = run_cli(["train.py", "optimizer.lr=0"], env={"HYDRATUNE_DEBUG": "1"}, timeout=120)
    assert result.returncode != 0
    assert "Traceback" in result.stderr


HYDRATUNE = str(Path(sys.executable).parent / "hydratune")
CLI_CASES = [
    (["generate"], ["hydratune generate", "run_dir"]),
    (["generate", "/nonexistent/run", "--prompt", "x"], ["/nonexistent/run", "it does not exist"]),
    (
        ["generate", "{run}", "--prompt", "x", "--artifact", "merged"],
        ["has no merged/ directory: merge its adapter first: hydratune merge"],
    ),
    (["generate", "{run}"], ["--prompt"]),
    (
        ["generate", "{run}", "--prompt", "x", "--max-new-tokens", "many"],
        ["--max-new-tokens", "not a whole number"],
    ),
    # a zero or negative value, or a temperature of 0, was a traceback from transformers (review K6)
    (
        ["generate", "{run}", "--prompt", "x", "--max-new-tokens", "0"],
        ["--max-new-tokens", "'0' is not a whole number >= 1"],
    ),
    (
        ["generate", "{run}", "--prompt", "x", "--sample", "--temperature", "0"],
        ["--temperature", "not a number > 0"],
    ),
    (
        ["generate", "{run}", "--prompt", "x", "--promt", "y"],
        ["hydratune generate: error: unrecognized arguments: --promt y"],
    ),
    (["generate", "{run}"], ["hydratune generate: error: give --prompt TEXT"]),
    (["merge", "{run}", "--out", "{run}/metrics.json"], ["--out", "is a file: give a folder"]),
    (["sweep-report", "{run}"], ["is a single run, not a sweep"]),
    (["sweep-report", "/nonexistent/sweep"], ["/nonexistent/sweep does not exist"]),
    (["import", "{run}/adapter/adapter_model.safetensors"], ["hydratune import: error:", "not a text file"]),
    (["merge", "/nonexistent/run"], ["/nonexistent/run", "adapter/"]),
    (["merge", "{run}", "--dtype", "int3"], ["--dtype", "invalid choice"]),
    (["preflight", "peft=lorra"], ["peft=lorra", "did you mean peft=lora"]),
    (["preflight", "--no-data", "optimizer.lr=0"], ["optimizer.lr=0"]),
    (["no-such-command"], ["invalid choice"]),
]


@pytest.mark.parametrize(("args", "expected"), CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_rejects_bad_arguments(args, expected, existing_run):
    before = _digest(existing_run)
    args = [a.replace("{run}", str(existing_run)) for a in args]
    result = subprocess.run([HYDRATUNE, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    _assert_one_line_error(result, expected)
    assert _digest(existing_run) == before


def test_a_misspelt_section_gets_a_did_you_mean_for_the_whole_key():
    """`optimzer.lr`: no key shares its section, so the whole dotted path is matched (it read 'remove it, or add it
    with +optimzer.lr', which would be refused the same way)."""
    from conftest import ROOT as root

    from hydratune.schema import known_keys, unknown_key_error

    known = known_keys(str(root / "conf"))
    assert (
        str(unknown_key_error("optimzer.lr", known))
        == "optimzer.lr: unknown config key; did you mean optimizer.lr?"
    )
    assert "did you mean trainer.max_steps?" in str(unknown_key_error("trainr.max_steps", known))
    assert "remove it" in str(unknown_key_error("foo.bar", known))


def test_an_optimizer_whose_package_is_missing_is_named_with_its_extra_before_any_model(monkeypatch):
    """It was an ImportError traceback from configure_optimizers, after the model loaded."""
    import importlib.util

    from conftest import compose

    from hydratune.config import to_plain
    from hydratune.errors import UserError
    from hydratune.preflight import check_config

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "grokadamw" else find_spec(name, *a)
    )
    cfg = to_plain(compose(["optimizer=grokadamw"]))
    with pytest.raises(UserError) as caught:
        check_config(cfg)
    assert str(caught.value) == (
        "optimizer._target_=grokadamw.GrokAdamW needs the grokadamw package: "
        "pip install -c constraints.txt --build-constraint constraints.txt -e '.[optim]'"
    )


@pytest.mark.slow
def test_a_gpu_run_without_cuda_and_a_misspelt_best_metric_stop_before_training(tmp_path):
    """Both ended in Lightning's exceptions through Hydra: the GPU one after the data were prepared, the metric
    one at the first evaluation inside training, with the steps before it lost."""
    import torch

    if not torch.cuda.is_available():
        result = run_cli(["train.py", "trainer=cuda", f"hydra.run.dir={tmp_path / 'gpu'}"], timeout=120)
        _assert_one_line_error(result, ["trainer.accelerator=gpu: no CUDA device here", "trainer=cpu"])
        assert "tokenized" not in result.stdout and "read from the prepared rows" not in result.stdout
    run = tmp_path / "metric"
    result = run_cli(
        ["train.py", "callbacks.model_checkpoint.metric_for_best_model=val/los", "trainer.max_steps=4",
         f"hydra.run.dir={run}"], timeout=300,
    )  # fmt: skip
    _assert_one_line_error(
        result,
        ["callbacks.model_checkpoint.metric_for_best_model=val/los: the evaluation logs no such metric; "
         "did you mean val/loss? (it logs val/loss, val/ppl)"],
    )  # fmt: skip
    assert not list(run.glob("checkpoints/*.ckpt")), (
        "the check comes after the step-0 evaluation, before a step"
    )
    log = (run / "train.log").read_text().splitlines()  # the run's log ends with why it ended (review L4)
    assert "[ERROR] - hydratune: error: callbacks.model_checkpoint.metric_for_best_model=val/los" in log[-1]


def test_no_plus_advice_for_a_section_of_hydratunes_own_keys():
    """`callbacks.early_stopping.monitor` was told to add it with +, and `+callbacks...` was refused alike."""
    for key in ("callbacks.early_stopping.monitor=val/acc", "+callbacks.early_stopping.monitor=val/acc"):
        result = run_cli(["train.py", key], timeout=120)
        _assert_one_line_error(
            result, ["callbacks.early_stopping.monitor: unknown config key; known keys here"]
        )
        assert "leading +" not in result.stderr
    result = run_cli(
        ["train.py", "trainer.limit_train_batches=2"], timeout=120
    )  # a Trainer argument: + works
    _assert_one_line_error(
        result, ["lightning.pytorch.Trainer takes it: add it with +trainer.limit_train_batches=VALUE"]
    )
    result = run_cli(["train.py", "foo.bar=1"], timeout=120)  # nothing reads it: no + advice
    _assert_one_line_error(result, ["foo.bar: unknown config key; remove it"])
    assert "+" not in result.stderr


def test_loftq_without_scipy_is_said_before_the_model_loads(monkeypatch):
    """peft's LoftQ imports scipy when the adapters are built: an ImportError after the model loaded (review X1)."""
    from conftest import compose

    from hydratune import rules
    from hydratune.config import to_plain

    cfg = to_plain(compose(["peft.config.init_lora_weights=loftq"]))
    monkeypatch.setattr(rules, "find_spec", lambda name: None)
    assert any("needs scipy" in m for m in rules.violations(cfg))
    monkeypatch.setattr(rules, "find_spec", lambda name: object())
    assert not rules.violations(cfg)
