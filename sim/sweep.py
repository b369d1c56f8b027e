"""Parameter sweeps: a base scenario crossed with axes over YAML paths, run on a process pool or Dask.

A sweep file:

    base: quickstart.yaml          # a scenario file (relative to this file) or an inline mapping
    grid:                          # the cartesian product of these axes
      policy.threshold: [0.2, 0.4, 0.8]
      clients.count: [100, 1000]
    zip:                           # these advance together (equal lengths), crossed with the grid
      clients.arrival.rate_per_s: [0.01, 0.02]
      slo.deadline_s: [1.0, 2.0]
    seeds: [1, 2, 3]               # replications; or `replications: 3` (base seed, +1, +2)

Every run writes its own directory, runs/<scenario hash>/. A run whose summary.json is already
there and complete is skipped, so an interrupted sweep resumes where it stopped. A run that fails
is recorded with its error and does not stop the others. results.parquet has one row per run:
the axes as columns, the seed, the status, and the summary metrics with CI half-widths.

A process pool (`--workers N`, N > 1) starts before the runs are checked, from a forkserver that
imports the simulator once (where the platform has one; otherwise spawned workers import it
each), so N workers do not each pay the import.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator
from tqdm import tqdm

from edgevlm.sim import yamlsafe
from edgevlm.sim.check import check_run_dir
from edgevlm.sim.errors import ConfigError, UserError
from edgevlm.sim.runner import resolve_trace, run
from edgevlm.sim.scenario import DEFAULT_TRACE, config_error, load_scenario, parse_scenario
from edgevlm.traces import atomic_write
from edgevlm.sim.preflight import check_runs
from edgevlm.sim.workload import Workload
from edgevlm.traces import TraceError

_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str | dict
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] | None = None
    replications: PositiveInt | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.seeds is not None and self.replications is not None:
            raise ValueError("give 'seeds' or 'replications', not both")
        for name, values in {**self.grid, **self.zip}.items():
            parse_path(name)
            if not values:
                raise ValueError(f"axis {name!r} has no values")
        lengths = {len(v) for v in self.zip.values()}
        if len(lengths) > 1:
            raise ValueError(f"zip axes must have equal lengths, got {sorted(lengths)}")
        if set(self.grid) & set(self.zip):
            raise ValueError(f"axis {sorted(set(self.grid) & set(self.zip))[0]!r} is in both grid and zip")
        return self


def parse_path(path: str) -> list[str | int]:
    """`clients.link_classes[0].uplink_mbps` -> ['clients', 'link_classes', 0, 'uplink_mbps']."""
    keys: list[str | int] = []
    for part in path.split("."):
        m = _PATH_PART.fullmatch(part)
        if not m:
            raise ValueError(f"axis {path!r} is not a YAML path like 'policy.threshold' or 'a.b[0].c'")
        keys.append(m.group(1))
        keys.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return keys


def set_path(data: dict, path: str, value: Any) -> None:
    """Set a nested value by YAML path, creating mappings that are absent."""
    keys = parse_path(path)
    cur: Any = data
    for key, nxt in zip(keys, keys[1:]):
        if isinstance(key, int):
            if not isinstance(cur, list) or key >= len(cur):
                raise ConfigError(path, f"index [{key}] is out of range")
            cur = cur[key]
            continue
        if not isinstance(cur, dict):
            raise ConfigError(path, f"'{key}' is not inside a mapping")
        if key not in cur or cur[key] is None:
            cur[key] = [] if isinstance(nxt, int) else {}
        cur = cur[key]
    last = keys[-1]
    if isinstance(last, int):
        if not isinstance(cur, list) or last >= len(cur):
            raise ConfigError(path, f"index [{last}] is out of range")
    elif not isinstance(cur, dict):
        raise ConfigError(path, f"'{last}' is not inside a mapping")
    cur[last] = value


def load_sweep(path: str | Path) -> tuple[SweepSpec, dict, Path]:
    """Read a sweep file; returns (spec, base scenario dict with an absolute trace path, its dir)."""
    path = Path(path)
    data = yamlsafe.read_file(path, "sweep")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, data if isinstance(data, dict) else {}, SweepSpec) from None
    base_dir = path.resolve().parent
    if isinstance(spec.base, str):
        scenario, scenario_dir = load_scenario(base_dir / spec.base)
        base = scenario.model_dump(mode="json", exclude_none=True)
    else:
        base, scenario_dir = dict(spec.base), base_dir

    base["trace"] = str(resolve_trace(str(base.get("trace", DEFAULT_TRACE)), scenario_dir).resolve())
    return spec, base, base_dir


def expand(spec: SweepSpec, base: dict) -> list[tuple[dict[str, Any], dict]]:
    """Every run of the sweep as (axis values, scenario dict), in a fixed order."""
    grid_names = list(spec.grid)
    zip_names = list(spec.zip)
    zipped = list(zip(*spec.zip.values())) if zip_names else [()]
    if spec.seeds is not None:
        seeds: list[int | None] = list(spec.seeds)
    elif spec.replications is not None:
        seeds = [int(base.get("seed", 0)) + k for k in range(spec.replications)]
    else:
        seeds = [None]
    runs = []
    for grid_values in itertools.product(*spec.grid.values()):
        for zip_values in zipped:
            for seed in seeds:
                axes = dict(zip(grid_names, grid_values)) | dict(zip(zip_names, zip_values))
                sc = json.loads(json.dumps(base))
                for name, value in axes.items():
                    set_path(sc, name, value)
                if seed is not None:
                    sc["seed"] = seed
                axes["seed"] = sc.get("seed", 0)
                runs.append((axes, sc))
    return runs


# ---------------------------------------------------------------- one run, picklable for any executor


def run_one(scenario: dict, run_dir: str, audit: bool = False) -> dict[str, Any]:
    """Run one scenario into run_dir (or reuse a complete earlier result), then re-verify it with
    `edgevlm check`'s invariants; returns flat metrics plus `check_ok` / `check_violations`."""

    summary_path = Path(run_dir) / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
            if summary.get("complete"):
                return {"status": "ok", "error": None, "resumed": True, **flatten_summary(summary),
                        **check_columns(run_dir)}
        except ValueError:
            pass
    try:
        result = run(scenario, run_dir, audit=audit)
    except UserError as exc:
        return {"status": "failed", "error": str(exc), "resumed": False}
    except Exception as exc:  # noqa: BLE001  (a failed run is recorded, the sweep goes on)
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "resumed": False}
    return {"status": "ok", "error": None, "resumed": False, **flatten_summary(result.summary),
            **check_columns(run_dir)}


