"""Errors a user can cause and fix: bad settings, a taken port, a missing tool.

tasks.py turns a StackError into one clear message and a non-zero exit, never a traceback.
"""

from __future__ import annotations


class StackError(Exception):
    """A problem the user can fix; the message names the thing at fault and the fix."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(StackError):
    """The command line asks for something impossible (a bad option value, a missing
    argument): exit code 2, as for invoke's own usage errors (scripts/cli.py)."""

    exit_code = 2
