"""Event-log analysis: per-phase latency, and queue, link and throughput time series.

All of it is rebuilt from the timestamps in events.parquet (DESIGN.md §5). Only the needed columns
are read with pyarrow, so large logs never load whole.

Phases of a completed request add up exactly to its latency:
  edge             edge_done_s - arrival_s (resize + encode)
  uplink           up1_end_s - edge_done_s (global image and question, incl. propagation)
  queue            s1_start_s - up1_end_s, plus s2_start_s - up2_end_s when it cropped
  inference        s1_end_s - s1_start_s, plus s2_end_s - s2_start_s
  crop_round_trip  up2_end_s - s1_end_s: attention pass, bbox down, edge crop, crop up
  downlink         done_s - (s2_end_s, else s1_end_s): the answer down

Progressive requests (their own columns, sim/recorder.py PROG_EVENT_COLUMNS; the crop columns stay
null): each refinement round's level request counts as downlink (prog_down_s), its increment as
uplink (prog_up_s), its GPU wait as queue (prog_queue_s) and its pass as inference (prog_infer_s);
the answer's downlink starts at prog_last_end_s. Network latency = uplink + downlink.
  other            what a policy's own protocol adds beyond these steps; latency minus the
                   phases above (0 for the built-in protocols)

For full-edge requests (inference on the device, then the answer up: s1_end_s <= up1_end_s with
no server pass after it), `edge` is the wait for the device, `inference` the on-device pass and
`uplink` the answer's upload.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

PHASES = ("edge", "uplink", "queue", "inference", "crop_round_trip", "downlink", "other")
_TIME_COLUMNS = ["arrival_s", "edge_done_s", "up1_end_s", "s1_start_s", "s1_end_s", "crop_req_end_s",
                 "up2_end_s", "s2_start_s", "s2_end_s", "done_s", "latency_s", "status"]
_PROG_COLUMNS = ["prog_last_end_s", "prog_down_s", "prog_up_s", "prog_queue_s", "prog_infer_s"]


def events_path(run: str | os.PathLike) -> Path:
    """events.parquet of a run directory (or the file itself)."""
    p = Path(run)
    return p / "events.parquet" if p.is_dir() else p


def read_events(run: str | os.PathLike, columns: list[str]) -> pd.DataFrame:
    return pq.read_table(events_path(run), columns=columns).to_pandas()


def run_scenario(run: str | os.PathLike) -> dict:
    """The scenario stored in the event log's metadata (DESIGN.md §5)."""
    meta = pq.read_schema(events_path(run)).metadata or {}
    return yaml.safe_load(meta.get(b"edgevlm_scenario", b"{}")) or {}


def phase_breakdown(run: str | os.PathLike, *, warmup_s: float = 0.0) -> pd.DataFrame:
    """Seconds per phase for each completed request that arrived at or after warmup_s."""
    names = set(pq.read_schema(events_path(run)).names)
    prog = [c for c in _PROG_COLUMNS if c in names]  # logs written before issue 20 lack them
    ev = read_events(run, _TIME_COLUMNS + prog)
    for c in _PROG_COLUMNS:
        if c not in ev:
            ev[c] = np.nan
    ev = ev[(ev["status"] == "ok") & (ev["arrival_s"] >= warmup_s)]

    def span(a: str, b: str) -> np.ndarray:
        return (ev[b] - ev[a]).fillna(0.0).to_numpy()

    crop = ev["s2_end_s"].notna().to_numpy()
    last_infer = np.where(crop, ev["s2_end_s"], ev["s1_end_s"])
    refined = ev["prog_last_end_s"].notna().to_numpy()
    last_infer = np.where(refined, ev["prog_last_end_s"], last_infer)

    def rounds(c: str) -> np.ndarray:
        return ev[c].fillna(0.0).to_numpy()
    on_edge = (ev["s1_start_s"] < ev["up1_end_s"]).to_numpy()  # full-edge: inference before the uplink
    out = pd.DataFrame({
        "edge": np.where(on_edge, span("arrival_s", "s1_start_s"), span("arrival_s", "edge_done_s")),
        "uplink": np.where(on_edge, span("s1_end_s", "up1_end_s"), span("edge_done_s", "up1_end_s"))
        + rounds("prog_up_s"),
        "queue": np.where(on_edge, 0.0, span("up1_end_s", "s1_start_s") + span("up2_end_s", "s2_start_s"))
        + rounds("prog_queue_s"),
        "inference": span("s1_start_s", "s1_end_s") + span("s2_start_s", "s2_end_s") + rounds("prog_infer_s"),
        "crop_round_trip": np.where(crop, span("s1_end_s", "up2_end_s"), 0.0),
        "downlink": np.where(on_edge, ev["done_s"].to_numpy() - ev["up1_end_s"].to_numpy(),
                             np.nan_to_num(ev["done_s"].to_numpy() - last_infer)) + rounds("prog_down_s"),
    }, index=ev.index)
    out["other"] = ev["latency_s"].to_numpy() - out.sum(axis=1).to_numpy()
    out["latency_s"] = ev["latency_s"].to_numpy()
    return out.reset_index(drop=True)


