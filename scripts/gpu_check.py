"""Everything a first GPU session should measure, in one command (called by scripts/gpu_check.sh).

What: the `gpu`-marked tests; the benchmark's GPU mode (scripts/bench.py --gpu: hydratune vs TRL vs the
bare loop, ~0.5B Llama in bf16, packed and unpacked, tokens/s, peak memory, MFU); one QLoRA nf4 step;
a `16-mixed` run; a packed-vs-alone logit check on CUDA with sdpa (and flash_attention_2 where the
flash-attn package is installed); a 1-GPU FSDP smoke run. Each check runs in its own process with a
time limit; every figure goes into one JSON file (rewritten whole after each check, `"complete": true`
at the end) and a summary table is printed.
Hardware: one CUDA GPU (H100/H200 class: ~6 minutes; the limits add up to 9). Without CUDA it refuses
in one line, exit status 2, before writing anything.

    bash scripts/gpu_check.sh                       # -> outputs/gpu_check/gpu_check.json
    bash scripts/gpu_check.sh --out DIR --skip bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_STEPS = 30  # 5 warm-up steps, then 5 windows of 5
BENCH_VOCAB = 32000  # a BPE-sized output layer: the logits and the loss cost what they do in a real model
# (name, time limit in seconds): the limits add up to 9 minutes; a run takes less.
CHECKS = {"tests": 90, "bench": 300, "qlora": 45, "fp16": 30, "logits": 30, "fsdp": 45}


def refuse_without_cuda() -> None:
    """One line on stderr and exit status 2 when there is nothing to check on."""
    try:
        import torch
    except ImportError:
        print("gpu_check: torch is not installed; run with --install (see README)", file=sys.stderr)
        sys.exit(2)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)


def run(cmd: list[str], limit: float, log: Path) -> tuple[int, float]:
    """Run `cmd` from the project root with its output in `log`; (exit status, seconds). 124: time limit."""
    started = time.time()
    with log.open("w") as out:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, round(time.time() - started, 1)


def tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    return " | ".join(text[-lines:])[-400:]


def check_tests(out: Path, limit: float) -> dict:
    xml = out / "gpu_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
    rc, seconds = run(cmd, limit, out / "tests.log")
    result = {"rc": rc, "seconds": seconds}
    if xml.is_file():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        result |= counts | {
            "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        }
    # pytest exits 5 when no test is selected
    result["ok"] = rc == 0
    if not result["ok"]:
        result["error"] = tail(out / "tests.log")
    return result


def check_bench(out: Path, limit: float) -> dict:
    bench = out / "bench"
    steps = ["--steps", str(BENCH_STEPS), "--vocab", str(BENCH_VOCAB)]
    cmd = [sys.executable, "scripts/bench.py", "--gpu", *steps, "--out", str(bench)]
    rc, seconds = run(cmd, limit, out / "bench.log")
    result = {"rc": rc, "seconds": seconds}
    if (bench / "bench.json").is_file():
        found = json.loads((bench / "bench.json").read_text())
        result["machine"], result["runners"] = found["machine"], found["results"]
        ok = [r for r in found["results"].values() if r.get("tokens_per_s")]
        result["ok"] = rc == 0 and len(ok) == len(found["results"])
    else:
        result["ok"] = False
    if not result["ok"]:
        result["error"] = tail(out / "bench.log")
    return result


def train_check(out: Path, name: str, limit: float, overrides: list[str], steps: int = 4) -> dict:
    """`python train.py` on the shipped tiny model and sample data (or the bench model)."""
    run_dir = out / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [
        sys.executable,
        "train.py",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "export.merge=false",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    rc, seconds = run(cmd, limit, out / f"{name}.log")
    result = {"rc": rc, "seconds": seconds, "overrides": overrides}
    metrics = run_dir / "metrics.json"
    if rc == 0 and metrics.is_file():
        m = json.loads(metrics.read_text())
        keys = ("steps", "train_loss", "val_loss", "tokens_per_s", "peak_memory_mb", "wall_seconds")
        result |= {k: m.get(k) for k in keys}
    result["ok"] = rc == 0 and result.get("steps") == steps
    if not result["ok"]:
        result["error"] = tail(out / f"{name}.log")
    return result


def bench_model(out: Path) -> list[str]:
    """The bench's ~0.5B model when the bench step made it (a realistic QLoRA memory figure), else none."""
    model = out / "bench" / "model"
    return [f"model.pretrained_model_name_or_path={model}"] if (model / "config.json").is_file() else []


def check_logits(out: Path, limit: float) -> dict:
    cmd = [sys.executable, __file__, "--logits-only", "--out", str(out)]
    rc, seconds = run(cmd, limit, out / "logits.log")
    found = out / "logits.json"
    result = json.loads(found.read_text()) if rc == 0 and found.is_file() else {}
    result |= {"rc": rc, "seconds": seconds}
    result["ok"] = rc == 0 and all(v.get("ok") for v in result.get("implementations", {}).values())
    if not result["ok"]:
        result["error"] = tail(out / "logits.log")
    return result


