"""Reward functions for online RL (GRPO) and the builder that turns `task.rewards` into callables.

A reward function has the signature `(prompts: list[str], completions: list[str], **columns) ->
list[float]`: one score per completion. `columns` holds the dataset's other columns, one value per
completion (a prompt's value repeated for each of its generations), so a function can compare with a
reference answer. A user's own function is one YAML entry:

    task:
      rewards:
        - _target_: hydratune.rewards.exact_match   # any importable function
          weight: 1.0                               # total reward = sum of weight * reward
          column: answer                            # every other key is bound to the function
        - _target_: mypackage.rewards.my_reward
          weight: 0.2

`RewardModelScorer` is a reward function backed by a reward model: a run of `task=reward`, or a saved
sequence classifier with one label from elsewhere (`task.reward_model=RUN_DIR|FOLDER|OWNER/NAME`).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hydratune.errors import UserError

log = logging.getLogger(__name__)


def exact_match(
    prompts: list[str], completions: list[str], column: str = "answer", after: str | None = None, **columns
) -> list[float]:
    """1.0 where the completion equals the reference in `columns[column]` (both stripped), else 0.0. `after`:
    compare only what follows the last `after` in each (GSM8K's "... #### 42" with after: "####"; a
    completion without the marker is compared whole)."""
    if column not in columns:
        raise UserError(
            f"exact_match: the dataset has no column {column!r} (columns: {', '.join(sorted(columns)) or 'none'}); "
            f"set the reward's column: to the reference answer's column"
        )

    def final(text: str) -> str:
        return text.rsplit(after, 1)[-1].strip() if after else text.strip()

    return [float(final(c) == final(str(ref))) for c, ref in zip(completions, columns[column])]


def unmatchable_references(
    entries: list | None, stop: list | None, data, key: str = "task.rewards"
) -> list[str]:
    """A line for each exact_match reward whose reference answers hold a stop string: sampling ends every
    completion at it, so none can equal them (GSM8K's multi-line solutions under the default stop "\n")."""
    lines = []
    for i, entry in enumerate(entries or []):
        if not isinstance(entry, dict) or not str(entry.get("_target_", "")).endswith("exact_match"):
            continue
        bound = {**(entry.get("kwargs") or {}), **entry}
        column = str(bound.get("column", "answer"))
        if bound.get("after") or column not in data.column_names:
            continue
        refs = data[column][:1000]
        hit = next(
            ((row, s) for row, ref in enumerate(refs) for s in stop or [] if s and s in str(ref)), None
        )
        if hit:
            lines.append(
                f"{key}[{i}] (exact_match): column {column!r} holds task.stop's {hit[1]!r} (row {hit[0]}), which "
                "ends every completion, so none can equal the reference; compare the final answer "
                f"(\"+{key}.{i}.after='####'\" for GSM8K) or change task.stop"
            )
    return lines


# The bound keys whose value names a dataset column the function reads, with their defaults: what lets the
# columns be checked when the data is prepared (see `columns_read`), before any model loads.
exact_match.column_keys = {"column": "answer"}


def regex_match(
    prompts: list[str], completions: list[str], pattern: str = "", full: bool = True, **columns
) -> list[float]:
    """1.0 where the completion (stripped) matches `pattern` — all of it when `full`, anywhere otherwise.

    A format check: e.g. `pattern: "<answer>.*</answer>"`. The pattern is compiled with re.DOTALL.
    """
    compiled = re.compile(pattern, re.DOTALL)
    match = compiled.fullmatch if full else compiled.search
    return [float(match(c.strip()) is not None) for c in completions]


def _check_pattern(kwargs: dict, where: str) -> None:
    """regex_match's pattern compiles: a bad one was a traceback after the model loaded (review G4)."""
    try:
        re.compile(str(kwargs.get("pattern", "")), re.DOTALL)
    except re.error as err:
        raise UserError(
            f"{where}.pattern={kwargs.get('pattern')!r}: not a regular expression ({err})"
        ) from None


regex_match.check_args = _check_pattern  # run by check_rewards (preflight), before any model loads


def length_penalty(
    prompts: list[str], completions: list[str], target: int = 64, scale: float = 64.0, **columns
) -> list[float]:
    """-|len(completion) - target| / scale, in characters: 0 at the target length, -1 per `scale` off.

    Weight it against the task reward (e.g. 0.1) so that it breaks ties rather than dominating.
    """
    return [-abs(len(c) - target) / scale for c in completions]


@dataclass
class Reward:
    """One entry of `task.rewards`: the function, its weight, the bound keyword arguments."""

    name: str
    fn: Callable[..., list[float]]
    weight: float = 1.0
    kwargs: dict = field(default_factory=dict)
    key: str = "task.rewards"
    # Chat prompts (dataset.prompt_format=chat): a TRL-shaped function gets TRL's conversational shapes, the
    # prompts as message lists and each completion as [{"role": "assistant", "content": ...}] (review G3).
    conversational: bool = False
    # `f(prompts, completions, **kwargs)` is both shapes: with chat prompts it gets text, and TRL's message lists
    # when text makes it raise; the shape that worked is kept for the rest of the run.
    _trl_shapes: bool | None = field(default=None, init=False, repr=False)

    def __call__(
        self, prompts: list[str], completions: list[str], turns: list | None = None, /, **columns
    ) -> list[float]:
        params = _parameters(self.fn)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            columns = {k: v for k, v in columns.items() if k in params}
        # Bound config values win over a dataset column of the same name. A function that reads the prompts'
        # conversations (a reward model's scorer) gets them third, positionally. TRL's shape,
        # `f(completions, **kwargs)`, gets prompts and completions by name, as TRL passes them.
        chat = self.conversational and turns and all(t is not None for t in turns)
        if keyword_style(params):
            named = {
                "completions": _messages(completions) if chat else completions,
                **(
                    {"prompts": turns if chat else prompts}
                    if _takes(params, "prompts") or _var_keyword(params)
                    else {}
                ),
            }
            values = self._call(**{**columns, **self.kwargs, **named})
        elif chat and not getattr(self.fn, "reads_turns", False) and self._trl_shapes is not False:
            values = self._either_shape(prompts, completions, turns, {**columns, **self.kwargs})
        else:
            head = (
                (prompts, completions, turns)
                if getattr(self.fn, "reads_turns", False)
                else (prompts, completions)
            )
            values = self._call(*head, **{**columns, **self.kwargs})
        try:  # None for a completion the function does not judge: NaN, left out of the sum (TRL's nansum)
            values = [float("nan") if v is None else float(v) for v in values]
        except (TypeError, ValueError) as err:
            raise UserError(
                f"{self.key} ({self.name}) returned {type(values).__name__}, not a list of numbers (or None)"
            ) from err
        if len(values) != len(completions):
            raise UserError(
                f"{self.key} ({self.name}) returned {len(values)} values for {len(completions)} completions"
            )
        return values

    def _either_shape(self, prompts, completions, turns, kwargs) -> list:
        """A TRL function of this shape reads messages (`completion[0]["content"]`), a hydratune one text."""
        if self._trl_shapes:
            return self._call(turns, _messages(completions), **kwargs)
        try:
            values = self._call(prompts, completions, **kwargs)
        except UserError as text_error:
            try:
                values = self._call(turns, _messages(completions), **kwargs)
            except UserError:
                raise text_error from None
            log.info("%s (%s) reads TRL's conversational shapes: it gets message lists", self.key, self.name)
            self._trl_shapes = True
            return values
        self._trl_shapes = False
        return values

    def _call(self, *args, **kwargs):
        """The user's function, whose own error is one line naming its entry (it was a traceback after the model
        loaded; HYDRATUNE_DEBUG=1 shows it)."""
        try:
            return self.fn(*args, **kwargs)
        except UserError:
            raise
        except Exception as err:
            if os.environ.get("HYDRATUNE_DEBUG") == "1":
                raise
            raise UserError(
                f"{self.key} ({self.name}) raised {type(err).__name__}: {_first_line(err)} (it gets prompts and "
                "completions as lists of text, a chat prompt as the text its template renders, and the row's "
                "other columns by name)"
            ) from None


def _messages(completions: list[str]) -> list[list[dict]]:
    """TRL's conversational completions: each one a list holding the assistant's message."""
    return [[{"role": "assistant", "content": c}] for c in completions]


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0]