def check_columns(run_dir: str | Path) -> dict[str, Any]:
    """`edgevlm check` on a finished run directory, as two result columns."""

    report = check_run_dir(run_dir)
    return {"check_ok": report.ok,
            "check_violations": None if report.ok else "; ".join(str(v) for v in report.violations[:3])}


def flatten_summary(s: dict) -> dict[str, Any]:
    """The summary's headline metrics as flat columns, with 95% CI half-widths (`_hw`)."""
    row: dict[str, Any] = {
        "arrived": s["counts"]["arrived"], "ok": s["counts"]["ok"], "dropped": s["counts"]["dropped"],
        "throughput_per_s": s["throughput_per_s"], "goodput_per_s": s["goodput_per_s"],
        "stable": s.get("stable"),
    }
    for key, stat in s["latency_s"].items():
        row[f"latency_{key}_s"] = stat["value"]
        row[f"latency_{key}_hw"] = stat["half_width"]
    row["accuracy"] = s["accuracy"]["value"]
    row["accuracy_hw"] = s["accuracy"]["half_width"]
    row.update({
        "deadline_met_rate": s["deadline_met_rate"], "drop_rate": s["drop_rate"],
        "uplink_bytes_per_request": s["bytes_per_request"]["uplink"],
        "downlink_bytes_per_request": s["bytes_per_request"]["downlink"],
        "additional_comm_cost": s["additional_comm_cost"], "relative_comm_cost": s.get("relative_comm_cost"),
        "retransmission_rate": s["retransmission_rate"], "flops_per_request": s["flops_per_request"],
    })
    row.update({f"{k}_utilisation": v for k, v in s["utilisation"].items()})
    return row


