"""Text views of tokenized data for `hydratune inspect`: trained tokens marked, length histograms."""

from __future__ import annotations

from hydratune.data.tokenize import IGNORE_INDEX


def marked_text(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """Decoded text with each run of trained tokens wrapped in [[ ]]."""
    out, run, trained = [], [], None
    for token, label in zip(input_ids, labels):
        flag = label != IGNORE_INDEX
        if flag != trained and run:
            text = tokenizer.decode(run)
            out.append(f"[[{text}]]" if trained else text)
            run = []
        run.append(token)
        trained = flag
    if run:
        text = tokenizer.decode(run)
        out.append(f"[[{text}]]" if trained else text)
    return "".join(out)


def histogram(lengths: list[int], bins: int = 8, width: int = 40) -> list[str]:
    """Lines of a text histogram: range, count and a bar per bin."""
    if not lengths:
        return ["  (no samples)"]
    lo, hi = min(lengths), max(lengths)
    step = max(1, -(-(hi - lo + 1) // bins))
    counts = [0] * bins
    for n in lengths:
        counts[min((n - lo) // step, bins - 1)] += 1
    top = max(counts)
    return [
        f"  {lo + i * step:>6}-{lo + (i + 1) * step - 1:<6} {c:>7} {'#' * round(width * c / top)}"
        for i, c in enumerate(counts)
        if c or i < bins - 1
    ]
