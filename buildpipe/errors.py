"""The one exception tree; the CLI maps each branch to an exit status."""

from __future__ import annotations


class BuildpipeError(Exception):
    """Base of every error buildpipe reports to the user."""

    exit_code = 2


class UsageError(BuildpipeError):
    """The command line or a settings file is wrong (exit 2)."""


class PipefileError(BuildpipeError):
    """The Pipefile is invalid: it raised, or declared something impossible (exit 2).

    `where` is "file:line" of the offending declaration when known.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class StoreError(BuildpipeError):
    """The state database cannot be used (wrong version, unwritable, corrupt)."""


class Interrupted(BuildpipeError):
    """The build was stopped by a signal; exit 128 + signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.exit_code = 128 + signum
