"""Errors that speak to the user: one line naming the key, file or line, and the fix."""


class UserError(Exception):
    """Bad config or data. Printed as one line (no traceback unless HYDRATUNE_DEBUG=1); exit code 2."""


class NonFiniteLoss(RuntimeError):
    """A NaN/inf training loss under nan_policy=stop (train.run turns it into a one-line error)."""


# An optimizer's Python package -> the hydratune extra that installs it.
EXTRAS = {
    "bitsandbytes": "bnb",
    "galore_torch": "optim",
    "lomo_optim": "optim",
    "schedulefree": "optim",
    "grokadamw": "optim",
    "optimi": "optim",
}
# Logger class -> (module it imports, the pyproject extra that installs it).
LOGGER_EXTRAS = {"WandbLogger": ("wandb", "wandb"), "MLFlowLogger": ("mlflow", "mlflow")}


def missing_logger_extra(key: str, node: dict) -> UserError | None:
    """The one-line error for a logger node whose package is not installed, or None."""
    from importlib.util import find_spec

    kind = str(node.get("_target_") or "").rsplit(".", 1)[-1]
    if kind not in LOGGER_EXTRAS or find_spec(LOGGER_EXTRAS[kind][0]) is not None:
        return None
    extra = LOGGER_EXTRAS[kind][1]
    return UserError(
        f"logger.{key} needs the {extra} extra: {install_hint(extra)} (or choose logger=tensorboard)"
    )


def did_you_mean(value: object, known, prefix: str = "") -> str:
    """'did you mean PREFIX+NAME? ' for the closest of `known` to a mistyped value, or ''."""
    import difflib

    close = difflib.get_close_matches(str(value), [str(k) for k in known], n=1)
    return f"did you mean {prefix}{close[0]}? " if close else ""


def install_hint(extra: str) -> str:
    """The command that adds one of hydratune's extras to a checkout's environment at the locked versions
    (without `-c` pip would float torch to a multi-GB CUDA build; see the README's install section)."""
    return f"pip install -c constraints.txt --build-constraint constraints.txt -e '.[{extra}]'"
