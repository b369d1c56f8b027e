"""`edgevlm compare FILE`: run named policy variants on one workload with common random numbers.

Compare file format v1 (YAML, validated strictly like a scenario):

    name: compare_policies
    base: quickstart.yaml            # a scenario: a path (relative to this file) or an inline mapping
    set: {stop: {requests: 5000}}    # optional: deep-merged into the base for every variant (null deletes a key)
    variants:                        # one run per variant (and per load scale)
      - name: eta_0.6                # unique; [A-Za-z0-9_.-]
        policy: {kind: entropy_threshold, threshold: 0.6}
        set: {slo: {deadline_s: 3}}  # optional: deep-merged into this variant only
    load:                            # optional load axis: arrival-rate multipliers
      scale: [0.5, 1.0, 2.0]

Every variant keeps the base's seed, so the arrivals, clients and samples are identical across
variants (each purpose has its own random stream, sim/rng.py): differences are the policy's.
`run_compare(...)` returns one row per (variant, load scale) of summary metrics; the CLI
(`edgevlm compare`, analysis/cli.py, which adds the report) writes it to DIR/results.parquet, keeps each run directory under DIR/runs/, and prints a table.
Bounds (the oracle) are flagged in `policy_is_bound` and marked in the printed table.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Optional

import pandas as pd
from pydantic import Field, PositiveFloat, ValidationError, model_validator
from tqdm import tqdm

from edgevlm.sim import yamlsafe
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.profiles import MODELS
from edgevlm.sim.runner import resolve_trace, run
from edgevlm.sim.preflight import check_runs
from edgevlm.sim.registry import Strict
from edgevlm.sim.scenario import config_error, parse_scenario
from edgevlm.sim.stability import UNSTABLE_NOTE
from edgevlm.sim.summary import nested_get
from edgevlm.sim.sweep import check_columns
from edgevlm.sim.workload import Workload
from edgevlm.traces import TraceError
from edgevlm.sim.scenario import DEFAULT_TRACE

COMPARE_VERSION = 1
NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"


class Variant(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    policy: dict[str, Any]
    set: dict[str, Any] = Field(default_factory=dict, description="deep-merged into this variant's scenario")


class LoadAxis(Strict):
    scale: list[PositiveFloat] = Field(min_length=1, description="multipliers of the arrival rate")


class CompareSpec(Strict):
    name: str = Field("compare", pattern=NAME_PATTERN)
    base: str | dict[str, Any]
    set: dict[str, Any] = Field(default_factory=dict, description="deep-merged into the base for every variant")
    variants: list[Variant] = Field(min_length=1)
    load: Optional[LoadAxis] = None

    @model_validator(mode="after")
    def _unique(self):
        seen = set()
        for v in self.variants:
            if v.name in seen:
                raise ValueError(f"variant name {v.name!r} is used twice")
            seen.add(v.name)
        return self


def deep_merge(base: dict, over: dict) -> dict:
    """A copy of `base` with `over` merged in: mappings merge key by key, a null removes the key
    (e.g. `stop: {time_s: 600, requests: null}`), anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_compare(spec: str | os.PathLike | dict) -> tuple[CompareSpec, Path | None]:
    """Validate a compare file (path) or mapping; returns (spec, the file's directory or None)."""
    base_dir = None
    if not isinstance(spec, dict):
        path = Path(spec)
        spec = yamlsafe.read_file(path, "compare")
        base_dir = path.resolve().parent
    if not isinstance(spec, dict):
        raise ConfigError("", "a compare file must be a YAML mapping")
    try:
        return CompareSpec.model_validate(spec), base_dir
    except ValidationError as exc:
        raise config_error(exc, spec, CompareSpec) from None


def _base_scenario(spec: CompareSpec, base_dir: Path | None) -> tuple[dict, Path | None]:
    """The base scenario as a dict, its trace path made absolute so variants resolve it alike."""

    if isinstance(spec.base, dict):
        data, scen_dir = copy.deepcopy(spec.base), base_dir
    else:
        p = Path(spec.base)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        data = yamlsafe.read_file(p, "scenario", "base")
        if not isinstance(data, dict):
            raise ConfigError("base", f"{p}: a scenario must be a YAML mapping")
        scen_dir = p.resolve().parent

    data["trace"] = str(resolve_trace(str(data.get("trace", DEFAULT_TRACE)), scen_dir).resolve())
    return data, scen_dir