def keyword_style(params: dict[str, inspect.Parameter]) -> bool:
    """TRL's reward function: `completions` by name, the first positional not being `prompts`
    (`def f(completions, **kwargs)`, `def f(prompts, completions, answer, **kwargs)` is both)."""
    positional = [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return _takes(params, "completions") and (
        positional[:1] != ["prompts"] or positional[1:2] != ["completions"]
    )


def _var_keyword(params: dict[str, inspect.Parameter]) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in params.values())


def _takes(params: dict[str, inspect.Parameter], name: str) -> bool:
    return name in params and params[name].kind in (
        params[name].POSITIONAL_OR_KEYWORD,
        params[name].KEYWORD_ONLY,
    )


def _parameters(fn) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # builtins without a signature: take all columns
        return {"columns": inspect.Parameter("columns", inspect.Parameter.VAR_KEYWORD)}


def _import(target: str, key: str):
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except ModuleNotFoundError as err:
        top = module_name.split(".")[0]
        if err.name and (module_name == err.name or module_name.startswith(f"{err.name}.")):
            # The user's own module is not on the path: what they need is to make it importable.
            raise UserError(
                f"{key}._target_={target}: cannot import it ({err}); make {module_name} importable: put "
                f"{top}.py beside train.py, or run with PYTHONPATH=<the folder holding {top}.py>"
            ) from err
        raise UserError(f"{key}._target_={target}: cannot import it ({err})") from err
    except (ImportError, AttributeError, ValueError) as err:
        raise UserError(
            f"{key}._target_={target}: cannot import it ({err}); give a dotted path to a function"
        ) from err


