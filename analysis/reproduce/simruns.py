"""Simulated comparisons for the reproduce commands, through the public compare API (sim/compare.py),
and the per-run numbers read back from each run's summary.json and events.parquet.

Stability rule (a run whose queue keeps growing has no steady-state latency): a run is unstable when
a resource (GPU, shared uplink or downlink, edge device) is busy >= 95 % of the time, when it completes
fewer than 95 % of the requests that arrived in the measured window, or when the mean latency of the
last third of the measured arrivals exceeds 1.5x that of the middle third plus 50 ms.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgevlm.analysis.events import phase_breakdown, read_events

UTIL_MAX = 0.95
COMPLETE_MIN = 0.95
DRIFT_FACTOR, DRIFT_SLACK_S = 1.5, 0.05
NETWORK_PHASES = ("uplink", "crop_round_trip", "downlink")

#: Trace columns each policy kind needs beyond the required ones (as the policies check them).
POLICY_COLUMNS = {"full_edge": ("edge_score",), "full_cloud": ("hd_score", "hd_visual_tokens"),
                  "progressive": ("prog_bytes", "prog_score", "prog_min_entropy")}


def scenarios_dir() -> Path:
    from importlib import resources

    local = Path("scenarios")
    if (local / "quickstart.yaml").is_file():
        return local.resolve()
    return Path(str(resources.files("edgevlm.scenarios")))


def missing_columns(workload, policy_kind: str) -> list[str]:
    """The optional columns a policy kind needs that the trace lacks (absent or with nulls)."""
    out = []
    for c in POLICY_COLUMNS.get(policy_kind, ()):
        if c not in workload.table.column_names or workload.table.column(c).null_count:
            out.append(f"column {c}")
    return out


def stability(run_dir: Path) -> tuple[bool, str]:
    """(stable, why not) of one run, by the module's rule."""
    s = json.loads((run_dir / "summary.json").read_text())
    util = {k: v for k, v in (s.get("utilisation") or {}).items() if v is not None}
    hot = [f"{k} {v:.0%} busy" for k, v in util.items() if v >= UTIL_MAX]
    lo, hi = s["window_s"]
    ev = read_events(run_dir, ["arrival_s", "latency_s", "status"])
    meas = ev[(ev["arrival_s"] >= lo) & (ev["arrival_s"] <= hi)]
    done = (meas["status"] == "ok").mean() if len(meas) else 1.0
    if done < COMPLETE_MIN:
        hot.append(f"only {done:.0%} of measured requests completed")
    ok = meas[meas["status"] == "ok"].sort_values("arrival_s")
    if len(ok) >= 30:
        third = len(ok) // 3
        mid, last = ok["latency_s"].iloc[third:2 * third].mean(), ok["latency_s"].iloc[2 * third:].mean()
        if last > DRIFT_FACTOR * mid + DRIFT_SLACK_S:
            hot.append(f"latency drifts up ({mid:.2f} s -> {last:.2f} s)")
    return not hot, "; ".join(hot)


def run_numbers(run_dir: Path, deadline_s: float | None) -> dict[str, Any]:
    """Per-run numbers beyond the compare row: network latency, accuracy within the deadline, stability."""
    sc = _scenario(run_dir)
    warm = float(sc.get("stop", {}).get("warmup_s") or 0.0)
    ph = phase_breakdown(run_dir, warmup_s=warm)
    ev = read_events(run_dir, ["arrival_s", "status", "score", "deadline_met"])
    meas = ev[ev["arrival_s"] >= warm]
    on_time = (meas["status"] == "ok") & meas["deadline_met"].fillna(False).astype(bool)
    stable, why = stability(run_dir)
    return {"network_latency_mean_s": float(ph[list(NETWORK_PHASES)].sum(axis=1).mean()) if len(ph) else None,
            "deadline_accuracy": float(np.where(on_time, meas["score"].fillna(0.0), 0.0).mean()) if len(meas) else None,
            "stable": stable, "unstable_why": why}


def _scenario(run_dir: Path) -> dict:
    from edgevlm.analysis.events import run_scenario

    return run_scenario(run_dir)


def run_spec(spec: dict, out: Path, *, base_dir: Path, progress: bool, overrides: dict | None = None) -> pd.DataFrame:
    """Run a compare spec (mapping) with sim.compare.run_compare; add network latency, deadline accuracy, stability."""
    from edgevlm.sim.compare import run_compare

    df = run_compare(copy.deepcopy(spec), out, overrides=overrides, progress=progress, base_dir=base_dir)
    extra = []
    for _, r in df.iterrows():
        sc = _scenario(Path(r["run_dir"]))
        extra.append(run_numbers(Path(r["run_dir"]), (sc.get("slo") or {}).get("deadline_s")))
    return pd.concat([df.reset_index(drop=True), pd.DataFrame(extra)], axis=1)
