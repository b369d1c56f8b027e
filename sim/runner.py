"""`run(scenario)`: load the trace, simulate, stream the event log, summarise; the public Python API.

A run directory holds `events.parquet` (the scenario YAML and its hash in the file metadata),
`summary.json`, `scenario.yaml` and, with `audit=True`, `audit.parquet` (and `server_steps.parquet`
where the server has a KV model; sim/audit.py). Every file
is written to a temporary name and renamed. A rerun first removes the old outputs, summary.json
first, and writes summary.json last: a directory with a summary.json holds one finished run (or
one cleanly interrupted: `"complete": false`, see sim/interrupt.py), never a mix of two.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from edgevlm.sim import rundir
from edgevlm.sim.audit import AuditLog, StepLog
from edgevlm.sim.commcost import comm_meter
from edgevlm.sim.engine import Simulation
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.interrupt import RunInterrupted, SimulationInterrupted, discount_future_work, stop_on_sigint
from edgevlm.sim.preflight import Sink, build_checked
from edgevlm.sim.recorder import EventLog
from edgevlm.sim.rundir import AUDIT_FILE, STEPS_FILE
from edgevlm.sim.scenario import Scenario, load_scenario, parse_scenario
from edgevlm.sim.summary import summarize, summarize_file
from edgevlm.sim.workload import V1_QUALITY_NOTE, Workload
from edgevlm.traces import TraceError, atomic_write
from edgevlm.traces.version import git_commit, package_version

DEFAULT_SCENARIO = "quickstart.yaml"


@dataclass
class Result:
    """A finished run: `.summary` (dict) and `.events` (DataFrame, loaded on first use)."""

    scenario: Scenario
    summary: dict[str, Any]
    out_dir: Path | None = None
    _table: pa.Table | None = field(default=None, repr=False)
    #: audit rows of an in-memory run with audit=True (a run directory has audit.parquet instead)
    audit: pa.Table | None = field(default=None, repr=False)
    #: per-step KV use of an in-memory audited run with a KV model (a run directory has server_steps.parquet)
    server_steps: pa.Table | None = field(default=None, repr=False)

    @property
    def events_table(self) -> pa.Table:
        if self._table is None:
            assert self.out_dir is not None
            self._table = pq.read_table(self.out_dir / "events.parquet")
        return self._table

    @property
    def events(self) -> pd.DataFrame:
        return self.events_table.to_pandas()


def default_scenario_path() -> Path:
    """scenarios/quickstart.yaml from the working directory, else the copy installed with the package."""
    local = Path("scenarios") / DEFAULT_SCENARIO
    if local.is_file():
        return local
    return Path(str(resources.files("edgevlm.scenarios").joinpath(DEFAULT_SCENARIO)))


def resolve_trace(trace: str, base_dir: Path | None) -> Path:
    """Find a scenario's trace: absolute; beside the scenario file; the working directory; the package."""
    p = Path(trace)
    candidates = [p] if p.is_absolute() else (
        ([base_dir / p, base_dir.parent / p] if base_dir else []) + [Path.cwd() / p]
        + [Path(str(resources.files("edgevlm.traces"))) / p.name])
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError("trace", f"trace file not found: {trace} (looked in: "
                      + ", ".join(str(c.parent) for c in candidates) + ")")


def run(scenario: Scenario | dict | str | os.PathLike, out_dir: str | os.PathLike | None = None,
        *, progress: bool = False, workload: Workload | None = None, audit: bool = False,
        base_dir: Path | None = None) -> Result:
    """Run a scenario (object, dict or YAML path). With `out_dir`, write the run directory there.

    `audit=True` also writes audit.parquet (every transfer and GPU pass) for `edgevlm check`.
    Ctrl-C writes the partial outputs (summary `"complete": false`) and raises RunInterrupted.
    `base_dir`: where relative file paths in the scenario are looked up first (set from the YAML
    file's directory when a path is given).
    """
    if isinstance(scenario, (str, os.PathLike)):
        scenario, base_dir = load_scenario(scenario)
    elif isinstance(scenario, dict):
        scenario = parse_scenario(scenario)
    if workload is None:
        try:
            workload = Workload.load(resolve_trace(scenario.trace, base_dir))
        except TraceError as exc:
            raise ConfigError("trace", str(exc)) from None
    out = Path(out_dir) if out_dir is not None else None
    # Every check against the trace and files runs here, before the run directory is touched.
    sim, sink = build_checked(scenario, workload, base_dir)
    if out is not None:
        rundir.prepare(out)
    return _simulate(scenario, workload, out, progress, audit, sim, sink)


