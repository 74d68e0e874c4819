"""Deterministic synthetic text: the tiny base model's pretraining corpus and the sample SFT data.

The tasks are string transformations a 1M-parameter model can learn on a CPU in minutes, so the
default run can show real learning (exact-match answers on held-out words) without any download.
"""

from __future__ import annotations

import random
import string

# Each operation: pretraining keyword, Alpaca instruction, function.
OPERATIONS: dict[str, tuple[str, str]] = {
    "upper": ("upper", "Write the word in capital letters."),
    "reverse": ("reverse", "Reverse the letters of the word."),
    "capitalize": ("capitalize", "Capitalize the first letter of the word."),
    "copy": ("copy", "Repeat the word exactly."),
    "lower": ("lower", "Write the word in small letters."),
}
FUNCTIONS = {
    "upper": str.upper,
    "reverse": lambda w: w[::-1],
    "capitalize": str.capitalize,
    "copy": lambda w: w,
    "lower": str.lower,
}
# The sample SFT dataset teaches these; the base model saw all of them in another format.
# Reverse is left out: it depends on the distance between the word and the answer, which the
# Alpaca template changes, and LoRA does not relearn that within the 3-minute budget.
SFT_OPERATIONS = ("upper", "lower", "capitalize")


def random_word(rng: random.Random, min_len: int = 3, max_len: int = 7) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(min_len, max_len)))


def pretraining_line(rng: random.Random) -> str:
    """One line such as `reverse: planet -> tenalp`."""
    op = rng.choice(list(OPERATIONS))
    word = random_word(rng, 3, 8)
    if op == "lower":
        word = rng.choice([word.upper(), word.capitalize()])
    return f"{OPERATIONS[op][0]}: {word} -> {FUNCTIONS[op](word)}"


def pretraining_document(rng: random.Random, num_lines: int = 6) -> str:
    return "\n".join(pretraining_line(rng) for _ in range(num_lines))


def alpaca_rows(num_rows: int, seed: int, exclude: set[str] | None = None) -> list[dict[str, str]]:
    """Alpaca-format rows (instruction, input, output) over `SFT_OPERATIONS`.

    Words in `exclude` are skipped, so an eval split never shares a word with the train split.
    """
    rng = random.Random(seed)
    exclude = exclude or set()
    rows = []
    while len(rows) < num_rows:
        word = random_word(rng)
        if word in exclude:
            continue
        op = SFT_OPERATIONS[len(rows) % len(SFT_OPERATIONS)]
        if op == "lower":
            word = word.upper()
        rows.append({"instruction": OPERATIONS[op][1], "input": word, "output": FUNCTIONS[op](word)})
    return rows


def write_jsonl(path, rows: list[dict]) -> None:
    """One JSON object per line (the shipped data files and the benchmark's)."""
    import json
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


# The shipped preference data (data/preference/, scripts/make_preference_data.py) teaches one new
# behaviour by preference alone: on `copy:` prompts the chosen answer is the word in capitals, the
# rejected one the exact copy that the base model writes (it copies every held-out word correctly).
# The base already knows both halves (copying which letters, writing capitals), so LoRA on a CPU can
# learn the new mapping within minutes; nothing in pretraining ever paired `copy:` with capitals.
PREFERENCE_KEYWORD = "copy"
PREFERENCE_CHOSEN = "upper"
PREFERENCE_REJECTED = "copy"


def preference_prompt(word: str, keyword: str = PREFERENCE_KEYWORD) -> str:
    """A prompt in the base model's pretraining format, e.g. `copy: planet -> `."""
    return f"{keyword}: {word} -> "


def preference_rows(num_rows: int, seed: int, exclude: set[str] | None = None) -> list[dict[str, str]]:
    """`{prompt, chosen, rejected}` rows on distinct random words, none of them in `exclude`."""
    rng = random.Random(seed)
    exclude, seen, rows = exclude or set(), set(), []
    while len(rows) < num_rows:
        word = random_word(rng)
        if word in exclude or word in seen:
            continue
        seen.add(word)
        rows.append(
            {
                "prompt": preference_prompt(word),
                "chosen": FUNCTIONS[PREFERENCE_CHOSEN](word),
                "rejected": FUNCTIONS[PREFERENCE_REJECTED](word),
            }
        )
    return rows


def kto_rows(pairs: list[dict[str, str]], seed: int) -> list[dict]:
    """Unpaired KTO rows from pairs: each pair gives a desirable row (its chosen answer) and an
    undesirable one (its rejected answer), shuffled so that a batch mixes both labels."""
    rows = [
        {"prompt": p["prompt"], "completion": p[key], "label": key == "chosen"}
        for p in pairs
        for key in ("chosen", "rejected")
    ]
    random.Random(seed).shuffle(rows)
    return rows


# Held-out instructions for online RL (scripts/make_grpo_data.py): new keywords for known operations,
# in the pretraining format. The base never saw them; for an unknown keyword it mostly copies the word,
# and applies the meant operation only sometimes (about a quarter of the time over this set), so a
# group of samples holds a few successes for the group baseline to reward.
# Which unknown keywords the base happens to map to the meant operation depends on its weights: after
# re-pretraining, `python scripts/grpo_probe.py --candidates` measures GRPO_CANDIDATES and suggests a set.
GRPO_KEYWORDS: dict[str, str] = {
    "shout": "upper",
    "loud": "upper",
    "UPPER": "upper",
    "yell": "upper",
    "small": "lower",
    "rev": "reverse",
}
GRPO_CANDIDATES: dict[str, str] = {
    **GRPO_KEYWORDS,
    "big": "upper",
    "caps": "upper",
    "upcase": "upper",
    "uppercase": "upper",
    "whisper": "lower",
    "quiet": "lower",
    "lowercase": "lower",
    "mirror": "reverse",
    "flip": "reverse",
    "backwards": "reverse",
    "reversed": "reverse",
    "title": "capitalize",
    "capital": "capitalize",
    "cap": "capitalize",
    "echo": "copy",
    "same": "copy",
}


def grpo_rows(num_rows: int, seed: int, exclude: set[str] | None = None) -> list[dict[str, str]]:
    """Rows {prompt, answer} such as `{"prompt": "shout: planet -> ", "answer": "PLANET"}`.

    Keywords take turns; words in `exclude` are skipped, so an eval split shares no word with train.
    """
    rng = random.Random(seed)
    exclude = exclude or set()
    keywords = list(GRPO_KEYWORDS)
    rows = []
    while len(rows) < num_rows:
        word = random_word(rng)
        if word in exclude:
            continue
        keyword = keywords[len(rows) % len(keywords)]
        op = GRPO_KEYWORDS[keyword]
        if op == "lower":
            word = word.upper()
        rows.append({"prompt": f"{keyword}: {word} -> ", "answer": FUNCTIONS[op](word)})
    return rows
