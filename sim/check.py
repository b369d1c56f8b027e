"""`edgevlm check RUN_DIR`: re-verify a run from its files alone.

Reads events.parquet, summary.json, scenario.yaml, the trace summary.json names and, if present,
audit.parquet and server_steps.parquet (written by `edgevlm run --audit`, see sim/audit.py), and checks:

- files:         the run's files exist and parse; events.parquet has the event-log schema;
- scenario:      scenario.yaml, the events' metadata and summary.json name the same scenario (hash);
- terminal:      every request has exactly one terminal record with an allowed status, and a complete
                 run has one for every arrival (ids 0..n-1, n = stop.requests where set);
- monotone:      the step times along each request's path never go backwards and end by sim_time_s;
                 latency_s and deadline_met agree with them; progressive round sums add up (PROG_EVENT_COLUMNS);
- link_capacity: in no time window does a link carry more bytes than capacity x window (audit);
- bytes:         event-log bytes equal the links' bytes_carried in summary.json (per request, too,
                 with the audit);
- gpu:           utilisation <= 1 and never more passes at once than replicas x max batch;
                 with the audit and a batch-1 scheduler the busy time equals the summary's;
                 KV cache (batching with a KV model): on every step of every replica in
                 server_steps.parquet, the KV held by two or more sequences is within the capacity, and
                 the steps' admissions = gpu.jobs + their preemptions (each preempted sequence is
                 admitted again); without that file, the same from summary.json gpu.kv's peaks;
- summary:       summary.json equals what sim.summary.summarize recomputes from the events.

A run stopped by Ctrl-C (`"complete": false`) is checked too: requests still in flight have no
record, so counts and bytes are checked as upper bounds. Checks that need data the run lacks are
listed as skipped, never silently passed. `check_run_dir` is the Python API (compare/sweep use it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from edgevlm.sim.audit import LINKS, STEPS_SCHEMA
from edgevlm.sim.errors import UserError
from edgevlm.sim.policies import policies
from edgevlm.sim.rundir import AUDIT_FILE, EVENTS_FILE, SCENARIO_FILE, STEPS_FILE, SUMMARY_FILE, file_sha256
from edgevlm.sim.commcost import comm_meter
from edgevlm.sim.scenario import load_scenario
from edgevlm.sim.summary import summarize
from edgevlm.sim.workload import Workload
from edgevlm.traces import TraceError
from edgevlm.traces.eventlog import EVENT_SCHEMA, PROG_SUM_COLUMNS, STATUSES
from edgevlm.sim.rundir import EVENTS_FILE, OUTPUTS

INVARIANTS = ("files", "scenario", "terminal", "monotone", "link_capacity", "bytes", "gpu", "summary")
#: Times are sums of float seconds; allow this relative slack (plus 1 ns) in comparisons.
REL_TOL = 1e-9
ABS_TOL_S = 1e-9


@dataclass
class Violation:
    invariant: str
    message: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.message}"


@dataclass
class Report:
    run_dir: Path
    violations: list[Violation] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    requests: int = 0
    audit_rows: int | None = None
    #: summary.json "complete": False for a run stopped early (Ctrl-C); None if unknown
    complete: bool | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def invariants_failed(self) -> list[str]:
        return sorted({v.invariant for v in self.violations}, key=INVARIANTS.index)

    def format(self, limit: int = 20) -> str:
        audit = "no audit" if self.audit_rows is None else f"audit: {self.audit_rows} rows"
        partial = ("; PARTIAL run (interrupted before the end: summary \"complete\": false; counts and bytes "
                   "checked as upper bounds)") if self.complete is False else ""
        if self.ok:
            lines = [f"{self.run_dir}: OK, all checked invariants hold ({self.requests} requests, {audit}){partial}"]
        else:
            lines = [f"{self.run_dir}: {len(self.violations)} violation(s) of "
                     f"{', '.join(self.invariants_failed())} ({self.requests} requests, {audit}){partial}"]
            lines += [f"  {v}" for v in self.violations[:limit]]
            if len(self.violations) > limit:
                lines.append(f"  ... and {len(self.violations) - limit} more")
        lines += [f"  skipped: {s}" for s in self.skipped]
        return "\n".join(lines)


class _Collector:
    """Keeps the first few violations per invariant (the first ones say the most)."""

    def __init__(self, report: Report, per_invariant: int):
        self.report = report
        self.per_invariant = per_invariant
        self.counts: dict[str, int] = {}

    def __call__(self, invariant: str, message: str) -> None:
        n = self.counts.get(invariant, 0)
        self.counts[invariant] = n + 1
        if n < self.per_invariant:
            self.report.violations.append(Violation(invariant, message))

    def many(self, invariant: str, rows: np.ndarray, describe) -> None:
        """One violation per offending row index (describe(i) -> message), capped."""
        for i in rows[: self.per_invariant]:
            self(invariant, describe(int(i)))
        if rows.size > self.per_invariant:
            self.counts[invariant] = self.counts.get(invariant, 0) + rows.size - self.per_invariant
            self.report.violations.append(
                Violation(invariant, f"... {rows.size - self.per_invariant} more row(s) like these"))


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= ABS_TOL_S + REL_TOL * max(abs(a), abs(b))


# ---------------------------------------------------------------- loading


def check_run_dir(run_dir: str | Path, per_invariant: int = 5) -> Report:
    """Check every invariant of a run directory; returns a Report (`.ok`, `.violations`, `.skipped`)."""

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"{run_dir}: not found")
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir}: not a run directory (no summary.json, events.parquet or scenario.yaml)")
    report = Report(run_dir)
    bad = _Collector(report, per_invariant)

    summary = None
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        bad("files", f"{SUMMARY_FILE} is missing: the run did not finish (killed, or still running)")
    except (ValueError, OSError) as exc:
        bad("files", f"{SUMMARY_FILE} is not valid JSON ({exc})")
        summary = None
    events = None
    try:
        events = pq.read_table(run_dir / EVENTS_FILE)
    except FileNotFoundError:
        bad("files", f"{EVENTS_FILE} is missing")
    except (pa.ArrowException, OSError) as exc:
        bad("files", f"{EVENTS_FILE} is not readable Parquet ({str(exc).splitlines()[0]})")
    if events is not None and not events.schema.equals(EVENT_SCHEMA, check_metadata=False):
        names = set(events.column_names)
        diff = [f.name for f in EVENT_SCHEMA if f.name not in names or events.schema.field(f.name).type != f.type]
        bad("files", f"{EVENTS_FILE} does not have the event-log schema (column "
                     f"'{(diff or sorted(names - set(EVENT_SCHEMA.names)) or ['?'])[0]}')")
        events = None
    sc = None
    try:
        sc, _ = load_scenario(run_dir / SCENARIO_FILE)
    except UserError as exc:
        bad("files", f"{SCENARIO_FILE}: {exc}")
    audit = None
    if (run_dir / AUDIT_FILE).exists():
        try:
            audit = pq.read_table(run_dir / AUDIT_FILE)
            report.audit_rows = audit.num_rows
        except (pa.ArrowException, OSError) as exc:
            bad("files", f"{AUDIT_FILE} is not readable Parquet ({str(exc).splitlines()[0]})")
    steps = None
    if (run_dir / STEPS_FILE).exists():
        try:
            steps = pq.read_table(run_dir / STEPS_FILE)
        except (pa.ArrowException, OSError) as exc:
            bad("files", f"{STEPS_FILE} is not readable Parquet ({str(exc).splitlines()[0]})")
        else:
            if not steps.schema.equals(STEPS_SCHEMA, check_metadata=False):
                bad("files", f"{STEPS_FILE} does not have the server-steps schema ({steps.schema.names}, want "
                             f"{STEPS_SCHEMA.names})")
                steps = None
    if summary is None or events is None or sc is None:
        return report

    report.requests = events.num_rows
    report.complete = summary.get("complete") if isinstance(summary.get("complete"), bool) else None
    workload = _load_trace(summary, report)
    check_tables(events, summary, sc, audit=audit, steps=steps, workload=workload, report=report, collector=bad)
    return report


def is_run_dir(path: Path) -> bool:
    """A directory `edgevlm run` wrote to: one of its outputs, or a killed run's temporary event log."""
    return path.is_dir() and (any((path / name).exists() for name in OUTPUTS)
                              or (path / f".{EVENTS_FILE}.tmp").exists())