def _simulate(sc: Scenario, workload: Workload, out: Path | None, progress: bool, audit: bool,
              sim: Simulation, sink: Sink) -> Result:
    meta = {b"edgevlm_scenario": sc.to_yaml().encode(), b"edgevlm_scenario_hash": sc.hash().encode()}
    tmp_events = tmp_audit = tmp_steps = None
    steps = None
    if out is not None:
        tmp_events = out / ".events.parquet.tmp"
        tmp_audit = out / f".{AUDIT_FILE}.tmp"
        tmp_steps = out / f".{STEPS_FILE}.tmp"
    bar = _progress_bar(sc, progress)
    log = EventLog(workload.sample_id, sc.policy.kind, sc.slo.deadline_s, path=tmp_events, metadata=meta)
    on_terminal = log
    if bar is not None:
        def on_terminal(req, _log=log, _bar=bar):
            _log(req)
            if req.request_id & 1023 == 0:
                _bar.n = sim.terminal
                _bar.refresh()

    interrupted = False
    sink.target = on_terminal
    try:
        if audit:
            sim.audit = AuditLog(tmp_audit)
            steps = _attach_steps(sim, tmp_steps)
        with stop_on_sigint(sim.env):
            try:
                end_s = sim.run()
            except SimulationInterrupted:
                interrupted, end_s = True, sim.env.now
        table = log.close()
        audit_table = sim.audit.close() if audit else None
        steps_table = steps.close() if steps is not None else None
        if bar is not None:
            if not interrupted:  # a time-based stop's total was an estimate: end at the real count
                bar.total = sim.terminal
            bar.n = sim.terminal
    except BaseException:
        for tmp in (tmp_events, tmp_audit, tmp_steps):
            if tmp is not None and tmp.exists():
                tmp.unlink()
        raise
    finally:
        if bar is not None:
            bar.close()

    if out is not None:
        os.replace(tmp_events, out / "events.parquet")
        if audit:
            os.replace(tmp_audit, out / AUDIT_FILE)
        if steps is not None:
            os.replace(tmp_steps, out / STEPS_FILE)
    summary = build_summary(sc, workload, sim, out / "events.parquet" if out is not None else table, end_s,
                            complete=not interrupted)
    if out is not None:
        atomic_write(out / "scenario.yaml", lambda tmp: Path(tmp).write_text(sc.to_yaml()))
        write_json(out / "summary.json", summary)  # last: its presence marks a finished run
    result = Result(sc, summary, out, table, audit_table, steps_table)
    if interrupted:
        raise RunInterrupted(out, end_s, result)
    return result


def _attach_steps(sim: Simulation, path: Path | None) -> StepLog | None:
    """A StepLog recording every step of each replica's KV use, or None if the server has no KV model."""
    uses = sim.server.kv_uses()
    if not uses:
        return None
    log = StepLog(path)
    for i, use in enumerate(uses):
        use.steps = log.recorder(i, use.capacity)
    return log


def build_summary(sc: Scenario, workload: Workload, sim: Simulation, events: pa.Table | Path, end_s: float,
                  complete: bool = True) -> dict:
    """summary.json of a finished run; `events`: the in-memory table, or events.parquet (read in one
    bounded pass, row group by row group: sim/summary.py)."""
    components = {
        "gpu": sim.server.stats(end_s),
        "uplink": sim.uplink.stats(end_s),
        "downlink": sim.downlink.stats(end_s),
    }
    if sim.edge_devices.jobs:
        components["edge"] = sim.edge_devices.stats(end_s)
    if sim.encoder is not None:
        components["encoder"] = sim.encoder.stats(end_s)
    if not complete:
        discount_future_work(components, sim, end_s)
    stats = summarize_file if isinstance(events, Path) else summarize
    body = stats(events, warmup_s=sc.stop.warmup_s, comm=comm_meter(sc.policy, workload), components=components)
    return {
        "scenario": sc.name,
        "scenario_hash": sc.hash(),
        "policy": sc.policy.kind,
        # An analysis bound (the oracle reads correctness), not a deployable policy.
        "policy_is_bound": bool(sim.policy.is_bound),
        "seed": sc.seed,
        "complete": complete,
        "sim_time_s": end_s,
        "trace": trace_info(workload),
        **body,
        **({"accuracy_note": note} if (note := accuracy_note(sc.policy.kind, workload)) else {}),
        **({"policy_stats": sim.policy.stats()} if hasattr(sim.policy, "stats") else {}),
        "environment": run_environment(),
    }


def trace_info(workload: Workload) -> dict[str, Any]:
    """summary.json's `trace` block; a v1 trace carries the note that its accuracy ignores JPEG quality."""
    prov = workload.provenance
    return {"path": str(workload.path), "source_kind": prov.get("source_kind"), "model_id": prov.get("model_id"),
            "samples": workload.n, "sha256": rundir.file_sha256(workload.path),
            "format_version": prov.get("format_version"), "jpeg_qualities": list(workload.qualities),
            "accuracy_depends_on_jpeg_quality": workload.per_quality,
            **({} if workload.per_quality else {"note": V1_QUALITY_NOTE})}


def accuracy_note(policy_kind: str, workload: Workload) -> str | None:
    """What a full-edge accuracy is: the trace's `edge_score`, i.e. whichever model its provenance names."""
    if policy_kind != "full_edge":
        return None
    edge_model = workload.provenance.get("edge_model")
    if edge_model and str(edge_model).startswith("the same tiny model"):
        return f"full-edge accuracy = stage-1 accuracy on the device: {edge_model}"
    return f"full-edge accuracy is the trace's edge_score: {edge_model or 'the trace does not say which model'}"


def run_environment() -> dict[str, Any]:
    return {"edgevlm_sim": package_version(), "git_commit": git_commit(), "python": platform.python_version(),
            **rundir.library_versions(), "platform": platform.platform()}


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=_json_default) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _progress_bar(sc: Scenario, enabled: bool):
    if not enabled:
        return None

    if sc.stop.requests is not None:
        total = sc.stop.requests
    else:
        rate = sc.clients.arrival.rate_per_client_s() * sc.clients.count
        total = int(rate * sc.stop.time_s)
    return tqdm(total=total, unit="req", desc=sc.name, dynamic_ncols=True, mininterval=0.5)