def _step_series(starts: np.ndarray, ends: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Number of intervals [start, end) covering each grid time."""
    ok = ~(np.isnan(starts) | np.isnan(ends))
    s, e = np.sort(starts[ok]), np.sort(ends[ok])
    return (np.searchsorted(s, grid, side="right") - np.searchsorted(e, grid, side="right")).astype(np.int64)


def queue_length_series(run: str | os.PathLike, dt_s: float = 1.0) -> pd.DataFrame:
    """Requests waiting for the GPU (stage 1 or stage 2 queue) at each multiple of dt_s."""
    ev = read_events(run, ["up1_end_s", "s1_start_s", "up2_end_s", "s2_start_s", "done_s"])
    end = float(np.nanmax(ev["done_s"])) if len(ev) else 0.0
    grid = np.arange(0.0, end + dt_s, dt_s)
    q = (_step_series(ev["up1_end_s"].to_numpy(), ev["s1_start_s"].to_numpy(), grid)
         + _step_series(ev["up2_end_s"].to_numpy(), ev["s2_start_s"].to_numpy(), grid))
    return pd.DataFrame({"t_s": grid, "queue_length": q})


def link_utilisation_series(run: str | os.PathLike, dt_s: float = 1.0, link: str = "uplink") -> pd.DataFrame:
    """Bytes per second a link delivered in each dt_s bin, and that as a share of its capacity.

    A message counts in the bin where it was delivered (its step's end time), so a bin can exceed
    1.0 by up to one message's worth of bytes; use dt_s well above one message time.
    """
    sc = run_scenario(run)
    cap_bps = float(sc.get("network", {}).get(link, {}).get("capacity_mbps", np.nan)) * 1e6
    if link == "uplink":
        ev = read_events(run, ["up1_end_s", "up2_end_s", "uplink_bytes", "done_s"])
        # The event log holds per-request totals; attribute them to the uplink steps' end times.
        t = ev["up2_end_s"].fillna(ev["up1_end_s"]).to_numpy()
        nbytes = ev["uplink_bytes"].to_numpy(dtype=np.float64)
    else:
        ev = read_events(run, ["done_s", "downlink_bytes"])
        t, nbytes = ev["done_s"].to_numpy(), ev["downlink_bytes"].to_numpy(dtype=np.float64)
    end = float(np.nanmax(ev["done_s"])) if len(ev) else 0.0
    edges = np.arange(0.0, end + dt_s, dt_s)
    ok = ~np.isnan(t)
    per_bin, _ = np.histogram(t[ok], bins=np.r_[edges, edges[-1] + dt_s], weights=nbytes[ok])
    bps = per_bin * 8.0 / dt_s
    return pd.DataFrame({"t_s": edges, "bits_per_s": bps, "utilisation": bps / cap_bps})


def throughput_series(run: str | os.PathLike, dt_s: float = 10.0) -> pd.DataFrame:
    """Completed requests per second in each dt_s bin, with the scenario's warm-up end marked."""
    ev = read_events(run, ["done_s", "status"])
    done = ev.loc[ev["status"] == "ok", "done_s"].to_numpy()
    end = float(done.max()) if done.size else 0.0
    edges = np.arange(0.0, end + dt_s, dt_s)
    counts, _ = np.histogram(done, bins=np.r_[edges, edges[-1] + dt_s])
    warmup = float(run_scenario(run).get("stop", {}).get("warmup_s", 0.0))
    return pd.DataFrame({"t_s": edges, "completed_per_s": counts / dt_s, "after_warmup": edges >= warmup})