def runs_of(path: Path) -> list[Path]:
    """The run directories to check at `path`: itself, or each run of a compare/sweep output (DIR/runs/*)."""
    if not path.exists():
        raise UserError(f"{path}: not found")
    if is_run_dir(path):
        return [path]
    runs = sorted(p for p in (path / "runs").glob("*") if is_run_dir(p)) if (path / "results.parquet").is_file() else []
    if not runs:
        raise UserError(f"{path}: not a run directory (no summary.json, events.parquet or scenario.yaml), nor a "
                        "compare or sweep output (results.parquet and runs/)")
    return runs


def _load_trace(summary: dict, report: Report):
    info = summary.get("trace") or {}
    path = Path(str(info.get("path", "")))
    if not path.is_file():
        report.skipped.append(f"summary additional/relative_comm_cost (trace {path} not found)")
        return None
    want = info.get("sha256")
    if want is not None and file_sha256(path) != want:
        report.skipped.append(f"summary additional/relative_comm_cost (trace {path} changed since the run)")
        return None
    try:
        return Workload.load(path)
    except TraceError as exc:
        report.skipped.append(f"summary additional/relative_comm_cost (trace unreadable: {exc})")
        return None


# ---------------------------------------------------------------- the invariants


def check_tables(events, summary: dict, sc, *, audit=None, steps=None, workload=None, report: Report | None = None,
                 collector: _Collector | None = None) -> Report:
    """Check in-memory run outputs (events table, summary dict, Scenario, optional audit and server-steps
    tables)."""
    report = report or Report(Path("<memory>"))
    bad = collector or _Collector(report, 5)
    report.requests = events.num_rows
    ev = {name: events.column(name).to_numpy(zero_copy_only=False) for name in events.column_names}
    order = np.argsort(ev["request_id"], kind="stable")
    ev = {k: v[order] for k, v in ev.items()}
    complete = summary.get("complete") is True
    if not isinstance(summary.get("complete"), bool):
        bad("summary", f"'complete' must be true or false, got {summary.get('complete')!r}")

    _check_scenario(events, summary, sc, bad)
    _check_terminal(ev, summary, sc, complete, bad)
    _check_monotone(ev, summary, sc, bad)
    _check_progressive(ev, bad)
    links = _audit_links(audit)
    _check_link_capacity(links, sc, report, bad)
    _check_bytes(ev, summary, links, complete, bad)
    _check_gpu(ev, summary, sc, audit, complete, report, bad)
    _check_kv_steps(steps, summary, audit is not None, complete, report, bad)
    _check_summary(events, summary, sc, workload, bad)
    return report


