"""The `hydratune` command: utilities around runs (training itself is `python train.py`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydratune.cli.args import above_zero, positive, share


def _generate(args: argparse.Namespace) -> int:
    from hydratune.errors import UserError
    from hydratune.export import find_artifact, load_artifact, run_settings
    from hydratune.generate import generate
    from hydratune.tasks.registry import get_task

    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += [line.rstrip("\n") for line in open(args.prompts_file) if line.strip()]
    if not prompts:
        raise UserError("give --prompt TEXT or --prompts-file FILE")
    artifact = find_artifact(args.run_dir, args.artifact)
    if not args.raw:
        # Each prompt rendered as the run's training data rendered its prompts (its task and dataset.format:
        # an alpaca template, the chat template, or the text as written), so it answers as it learnt to.
        from transformers import AutoTokenizer

        task_cfg, dataset_cfg = run_settings(args.run_dir)
        task, tokenizer = get_task(task_cfg), AutoTokenizer.from_pretrained(artifact)
        prompts = [
            task.prompt_text(dataset_cfg, tokenizer, p, args.input or "", args.system or "") for p in prompts
        ]
    elif args.input or args.system:
        raise UserError("--input and --system go into the run's template, which --raw leaves out")
    if not args.sample and (args.temperature != 1.0 or args.top_p != 1.0):
        print("hydratune generate: note: --temperature and --top-p apply with --sample (decoding is greedy)",
              file=sys.stderr)  # fmt: skip
    model, tokenizer = load_artifact(artifact)
    for text in generate(
        model, tokenizer, prompts, args.max_new_tokens, args.sample, args.temperature, args.top_p
    ):
        print(text)
    return 0


def _merge(args: argparse.Namespace) -> int:
    import shutil

    from hydratune.card import write_merged_card
    from hydratune.errors import UserError
    from hydratune.export import find_artifact, logit_parity, merge_adapter, merge_dtype

    target = Path(args.out or f"{args.run_dir}/merged")
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {target} is a file: give a folder (default: RUN_DIR/merged)")
    adapter = find_artifact(args.run_dir, "adapter")
    dtype = args.dtype or merge_dtype(adapter)
    out = merge_adapter(adapter, target, dtype)
    try:
        diff = logit_parity(adapter, out, dtype)
    except RuntimeError as err:  # not left where `generate` would load it first (review K3)
        shutil.rmtree(out, ignore_errors=True)
        hint = "; try --dtype float32" if dtype != "float32" else ""
        raise UserError(f"{err}; {out} removed{hint}") from None
    measured = {"merge_max_abs_logit_diff": diff}
    # a QLoRA run's: against its 4-bit model too
    if (Path(args.run_dir) / ".hydra" / "config.yaml").is_file():
        from hydratune.cli.export import saved_run_config
        from hydratune.export import quantized_merge_gap

        measured |= quantized_merge_gap(adapter, Path(out), saved_run_config(Path(args.run_dir)))
    write_merged_card(Path(args.run_dir), Path(out), measured)
    print(f"merged {adapter} into {out} in {dtype} (max |logit diff| vs adapter: {diff:.2e})")
    return 0


def _preflight(args: argparse.Namespace) -> int:
    import json

    from hydratune.preflight import run_preflight

    report = run_preflight(
        args.overrides, with_data=not args.no_data, rows=args.rows, full_data=args.full_data
    )
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        for key, value in report.items():
            if key not in ("examples", "notes"):
                print(f"{key:>24}: {_brief(value)}")
        for note in report.get("notes", []):
            label, _, text = note.partition(": ") if note.startswith("warning: ") else ("note", "", note)
            print(f"{label:>24}: {text}")
        for example in report.get("examples", []):
            print("-" * 60 + "\n" + example)
    print("preflight: ok")
    return 0


def _brief(value) -> str:
    """A report value on one line: per-split counts as `key value, ...`, shares as percentages."""
    if not isinstance(value, dict):
        return str(value)

    def one(key: str, v) -> str:
        if key.endswith(("_rate", "_fraction")):
            return f"{key} {100 * v:.1f}%"
        return f"{key} {'; '.join(map(str, v))}" if isinstance(v, list) else f"{key} {v}"

    return ", ".join(one(k, v) for k, v in value.items())


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line that names the command and points at --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="hydratune",
        description="Utilities for hydratune runs. Train with: python train.py [overrides]",
    )
    from hydratune import __version__

    parser.add_argument("--version", action="version", version=f"hydratune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)

    gen = sub.add_parser("generate", help="generate text with a finished run's artifact")
    gen.add_argument("run_dir", help="a run directory (holds adapter/, merged/ or model/)")
    gen.add_argument("--prompt", action="append", help="a prompt or instruction (repeatable)")
    gen.add_argument("--prompts-file", help="a text file, one prompt per line")
    gen.add_argument("--input", help="the Alpaca `input` field given with every instruction (alpaca formats)")
    gen.add_argument(
        "--system", help="a system turn before every prompt (chat formats), as training rows had"
    )
    gen.add_argument("--artifact", choices=["adapter", "merged", "model"], help="which export to load")
    gen.add_argument(
        "--raw",
        action="store_true",
        help="send prompts as given (after BOS), not rendered as the run's data was",
    )
    gen.add_argument(
        "--max-new-tokens", type=positive, default=64, help="tokens to write at most (default 64)"
    )
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=above_zero, default=1.0, help="with --sample: > 0 (default 1.0)")
    gen.add_argument("--top-p", type=share, default=1.0, help="with --sample: 0 < p <= 1 (default 1.0)")
    gen.set_defaults(func=_generate)

    merge = sub.add_parser("merge", help="fold a run's LoRA adapter into its base model (writes merged/)")
    merge.add_argument("run_dir", help="a run directory with adapter/")
    merge.add_argument("--out", help="output directory (default: RUN_DIR/merged)")
    merge.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="default: the run's model.dtype (for auto, the base checkpoint's own)",
    )
    merge.set_defaults(func=_merge)
    # a checkpoint as adapter/ or model/ without training; torch only when run
    from hydratune.cli import export

    export.add_parser(sub)

    pre = sub.add_parser("preflight", help="check a config and its data without loading model weights")
    pre.add_argument("overrides", nargs="*", help="the same overrides as python train.py takes")
    pre.add_argument("--no-data", action="store_true", help="skip the data checks (config only)")
    pre.add_argument(
        "--rows",
        type=positive,
        default=200,
        metavar="N",
        help="rows of each data file to check (default 200)",
    )
    pre.add_argument(
        "--full-data",
        action="store_true",
        help="prepare every row as training does (slower: datasets, transformers)",
    )
    pre.add_argument("--json", action="store_true", help="print the report as JSON")
    pre.set_defaults(func=_preflight)

    from hydratune.cli import sweep_report

    sweep_report.add_parser(sub)
    # Data commands: their modules import nothing heavy at the top, the work is imported when run.
    from hydratune.cli import datasplit, inspect

    datasplit.add_parser(sub)
    inspect.add_parser(sub)
    from hydratune.cli import predict, score  # classifier / reward runs; torch only when run

    predict.add_parser(sub)
    score.add_parser(sub)
    from hydratune.cli import import_config  # other trainers' configs -> conf/experiment; yaml only at import

    import_config.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    from hydratune.config import mask_url
    from hydratune.console import quiet_console
    from hydratune.errors import UserError

    quiet_console()
    from hydratune.preflight import project_root

    # conf/paths reads the project folder from HYDRATUNE_ROOT (train.py sets it to its own folder).
    os.environ.setdefault("HYDRATUNE_ROOT", str(project_root()))
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides after an option (`inspect task=dpo --samples 2 dataset.max_seq_length=256`) are overrides too.
    if (
        extra
        and isinstance(getattr(args, "overrides", None), list)
        and not any(a.startswith("-") for a in extra)
    ):
        args.overrides += extra
    elif extra:
        prog = f"{parser.prog} {args.command}" if args.command else parser.prog  # the command misspelt
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extra)} (see {prog} --help)\n")
    if args.command is None:
        parser.print_help()
        return 0
    # Runs go to the project's outputs/ wherever train.py was started: `outputs/default/<date>` typed in another
    # folder names the project's run (review N5), as the summary's path does.
    for key in ("run_dir", "sweep_dir"):
        folder = getattr(args, key, None)
        if folder and not Path(folder).expanduser().is_absolute() and not Path(folder).exists():
            if (project_root() / folder).is_dir():
                setattr(args, key, str(project_root() / folder))
    try:
        return args.func(args)
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the interpreter flushes it at exit)
        return 0
    except (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, UnicodeDecodeError) as err:
        if os.environ.get("HYDRATUNE_DEBUG") == "1":
            raise
        if isinstance(err, UnicodeDecodeError):
            err = f"not a text file ({err.reason} at byte {err.start})"
        print(f"hydratune {args.command}: error: {mask_url(str(err))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
