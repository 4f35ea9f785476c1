"""The user errors of bnnns: bad configs, bad data, unusable checkpoints or workdirs, diverged
runs. ``train.py`` prints them as one line and exits non-zero; any other exception is a bug
and keeps its traceback."""

from __future__ import annotations

__all__ = [
    "UserError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "WorkdirError",
    "NonFiniteError",
]


class UserError(ValueError):
    """Something the user can fix; the message says what and how."""


class ConfigError(UserError):
    """A config value that is not allowed."""


class DataError(UserError):
    """A data set that cannot be used as it is (malformed, non-finite, missing)."""


class CheckpointError(UserError):
    """No intact checkpoint is left to resume from."""


class WorkdirError(UserError):
    """The workdir is in use by another run, or holds a run with another config."""


class NonFiniteError(UserError, FloatingPointError):
    """A train step produced a non-finite loss or state; nothing from it on was saved."""
