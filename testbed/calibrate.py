"""Calibration: the server's real pass times into the simulator's `profile` latency CSV, and the
edge's prep and crop times.

Each sample of the trace is run through exactly the functions the server's GPU thread runs (on the
JPEG-decoded global image, as the server sees it), `repeats` times, keeping the median:
stage 1 (encode + greedy decode), the attention pass (two attention forwards + box search) and
stage 2. The profile CSV (columns phase,batch,tokens,seconds) is then built so that the simulator's
Profile model (prefill(tokens) + (out_tokens - 1) x decode) reproduces the measured means:
  decode  one row: the median per-token decode time of stage 1;
  prefill knots at the simulator's token counts of each pass: visual + 12 (the attention pass,
          sim.engine.GENERIC_PROMPT_TOKENS), visual + prompt (stage 1, at the min and max prompt),
          2 x visual + prompt (stage 2), each the measured pass time minus its decode steps.
The server runs batch size 1 (no batching), so only batch-1 rows are measured.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgevlm.models.boxsearch import search_box
from edgevlm.sim.engine import GENERIC_PROMPT_TOKENS
from edgevlm.traces.io import atomic_write


def measure(backend, samples: Sequence[Any], workload, quality: int, repeats: int = 3) -> dict[str, Any]:
    """Per-sample median times of each pass, plus edge prep/crop times."""
    from PIL import Image  # defers PIL

    from edgevlm.models.extract import RESAMPLE, load_image  # defers PIL
    from edgevlm.models.jpeg import jpeg_encode  # defers PIL

    px = backend.vision_input_px
    rows = []
    for i, s in enumerate(samples):
        orig = load_image(s)
        w, h = orig.size
        t1, ta, t2, tprep, tcrop, dec = [], [], [], [], [], []
        for _ in range(repeats):
            t = time.perf_counter()
            jpeg = jpeg_encode(orig.resize((px, px), RESAMPLE), quality)
            tprep.append(time.perf_counter() - t)
            g = Image.open(io.BytesIO(jpeg)).convert("RGB")
            t = time.perf_counter()
            gen1 = backend.generate(backend.encode([g], s.question))
            t1.append(time.perf_counter() - t)
            if gen1.t_decode_token_s:
                dec.append(gen1.t_decode_token_s)
            t = time.perf_counter()
            maps = backend.attention_to_image(g, s.question)
            box = search_box(maps.relative, w, h, px, **backend.settings.box_kwargs())
            ta.append(time.perf_counter() - t)
            t = time.perf_counter()
            local_jpeg = jpeg_encode(orig.crop(box.as_tuple()).resize((px, px), RESAMPLE), quality)
            tcrop.append(time.perf_counter() - t)
            loc = Image.open(io.BytesIO(local_jpeg)).convert("RGB")
            t = time.perf_counter()
            gen2 = backend.generate(backend.encode([g, loc], s.question))
            t2.append(time.perf_counter() - t)
        rows.append({"sample": i, "s1_s": statistics.median(t1), "att_s": statistics.median(ta),
                     "s2_s": statistics.median(t2), "prep_s": statistics.median(tprep),
                     "crop_s": statistics.median(tcrop), "decode_s": statistics.median(dec) if dec else 0.0,
                     "s1_tokens": len(gen1.tokens), "s2_tokens": len(gen2.tokens)})
    return {"rows": rows, "visual_tokens": int(backend.visual_tokens_per_image)}


def with_server_times(meas: dict[str, Any], server_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`meas` with each sample's pass times replaced by those the running server measured (idle, one
    request at a time); the in-process decode time is scaled by the stage-1 ratio. Samples the server
    did not time keep their in-process values, scaled likewise."""
    rows = {r["sample"]: dict(r) for r in meas["rows"]}
    ratios = [s["s1_s"] / rows[s["sample"]]["s1_s"] for s in server_rows if s["s1_s"]]
    scale = float(np.median(ratios)) if ratios else 1.0
    for r in rows.values():
        r["in_process"] = {k: r[k] for k in ("s1_s", "att_s", "s2_s", "decode_s")}
        for k in ("s1_s", "att_s", "s2_s", "decode_s"):
            r[k] = r[k] * scale
    for s in server_rows:
        for k in ("s1_s", "att_s", "s2_s"):
            if s.get(k):
                rows[s["sample"]][k] = s[k]
    return {**meas, "rows": [rows[k] for k in sorted(rows)], "server_scale": scale}


def profile_rows(meas: dict[str, Any], workload) -> list[tuple[str, int, int, float]]:
    """(phase, batch, tokens, seconds) rows reproducing the measured mean pass times (see module doc)."""

    rows = meas["rows"]
    n_v = meas["visual_tokens"]
    decode = float(np.median([r["decode_s"] for r in rows]))
    prompt = workload.table.column("prompt_tokens").to_numpy()
    t1 = workload.s1_tokens
    t2 = workload.s2_tokens
    # Prefill share of each pass: the measured time minus the decode steps the simulator will add.
    pre1 = np.mean([r["s1_s"] - (t1[r["sample"]] - 1) * decode for r in rows])
    pre2 = np.mean([r["s2_s"] - (t2[r["sample"]] - 1) * decode for r in rows])
    att = float(np.mean([r["att_s"] for r in rows]))
    knots: dict[int, float] = {n_v + GENERIC_PROMPT_TOKENS: att}
    for tok in (n_v + int(prompt.min()), n_v + int(prompt.max())):
        knots.setdefault(tok, float(pre1))
    for tok in (2 * n_v + int(prompt.min()), 2 * n_v + int(prompt.max())):
        knots.setdefault(tok, float(pre2))
    out = [("prefill", 1, tok, max(sec, 1e-6)) for tok, sec in sorted(knots.items())]
    out.append(("decode", 1, n_v + int(prompt.mean()), max(decode, 1e-6)))
    return out


