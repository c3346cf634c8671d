"""One exception type per kind of user-facing problem.

The CLI turns any `FedrecError` into one line on stderr and exit code 2.
"""

from __future__ import annotations


class FedrecError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, bad option)."""


class DataError(FedrecError):
    """A data file is malformed. The message names the file, and line/column when known."""

    def __init__(self, path, message: str, line: int | None = None, column: str | None = None):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.column = path, line, column


class DatasetNotFound(FedrecError):
    """A dataset name or path that resolves to nothing."""


class ConfigError(FedrecError):
    """A configuration value out of range or of the wrong type."""


class RunDirError(FedrecError):
    """A run directory that is missing, incomplete, or from an incompatible version."""