def _check_scenario(events, summary: dict, sc, bad) -> None:
    h = sc.hash()
    meta = events.schema.metadata or {}
    ev_hash = meta.get(b"edgevlm_scenario_hash", b"").decode(errors="replace")
    if ev_hash != h:
        bad("scenario", f"events.parquet was written for scenario hash {ev_hash[:12] or 'none'}, "
                        f"scenario.yaml hashes to {h[:12]}")
    if summary.get("scenario_hash") != h:
        bad("scenario", f"summary.json scenario_hash {str(summary.get('scenario_hash'))[:12]} != "
                        f"scenario.yaml hash {h[:12]}")
    for key, want in (("scenario", sc.name), ("policy", sc.policy.kind), ("seed", sc.seed)):
        if summary.get(key) != want:
            bad("scenario", f"summary.json {key} {summary.get(key)!r} != scenario.yaml {want!r}")


def _check_terminal(ev: dict, summary: dict, sc, complete: bool, bad) -> None:
    ids = ev["request_id"]
    n = ids.size
    dup = np.flatnonzero(ids[1:] == ids[:-1])
    bad.many("terminal", dup, lambda i: f"request {ids[i]} has more than one terminal record")
    status = ev["status"].astype(str)
    wrong = np.flatnonzero(~np.isin(status, STATUSES))
    bad.many("terminal", wrong, lambda i: f"request {ids[i]} has status {status[i]!r}; allowed: "
                                          + ", ".join(STATUSES))
    no_end = np.flatnonzero(np.isnan(ev["done_s"]))
    bad.many("terminal", no_end, lambda i: f"request {ids[i]} ({status[i]}) has no done_s")
    limit = sc.stop.requests
    out_of_range = np.flatnonzero((ids < 0) | ((ids >= limit) if limit is not None else False))
    bad.many("terminal", out_of_range, lambda i: f"request id {ids[i]} is outside 0..{(limit or n) - 1}")
    if complete:
        missing = np.setdiff1d(np.arange(limit if limit is not None else (int(ids[-1]) + 1 if n else 0)), ids)
        bad.many("terminal", np.arange(missing.size),
                 lambda i: f"request {missing[i]} arrived but has no terminal record")
    if sc.stop.time_s is not None:
        late = np.flatnonzero(ev["arrival_s"] >= sc.stop.time_s)
        bad.many("terminal", late, lambda i: f"request {ids[i]} arrived at {ev['arrival_s'][i]:.6f} s, "
                                             f"after stop.time_s {sc.stop.time_s}")


