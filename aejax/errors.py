"""The errors that mean "bad input", one type per kind of input; anything else is a bug.

The scripts exit 2 with one line for a `UsageError` (the user can fix it: the message names the
flag or file, what was expected and what was given) and exit 1 for any other exception, reported
as a bug with its traceback kept in the run folder (experiments/common.py). A library function
called from a notebook raises the same types, so `except aejax.errors.UsageError` catches exactly
what the caller passed wrongly.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input: the message says what was expected and what was given."""


class ConfigError(UsageError):
    """A config field holds a value it cannot take; `field` names it (a CLI shows it as --field-name)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field, self.message = field, message


class DataError(UsageError):
    """A data set cannot be used: missing, unreadable, or of the wrong shape, type or range."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set, or one of its files, is not where it was looked for."""


class RunDirError(UsageError):
    """The output folder cannot be used for this run; the message says why and what to do."""


class ParamsFileError(UsageError):
    """A parameters or checkpoint file is missing, damaged, or not of this model."""


class ClusterSettingsError(UsageError):
    """Multi-host settings that cannot work (an address, a process count or id); a cluster that fails
    to form with good settings is `aejax.parallel.ClusterError`, a failure of the work."""