def _resolve(entry, where: str) -> tuple:
    """(the imported function or class, its bound keys, weight) of one `task.rewards` entry, with every check
    that needs no call: importable, callable, takes (prompts, completions), bound keys are parameters."""
    if not isinstance(entry, dict) or "_target_" not in entry:
        raise UserError(
            f"{where}: each reward is a mapping with _target_ (a dotted path to a function) and weight"
        )
    kwargs = {k: v for k, v in entry.items() if k not in ("_target_", "weight")}
    fn = _import(entry["_target_"], where)
    if not callable(fn):
        raise UserError(
            f"{where}._target_={entry['_target_']} is not callable; point it at a reward function"
        )
    try:
        weight = float(entry.get("weight", 1.0))
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}.weight={entry['weight']!r}: give a number") from err
    if inspect.isclass(fn):  # a scorer class (e.g. RewardModelScorer): built with the bound keys
        try:
            inspect.signature(fn).bind(**kwargs)
        except TypeError as err:
            raise UserError(f"{where}: {entry['_target_']}({', '.join(kwargs)}): {err}") from err
        if hasattr(fn, "check"):  # cheap checks of its arguments (a reward model's run directory)
            fn.check(**kwargs, key=where)
        return fn, kwargs, weight
    _check_signature(fn, kwargs, entry["_target_"], where)
    if callable(getattr(fn, "check_args", None)):  # a function's own cheap check of its bound keys
        fn.check_args(kwargs, where)
    return fn, kwargs, weight


def _check_signature(fn, kwargs: dict, target: str, where: str) -> None:
    params = _parameters(fn)
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params.values())
    trl = keyword_style(params)
    if len(positional) < 2 and not varargs and not trl:
        raise UserError(
            f"{where}: {target} must take (prompts, completions, **columns), or TRL's (completions, **kwargs); it "
            f"takes ({', '.join(params)})"
        )
    # Bound keys must be named parameters: **columns would swallow a typo (`colum:`) silently.
    if trl:
        bindable = [n for n in _named(params) if n not in ("prompts", "completions")]
    else:
        bindable = _named(params) if varargs else _named(params)[2:]  # prompts and completions come first
    unknown = [k for k in kwargs if k not in bindable]
    if unknown:
        raise UserError(
            f"{where}.{unknown[0]}: {target} has no parameter {unknown[0]!r} "
            f"(its parameters: {', '.join(bindable) or 'none besides prompts, completions'})"
        )


