"""Write the shipped classification sample: data/topics/{train,eval}.jsonl (`text`, `label`).

What: short synthetic sentences about one of four topics (sports, food, weather, tech). Each
sentence names two words of its topic after topic-neutral words, so the label depends on the topic
words only. The eval split shares no sentence with the train split. Deterministic (seeded).
Hardware: any; takes under a second.

    python scripts/make_topics_data.py
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from hydratune.synthetic import write_jsonl

TOPICS: dict[str, list[str]] = {
    "sports": [
        "football",
        "tennis",
        "goalkeeper",
        "marathon",
        "stadium",
        "referee",
        "hockey",
        "cyclist",
        "swimmer",
        "trophy",
        "league",
        "coach",
    ],
    "food": [
        "pasta",
        "bakery",
        "recipe",
        "cheese",
        "soup",
        "dessert",
        "kitchen",
        "pizza",
        "noodles",
        "chef",
        "salad",
        "bread",
    ],
    "weather": [
        "rain",
        "storm",
        "sunshine",
        "forecast",
        "thunder",
        "snow",
        "breeze",
        "fog",
        "humidity",
        "hail",
        "drizzle",
        "heatwave",
    ],
    "tech": [
        "laptop",
        "software",
        "robot",
        "server",
        "keyboard",
        "browser",
        "chip",
        "network",
        "database",
        "compiler",
        "phone",
        "app",
    ],
}
WHO = [
    "my uncle",
    "the teacher",
    "a neighbour",
    "our team",
    "my sister",
    "the old man",
    "everyone",
    "a friend",
]
VERBS = ["talked about", "complained about", "wrote about", "asked about", "dreamed about", "laughed about"]


def sentence(rng: random.Random, topic: str) -> str:
    first, second = rng.sample(TOPICS[topic], 2)
    return f"{rng.choice(WHO)} {rng.choice(VERBS)} the {first} and the {second}"


def rows(n: int, seed: int, exclude: set[str] = frozenset()) -> list[dict]:
    """`n` rows with labels in turn (balanced), no text repeated, none from `exclude`."""
    rng = random.Random(seed)
    labels = sorted(TOPICS)
    out, seen = [], set(exclude)
    while len(out) < n:
        label = labels[len(out) % len(labels)]
        text = sentence(rng, label)
        if text not in seen:
            seen.add(text)
            out.append({"text": text, "label": label})
    rng.shuffle(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/topics")
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--eval-rows", type=int, default=200)
    args = parser.parse_args()
    eval_rows = rows(args.eval_rows, seed=1)
    train_rows = rows(args.train_rows, seed=0, exclude={r["text"] for r in eval_rows})
    write_jsonl(Path(args.out) / "train.jsonl", train_rows)
    write_jsonl(Path(args.out) / "eval.jsonl", eval_rows)
    print(f"wrote {len(train_rows)} train and {len(eval_rows)} eval rows to {args.out}")


if __name__ == "__main__":
    main()