def _check_monotone(ev: dict, summary: dict, sc, bad) -> None:
    # Each protocol's own step order (e.g. full_edge infers on the device before the uplink).
    TIME_COLUMNS = policies.builder(sc.policy.kind).step_order
    ids = ev["request_id"]
    times = np.column_stack([ev[c].astype(np.float64) for c in TIME_COLUMNS])
    no_arrival = np.flatnonzero(np.isnan(times[:, 0]))
    bad.many("monotone", no_arrival, lambda i: f"request {ids[i]} has no arrival_s")
    # the latest earlier step at each column (NaN = skipped steps are ignored by fmax)
    before = np.fmax.accumulate(np.column_stack([np.full(len(ids), -np.inf), times[:, :-1]]), axis=1)
    tol = ABS_TOL_S + REL_TOL * np.abs(before)
    back = (times < before - tol)  # NaN compares False: skipped steps pass
    rows = np.flatnonzero(back.any(axis=1))

    def describe(i: int) -> str:
        j = int(np.argmax(back[i]))
        k = int(np.nanargmax(np.where(times[i, :j] == before[i, j], 1, np.nan))) if j else 0
        return (f"request {ids[i]}: {TIME_COLUMNS[j]} {times[i, j]:.9g} is before "
                f"{TIME_COLUMNS[k]} {times[i, k]:.9g}")

    bad.many("monotone", rows, describe)
    end = summary.get("sim_time_s")
    if isinstance(end, (int, float)):
        after = np.flatnonzero(np.nanmax(times, axis=1) > end + ABS_TOL_S + REL_TOL * abs(end)) \
            if len(ids) else np.array([], int)
        bad.many("monotone", after, lambda i: f"request {ids[i]} has a step after sim_time_s {end}")
    else:
        bad("monotone", f"summary.json sim_time_s is {end!r}, not a number")
    status = ev["status"].astype(str)
    ok = status == "ok"
    lat = ev["latency_s"]
    want = np.where(ok, ev["done_s"] - ev["arrival_s"], np.nan)
    wrong = np.flatnonzero(~((np.isnan(lat) & np.isnan(want)) | np.isclose(lat, want, rtol=REL_TOL, atol=ABS_TOL_S)))
    bad.many("monotone", wrong, lambda i: f"request {ids[i]} ({status[i]}): latency_s {lat[i]!r} != "
                                          f"done_s - arrival_s {want[i]!r}")
    met = ok & (want <= sc.slo.deadline_s)
    wrong = np.flatnonzero(ev["deadline_met"].astype(bool) != met)
    bad.many("monotone", wrong, lambda i: f"request {ids[i]}: deadline_met is {bool(ev['deadline_met'][i])} "
                                          f"but latency {want[i]!r} vs deadline {sc.slo.deadline_s}")


def _check_progressive(ev: dict, bad) -> None:
    """The progressive protocol's columns (traces/eventlog.py): the refinement rounds' sums are >= 0 and
    add up to the time from the level-1 pass's end to the last pass's end; other protocols leave them null."""
    if "prog_last_end_s" not in ev:
        return
    ids = ev["request_id"]
    sums = np.column_stack([ev[c].astype(np.float64) for c in PROG_SUM_COLUMNS])
    neg = np.flatnonzero((sums < -ABS_TOL_S).any(axis=1))
    bad.many("monotone", neg, lambda i: f"request {ids[i]}: a progressive round sum is negative "
                                        f"({dict(zip(PROG_SUM_COLUMNS, sums[i].tolist()))})")
    last = ev["prog_last_end_s"].astype(np.float64)
    want = ev["s1_end_s"].astype(np.float64) + sums.sum(axis=1)
    has = ~np.isnan(last)
    wrong = np.flatnonzero(has & ~np.isclose(last, want, rtol=REL_TOL, atol=ABS_TOL_S) & (ev["status"] == "ok"))
    bad.many("monotone", wrong, lambda i: f"request {ids[i]}: prog_last_end_s {last[i]:.9g} != s1_end_s + "
                                          f"prog_down_s + prog_up_s + prog_queue_s + prog_infer_s = {want[i]:.9g}")
    stray = np.flatnonzero(~has & ~np.isnan(sums).all(axis=1))
    bad.many("monotone", stray, lambda i: f"request {ids[i]}: progressive round sums without a last pass")


