"""Text views of tokenized data for `hydratune inspect`: trained tokens marked, length histograms."""

from __future__ import annotations

from hydratune.data.tokenize import IGNORE_INDEX


def marked_text(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """Decoded text with each run of trained tokens wrapped in [[ ]]. Each run is what it adds to the decoded text
    before it: decoded alone, a SentencePiece run lost its leading "▁" space (`[/INST][[QLEW` for `[/INST] QLEW`),
    the very detail one inspects a template's edges for (review T11)."""
    out, start, before, n = [], 0, "", min(len(input_ids), len(labels))
    trained = [label != IGNORE_INDEX for label in labels[:n]]
    for end in [*(i for i in range(1, n) if trained[i] != trained[i - 1]), n]:
        if end <= start:
            continue
        upto = tokenizer.decode(input_ids[:end])
        text = upto[len(before) :] if upto.startswith(before) else tokenizer.decode(input_ids[start:end])
        out.append(f"[[{text}]]" if trained[start] else text)
        start, before = end, upto
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
