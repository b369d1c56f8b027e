"""Reproduction items: a paper's claim, our number, and a verdict computed by an explicit rule.

An item holds checks. A check compares one of our numbers with the paper's by a stated rule and
tolerance (`at_most`, `at_least`, `within`, or a boolean claim). The item's verdict is
"reproduced" when every check passes, "differs" otherwise (the line names the first failing
check with our number), and "not available" when the trace lacks a column the item needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

REPRODUCED, DIFFERS, NOT_AVAILABLE = "reproduced", "differs", "not available"


@dataclass
class Check:
    """One comparison. `rule` is one of 'within' (|ours - target| <= tol), 'at_most' (ours <= target + tol),
    'at_least' (ours >= target - tol) or 'true' (ours is a boolean claim that must hold)."""

    name: str
    ours: Any
    rule: str
    target: Any = None
    tol: float = 0.0
    paper: Any = None  # the paper's number, if it gives one (may differ from target, e.g. a ratio bound)

    @property
    def passed(self) -> bool:
        if self.rule == "true":
            return bool(self.ours)
        if self.ours is None or (isinstance(self.ours, float) and not np.isfinite(self.ours)):
            return False
        if self.rule == "within":
            return abs(float(self.ours) - float(self.target)) <= self.tol + 1e-12
        if self.rule == "at_most":
            return float(self.ours) <= float(self.target) + self.tol + 1e-12
        if self.rule == "at_least":
            return float(self.ours) >= float(self.target) - self.tol - 1e-12
        raise ValueError(f"unknown rule {self.rule!r}")

    def describe(self) -> str:
        """The rule in words, e.g. 'ours <= 0.60 + 0.10'."""
        if self.rule == "true":
            return "must hold"
        sym = {"within": "= {t} ± {tol}", "at_most": "<= {t} + {tol}", "at_least": ">= {t} − {tol}"}[self.rule]
        return "ours " + sym.format(t=fmt(self.target), tol=fmt(self.tol))

    def short(self) -> str:
        """The rule against its target, e.g. '<= 0.780' or 'needs yes'."""
        if self.rule == "true":
            return "needs yes"
        op = {"within": "=", "at_most": "<=", "at_least": ">="}[self.rule]
        return f"{op} {fmt(self.target)}" + (f" ± {fmt(self.tol)}" if self.tol else "")

    def to_json(self) -> dict:
        return {"name": self.name, "ours": _plain(self.ours), "paper": _plain(self.paper), "rule": self.rule,
                "target": _plain(self.target), "tolerance": self.tol, "passed": self.passed,
                "rule_text": self.describe()}


@dataclass
class Item:
    """One of the paper's figures or tables (or a claim in its text), with our analogue."""

    key: str
    title: str
    claim: str  # the paper's statement, in our words
    paper: dict[str, Any] = field(default_factory=dict)  # the paper's numbers ({} when it gives only a plot)
    ours: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # columns (or metadata) the trace lacks
    notes: list[str] = field(default_factory=list)  # where our definition or setting differs from the paper's
    figure: str | None = None  # PNG file name in the output directory

    @property
    def verdict(self) -> str:
        if self.missing:
            return NOT_AVAILABLE
        return REPRODUCED if self.checks and all(c.passed for c in self.checks) else DIFFERS

    def verdict_line(self) -> str:
        """One line: the verdict and the numbers it rests on."""
        if self.missing:
            return f"{NOT_AVAILABLE}: needs {', '.join(self.missing)}"
        if not self.checks:
            return f"{DIFFERS}: no check could be computed"
        failed = [c for c in self.checks if not c.passed]
        shown = failed[:2] if failed else self.checks[:2]
        parts = [f"{c.name} {fmt(c.ours)} ({c.short()}" + ("" if c.paper is None else f"; paper {fmt(c.paper)}") + ")"
                 for c in shown]
        return f"{self.verdict}: " + "; ".join(parts)

    def to_json(self) -> dict:
        return {"key": self.key, "title": self.title, "claim": self.claim, "paper": _plain(self.paper),
                "ours": _plain(self.ours), "verdict": self.verdict, "verdict_line": self.verdict_line(),
                "checks": [c.to_json() for c in self.checks], "missing": list(self.missing),
                "notes": list(self.notes), "figure": self.figure}


def fmt(v: Any) -> str:
    """A number for a table cell: 3 decimals; booleans as yes/no; None as '–'."""
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "inf" if np.isinf(v) else f"{float(v):.3f}"
    return str(v)


def _plain(v: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, non-finite floats to None."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    return v


def unavailable(key: str, title: str, claim: str, paper: dict, missing: list[str], notes: list[str] | None = None) -> Item:
    """An item the trace cannot answer, naming what it lacks."""
    return Item(key, title, claim, paper=paper, missing=missing, notes=list(notes or []))


def guarded(build: Callable[[], Item], key: str, title: str, claim: str, paper: dict) -> Item:
    """build(), or a 'not available' item naming the missing column if build raises MissingColumn."""
    try:
        return build()
    except MissingColumn as exc:
        return unavailable(key, title, claim, paper, exc.columns, exc.notes)


class MissingColumn(Exception):
    """The trace lacks what an item needs; `columns` names each (with a short why)."""

    def __init__(self, columns: list[str], notes: list[str] | None = None):
        super().__init__(", ".join(columns))
        self.columns = columns
        self.notes = notes or []
