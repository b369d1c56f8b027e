"""The summary as computed before the bounded pass (whole log in memory), kept verbatim as the
reference that tests/test_summary_stream.py compares the bounded pass against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from edgevlm.sim.commcost import REFERENCE_QUALITY, _image_bytes
from edgevlm.sim.stability import assess
from edgevlm.sim.summary import QUANTILES, SUMMARY_COLUMNS, batch_means_ci, dictionary_codes, dictionary_values
from edgevlm.sim.workload import Workload, policy_quality
from edgevlm.traces.eventlog import STATUSES


@dataclass(frozen=True)
class CommBytes:
    """Per event row: image bytes sent, and what global-only / always-crop would send for that sample."""

    image: np.ndarray
    global_only: np.ndarray
    always_crop: np.ndarray
    reference: np.ndarray | None  # the global image at q100, or None
    jpeg_quality: int

    def costs(self, rows: np.ndarray) -> dict:
        """The two measures over the event rows selected by the boolean mask `rows`."""
        if not rows.any():
            return {"additional_comm_cost": None, "relative_comm_cost": None, "image_bytes_per_request": None}
        img, g, a = self.image[rows].sum(), self.global_only[rows].sum(), self.always_crop[rows].sum()
        return {
            "additional_comm_cost": float((img - g) / (a - g)),
            "relative_comm_cost": (float(img / self.reference[rows].sum()) if self.reference is not None
                                   else None),
            "image_bytes_per_request": float(self.image[rows].mean()),
        }


def comm_bytes(policy_cfg, workload: Workload, events: pa.Table) -> CommBytes | None:
    """Per-row image bytes of `events` for the policy `policy_cfg`; None if the policy sends no image."""
    quality, _ = policy_quality(policy_cfg)
    if quality is None or quality not in workload.qualities:
        return None
    view = workload.at_quality(quality)
    q = view.quality_index(quality)
    rows = _sample_rows(workload, events.column("sample_id"))
    stages = events.column("stages").to_numpy(zero_copy_only=False).astype(np.int64)
    per_sample = _image_bytes(policy_cfg, view, q)
    if per_sample is None:
        return None
    image = per_sample(rows, stages)
    glob = view.global_bytes[:, q][rows].astype(np.float64)
    crop = glob + view.local_bytes[:, q][rows]
    ref = (view.global_bytes[:, view.qualities.index(REFERENCE_QUALITY)][rows].astype(np.float64)
           if REFERENCE_QUALITY in view.qualities else None)
    return CommBytes(image.astype(np.float64), glob, crop, ref, quality)


def _sample_rows(workload: Workload, sample_ids: pa.ChunkedArray) -> np.ndarray:
    codes, ids = dictionary_codes(sample_ids)
    return pd.Index(workload.sample_id).get_indexer(ids)[codes]


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
            **{s: int((status == s).sum()) for s in STATUSES},
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
    stability = assess(arrival, done, (warmup_s, window_end))
    out["stable"] = stability["stable"]
    out["stability"] = stability
    if stability["stable"] is False:  # no steady state: a batch-means CI of latency would be meaningless
        for stat in out["latency_s"].values():
            stat.update({"ci95": [None, None], "half_width": None})
    out["utilisation"] = {name: comp.get("utilisation") for name, comp in components.items()}
    out.update(components)
    return out


