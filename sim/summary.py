"""summary.json: steady-state statistics computed from the event log (DESIGN.md §5).

Requests that arrive before `warmup_s` are left out. The measurement window runs from warm-up
to the last arrival. Throughput and goodput count completions inside that window, so an
overloaded system reports its capacity, not its arrival rate. Confidence intervals use batch
means: the measured requests, in arrival order, are cut into `N_BATCHES` contiguous batches, and
a Student-t interval is taken over the batch statistics. A run whose backlog grows has no steady
state (sim/stability.py): it is marked `"stable": false` with the evidence, and its latency CIs are null.
"""

from __future__ import annotations

import math
from typing import Any

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import special  # stdtrit is stats.t.ppf's own kernel, without importing scipy.stats (~1 s)

from edgevlm.sim.stability import assess
from edgevlm.traces.eventlog import STATUSES

if TYPE_CHECKING:  # type hints only: sim.commcost imports this module
    from edgevlm.sim.commcost import CommMeter

N_BATCHES = 30
QUANTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}
SUMMARY_COLUMNS = ("request_id", "sample_id", "arrival_s", "done_s", "latency_s", "uplink_bytes",
                   "downlink_bytes", "stages", "score", "flops", "deadline_met", "status")


def batch_means_ci(x: np.ndarray, stat=np.mean, n_batches: int = N_BATCHES, level: float = 0.95) -> dict:
    """`stat` of x with a batch-means confidence interval; x must be in time (arrival) order."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {"value": None, "ci95": [None, None], "half_width": None}
    value = float(stat(x))
    if x.size < 2 * n_batches:
        return {"value": value, "ci95": [None, None], "half_width": None}
    size = x.size // n_batches
    batch_stats = np.array([stat(x[i * size:(i + 1) * size]) for i in range(n_batches)])
    half = float(special.stdtrit(n_batches - 1, 0.5 + level / 2) * batch_stats.std(ddof=1) / math.sqrt(n_batches))
    return {"value": value, "ci95": [value - half, value + half], "half_width": half}


class SummaryPass:
    """One bounded pass over the event log: feed record batches in any order, then `finish()`.

    Counts and byte sums are kept as running integers. The statistics that depend on arrival order
    (batch-means CIs, percentiles, float means) keep one compact column per need, preallocated for
    the log's rows: arrival and end time (float64), score (float32), flops (float32 while that is
    lossless, else float64), status (int8), deadline met (bool) and request id (int32 where it fits).
    Latency is recomputed as done - arrival, which is how sim/recorder.py writes it; a log whose
    latency column differs (a testbed log) gets its own float64 column from the first mismatch on.
    About 30 bytes per request (300 MB at 10M); the results equal the whole-log computation exactly.
    """

    def __init__(self, n_rows: int, *, warmup_s: float, comm: "CommMeter | None"):
        self._warmup_s, self._comm, self._n = float(warmup_s), comm, 0
        self._rid = np.empty(n_rows, np.int32)
        self._arrival = np.empty(n_rows, np.float64)
        self._done = np.empty(n_rows, np.float64)
        self._score = np.empty(n_rows, np.float32)
        self._flops = np.empty(n_rows, np.float32)
        self._status = np.empty(n_rows, np.int8)  # index in STATUSES; len(STATUSES): any other
        self._met = np.empty(n_rows, np.bool_)
        self._latency: np.ndarray | None = None  # only for logs whose latency is not done - arrival
        self._counts = dict.fromkeys(("measured", "measured_ok", "met", "not_ok", "retrans", "uplink",
                                      "downlink", "flops_ok"), 0)

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Take one batch (needs SUMMARY_COLUMNS; sample_id only with a comm meter)."""
        col = lambda name: _numpy(batch.column(name))  # noqa: E731
        n, lo = batch.num_rows, self._n
        hi = lo + n
        if hi > self._rid.size:
            raise ValueError(f"SummaryPass got more than the {self._rid.size} rows it was sized for")
        rid = col("request_id")
        if self._rid.dtype == np.int32 and n and (rid.min() < -2**31 or rid.max() >= 2**31):
            self._rid = self._rid.astype(np.int64)
        self._rid[lo:hi] = rid
        arrival, done = col("arrival_s"), col("done_s")
        self._arrival[lo:hi], self._done[lo:hi] = arrival, done
        codes, values = dictionary_codes(batch.column("status"))
        lookup = np.array([STATUSES.index(v) if v in STATUSES else len(STATUSES) for v in values], np.int8)
        status = lookup[codes] if codes.size else codes.astype(np.int8)
        self._status[lo:hi] = status
        self._score[lo:hi] = col("score")
        flops = col("flops")
        if self._flops.dtype == np.float32 and not np.array_equal(flops.astype(np.float32), flops, equal_nan=True):
            self._flops = self._flops.astype(np.float64)
        self._flops[lo:hi] = flops
        met = col("deadline_met")
        self._met[lo:hi] = met
        ok_rows = status == 0
        latency = col("latency_s")
        if self._latency is None and not np.array_equal(latency[ok_rows], (done - arrival)[ok_rows]):
            self._latency = np.where(self._status[:lo] == 0, self._done[:lo] - self._arrival[:lo], np.nan)
            self._latency.resize(self._rid.size, refcheck=False)
        if self._latency is not None:
            self._latency[lo:hi] = latency
        measured = arrival >= self._warmup_s
        ok = ok_rows & measured
        c = self._counts
        c["measured"] += int(measured.sum())
        c["measured_ok"] += int(ok.sum())
        c["met"] += int(met[measured].sum())
        c["not_ok"] += int((measured & ~ok_rows).sum())
        stages = col("stages")
        c["retrans"] += int((stages[ok] >= 2).sum())
        c["uplink"] += int(col("uplink_bytes")[measured].sum())
        c["downlink"] += int(col("downlink_bytes")[measured].sum())
        if self._comm is not None:
            self._comm.add(batch.column("sample_id"), stages, ok)
        self._n = hi

    def finish(self, components: dict[str, Any]) -> dict[str, Any]:
        """The summary body: statistics over every row added, in request-id (arrival) order."""
        n, c, warmup_s = self._n, self._counts, self._warmup_s
        order = _request_order(self._rid[:n])
        self._rid = None
        # one column at a time into request order, so at most one extra column is alive at once
        for name in ("_arrival", "_done", "_status", "_met", "_score", "_flops", "_latency"):
            col = getattr(self, name)
            if col is not None:
                setattr(self, name, col[:n] if order is None else col[:n][order])
        del order, col
        arrival, done, status = self._arrival, self._done, self._status
        measured = arrival >= warmup_s
        ok = (status == 0) & measured
        del measured
        n_meas, n_ok = c["measured"], c["measured_ok"]
        window_end = float(arrival.max()) if n else 0.0
        window_s = window_end - warmup_s
        in_window = (status == 0) & (done >= warmup_s) & (done <= window_end)
        in_time = in_window & self._met
        if self._latency is not None:
            latency = self._latency[ok]
        else:
            latency = done[ok]
            latency -= arrival[ok]
        score = self._score
        flops = self._flops[ok].astype(np.float64, copy=False)
        out: dict[str, Any] = {
            "counts": {
                "arrived": n,
                **{s: int(np.count_nonzero(status == i)) for i, s in enumerate(STATUSES)},
                "measured": n_meas,
                "measured_ok": n_ok,
            },
            "window_s": [warmup_s, window_end],
            "throughput_per_s": float(in_window.sum() / window_s) if window_s > 0 else None,
            "goodput_per_s": float(in_time.sum() / window_s) if window_s > 0 else None,
            # Score-weighted goodput: VQA score delivered within the deadline per second ("correct answers
            # in time"); the objective of load-aware policies, since plain goodput ignores accuracy.
            "score_goodput_per_s": (float(np.nansum(score[in_time].astype(np.float64)) / window_s)
                                    if window_s > 0 else None),
            "latency_s": {"mean": batch_means_ci(latency)}
            | {k: batch_means_ci(latency, stat=lambda a, q=q: np.percentile(a, q)) for k, q in QUANTILES.items()},
            "accuracy": batch_means_ci(score[ok].astype(np.float64)),
            "deadline_met_rate": c["met"] / n_meas if n_meas else None,
            "drop_rate": c["not_ok"] / n_meas if n_meas else None,
            "bytes_per_request": {
                "uplink": float(c["uplink"]) / n_meas if n_meas else None,
                "downlink": float(c["downlink"]) / n_meas if n_meas else None,
            },
            # The seed's two cost measures (sim/commcost.py): additional = (bytes - global-only) /
            # (always-crop - global-only), relative = bytes / global image at JPEG q100; image payloads only.
            "additional_comm_cost": None,
            "relative_comm_cost": None,
            # stages >= 2: a stage-2 pass, or a progressive level beyond the first (stages = levels used).
            "retransmission_rate": c["retrans"] / n_ok if n_ok else None,
            "flops_per_request": float(flops.mean()) if n_ok else None,
        }
        del latency, score, flops, ok, in_window, in_time
        self._score = self._flops = self._latency = self._met = self._status = None
        comm = self._comm
        if comm is not None:
            costs = comm.costs()
            out["additional_comm_cost"] = costs["additional_comm_cost"]
            out["relative_comm_cost"] = costs["relative_comm_cost"]
            out["comm_cost"] = {"jpeg_quality": comm.jpeg_quality, "over": "served (status ok) measured requests",
                                "image_bytes_per_request": costs["image_bytes_per_request"],
                                "relative_comm_cost_reference": ("global image at JPEG quality 100"
                                                                 if comm.reference is not None else
                                                                 "not available: the trace has no JPEG quality 100")}
        stability = assess(arrival, done, (warmup_s, window_end))
        out["stable"] = stability["stable"]
        out["stability"] = stability
        if stability["stable"] is False:  # no steady state: a batch-means CI of latency would be meaningless
            for stat in out["latency_s"].values():
                stat.update({"ci95": [None, None], "half_width": None})
        out["utilisation"] = {name: comp.get("utilisation") for name, comp in components.items()}
        out.update(components)
        return out