def _named(params: dict[str, inspect.Parameter]) -> list[str]:
    return [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_rewards(entries: list | None, reward_model: str | None = None, key: str = "task.rewards") -> None:
    """Everything `build_rewards` checks that needs no call and loads no model: each function imports and
    takes (prompts, completions) and its bound keys; a reward model's run directory is a task=reward run.
    Preflight and `python train.py` run it before any model loads."""
    for i, entry in enumerate(entries or []):
        _resolve(entry, f"{key}[{i}]")
    if reward_model:
        RewardModelScorer.check(reward_model)


def columns_read(entries: list | None, key: str = "task.rewards") -> list[tuple[str, str, str | None, str]]:
    """(where, column, bound key, function name) for every dataset column the reward functions read: a column named by a
    bound key that a function declares in its `column_keys` attribute ({key: default}, as exact_match's
    `column`), and every parameter after (prompts, completions) that has no default and is not bound (the
    function would get no value for it). The bound key is the one whose override picks another column."""
    out = []
    for i, entry in enumerate(entries or []):
        where = f"{key}[{i}]"
        fn, kwargs, _ = _resolve(entry, where)
        if inspect.isclass(fn):
            continue
        for name, default in (getattr(fn, "column_keys", None) or {}).items():
            out.append((where, str(kwargs.get(name, default)), name, fn.__name__))
        params = _parameters(fn)
        for name in _named(params)[2:]:
            if params[name].default is inspect.Parameter.empty and name not in kwargs:
                out.append((where, name, None, fn.__name__))
    return out


def check_reward_columns(
    entries: list | None, columns: list[str], split: str, key: str = "task.rewards"
) -> None:
    """A column a reward function reads (see `columns_read`) that the split lacks: one line naming the
    reward and the override that fixes it, before any model loads (rather than at the first reward call)."""
    for where, name, bound, function in columns_read(entries, key):
        if name in columns:
            continue
        i = where[where.index("[") + 1 : -1]
        have = ", ".join(columns) or "none"
        if bound:
            pick = columns[0] if len(columns) == 1 else "<one of them>"
            fix = f"set {key}.{i}.{bound}={pick}"
        else:
            fix = f"add the column (dataset.ops: [{{rename_columns: {{<yours>: {name}}}}}])"
        raise UserError(
            f"{where} ({function}) reads column {name!r}, which the {split} split lacks (columns besides the prompt: {have}); {fix}"
        )


def build_rewards(
    entries: list[dict],
    key: str = "task.rewards",
    reward_model: str | None = None,
    conversational: bool = False,
) -> list[Reward]:
    """`task.rewards` (and `task.reward_model`) as Reward callables.

    Each entry is `{_target_: dotted.path, weight: float, **kwargs}`; the function must take
    (prompts, completions) positionally, and every bound key must be a named parameter of it (not
    just swallowed by its **columns, where a typo would pass silently). A class as `_target_` is built
    with the bound keys and its instance is the function: `{_target_: hydratune.rewards.RewardModelScorer,
    run_dir: RUN, weight: 0.5}` is a weighted reward model; `reward_model=RUN` adds one with weight 1.
    Entries are checked in order, so a bad function fails before a reward model loads. Names (for
    metrics) are the functions' names, suffixed with the index when one name appears twice.
    """
    check_rewards(entries, reward_model, key)
    rewards = []
    for i, entry in enumerate(entries or []):
        where = f"{key}[{i}]"
        fn, kwargs, weight = _resolve(entry, where)
        if inspect.isclass(fn):
            fn, kwargs = fn(**kwargs), {}
            _check_signature(fn, kwargs, entry["_target_"], where)
        rewards.append(
            Reward(getattr(fn, "__name__", f"reward_{i}"), fn, weight, kwargs, where, conversational)
        )
    if reward_model:
        rewards.append(Reward("reward_model", RewardModelScorer(reward_model), 1.0, {}, "task.reward_model"))
    names = [r.name for r in rewards]
    for i, reward in enumerate(rewards):
        if names.count(reward.name) > 1:
            reward.name = f"{reward.name}_{i}"
    if not rewards:
        raise UserError(f"{key}: no reward; list at least one function or set task.reward_model=RUN_DIR")
    return rewards


def score(
    rewards: list[Reward],
    prompts: list[str],
    completions: list[str],
    columns: dict[str, list] | None = None,
    turns: list | None = None,
) -> tuple[list[float], dict[str, list[float]]]:
    """(total, per function): total_j = sum_i weight_i * r_i(j); per function the unweighted values.
    `turns`: each prompt as the conversation it is (hydratune.tasks.grpo.data.prompt_turns), for a reward
    model with a chat template."""
    per_function = {r.name: r(prompts, completions, turns, **(columns or {})) for r in rewards}
    total = [0.0] * len(completions)
    for reward in rewards:  # a None (NaN) is left out of the sum, as TRL's nansum does
        total = [t + (0.0 if v != v else reward.weight * v) for t, v in zip(total, per_function[reward.name])]
    return total, per_function


class RewardModelScorer:
    """Scores prompt + completion with a reward model: one exported by a `task=reward` run, or a saved
    sequence classifier with one label from elsewhere (TRL's RewardTrainer, a torchtune reward checkpoint,
    a hub id such as OpenAssistant/reward-model-deberta-v3-base).

    A run's artifact is an `AutoModelForSequenceClassification` with one label, in `<run>/model` (full
    fine-tuning) or `<run>/adapter` (a SEQ_CLS adapter over its recorded base; see hydratune.export). Each
    (prompt, completion) is rendered and tokenized exactly as `hydratune score` renders it for that run:
    per the run's dataset.format (`pairs`: the texts as they are; `chat_pairs`: a user turn and an
    assistant turn through the run's chat template; `alpaca_pairs`: the prompt as the instruction),
    `[BOS] prompt answer EOS`, cut to the run's dataset.max_seq_length in the prompt, from the left (the
    answer and its EOS are what the head reads), and scored outside the policy's autocast. A model from elsewhere reads the
    prompt as a user turn and the completion as the assistant's through its own chat template, or the two
    texts joined when it has none, in the same `[BOS] ... EOS` layout, cut to its position limit. The
    reward is the head's single logit. Usable directly as a reward function.
    """

    def __init__(
        self, run_dir: str | Path, batch_size: int = 16, max_length: int | None = None, dtype: str = "float32"
    ):
        from hydratune.export import find_artifact, load_artifact, run_settings

        model_path = self.check(run_dir)
        if model_path is None:  # a task=reward run
            run_dir = Path(run_dir).expanduser()
            path = find_artifact(run_dir, "merged" if (run_dir / "merged").is_dir() else None)
            self.dataset_cfg = run_settings(run_dir)[1]
        else:
            path = model_path
        try:
            self.model, self.tokenizer = load_artifact(path, dtype)
        except OSError as err:  # a hub id the hub does not have, or a folder without weights
            raise UserError(f"task.reward_model={run_dir}: {str(err).splitlines()[0]}") from None
        if model_path is not None:
            self.dataset_cfg = {
                "format": "chat_pairs" if getattr(self.tokenizer, "chat_template", None) else "pairs",
                "max_seq_length": _position_limit(self.model.config, self.tokenizer),
            }
        labels = getattr(self.model.config, "num_labels", None)
        if not hasattr(self.model, "score") and "SequenceClassification" not in type(self.model).__name__:
            base = getattr(self.model, "get_base_model", lambda: self.model)()
            if "SequenceClassification" not in type(base).__name__:
                raise UserError(
                    f"task.reward_model={run_dir}: {path} is not a sequence classifier; use a run of task=reward"
                )
        if labels != 1:
            raise UserError(
                f"task.reward_model={run_dir}: the model has {labels} labels; a reward model has one (task=reward)"
            )
        self.batch_size = batch_size
        self.max_length = max_length or self.dataset_cfg.get("max_seq_length")
        self.__name__ = "reward_model"

    @staticmethod
    def check(run_dir: str | Path, *args, key: str = "task.reward_model", **kwargs) -> str | Path | None:
        """Refuse, in one line and without loading any weights, what is not a reward model: a missing
        directory; a run that is not a finished task=reward run (its saved .hydra/config.yaml, its
        artifact); a saved model (a folder, or a hub id in the hub cache) whose config.json is not a
        sequence classifier with one label. None for a run; else the model's folder (or its hub id,
        when the hub is online and has not been asked yet)."""
        from hydratune.export import find_artifact, run_settings
        from hydratune.hub import hub_folder, looks_like_path

        given = str(run_dir)
        path = Path(given).expanduser()
        if path.is_dir() and not (path / ".hydra").is_dir() and _saved_model(path):
            folder = path
        elif path.is_dir() or looks_like_path(given) or given.count("/") != 1:
            if not path.is_dir():
                raise UserError(
                    f"{key}={run_dir}: no such directory; give the directory of a task=reward run, or a saved "
                    "reward model (the folder or hub id of a sequence classifier with one label)"
                )
            try:
                task_cfg, _ = run_settings(path)
            except UserError as err:
                raise UserError(f"{key}={err} (or a saved reward model: a folder with config.json)") from err
            name = task_cfg.get("name")
            if name != "reward" or task_cfg.get("_target_"):
                raise UserError(
                    f"{key}={run_dir}: a task={task_cfg.get('_target_') or name} run, not a reward model; give "
                    "the directory of a task=reward run (train one with python train.py task=reward)"
                )
            try:
                find_artifact(path, "merged" if (path / "merged").is_dir() else None)
            except FileNotFoundError as err:
                raise UserError(f"{key}={run_dir}: {err}") from err
            return None
        else:  # owner/name: a hub id
            folder = hub_folder(given, key)
            if folder is None:
                return given  # the hub is asked when the model loads
        _check_classifier_files(folder, f"{key}={run_dir}")
        return folder

    # GRPO hands it each prompt's conversation too: a chat model renders that, not the policy's text of it.
    reads_turns = True

    def _encode(self, prompt: str, completion: str, turns: list | None = None) -> list[int]:
        """The token ids `hydratune score` gives the model for this prompt and response (see
        hydratune.tasks.reward.inference.scoring_row); with `turns` (the prompt's conversation) a chat
        model reads them, then the response as the assistant's turn."""
        from hydratune.tasks.reward.inference import scoring_row

        return scoring_row(self.tokenizer, prompt, completion, self.dataset_cfg, self.max_length, turns)

    def __call__(
        self, prompts: list[str], completions: list[str], turns: list | None = None, /, **columns
    ) -> list[float]:
        import torch

        # The classifier reads each row's last token that is not its config's pad id: right padding with
        # that id is safe; without one, rows go one at a time.
        pad = getattr(self.model.config, "pad_token_id", None)
        step = self.batch_size if pad is not None else 1
        device = next(self.model.parameters()).device
        scores = []
        turns = turns or [None] * len(prompts)
        for start in range(0, len(prompts), step):
            end = start + step
            rows = [
                self._encode(*row)
                for row in zip(prompts[start:end], completions[start:end], turns[start:end])
            ]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [pad or 0] * (width - len(r)) for r in rows], device=device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
            # In the policy's bf16-mixed autocast the scores came out rounded to bf16 (steps of 2^-10 near 0.16), and
            # the group's std then made advantages of their rounding (review G11): the scorer runs in its own dtype.
            with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
                logits = self.model(input_ids=ids, attention_mask=mask).logits
            scores += logits[:, 0].float().tolist()
        return scores


