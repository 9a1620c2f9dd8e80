"""Errors a user can fix. The command lines print them as one line and exit with code 2."""
from __future__ import annotations

import sys
import traceback

__all__ = ["UserError", "DataError", "ConfigError", "CheckpointError", "EXIT_USER_ERROR", "report", "known_subclasses"]

# The exit code of an error the user can fix, with or without --debug.
EXIT_USER_ERROR = 2


class UserError(ValueError):
    """Bad input: the message names the problem, where it is, and the fix."""


class DataError(UserError):
    """Missing, corrupt or unusable interaction data. The message names the file and the fix."""


class ConfigError(UserError):
    """A configuration value that cannot work (out of range, contradictory). The message gives the CLI spelling."""


class CheckpointError(UserError):
    """The file is not a readable checkpoint of an ncf-explain model; the message says why."""


def known_subclasses(base: type) -> dict[str, type]:
    """Every subclass of ``base`` imported so far, by class path (``module.Name``): the choices an error
    names when a config's ``class_path`` names none of them.

    >>> known_subclasses(UserError)["ncf.errors.ConfigError"] is ConfigError
    True
    """
    found, todo = {}, [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            found[f"{sub.__module__}.{sub.__qualname__}"] = sub
            todo.append(sub)
    return found


def one_line(message: object) -> str:
    """A message on one line: its lines joined, runs of blanks collapsed.

    >>> one_line("size mismatch:\\n\\tuser_embedding.weight  [20, 4]")
    'size mismatch: user_embedding.weight [20, 4]'
    """
    return " ".join(str(message).split())


def report(err: BaseException, debug: bool) -> int:
    """Print an error the user can fix, as ``error: ...`` on one line (with ``debug``, the traceback
    instead), and return the exit code: :data:`EXIT_USER_ERROR` either way."""
    if debug:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    else:
        print(f"error: {one_line(err)}", file=sys.stderr)
    return EXIT_USER_ERROR
