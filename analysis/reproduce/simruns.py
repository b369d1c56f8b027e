"""Simulated comparisons for the reproduce commands, through the public compare API (sim/compare.py),
and the per-run numbers read back from each run's summary.json and events.parquet.

Stability rule (a run whose queue keeps growing has no steady-state latency): a run is unstable when
a resource (GPU, shared uplink or downlink, edge device) is busy >= 95 % of the time, or when
analysis.seed004.stability finds it unstable (served rate below the offered rate beyond the CI, or
latency drifting up across the measured window).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgevlm.analysis.events import read_events
from edgevlm.analysis.seed004 import DRIFT_LIMIT
from edgevlm.analysis.seed004 import stability as seed004_stability
from edgevlm.sim.policies.full_cloud import HD_COLUMNS
from edgevlm.traces.schema import PROG_COLUMNS
from importlib import resources
from edgevlm.analysis.events import run_scenario
from edgevlm.sim.compare import run_compare

UTIL_MAX = 0.95



def policy_columns(policy: dict) -> tuple[str, ...]:
    """Trace columns a policy config (mapping) needs beyond the required ones, as the policies check them."""
    kind = policy["kind"]
    if kind == "full_cloud":
        return () if policy.get("resolution") == "native" else HD_COLUMNS
    return {"full_edge": ("edge_score",), "progressive": tuple(PROG_COLUMNS)}.get(kind, ())


def scenarios_dir() -> Path:
    local = Path("scenarios")
    if (local / "quickstart.yaml").is_file():
        return local.resolve()
    return Path(str(resources.files("edgevlm.scenarios")))


def missing_columns(workload, policy: dict) -> list[str]:
    """The optional columns a policy config needs that the trace lacks (absent or with nulls)."""
    out = []
    for c in policy_columns(policy):
        if c not in workload.table.column_names or workload.table.column(c).null_count:
            out.append(f"column {c}")
    return out


def stability(run_dir: Path) -> tuple[bool, str]:
    """(stable, why not) of one run, by the module's rule."""
    s = json.loads((run_dir / "summary.json").read_text())
    util = {k: v for k, v in (s.get("utilisation") or {}).items() if v is not None}
    hot = [f"{k} {v:.0%} busy" for k, v in util.items() if v >= UTIL_MAX]
    st = seed004_stability(run_dir)
    if not st["rate_ok"]:
        hot.append(f"served {st['served_per_s']:.4g}/s < offered {st['offered_per_s']:.4g}/s")
    if not st["latency_drift"] <= DRIFT_LIMIT:
        hot.append(f"latency drifts up ({st['latency_drift']:.2f}x from the first to the last third)")
    return not hot, "; ".join(hot)


def deadline_accuracy(run_dir: Path, warmup_s: float) -> float | None:
    """Mean score over the requests that arrived after the warm-up, late, dropped or failed answers counting 0."""
    ev = read_events(run_dir, ["arrival_s", "status", "score", "deadline_met"])
    meas = ev[ev["arrival_s"] >= warmup_s]
    on_time = (meas["status"] == "ok") & meas["deadline_met"].fillna(False).astype(bool)
    return float(np.where(on_time, meas["score"].fillna(0.0), 0.0).mean()) if len(meas) else None


def run_numbers(run_dir: Path) -> dict[str, Any]:
    """Per-run numbers beyond the compare row: accuracy within the deadline, stability."""
    sc = _scenario(run_dir)
    stable, why = stability(run_dir)
    return {"deadline_accuracy": deadline_accuracy(run_dir, float(sc.get("stop", {}).get("warmup_s") or 0.0)),
            "stable": stable, "unstable_why": why}


def _scenario(run_dir: Path) -> dict:
    return run_scenario(run_dir)


def run_spec(spec: dict, out: Path, *, base_dir: Path, progress: bool, overrides: dict | None = None) -> pd.DataFrame:
    """Run a compare spec (mapping) with sim.compare.run_compare; add deadline accuracy and stability."""
    df = run_compare(copy.deepcopy(spec), out, overrides=overrides, progress=progress, base_dir=base_dir)
    extra = [run_numbers(Path(r["run_dir"])) for _, r in df.iterrows()]
    return pd.concat([df.reset_index(drop=True), pd.DataFrame(extra)], axis=1)
