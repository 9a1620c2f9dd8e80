"""Errors a user can fix. The command lines print them as one line and exit with code 2."""
from __future__ import annotations

__all__ = ["UserError", "DataError", "ConfigError", "CheckpointError"]


class UserError(ValueError):
    """Bad input: the message names the problem, where it is, and the fix."""


class DataError(UserError):
    """Missing, corrupt or unusable interaction data. The message names the file and the fix."""


class ConfigError(UserError):
    """A configuration value that cannot work (out of range, contradictory). The message gives the CLI spelling."""


class CheckpointError(UserError):
    """The file is not a readable checkpoint of an ncf-explain model; the message says why."""