def packed_vs_alone(out: Path) -> None:
    """Logits of samples packed in one row (positions restarting) vs each alone, on CUDA, per attention."""
    import importlib.util

    import torch

    from hydratune.data.collate import PackedCollator, PadCollator
    from hydratune.data.tokenize import tokenize_pair
    from hydratune.tiny import build_random_model

    model, tokenizer = build_random_model(
        seed=0, num_hidden_layers=2, hidden_size=256, intermediate_size=688, num_attention_heads=4
    )
    pairs = [("abc: ", "ABC"), ("lower: HELLO -> ", "hello"), ("x", "yz"), ("caps: word -> ", "Word" * 20)]
    samples = [tokenize_pair(p, r, tokenizer, 256) for p, r in pairs]
    row = {k: [x for s in samples for x in s[k]] for k in ("input_ids", "labels")}
    row["position_ids"] = [i for s in samples for i in range(len(s["input_ids"]))]
    implementations = {"sdpa": (torch.float32, 1e-3), "eager": (torch.float32, 1e-3)}
    if importlib.util.find_spec("flash_attn") is not None:
        implementations["flash_attention_2"] = (torch.bfloat16, 3e-2)
    results = {}
    for name, (dtype, tolerance) in implementations.items():
        model.config._attn_implementation = name
        model.to("cuda", dtype).eval()
        try:
            packed = PackedCollator(tokenizer.pad_token_id)([row])
            with torch.no_grad():
                logits = model(
                    input_ids=packed["input_ids"].cuda(),
                    position_ids=packed["position_ids"].cuda(),
                    use_cache=False,
                ).logits.float()
                worst, start = 0.0, 0
                for sample in samples:
                    n = len(sample["input_ids"])
                    alone = PadCollator(tokenizer.pad_token_id)([sample])
                    alone_logits = model(
                        input_ids=alone["input_ids"].cuda(), attention_mask=alone["attention_mask"].cuda(),
                        use_cache=False,
                    ).logits.float()  # fmt: skip
                    worst = max(worst, (logits[:, start : start + n] - alone_logits).abs().max().item())
                    start += n
            results[name] = {
                "dtype": str(dtype),
                "max_abs_diff": worst,
                "tolerance": tolerance,
                "ok": worst <= tolerance,
            }
        except Exception as err:  # an attention that cannot run here is a finding, not a crash
            results[name] = {"ok": False, "error": f"{type(err).__name__}: {err}"[:300]}
    if "flash_attention_2" not in results:
        results["flash_attention_2"] = {"ok": True, "skipped": "flash-attn is not installed"}
    (out / "logits.json").write_text(json.dumps({"implementations": results}, indent=2))


def summary(results: dict) -> str:
    lines = ["| check | ok | seconds | figures |", "|---|---|---|---|"]
    for name, r in results["checks"].items():
        if name == "bench":
            figures = "; ".join(
                f"{runner} {x.get('tokens_per_s')} tok/s, {x.get('peak_gpu_mb')} MB, MFU {x.get('mfu')}"
                for runner, x in r.get("runners", {}).items()
            )
        elif name == "tests":
            figures = f"{r.get('passed')} passed, {r.get('failures')} failed, {r.get('skipped')} skipped"
        elif name == "logits":
            figures = "; ".join(
                f"{k} {v.get('skipped') or v.get('error') or v.get('max_abs_diff')}"
                for k, v in r.get("implementations", {}).items()
            )
        else:
            figures = (
                f"loss {r.get('train_loss')}, {r.get('tokens_per_s')} tok/s, {r.get('peak_memory_mb')} MB"
            )
        if r.get("skipped"):
            figures = r["skipped"]
        elif not r.get("ok"):
            figures = f"FAILED: {r.get('error', '')[:150]}"
        lines.append(f"| {name} | {'yes' if r.get('ok') else 'no'} | {r.get('seconds', '')} | {figures} |")
    return "\n".join(lines)


def write(path: Path, results: dict) -> None:
    """Rewrite the whole JSON file atomically: it is always complete JSON, partial or not."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "outputs" / "gpu_check"))
    parser.add_argument("--skip", default="", help=f"comma-separated checks to skip, of {','.join(CHECKS)}")
    parser.add_argument("--logits-only", action="store_true", help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    refuse_without_cuda()  # before anything is written
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.logits_only:
        packed_vs_alone(out)
        return

    import importlib.util

    import torch

    results = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "trl_installed": importlib.util.find_spec("trl") is not None,
        "flash_attn_installed": importlib.util.find_spec("flash_attn") is not None,
        "bitsandbytes_installed": importlib.util.find_spec("bitsandbytes") is not None,
        "complete": False,
        "checks": {},
    }
    skip = set(filter(None, args.skip.split(",")))
    path = out / "gpu_check.json"
    gpu = ["trainer.accelerator=gpu", "trainer.devices=1"]
    runs = {
        "tests": lambda limit: check_tests(out, limit),
        "bench": lambda limit: check_bench(out, limit),
        "qlora": lambda limit: train_check(
            out, "qlora", limit, ["peft=qlora", "trainer=cuda", *bench_model(out)], steps=1
        ),
        "fp16": lambda limit: train_check(
            out, "fp16", limit, ["trainer=cuda", "trainer.precision=16-mixed", "model.dtype=float32"]
        ),
        "logits": lambda limit: check_logits(out, limit),
        "fsdp": lambda limit: train_check(out, "fsdp", limit, ["trainer=fsdp", *gpu]),
    }
    for name, limit in CHECKS.items():
        if name in skip:
            results["checks"][name] = {"ok": True, "skipped": "--skip"}
        else:
            print(f"gpu_check: {name} (limit {limit} s)", flush=True)
            results["checks"][name] = runs[name](limit)
        write(path, results)
    results["complete"] = True
    write(path, results)
    table = summary(results)
    (out / "gpu_check.md").write_text(f"Device: {results['device']}, torch {results['torch']}.\n\n{table}\n")
    print(table)
    print(f"figures: {path}")
    sys.exit(0 if all(r.get("ok") for r in results["checks"].values()) else 1)


if __name__ == "__main__":
    main()