def _scale_load(data: dict, scale: float, where: str) -> dict:
    arrival = data.get("clients", {}).get("arrival", {})
    for key in ("rate_per_s", "fps"):
        if key in arrival:
            out = copy.deepcopy(data)
            out["clients"]["arrival"][key] = arrival[key] * scale
            return out
    raise ConfigError(where, f"load.scale needs an arrival with rate_per_s or fps; got kind {arrival.get('kind')!r}")


def expand(spec: CompareSpec, base_dir: Path | None, overrides: dict | None = None):
    """The (variant name, load scale, validated Scenario) triples a compare runs, in order."""

    base, _ = _base_scenario(spec, base_dir)
    base = deep_merge(base, spec.set)
    scales = spec.load.scale if spec.load else [1.0]
    runs, errors = [], []
    for i, v in enumerate(spec.variants):
        data = deep_merge(base, v.set)
        data["policy"] = copy.deepcopy(v.policy)
        data = deep_merge(data, overrides or {})
        for s in scales:
            d = _scale_load(data, s, "load.scale") if s != 1.0 else data
            d = dict(d, name=f"{spec.name}.{v.name}" + (f"-load{s:g}" if spec.load else ""))
            try:
                sc = parse_scenario(d)
            except ConfigError as exc:
                errors.extend(f"variants[{i}] ({v.name}): {line}" for line in str(exc).splitlines())
                break
            runs.append((v.name, s, sc))
    if errors:
        raise ConfigError("", "\n".join(errors))
    return runs


ROW_METRICS = {
    "stable": ("stable",),
    "offered_per_s": ("stability", "offered_per_s"),
    "served_per_s": ("stability", "served_per_s"),
    "throughput_per_s": ("throughput_per_s",),
    "goodput_per_s": ("goodput_per_s",),
    "score_goodput_per_s": ("score_goodput_per_s",),
    "accuracy": ("accuracy", "value"),
    "accuracy_ci_half": ("accuracy", "half_width"),
    "latency_mean_s": ("latency_s", "mean", "value"),
    "latency_p50_s": ("latency_s", "p50", "value"),
    "latency_p95_s": ("latency_s", "p95", "value"),
    "latency_p99_s": ("latency_s", "p99", "value"),
    "deadline_met_rate": ("deadline_met_rate",),
    "drop_rate": ("drop_rate",),
    "uplink_bytes_per_request": ("bytes_per_request", "uplink"),
    "additional_comm_cost": ("additional_comm_cost",),
    "relative_comm_cost": ("relative_comm_cost",),
    "jpeg_quality": ("comm_cost", "jpeg_quality"),
    "retransmission_rate": ("retransmission_rate",),
    "flops_per_request": ("flops_per_request",),
    "gpu_utilisation": ("utilisation", "gpu"),
    "uplink_utilisation": ("utilisation", "uplink"),
}


