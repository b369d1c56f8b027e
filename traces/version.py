"""The generator string recorded in provenance: package version plus git commit, where known."""

from __future__ import annotations

import subprocess
from pathlib import Path

from edgevlm import __version__


def package_version() -> str:
    """The version of the code that runs (edgevlm.__version__, which pyproject.toml reads too)."""
    return __version__


def git_commit() -> str | None:
    """The checkout's HEAD commit (with '-dirty' if modified), or None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "") if head else None


def generator_string(module: str) -> str:
    return f"edgevlm-sim {package_version()} ({module}, commit {git_commit() or 'unknown'})"