# ---------------------------------------------------------------- the sweep


def run_sweep(path: str | Path, out_dir: str | Path, *, workers: int | None = None, dask: str | None = None,
              client: Any = None, progress: bool = False, audit: bool = False) -> pd.DataFrame:
    """Run every run of a sweep file; writes out_dir/results.parquet and returns it as a DataFrame.

    Runs go to a process pool of `workers` (default: CPU count), to the Dask scheduler at `dask`
    ("local" starts a LocalCluster), or to an existing dask.distributed `client`. Every run is
    re-verified by `edgevlm check`; `audit=True` also records audit.parquet so the link-capacity and
    GPU busy-time invariants are checked too (about 1.4x the run time).
    """
    spec, base, _ = load_sweep(path)
    n_workers = workers or os.cpu_count() or 1
    pool = start_pool(n_workers) if client is None and dask is None and n_workers > 1 else None
    try:
        return _sweep(spec, base, Path(out_dir), pool=pool, dask=dask, client=client, progress=progress,
                      audit=audit)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _sweep(spec: SweepSpec, base: dict, out: Path, *, pool, dask, client, progress, audit) -> pd.DataFrame:
    runs = expand(spec, base)
    rows: list[dict[str, Any]] = []
    jobs: list[tuple[int, dict, str]] = []
    checks, errors = [], []
    workloads: dict[str, Any] = {}
    for i, (axes, sc) in enumerate(runs):
        row = {"run": i, **axes}
        label = f"run {i} ({', '.join(f'{k}={v}' for k, v in axes.items())})"
        try:
            scenario = parse_scenario(sc)
        except ConfigError as exc:
            errors.extend(f"{label}: {line}" for line in str(exc).splitlines())
            continue
        if scenario.trace not in workloads:
            workloads[scenario.trace] = _load_workload(scenario.trace)
        checks.append((label, scenario, workloads[scenario.trace], None))
        run_id = scenario.hash()[:16]
        rows.append(row | {"run_id": run_id})
        jobs.append((i, sc, str(out / "runs" / run_id), audit))

    try:
        check_runs(checks)
    except ConfigError as exc:
        errors.extend(str(exc).splitlines())
    if errors:  # like compare: an invalid run stops the sweep before any output is touched
        raise ConfigError("", "\n".join(sorted(errors, key=lambda e: int(e.split()[1]))))
    del workloads, checks
    results = _execute(jobs, pool=pool, dask=dask, client=client, progress=progress)
    for i, res in results.items():
        rows[i].update(res)
    df = pd.DataFrame(rows).sort_values("run", kind="stable").reset_index(drop=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    atomic_write(out / "results.parquet", lambda tmp: pq.write_table(table, tmp))
    return df


def _load_workload(trace: str):
    try:
        return Workload.load(trace)
    except TraceError as exc:
        raise ConfigError("trace", str(exc)) from None


def start_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of `workers` whose workers start now, each with the simulator imported: forked
    from a forkserver that imported it once, or spawned (each importing it) where there is none."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # the main module too (as spawn would import it in every worker): the `edgevlm` script's
        # imports, a script's; a main module run with -m, or none, is skipped by multiprocessing
        ctx.set_forkserver_preload(["__main__", __name__])
    else:
        ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    for _ in range(workers):  # each submit to a pool with no idle worker starts one
        pool.submit(_ready)
    return pool


def _ready() -> None:
    """The warm-up task that makes a pool start its workers."""


def _execute(jobs: list[tuple[int, dict, str, bool]], *, pool, dask, client, progress) -> dict[int, dict]:
    bar = None
    if progress:
        bar = tqdm(total=len(jobs), unit="run", desc="sweep", dynamic_ncols=True)
    results: dict[int, dict] = {}
    try:
        if client is not None or dask is not None:
            for i, res in _dask_map(jobs, dask, client):
                results[i] = res
                bar and bar.update(1)
        elif pool is None:
            for i, *job in jobs:
                results[i] = run_one(*job)
                bar and bar.update(1)
        else:
            futures = {pool.submit(run_one, *job): i for i, *job in jobs}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar and bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results


def _dask_map(jobs, address: str | None, client) -> Iterable[tuple[int, dict]]:
    try:
        from distributed import Client, LocalCluster, as_completed as dask_completed  # defers distributed
    except ImportError:
        raise UserError("--dask needs dask.distributed: pip install 'edgevlm-sim[dask]'") from None
    own = own_client = None
    if client is None:
        if address == "local":
            own = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
            client = own_client = Client(own)
        else:
            try:
                client = own_client = Client(address, timeout="10s")
            except OSError as exc:
                raise UserError(f"--dask: cannot reach the Dask scheduler at {address} ({exc})") from None
    try:
        futures = {client.submit(run_one, *job, pure=False): i for i, *job in jobs}
        for fut in dask_completed(futures):
            yield futures[fut], fut.result()
    finally:  # close what we opened; a cluster someone else started keeps running
        if own_client is not None:
            own_client.close()
        if own is not None:
            own.close()


# ---------------------------------------------------------------- CLI


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="run a base scenario over axes of YAML paths (grid/zip, seeds) on a pool or Dask",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="sweep YAML file")
    p.add_argument("--out", help="output directory (results.parquet, runs/<hash>/); default: runs/<sweep file name>")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, help="process-pool size (default: number of CPUs)")
    g.add_argument("--dask", metavar="ADDRESS", help="Dask scheduler address, or 'local' for a LocalCluster")
    p.add_argument("--audit", action="store_true",
                   help="record every transfer and GPU pass so `check` verifies link capacity and GPU busy time too")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_sweep)