def write_profile(rows, path: str | Path) -> Path:
    text = "phase,batch,tokens,seconds\n" + "".join(f"{p},{b},{t},{s:.6f}\n" for p, b, t, s in rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return Path(path)


def mean_service_s(meas: dict[str, Any], crop: Sequence[bool]) -> float:
    """Mean GPU seconds per request when sample i is cropped iff crop[i] (uniform sample draw)."""
    per = [r["s1_s"] + (r["att_s"] + r["s2_s"] if crop[r["sample"]] else 0.0) for r in meas["rows"]]
    return float(np.mean(per))


def pass_records(frames, attention_passes, workload) -> list[tuple[float, float, str, int]]:
    """(start_s, seconds, pass kind, trace row) of every pass the server stamped in one run (testbed event
    frames, pandas, and the edge's attention pass records), in start order."""
    sid_row = {sid: i for i, sid in enumerate(workload.sample_id)}
    out = []
    for df in frames:
        df = df[df.status == "ok"]
        out += [(a, b - a, "s1", sid_row[sid]) for sid, a, b in zip(df.sample_id, df.s1_start_s, df.s1_end_s)]
        two = df[df.stages == 2]
        out += [(a, b - a, "s2", sid_row[sid]) for sid, a, b in zip(two.sample_id, two.s2_start_s, two.s2_end_s)]
    out += [(p["start_s"], p["end_s"] - p["start_s"], "att", p["sample"]) for p in attention_passes]
    return sorted(out)


#: lag bins (s) for the speed fit's covariances, and the drift correlation times it tries
LAG_EDGES_S = (0.0, 0.15, 0.5, 1.0, 2.0)
TAUS_S = tuple(float(t) for t in np.geomspace(0.05, 10.0, 45))


def speed_fit(runs: list[list[tuple[float, float, str, int]]]) -> dict[str, float]:
    """The `lognormal` server speed model (sim/speed.py) of measured passes: each pass's log ratio to
    its (kind, sample) median over all runs, less its run's mean; jitter_sigma^2 + drift_sigma^2 = their
    variance, and drift_sigma^2 exp(-lag / drift_tau_s) the least-squares fit to their covariance at
    lags 0-2 s (pairs within one run). Centring each run keeps a run that went slow as a whole (the
    host's speed minutes apart, which no model of a point predicts) from reading as a strong slow
    drift. Also `mean_ratio` = the mean pass time over the median one, over all runs, which turns the
    profile's per-sample medians into means (the speed model keeps means)."""
    runs = [run for run in runs if run]
    by_key: dict[tuple[str, int], list[float]] = {}
    for run in runs:
        for _, d, kind, row in run:
            by_key.setdefault((kind, row), []).append(d)
    med = {k: float(np.median(v)) for k, v in by_key.items()}
    logs = [np.array([np.log(d / med[(kind, row)]) for _, d, kind, row in run]) for run in runs]
    allx = np.concatenate(logs) if logs else np.zeros(0)
    if allx.size < 8:
        return {"jitter_sigma": 0.0, "drift_sigma": 0.0, "drift_tau_s": 1.0, "mean_ratio": 1.0, "passes": int(allx.size)}
    centred = [x - x.mean() for x in logs]
    var = float(np.concatenate(centred).var())
    nb = len(LAG_EDGES_S) - 1
    sums, counts, lag_sums = np.zeros(nb), np.zeros(nb), np.zeros(nb)
    for run, x in zip(runs, centred):
        t = np.array([r[0] for r in run])
        for i in range(len(t) - 1):
            lag = t[i + 1:] - t[i]
            b = np.searchsorted(LAG_EDGES_S, lag, side="right") - 1
            ok = b < nb
            np.add.at(sums, b[ok], x[i] * x[i + 1:][ok])
            np.add.at(counts, b[ok], 1)
            np.add.at(lag_sums, b[ok], lag[ok])
    use = counts >= 20
    cov, lag_mid, w = sums[use] / counts[use], lag_sums[use] / counts[use], counts[use]
    best = (np.inf, 0.0, 1.0)
    for tau in TAUS_S:
        e = np.exp(-lag_mid / tau)
        d = float(np.clip(np.sum(w * cov * e) / max(np.sum(w * e * e), 1e-12), 0.0, var))
        sse = float(np.sum(w * (cov - d * e) ** 2))
        if sse < best[0]:
            best = (sse, d, tau)
    _, drift2, tau = best
    return {"jitter_sigma": float(np.sqrt(max(var - drift2, 0.0))), "drift_sigma": float(np.sqrt(drift2)),
            "drift_tau_s": float(tau), "mean_ratio": float(np.mean(np.exp(allx))), "passes": int(allx.size)}


def mean_times(meas: dict[str, Any], mean_ratio: float, start_delay_s: float) -> dict[str, Any]:
    """`meas` with each pass time turned from a typical (median) one into the mean server occupancy:
    times `mean_ratio`, plus the server's hand-off time to its model thread per pass."""
    rows = []
    for r in meas["rows"]:
        r = dict(r)
        for k in ("s1_s", "att_s", "s2_s"):
            r[k] = r[k] * mean_ratio + start_delay_s
        rows.append(r)
    return {**meas, "rows": rows}