def run_compare(spec: str | os.PathLike | dict, out_dir: str | os.PathLike | None = None, *,
                overrides: dict | None = None, progress: bool = False, base_dir: Path | None = None,
                audit: bool = False) -> pd.DataFrame:
    """Run every variant (× load scale) of a compare spec; one row of summary metrics per run.

    `overrides` is deep-merged into every variant last (e.g. {"stop": {"requests": 500}} for a
    short horizon). With `out_dir`, each run directory is written under out_dir/runs/<variant> and
    re-verified by `edgevlm check` (columns check_ok, check_violations); `audit` records
    audit.parquet so link capacity and GPU busy time are verified too.
    """

    parsed, file_dir = load_compare(spec)
    runs = expand(parsed, base_dir or file_dir, overrides)
    workloads: dict[str, Workload] = {}
    for _, _, sc in runs:
        if sc.trace not in workloads:
            try:
                workloads[sc.trace] = Workload.load(sc.trace)
            except TraceError as exc:
                raise ConfigError("trace", str(exc)) from None
    # every variant is checked against the trace before any run directory is touched
    check_runs([(f"variant {name}" + (f" at load {scale:g}" if parsed.load else ""), sc, workloads[sc.trace], None)
                for name, scale, sc in runs])
    rows = []
    bar = None
    if progress:
        bar = tqdm(total=len(runs), unit="run", desc=parsed.name, dynamic_ncols=True)
    try:
        for name, scale, sc in runs:
            run_dir = None
            if out_dir is not None:
                run_dir = Path(out_dir) / "runs" / (name + (f"-load{scale:g}" if parsed.load else ""))
            s = run(sc, run_dir, workload=workloads[sc.trace], audit=audit and run_dir is not None).summary
            model = MODELS[sc.server.model] if isinstance(sc.server.model, str) else sc.server.model
            row = {"variant": name, "policy": s["policy"], "policy_is_bound": s.get("policy_is_bound", False),
                   "load_scale": scale, "seed": sc.seed, "requests_arrived": s["counts"]["arrived"], "requests_measured": s["counts"]["measured"],
                   **{k: nested_get(s, *p) for k, p in ROW_METRICS.items()}}
            f = row["flops_per_request"]
            row["relative_computation"] = None if f is None else f / model.flops(model.visual_tokens)
            row["source_kind"] = s["trace"]["source_kind"]
            row["trace_note"] = s["trace"].get("note")
            row["accuracy_note"] = s.get("accuracy_note")
            row["run_dir"] = None if run_dir is None else str(run_dir)
            if run_dir is not None:
                row.update(check_columns(run_dir))
            rows.append(row)
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    return pd.DataFrame(rows)


TABLE_COLUMNS = {"variant": "variant", "load_scale": "load", "accuracy": "acc", "goodput_per_s": "goodput/s",
                 "score_goodput_per_s": "score-gp/s", "latency_mean_s": "lat mean", "latency_p95_s": "lat p95",
                 "additional_comm_cost": "add comm", "relative_comm_cost": "rel comm", "retransmission_rate": "retx",
                 "relative_computation": "rel comp", "gpu_utilisation": "gpu util"}


def format_table(df: pd.DataFrame) -> str:
    """The compare results as a text table; bounds are marked '(bound)', unstable runs 'UNSTABLE*'."""
    t = df.copy()
    unstable = t["stable"].eq(False) if "stable" in t else pd.Series(False, index=t.index)
    t["variant"] = [v + (" (bound)" if b else "") + (" UNSTABLE*" if u else "")
                    for v, b, u in zip(t["variant"], t["policy_is_bound"], unstable)]
    if t["load_scale"].nunique() == 1:
        t = t.drop(columns="load_scale")
    t = t[[c for c in TABLE_COLUMNS if c in t.columns]]
    t = t.astype({c: float for c in t.columns if c != "variant"}).rename(columns=TABLE_COLUMNS)  # None -> "-"
    text = t.to_string(index=False, float_format=lambda x: f"{x:.3f}", na_rep="-")
    if unstable.any():
        text += f"\n* {UNSTABLE_NOTE}: " + "; ".join(
            f"{r.variant}" + (f" at load {r.load_scale:g}" if df["load_scale"].nunique() > 1 else "")
            + f" serves {r.served_per_s:.2f} of {r.offered_per_s:.2f} req/s offered"
            for r in df[unstable].itertuples())
    legend = ("add comm: the seed's additional comm cost, (bytes - global-only) / (always-crop - global-only) "
              "at the same JPEG quality; rel comm: image bytes / global image bytes at JPEG q100 (seed Fig. 12)")
    notes = sorted({n for n in df.get("trace_note", pd.Series(dtype=object)).dropna()})
    notes += sorted({n for n in df.get("accuracy_note", pd.Series(dtype=object)).dropna()})
    return "\n".join([text, legend] + [f"note: {n}" for n in notes])
