"""`run(scenario)`: load the trace, simulate, stream the event log, summarise; the public Python API.

A run directory holds `events.parquet` (the scenario YAML and its hash in the file metadata),
`summary.json` and `scenario.yaml`. Every file is written to a temporary name and renamed.
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

from sim.engine import Simulation
from sim.errors import ConfigError
from sim.recorder import EventLog
from sim.scenario import Scenario, load_scenario, parse_scenario
from sim.summary import read_summary_columns, summarize
from sim.workload import Workload
from traces import TraceError, atomic_write
from traces.version import git_commit, package_version

DEFAULT_SCENARIO = "quickstart.yaml"


@dataclass
class Result:
    """A finished run: `.summary` (dict) and `.events` (DataFrame, loaded on first use)."""

    scenario: Scenario
    summary: dict[str, Any]
    out_dir: Path | None = None
    _table: pa.Table | None = field(default=None, repr=False)

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
    return Path(str(resources.files("scenarios").joinpath(DEFAULT_SCENARIO)))


def resolve_trace(trace: str, base_dir: Path | None) -> Path:
    """Find a scenario's trace: absolute; beside the scenario file; the working directory; the package."""
    p = Path(trace)
    candidates = [p] if p.is_absolute() else (
        ([base_dir / p, base_dir.parent / p] if base_dir else []) + [Path.cwd() / p]
        + [Path(str(resources.files("traces"))) / p.name])
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError("trace", f"trace file not found: {trace} (looked in: "
                      + ", ".join(str(c.parent) for c in candidates) + ")")


def run(scenario: Scenario | dict | str | os.PathLike, out_dir: str | os.PathLike | None = None,
        *, progress: bool = False, workload: Workload | None = None, base_dir: Path | None = None) -> Result:
    """Run a scenario (object, dict or YAML path). With `out_dir`, write the run directory there.

    `base_dir`: where relative file paths in the scenario are looked up first (set from the YAML
    file's directory when a path is given)."""
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
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    return _simulate(scenario, workload, out, progress, base_dir)


def _simulate(sc: Scenario, workload: Workload, out: Path | None, progress: bool,
              base_dir: Path | None = None) -> Result:
    meta = {b"edgevlm_scenario": sc.to_yaml().encode(), b"edgevlm_scenario_hash": sc.hash().encode()}
    tmp_events = None
    if out is not None:
        tmp_events = out / ".events.parquet.tmp"
    bar = _progress_bar(sc, progress)
    log = EventLog(workload.sample_id, sc.policy.kind, sc.slo.deadline_s, path=tmp_events, metadata=meta)
    on_terminal = log
    if bar is not None:
        def on_terminal(req, _log=log, _bar=bar):
            _log(req)
            if req.request_id & 1023 == 0:
                _bar.n = sim.terminal
                _bar.refresh()

    try:
        sim = Simulation(sc, workload, on_terminal, base_dir=base_dir)
        end_s = sim.run()
        table = log.close()
        if bar is not None:
            bar.n = sim.terminal
    except BaseException:
        if tmp_events is not None and tmp_events.exists():
            tmp_events.unlink()
        raise
    finally:
        if bar is not None:
            bar.close()

    if out is not None:
        os.replace(tmp_events, out / "events.parquet")
        table_for_summary = read_summary_columns(out / "events.parquet")
    else:
        table_for_summary = table
    summary = build_summary(sc, workload, sim, table_for_summary, end_s)
    if out is not None:
        write_json(out / "summary.json", summary)
        atomic_write(out / "scenario.yaml", lambda tmp: Path(tmp).write_text(sc.to_yaml()))
    return Result(sc, summary, out, table)


def baseline_bytes(sc: Scenario, workload: Workload, sample_ids: np.ndarray) -> np.ndarray | None:
    """Per-row uplink bytes of global-only at the policy's JPEG quality (comm-cost denominator)."""
    quality = getattr(sc.policy, "jpeg_quality", None)
    if quality is None or quality not in workload.qualities:
        return None
    q = workload.qualities.index(quality)
    per_sample = workload.global_bytes[:, q] + workload.question_bytes + sc.network.uplink.overhead_bytes
    index = pd.Index(workload.sample_id).get_indexer(sample_ids)
    return per_sample[index]


def build_summary(sc: Scenario, workload: Workload, sim: Simulation, events: pa.Table, end_s: float) -> dict:
    components = {
        "gpu": sim.server.stats(end_s),
        "uplink": sim.uplink.stats(end_s),
        "downlink": sim.downlink.stats(end_s),
    }
    sample_ids = events.column("sample_id").to_numpy(zero_copy_only=False)
    body = summarize(events, warmup_s=sc.stop.warmup_s, baseline_up1_bytes=baseline_bytes(sc, workload, sample_ids),
                     components=components)
    return {
        "scenario": sc.name,
        "scenario_hash": sc.hash(),
        "policy": sc.policy.kind,
        "seed": sc.seed,
        "complete": True,
        "sim_time_s": end_s,
        "trace": {"path": str(workload.path), "source_kind": workload.provenance.get("source_kind"),
                  "model_id": workload.provenance.get("model_id"), "samples": workload.n},
        **body,
        "environment": run_environment(),
    }


def run_environment() -> dict[str, Any]:
    import simpy

    return {"edgevlm_sim": package_version(), "git_commit": git_commit(), "python": platform.python_version(),
            "numpy": np.__version__, "pyarrow": pa.__version__, "simpy": simpy.__version__}


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
    from tqdm import tqdm

    if sc.stop.requests is not None:
        total = sc.stop.requests
    else:
        rate = sc.clients.arrival.rate_per_client_s() * sc.clients.count
        total = int(rate * sc.stop.time_s)
    return tqdm(total=total, unit="req", desc=sc.name, dynamic_ncols=True, mininterval=0.5)
