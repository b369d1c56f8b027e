"""User-facing errors: each carries one line naming the field, file or line at fault (CLI exit code 2)."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input a user can fix; the CLI prints its message on one line and exits 2."""


class ConfigError(UserError):
    """A scenario value is invalid; `path` is its YAML path, e.g. `policy.threshold`."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)