def _audit_links(audit) -> dict[str, dict[str, np.ndarray]] | None:
    """Per link, the audit's transfers as arrays (request_id, bytes, start_s, end_s)."""
    if audit is None:
        return None

    res = audit.column("resource").to_numpy(zero_copy_only=False).astype(str)
    cols = {c: audit.column(c).to_numpy(zero_copy_only=False) for c in ("request_id", "bytes", "start_s", "end_s")}
    return {link: {c: v[res == link] for c, v in cols.items()} for link in LINKS}


def _check_link_capacity(links, sc, report: Report, bad) -> None:
    if links is None:
        report.skipped.append("link_capacity (no audit.parquet; rerun with `edgevlm run --audit`)")
        return
    for name, tr in links.items():
        cfg = getattr(sc.network, name)
        if getattr(cfg, "bandwidth_trace", None):
            report.skipped.append(f"link_capacity on {name} (capacity follows a bandwidth trace)")
            continue
        prop_s = cfg.propagation_ms / 1e3
        start, end = tr["start_s"].astype(np.float64), tr["end_s"].astype(np.float64) - prop_s
        early = np.flatnonzero(end < start - ABS_TOL_S - REL_TOL * np.abs(start))
        bad.many("link_capacity", early, lambda i: f"{name}: request {tr['request_id'][i]}'s message arrived "
                 f"{start[i] - end[i]:.9g} s sooner than the propagation delay allows")
        window = _worst_window(start, np.maximum(end, start), tr["bytes"].astype(np.float64) * 8.0,
                               cfg.capacity_mbps * 1e6)
        if window is not None:
            a, b, bits = window
            bad("link_capacity", f"{name} carried {bits / 8:.0f} bytes within [{a:.9g}, {b:.9g}] s, more than "
                                 f"its {cfg.capacity_mbps:g} Mbit/s allow ({cfg.capacity_mbps * 1e6 * (b - a) / 8:.0f})")


def _worst_window(a: np.ndarray, b: np.ndarray, bits: np.ndarray, cap_bps: float):
    """A window [s, t] in which the transfers lying wholly inside it hold more bits than cap x (t - s).

    Every transfer's bits cross the link between its start and its end (less propagation), so this
    bound holds under any discipline (FIFO, processor sharing, rate caps). The sweep lowers s over
    the start times; a segment tree over the sorted end times t keeps demand(s, t) - cap * t, where
    adding a transfer adds its bits to every t at or after its end. O(n log n).
    Returns None if no window is over capacity.
    """
    n = a.size
    if n == 0:
        return None
    ends = np.sort(b)
    size = 1 << max(1, (n - 1).bit_length())
    tree = [-math.inf] * (2 * size)
    lazy = [0.0] * size
    tree[size:size + n] = (-cap_bps * ends).tolist()
    for p in range(size - 1, 0, -1):
        tree[p] = max(tree[2 * p], tree[2 * p + 1])
    h = size.bit_length() - 1

    def apply(p: int, v: float) -> None:
        tree[p] += v
        if p < size:
            lazy[p] += v

    def pull(p: int) -> None:
        while p > 1:
            p >>= 1
            tree[p] = max(tree[2 * p], tree[2 * p + 1]) + lazy[p]

    def push(p: int) -> None:
        for s in range(h, 0, -1):
            i = p >> s
            if lazy[i]:
                apply(2 * i, lazy[i])
                apply(2 * i + 1, lazy[i])
                lazy[i] = 0.0

    def add_suffix(lo: int, v: float) -> None:
        l, r = lo + size, 2 * size
        l0 = l
        while l < r:
            if l & 1:
                apply(l, v)
                l += 1
            if r & 1:
                r -= 1
                apply(r, v)
            l >>= 1
            r >>= 1
        pull(l0)

    def max_suffix(lo: int) -> float:
        l, r = lo + size, 2 * size
        push(l)
        res = -math.inf
        while l < r:
            if l & 1:
                res = max(res, tree[l])
                l += 1
            if r & 1:
                r -= 1
                res = max(res, tree[r])
            l >>= 1
            r >>= 1
        return res

    by_start = np.argsort(-a, kind="stable")
    a_sorted, pos = a[by_start], np.searchsorted(ends, b[by_start], side="left").tolist()
    bits_sorted = bits[by_start].tolist()
    firsts = np.searchsorted(ends, a_sorted, side="left").tolist()
    a_list = a_sorted.tolist()
    tol = cap_bps * (ABS_TOL_S + REL_TOL * float(max(abs(ends[-1]), 1.0))) + 1.0
    for k in range(n):
        add_suffix(pos[k], bits_sorted[k])
        if k + 1 < n and a_list[k + 1] == a_list[k]:
            continue  # add every transfer starting at this instant first
        s = a_list[k]
        if max_suffix(firsts[k]) + cap_bps * s > tol:
            inside = a >= s
            t_best, best = s, -math.inf
            for t in np.unique(b[inside]):
                excess = bits[inside & (b <= t)].sum() - cap_bps * (t - s)
                if excess > best:
                    t_best, best = t, excess
            return s, float(t_best), float(bits[inside & (b <= t_best)].sum())
    return None