def summarize(events: pa.Table, *, warmup_s: float, comm: "CommMeter | None",
              components: dict[str, Any]) -> dict[str, Any]:
    """Steady-state summary of an in-memory event table (needs SUMMARY_COLUMNS, in any row order).

    comm: an empty sim.commcost meter for the seed's additional and relative communication costs over
    the served measured requests; None if not applicable.
    """
    acc = SummaryPass(events.num_rows, warmup_s=warmup_s, comm=comm)
    for batch in events.to_batches():
        acc.add(batch)
    return acc.finish(components)


def summarize_file(path, *, warmup_s: float, comm: "CommMeter | None", components: dict[str, Any]) -> dict[str, Any]:
    """`summarize` of an events.parquet, read row group by row group and only the columns it needs."""
    columns = [c for c in SUMMARY_COLUMNS if comm is not None or c != "sample_id"]
    f = pq.ParquetFile(path, read_dictionary=["sample_id", "status"])
    acc = SummaryPass(f.metadata.num_rows, warmup_s=warmup_s, comm=comm)
    for i in range(f.num_row_groups):
        acc.add(f.read_row_group(i, columns=columns))
    return acc.finish(components)


def _numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy(zero_copy_only=False) if isinstance(column, pa.Array) else \
        column.to_numpy()


def _request_order(rid: np.ndarray) -> np.ndarray | None:
    """The stable sort of the rows by request id; None if they are in that order already."""
    if rid.size == 0 or bool(np.all(rid[1:] >= rid[:-1])):
        return None
    if rid.min() == 0 and rid.max() == rid.size - 1:  # a permutation of 0..n-1: invert it in O(n)
        dtype = np.int32 if rid.size < 2**31 else np.int64
        order = np.full(rid.size, -1, dtype)
        order[rid] = np.arange(rid.size, dtype=dtype)
        if not (order < 0).any():
            return order
    return np.argsort(rid, kind="stable")


def dictionary_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(indices, unique values) of a string column, without one Python object per row."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    return arr.indices.to_numpy(zero_copy_only=False), np.asarray(arr.dictionary.to_pylist(), dtype=object)


def dictionary_values(column: pa.ChunkedArray) -> np.ndarray:
    """A string column as a numpy array of str, built from its dictionary (cheap for few distinct values)."""
    codes, values = dictionary_codes(column)
    return values.astype(str)[codes]



def nested_get(d: Any, *path: str) -> Any:
    """d[path[0]][path[1]]... of a summary.json or scenario dict; None where a level is missing."""
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d
