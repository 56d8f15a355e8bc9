"""The errors a user can cause, each printed as one line: `rnnjax: error: MESSAGE`.

Every module raises these for bad input or a bad environment; `rnnjax.cli` prints the
message and exits with `exit_code`. Anything else reaching the user is a bug.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message is one line naming the file, key or value."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A bad config file, key or value, or a bad command-line flag."""


class DataError(UserError, ValueError):
    """A missing, unreadable or unusable corpus, vocabulary or checkpoint file."""


class RunDirError(UserError):
    """A run directory that cannot be used as asked: claimed, foreign, another run's, unwritable."""


class NonFiniteLoss(UserError, RuntimeError):
    """Training met a non-finite loss or gradient and stopped (the last good checkpoint is kept)."""

    exit_code = 3