def _check_bytes(ev: dict, summary: dict, links, complete: bool, bad) -> None:
    ids = ev["request_id"]
    for link in LINKS:
        col = f"{link}_bytes"
        logged = int(ev[col].sum())
        comp = summary.get(link)
        carried = comp.get("bytes_carried") if isinstance(comp, dict) else None
        if not isinstance(carried, int):
            bad("bytes", f"summary.json has no {link}.bytes_carried")
            continue
        if (logged != carried) if complete else (logged > carried):
            rel = "!=" if complete else ">"
            bad("bytes", f"{link}: the event log has {logged} bytes, {rel} the {carried} bytes_carried "
                         f"in summary.json")
        if links is None:
            continue
        tr = links[link]
        a_ids, a_bytes = tr["request_id"], tr["bytes"].astype(np.int64)
        total = int(a_bytes.sum())
        if (total != carried) if complete else (total > carried):
            bad("bytes", f"{link}: the audit has {total} bytes in {a_ids.size} transfers, summary.json "
                         f"bytes_carried {carried} in {comp.get('transfers')}")
        elif complete and comp.get("transfers") is not None and a_ids.size != comp.get("transfers"):
            bad("bytes", f"{link}: the audit has {a_ids.size} transfers, summary.json {comp.get('transfers')}")
        uniq, inv = np.unique(a_ids, return_inverse=True)
        per_req = np.bincount(inv, weights=a_bytes, minlength=uniq.size)
        idx = np.searchsorted(ids, uniq)
        found = (idx < ids.size) & (ids[np.minimum(idx, ids.size - 1)] == uniq) if ids.size else \
            np.zeros(uniq.size, bool)
        if complete:
            orphans = np.flatnonzero(~found)
            bad.many("bytes", orphans, lambda i: f"{link}: the audit has transfers of request {uniq[i]}, "
                                                 "which has no terminal record")
        logged_per = np.zeros(uniq.size, np.int64)
        logged_per[found] = ev[col][idx[found]]
        wrong = np.flatnonzero(found & (per_req.astype(np.int64) != logged_per))
        bad.many("bytes", wrong, lambda i: f"{link}: request {uniq[i]} logs {logged_per[i]} bytes, its "
                                           f"transfers in the audit hold {int(per_req[i])}")
        sent = np.zeros(ids.size, bool)
        sent[idx[found]] = True
        silent = np.flatnonzero(~sent & (ev[col] > 0))
        bad.many("bytes", silent, lambda i: f"{link}: request {ids[i]} logs {ev[col][i]} bytes but the audit "
                                            "has no transfer of it")