def _saved_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()


def _check_classifier_files(folder: Path, where: str) -> None:
    """A saved model's config.json (or adapter_config.json) read as JSON: a sequence classifier with one
    label, or a one-line UserError. No weight is read."""
    import json

    if (folder / "adapter_config.json").is_file():
        task_type = json.loads((folder / "adapter_config.json").read_text()).get("task_type")
        if task_type != "SEQ_CLS":
            raise UserError(
                f"{where}: an adapter of task type {task_type}, not a sequence classifier (SEQ_CLS); give a "
                "reward model (train one with python train.py task=reward)"
            )
        return  # its labels are in its base's config and its saved head: checked when it loads
    if not (folder / "config.json").is_file():
        raise UserError(f"{where}: {folder} has no config.json; give the folder of a saved reward model")
    config = json.loads((folder / "config.json").read_text())
    architecture = (config.get("architectures") or ["a model without architectures"])[0]
    if not architecture.endswith("ForSequenceClassification"):
        raise UserError(
            f"{where}: a {architecture}, not a sequence classifier; a reward model is an "
            "*ForSequenceClassification with one label (train one with python train.py task=reward)"
        )
    labels = len(config.get("id2label") or {}) or config.get("num_labels", 2)  # transformers' default: 2
    if labels != 1:
        raise UserError(f"{where}: the model has {labels} labels; a reward model has one (task=reward)")


def _position_limit(config, tokenizer) -> int | None:
    """The longest input a model from elsewhere reads: its tokenizer's model_max_length (when set) or its
    position embeddings."""
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(n) for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
    return min(limits) if limits else None
