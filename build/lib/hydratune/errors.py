"""Errors that speak to the user: one line naming the key, file or line, and the fix."""


class UserError(Exception):
    """Bad config or data. Printed as one line (no traceback unless HYDRATUNE_DEBUG=1); exit code 2."""


class NonFiniteLoss(RuntimeError):
    """A NaN/inf training loss under nan_policy=stop (train.run turns it into a one-line error)."""