def _check_gpu(ev: dict, summary: dict, sc, audit, complete: bool, report: Report, bad) -> None:
    gpu = summary.get("gpu") if isinstance(summary.get("gpu"), dict) else {}
    util = gpu.get("utilisation")
    if not isinstance(util, (int, float)) or not (0.0 <= util <= 1.0 + REL_TOL):
        bad("gpu", f"summary.json gpu utilisation is {util!r}; it must lie in [0, 1]")
    _check_kv(gpu.get("kv"), gpu, complete, bad)
    replicas = sc.server.replicas
    max_batch = getattr(sc.server.scheduler, "max_batch", None) or 1
    if audit is not None:
        res = audit.column("resource").to_numpy(zero_copy_only=False).astype(str)
        g = res == "gpu"
        start = audit.column("start_s").to_numpy()[g]
        end = audit.column("end_s").to_numpy()[g]
        source = "GPU passes in the audit"
    else:
        stages = policies.builder(sc.policy.kind).server_stages
        spans = [(ev[f"s{k}_start_s"], ev[f"s{k}_end_s"]) for k in stages] or [(np.empty(0), np.empty(0))]
        if "prog_last_start_s" in ev and stages:  # a progressive request's last refinement pass
            spans.append((ev["prog_last_start_s"], ev["prog_last_end_s"]))
        start = np.concatenate([s for s, _ in spans]).astype(np.float64)
        end = np.concatenate([e for _, e in spans]).astype(np.float64)
        keep = ~np.isnan(start) & ~np.isnan(end)
        start, end = start[keep], end[keep]
        source = "stage-1/2 (and last progressive) spans in the event log"
        report.skipped.append("gpu busy time and attention passes (no audit.parquet)")
    neg = np.flatnonzero(end < start)
    bad.many("gpu", neg, lambda i: f"a GPU pass ends ({end[i]:.9g}) before it starts ({start[i]:.9g})")
    cap = replicas * max_batch
    peak, at = _peak_concurrency(start, end)
    if peak > cap:
        bad("gpu", f"{peak} GPU passes run at once at t={at:.9g} s ({source}); replicas x max batch = {cap}")
    if audit is not None and max_batch == 1 and isinstance(util, (int, float)):
        horizon = summary.get("sim_time_s") or 0.0
        busy = float((end - start).sum())
        recomputed = busy / (horizon * replicas) if horizon > 0 else 0.0
        if (not _close(recomputed, util)) if complete else (recomputed > util + REL_TOL):
            bad("gpu", f"GPU passes in the audit are busy {recomputed:.9g} of the time, summary.json says {util!r}")
        if complete and gpu.get("jobs") is not None and gpu.get("jobs") != start.size:
            bad("gpu", f"the audit has {start.size} GPU passes, summary.json gpu.jobs {gpu.get('jobs')}")


def _check_kv(kv, gpu: dict, complete: bool, bad) -> None:
    """KV cache (continuous batching): the peak held by two or more sequences, and the fullest replica's
    per-bin maxima, stay within the capacity; admissions = jobs + preemptions (recomputations).
    summary.json carries these; the audit has no token counts to recompute them from."""
    if not isinstance(kv, dict) or kv.get("capacity_tokens") is None:
        return
    cap = kv["capacity_tokens"]
    if kv.get("peak_shared_tokens", 0) > cap:
        bad("gpu", f"KV cache: {kv['peak_shared_tokens']} tokens held by two or more sequences at once, "
                   f"capacity {cap}")
    series = (kv.get("use_series") or {}).get("max_tokens") or []
    if series and max(series) > max(cap, kv.get("peak_tokens", 0)):
        bad("gpu", f"KV cache: the use series peaks at {max(series)} tokens, above capacity {cap} and peak "
                   f"{kv.get('peak_tokens')}")
    if complete and gpu.get("jobs") is not None and kv.get("admitted") != gpu["jobs"] + kv.get("preempted", 0):
        bad("gpu", f"KV cache: {kv.get('admitted')} admissions, but {gpu['jobs']} jobs + {kv.get('preempted')} "
                   "preemptions")


def _check_kv_steps(steps, summary: dict, audited: bool, complete: bool, report: Report, bad) -> None:
    """KV cache on every step (server_steps.parquet): within capacity whenever two or more sequences
    share it (a lone sequence larger than the cache still runs), the capacity the summary states, and
    admissions = jobs + preemptions, the step sums equal to summary.json's counters."""
    gpu = summary.get("gpu") if isinstance(summary.get("gpu"), dict) else {}
    kv = gpu.get("kv") if isinstance(gpu.get("kv"), dict) else {}
    if steps is None:
        if kv.get("capacity_tokens") is not None:
            why = "written by an older version" if audited else "rerun with `edgevlm run --audit`"
            report.skipped.append(f"KV cache on every step (no {STEPS_FILE}; {why}): checked from summary.json's "
                                  "peaks only")
        return
    if kv.get("capacity_tokens") is None:
        bad("gpu", f"{STEPS_FILE} has {steps.num_rows} steps but summary.json gpu.kv states no KV capacity")
        return
    col = {c: steps.column(c).to_numpy() for c in STEPS_SCHEMA.names}
    tokens, cap, seqs = col["kv_tokens"], col["capacity_tokens"], col["sequences"]
    over = np.flatnonzero((seqs > 1) & (tokens > cap))
    bad.many("gpu", over, lambda i: f"KV cache over capacity on replica {col['replica'][i]} in the step ending at "
                                    f"t={col['end_s'][i]:.9g} s ({STEPS_FILE} row {i}): {tokens[i]} tokens held by "
                                    f"{seqs[i]} sequences, capacity {cap[i]}")
    wrong_cap = np.flatnonzero(cap != kv["capacity_tokens"])
    bad.many("gpu", wrong_cap, lambda i: f"{STEPS_FILE} row {i} records capacity {cap[i]} tokens, summary.json "
                                         f"gpu.kv capacity_tokens {kv['capacity_tokens']}")
    admitted, preempted = int(col["admitted"].sum()), int(col["preempted"].sum())
    jobs = gpu.get("jobs")
    if isinstance(jobs, int) and ((admitted != jobs + preempted) if complete else (admitted > jobs + preempted)):
        bad("gpu", f"KV cache: the {steps.num_rows} steps in {STEPS_FILE} admit {admitted} sequences, but gpu.jobs "
                   f"{jobs} + their {preempted} preemptions = {jobs + preempted}")
    if complete:
        for name, got in (("admitted", admitted), ("preempted", preempted),
                          ("peak_tokens", int(tokens.max()) if tokens.size else 0)):
            if kv.get(name) != got:
                bad("gpu", f"KV cache: {STEPS_FILE} gives {name} {got}, summary.json gpu.kv {name} {kv.get(name)!r}")


