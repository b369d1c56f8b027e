"""User-facing errors: each carries one line naming the field, file or line at fault (CLI exit code 2)."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input a user can fix; the CLI prints its message on one line and exits 2."""


class ConfigError(UserError):
    """A scenario value is invalid; `path` is its YAML path, e.g. `policy.threshold`."""

    def __init__(self, path: str, message: str):
        self.path = path
        #: every (path, message) found; several when a file has several mistakes
        self.errors: list[tuple[str, str]] = [(path, message)]
        super().__init__(f"{path}: {message}" if path else message)

    @classmethod
    def many(cls, errors: list[tuple[str, str]]) -> "ConfigError":
        """One error for several mistakes: `path` is the first's; the message has one line per mistake."""
        first = cls(*errors[0])
        if len(errors) > 1:
            first.args = ("\n".join(f"{p}: {m}" if p else m for p, m in errors),)
            first.errors = list(errors)
        return first
