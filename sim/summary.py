"""summary.json: steady-state statistics computed from the event log (DESIGN.md §5).

Requests that arrive before `warmup_s` are left out. The measurement window runs from warm-up
to the last arrival. Throughput and goodput count completions inside that window, so an
overloaded system reports its capacity, not its arrival rate. Confidence intervals use batch
means: the measured requests, in arrival order, are cut into `N_BATCHES` contiguous batches, and
a Student-t interval is taken over the batch statistics.
"""

from __future__ import annotations

import math
from typing import Any

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from scipy import stats

if TYPE_CHECKING:
    from edgevlm.sim.commcost import CommBytes

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
    half = float(stats.t.ppf(0.5 + level / 2, n_batches - 1) * batch_stats.std(ddof=1) / math.sqrt(n_batches))
    return {"value": value, "ci95": [value - half, value + half], "half_width": half}


def summarize(events: pa.Table, *, warmup_s: float, comm: "CommBytes | None",
              components: dict[str, Any]) -> dict[str, Any]:
    """Steady-state summary of an event table (needs SUMMARY_COLUMNS, in any row order).

    comm: per event row, the image bytes sent and what global-only / always-crop would send
    (sim.commcost), for the seed's additional and relative communication costs over the served
    measured requests; None if not applicable.
    """
    order = np.argsort(events.column("request_id").to_numpy(), kind="stable")
    ev = {c: events.column(c).to_numpy(zero_copy_only=False)[order] for c in SUMMARY_COLUMNS
          if c not in ("sample_id", "status")}
    status = dictionary_values(events.column("status"))[order]
    arrival = ev["arrival_s"]
    measured = arrival >= warmup_s
    ok = (status == "ok") & measured
    n_meas = int(measured.sum())
    window_end = float(arrival.max()) if arrival.size else 0.0
    window_s = window_end - warmup_s
    done = ev["done_s"]
    in_window = (status == "ok") & (done >= warmup_s) & (done <= window_end)
    latency = ev["latency_s"][ok]
    up = ev["uplink_bytes"][measured].astype(np.float64)
    out: dict[str, Any] = {
        "counts": {
            "arrived": int(arrival.size),
            **{s: int((status == s).sum()) for s in ("ok", "dropped", "expired")},
            "measured": n_meas,
            "measured_ok": int(ok.sum()),
        },
        "window_s": [warmup_s, window_end],
        "throughput_per_s": float(in_window.sum() / window_s) if window_s > 0 else None,
        "goodput_per_s": float((in_window & ev["deadline_met"]).sum() / window_s) if window_s > 0 else None,
        # Score-weighted goodput: VQA score delivered within the deadline per second ("correct answers
        # in time"); the objective of load-aware policies, since plain goodput ignores accuracy.
        "score_goodput_per_s": (float(np.nansum(ev["score"][in_window & ev["deadline_met"]].astype(np.float64))
                                      / window_s) if window_s > 0 else None),
        "latency_s": {"mean": batch_means_ci(latency)}
        | {k: batch_means_ci(latency, stat=lambda a, q=q: np.percentile(a, q)) for k, q in QUANTILES.items()},
        "accuracy": batch_means_ci(ev["score"][ok].astype(np.float64)),
        "deadline_met_rate": float(ev["deadline_met"][measured].mean()) if n_meas else None,
        "drop_rate": float((status[measured] != "ok").mean()) if n_meas else None,
        "bytes_per_request": {
            "uplink": float(up.mean()) if n_meas else None,
            "downlink": float(ev["downlink_bytes"][measured].mean()) if n_meas else None,
        },
        # The seed's two cost measures (sim/commcost.py): additional = (bytes - global-only) /
        # (always-crop - global-only), relative = bytes / global image at JPEG q100; image payloads only.
        "additional_comm_cost": None,
        "relative_comm_cost": None,
        # stages >= 2: a stage-2 pass, or a progressive level beyond the first (stages = levels used).
        "retransmission_rate": float((ev["stages"][ok] >= 2).mean()) if ok.any() else None,
        "flops_per_request": float(ev["flops"][ok].mean()) if ok.any() else None,
    }
    if comm is not None:
        served = np.empty_like(ok)
        served[order] = ok  # back to event-row order, which `comm` follows
        costs = comm.costs(served)
        out["additional_comm_cost"] = costs["additional_comm_cost"]
        out["relative_comm_cost"] = costs["relative_comm_cost"]
        out["comm_cost"] = {"jpeg_quality": comm.jpeg_quality, "over": "served (status ok) measured requests",
                            "image_bytes_per_request": costs["image_bytes_per_request"],
                            "relative_comm_cost_reference": ("global image at JPEG quality 100"
                                                             if comm.reference is not None else
                                                             "not available: the trace has no JPEG quality 100")}
    out["utilisation"] = {name: comp.get("utilisation") for name, comp in components.items()}
    out.update(components)
    return out


def read_summary_columns(path) -> pa.Table:
    """Only the columns the summary needs, strings dictionary-encoded, so large logs stay small in memory."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=list(SUMMARY_COLUMNS), read_dictionary=["sample_id", "status"])


def dictionary_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(indices, unique values) of a string column, without one Python object per row."""
    arr = column.combine_chunks()
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    return arr.indices.to_numpy(zero_copy_only=False), np.asarray(arr.dictionary.to_pylist(), dtype=object)


def dictionary_values(column: pa.ChunkedArray) -> np.ndarray:
    """A string column as a numpy array of str, built from its dictionary (cheap for few distinct values)."""
    codes, values = dictionary_codes(column)
    return values.astype(str)[codes]

