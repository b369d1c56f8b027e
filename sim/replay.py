"""`edgevlm run --replay RUN_DIR`: rerun a run from its stored scenario and trace, and diff the outputs.

The same scenario, seed and package version give byte-identical files, so any difference means the
code, a library or the trace changed (summary.json "environment" and "trace.sha256" say which), or
the run directory was edited. The rerun goes to a temporary directory (or --out) and is compared
file by file: events.parquet, audit.parquet and server_steps.parquet by bytes, then by content to say which column and
request differ; summary.json value by value, except "environment", whose changes are listed as notes.
Exit 0 if identical, 1 if anything differs, 2 if RUN_DIR cannot be replayed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from edgevlm.sim.errors import UserError
from edgevlm.sim.rundir import AUDIT_FILE, EVENTS_FILE, SCENARIO_FILE, STEPS_FILE, SUMMARY_FILE, file_sha256
from edgevlm.sim.runner import resolve_trace, run
from edgevlm.sim.scenario import load_scenario
from edgevlm.sim.workload import Workload
from edgevlm.traces import TraceError

MAX_LINES = 20


def replay(run_dir: str | Path, out: str | Path | None = None) -> tuple[list[str], list[str]]:
    """Rerun RUN_DIR into `out` (a temporary directory if None); returns (differences, notes)."""

    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--replay: {run_dir} has no readable {SUMMARY_FILE} ({exc}); not a finished run") from None
    if summary.get("complete") is not True:
        raise UserError(f"--replay: {run_dir} was interrupted (summary \"complete\": false); a replay runs to the "
                        "end, so it cannot match")
    sc, _ = load_scenario(run_dir / SCENARIO_FILE)
    diffs: list[str] = []
    notes: list[str] = []
    recorded = summary.get("trace") or {}
    trace = Path(str(recorded.get("path", "")))
    if not trace.is_file():
        trace = resolve_trace(sc.trace, run_dir)
        notes.append(f"trace {recorded.get('path')} not found; using {trace}")
    sha = file_sha256(trace)
    if recorded.get("sha256") and sha != recorded["sha256"]:
        diffs.append(f"trace {trace} changed since the run (sha256 {recorded['sha256'][:12]} -> {sha[:12]})")
    try:
        workload = Workload.load(trace)
    except TraceError as exc:
        raise UserError(f"trace: {exc}") from None

    tmp = None
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="edgevlm-replay-"))
        new = tmp / "run"
    else:
        new = Path(out)
        if new.resolve() == run_dir.resolve():
            raise UserError("--out: the replay must not overwrite the run it replays")
    try:
        run(sc, new, workload=workload, audit=(run_dir / AUDIT_FILE).exists())
        diffs += compare_run_dirs(run_dir, new, notes)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return diffs, notes


def compare_run_dirs(old: Path, new: Path, notes: list[str]) -> list[str]:
    """Differences between two run directories' outputs (environment changes go to `notes`)."""
    diffs: list[str] = []
    for name in (EVENTS_FILE, AUDIT_FILE, STEPS_FILE):
        a, b = old / name, new / name
        if not a.exists() and not b.exists():
            continue
        if a.exists() != b.exists():
            diffs.append(f"{name}: only in {'the original' if a.exists() else 'the replay'}")
        elif a.read_bytes() != b.read_bytes():
            content = _table_diff(a, b, name)
            diffs += content or [f"{name}: same content, different bytes (Parquet writer or library version?)"]
    if (old / SCENARIO_FILE).read_text() != (new / SCENARIO_FILE).read_text():
        diffs.append(f"{SCENARIO_FILE}: differs (defaults filled in differently by this version?)")
    s_old = json.loads((old / SUMMARY_FILE).read_text())
    s_new = json.loads((new / SUMMARY_FILE).read_text())
    env_old, env_new = s_old.pop("environment", {}), s_new.pop("environment", {})
    for path, a, b in _json_diff(s_old, s_new, ""):
        diffs.append(f"{SUMMARY_FILE}: {path}: {a!r} -> {b!r}")
    for path, a, b in _json_diff(env_old, env_new, "environment"):
        notes.append(f"{path}: {a} -> {b}")
    return diffs


def _table_diff(a: Path, b: Path, name: str) -> list[str]:
    ta, tb = pq.read_table(a), pq.read_table(b)
    out = []
    if ta.schema.metadata != tb.schema.metadata:
        keys = sorted(k.decode() for k in set(ta.schema.metadata or {}) | set(tb.schema.metadata or {})
                      if (ta.schema.metadata or {}).get(k) != (tb.schema.metadata or {}).get(k))
        out.append(f"{name}: file metadata differs ({', '.join(keys)})")
    if not ta.schema.equals(tb.schema, check_metadata=False):
        return out + [f"{name}: columns differ: {ta.schema.names} -> {tb.schema.names}"]
    if ta.num_rows != tb.num_rows:
        return out + [f"{name}: {ta.num_rows} rows -> {tb.num_rows} rows"]
    ids = ta.column("request_id").to_numpy() if "request_id" in ta.column_names else None
    for col in ta.column_names:
        x = ta.column(col).to_numpy(zero_copy_only=False)
        y = tb.column(col).to_numpy(zero_copy_only=False)
        same = x == y
        if x.dtype.kind == "f":
            same |= np.isnan(x) & np.isnan(y)
        rows = np.flatnonzero(~same)
        if rows.size:
            i = rows[0]
            where = f" (request {ids[i]})" if ids is not None else ""
            out.append(f"{name}: column '{col}' differs in {rows.size} row(s); first at row {i}"
                       f"{where}: {_py(x[i])!r} -> {_py(y[i])!r}")
    return out


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _json_diff(a: Any, b: Any, path: str):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            yield from _json_diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}" if path else k)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _json_diff(x, y, f"{path}[{i}]")
    elif a != b or type(a) is not type(b):
        yield path, a, b


def cmd_replay(args: argparse.Namespace) -> int:
    if args.scenario:
        raise UserError("--replay: give either a SCENARIO or --replay RUN_DIR, not both")
    run_dir = Path(args.replay)
    diffs, notes = replay(run_dir, args.out)
    for n in notes:
        print(f"note: {n}")
    if not diffs:
        if not args.quiet:
            print(f"replay of {run_dir}: identical (events, summary and scenario match byte for byte)")
        return 0
    print(f"replay of {run_dir}: {len(diffs)} difference(s)")
    for d in diffs[:MAX_LINES]:
        print(f"  {d}")
    if len(diffs) > MAX_LINES:
        print(f"  ... and {len(diffs) - MAX_LINES} more")
    return 1