def _peak_concurrency(start: np.ndarray, end: np.ndarray) -> tuple[int, float]:
    """Most intervals open at one instant (an interval ending at t does not overlap one starting at t)."""
    if start.size == 0:
        return 0, 0.0
    t = np.concatenate([start, end])
    step = np.concatenate([np.ones(start.size, np.int64), -np.ones(end.size, np.int64)])
    order = np.lexsort((step, t))  # at equal times, ends (-1) first
    level = np.cumsum(step[order])
    k = int(np.argmax(level))
    return int(level[k]), float(t[order][k])


def _check_summary(events, summary: dict, sc, workload, bad) -> None:
    util = summary.get("utilisation")
    if not isinstance(util, dict):
        bad("summary", "summary.json has no 'utilisation' block")
        return
    components = {name: summary.get(name) for name in util}
    comm = comm_meter(sc.policy, workload) if workload is not None else None
    body = summarize(events, warmup_s=sc.stop.warmup_s, comm=comm, components=components)
    body = json.loads(json.dumps(body, default=float))  # the types summary.json holds
    if workload is None:
        body.pop("additional_comm_cost")
        body.pop("relative_comm_cost")
    for path, got, want in _diff(summary, body, ""):
        bad("summary", f"{path[1:]} is {got!r} in summary.json, {want!r} recomputed from the events")


def _diff(got: Any, want: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """Leaves where `got` differs from `want` (floats within REL_TOL); keys only in `got` are ignored."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            yield path, got, want
            return
        for k, v in want.items():
            yield from _diff(got.get(k, _MISSING), v, f"{path}.{k}")
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            yield path, got, want
            return
        for i, (g, w) in enumerate(zip(got, want)):
            yield from _diff(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if not math.isclose(got, want, rel_tol=REL_TOL, abs_tol=1e-12):
            yield path, got, want
    elif got != want or type(got) is not type(want):
        yield path, got, want


class _Missing:
    def __repr__(self) -> str:
        return "missing"


_MISSING = _Missing()


# ---------------------------------------------------------------- CLI


def _cmd_check(args: argparse.Namespace) -> int:
    ok = True
    for run_dir in runs_of(Path(args.run_dir)):  # a compare or sweep output: each of its runs
        report = check_run_dir(run_dir, per_invariant=args.max)
        print(report.format(limit=args.max * len(INVARIANTS)), file=sys.stdout if report.ok else sys.stderr)
        ok = ok and report.ok
    return 0 if ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "check", help="re-verify a run directory's invariants from its files",
        description="Re-verify a finished run from its files alone (events.parquet, summary.json, scenario.yaml, "
                    "the trace it names, and audit.parquet if the run used --audit): one terminal record per "
                    "request, monotone step times, no link over capacity in any window, bytes conserved, GPU "
                    "never over 100%, the KV cache within capacity on every step (server_steps.parquet), summary "
                    "equal to its recomputation. Exit 0 if all hold, 1 listing the first violations, 2 if RUN_DIR "
                    "is not a run directory. A compare or sweep output directory checks each of its runs.")
    p.add_argument("run_dir", help="a directory written by `edgevlm run` (use --audit for the full check)")
    p.add_argument("--max", type=int, default=5, help="violations listed per invariant (default 5)")
    p.set_defaults(func=_cmd_check)
