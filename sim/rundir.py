"""The run directory: its files, preparing it for a (re)run, and what it records about the environment.

A rerun into the same directory first removes the previous outputs, summary.json first, so a
crash half-way never leaves a summary beside events from another run. Leftover temporary files
of a killed run (`.NAME.*tmp`) go too.
"""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path

from edgevlm.sim.errors import UserError

SUMMARY_FILE = "summary.json"
EVENTS_FILE = "events.parquet"
SCENARIO_FILE = "scenario.yaml"
AUDIT_FILE = "audit.parquet"
#: Per-step KV-cache use, written with the audit when the server has a KV model (sim/audit.py StepLog).
STEPS_FILE = "server_steps.parquet"
#: Removal order matters: summary.json, the marker of a finished run, goes first.
OUTPUTS = (SUMMARY_FILE, EVENTS_FILE, AUDIT_FILE, STEPS_FILE, SCENARIO_FILE)

#: Libraries whose versions can change a run's numbers or its file bytes.
LIBRARIES = ("numpy", "pandas", "pyarrow", "scipy", "simpy", "pydantic", "pyyaml")


def prepare(out: Path) -> None:
    """Create `out` (or reuse it) and remove a previous run's outputs; one-line UserError if impossible."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
        for name in OUTPUTS:
            for tmp in out.glob(f".{name}.*tmp"):
                tmp.unlink(missing_ok=True)
    except FileExistsError:
        raise UserError(f"--out: {out} exists and is not a directory") from None
    except OSError as exc:
        raise UserError(f"--out: cannot write the run directory {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"--out: cannot write the run directory {out}: permission denied")


def file_sha256(path: Path) -> str | None:
    """SHA-256 of a file's bytes, or None if it is not a readable file."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def library_versions() -> dict[str, str | None]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
