"""Prompt formats: a row of the dataset becomes (prompt, response) text.

The prompt is never trained on (unless `train_on: all`); the response is, followed by EOS.
A format is chosen by name in the dataset config: `format: alpaca` -> `FORMATS["alpaca"]`.
"""

from __future__ import annotations

from collections.abc import Callable

# Prompt templates for the alpaca format, by name. `alpaca` is the original Stanford Alpaca wording;
# `alpaca_short` drops the preamble, which matters when every character is a token.
TEMPLATES: dict[str, dict[str, str]] = {
    "alpaca": {
        "with_input": (
            "Below is an instruction that describes a task, paired with an input that provides further "
            "context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
        ),
        "no_input": (
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
        ),
    },
    "alpaca_short": {
        "with_input": "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
        "no_input": "### Instruction:\n{instruction}\n\n### Response:\n",
    },
}


def alpaca_prompt(instruction: str, input: str = "", template: str = "alpaca") -> str:
    """The prompt text for one instruction (and optional input), as training saw it."""
    parts = TEMPLATES[template]
    if input:
        return parts["with_input"].format(instruction=instruction, input=input)
    return parts["no_input"].format(instruction=instruction)


def format_alpaca(row: dict, cfg: dict) -> tuple[str, str]:
    prompt = alpaca_prompt(row["instruction"], row.get("input") or "", cfg.get("template", "alpaca"))
    return prompt, row["output"]


def format_prompt_response(row: dict, cfg: dict) -> tuple[str, str]:
    prompt = row[cfg["prompt_column"]]
    system_column = cfg.get("system_column")
    if system_column and row.get(system_column):
        prompt = f"{row[system_column]}\n\n{prompt}"
    return prompt, row[cfg["response_column"]]


def format_text(row: dict, cfg: dict) -> tuple[str, str]:
    # Plain text: everything is "response", so every token is trained.
    return "", row[cfg.get("text_column", "text")]


FORMATS: dict[str, Callable[[dict, dict], tuple[str, str]]] = {
    "alpaca": format_alpaca,
    "prompt_response": format_prompt_response,
    "text": format_text,
}