#: Metric columns of the printed sweep table (after the axes), with their headers.
TABLE_METRICS = {"status": "status", "stable": "stable", "accuracy": "acc", "goodput_per_s": "goodput/s", "latency_mean_s": "lat mean",
                 "latency_p95_s": "lat p95", "deadline_met_rate": "met", "gpu_utilisation": "gpu util"}


def format_table(df: pd.DataFrame) -> str:
    """The sweep results as a text table, one row per run: its axes, then headline metrics."""
    cols = list(df.columns)
    axes = cols[1:cols.index("run_id")]  # rows start {"run", **axes (with seed), "run_id", ...}
    t = df[[c for c in ["run", *axes, *TABLE_METRICS] if c in df.columns]].rename(columns=TABLE_METRICS)
    return t.to_string(index=False, float_format=lambda x: f"{x:.3f}", na_rep="-")


def _cmd_sweep(args) -> int:
    if args.workers is not None and args.workers < 1:
        raise UserError("--workers: must be a positive integer")
    out = Path(args.out) if args.out else Path("runs") / Path(args.sweep).stem
    df = run_sweep(args.sweep, out, workers=args.workers, dask=args.dask, progress=not args.no_progress,
                   audit=args.audit)
    print(format_table(df))
    ok = int((df["status"] == "ok").sum())
    broken = df[df["check_ok"].eq(False)] if "check_ok" in df else df.iloc[:0]
    failed = df[df["status"] != "ok"]
    print(f"{len(df)} runs: {ok} ok, {len(failed)} failed or invalid, {len(broken)} breaking an invariant; "
          f"{int(df.get('resumed', pd.Series(dtype=bool)).fillna(False).sum())} resumed")
    for _, r in failed.head(5).iterrows():
        print(f"  run {r['run']}: {r['error']}")
    for _, r in broken.head(5).iterrows():
        print(f"  run {r['run']} breaks an invariant: {r['check_violations']}")
    print(f"wrote {out / 'results.parquet'}")
    return 0 if ok and broken.empty else 1
