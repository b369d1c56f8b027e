"""`--at-scale`: the seed's comparison with N devices sharing one cell (N = 1 .. 1000).

Each device keeps the base scenario's per-device request rate and access link; the cell's shared
uplink and the one GPU server are what the devices contend for. For each N every policy runs with
the same seed (common random numbers), `REQUESTS` requests after the base scenario's warm-up.
Ranking: at each N the policies are ordered by accuracy within the deadline (mean score, late or
dropped answers count 0; ties, e.g. all 0 under overload, go to the lower p95 latency); a ranking
change is an N where that order differs from the previous N's.
Unstable points (simruns.stability) are marked: their latency grows with the horizon.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from edgevlm.analysis.reproduce.simruns import run_spec
from tqdm import tqdm

RANKING = ("Ranking: at each N the policies are ordered by accuracy within the deadline (mean score, late or dropped "
           "answers count 0; ties, e.g. all 0 under overload, go to the lower p95 latency); a ranking change is an N "
           "where that order differs from the previous N's. Unstable points are marked: their latency grows with the "
           "horizon.")
DEVICES = (1, 10, 30, 50, 70, 100, 200, 500, 1000)
REQUESTS = 2000


def run(spec: dict, base_dir: Path, out: Path, progress: bool = True, devices=DEVICES,
        requests: int = REQUESTS) -> pd.DataFrame:
    """One compare per N with clients.count = N; one row per (N, variant)."""
    bar = None
    if progress:
        bar = tqdm(total=len(devices), unit="N", desc="at scale", dynamic_ncols=True)
    rows = []
    try:
        for n in devices:
            s = dict(spec, name=f"{spec.get('name', 'at_scale')}_n{n}")
            s["set"] = {**spec.get("set", {}), "clients": {**spec.get("set", {}).get("clients", {}), "count": n}}
            df = run_spec(s, out / f"n{n}", base_dir=base_dir, progress=False,
                          overrides={"stop": {"requests": requests, "time_s": None}})
            rows.append(df.assign(devices=n))
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    return pd.concat(rows, ignore_index=True)


def rankings(table: pd.DataFrame) -> pd.DataFrame:
    """Per N: the policies ordered by accuracy within the deadline, and whether the order changed."""
    out, prev = [], None
    for n, g in table.groupby("devices", sort=True):
        order = list(g.sort_values(["deadline_accuracy", "latency_p95_s"], ascending=[False, True])["variant"])
        out.append({"devices": int(n), "ranking": " > ".join(order), "changed": prev is not None and order != prev,
                    "unstable": ", ".join(g.loc[~g["stable"], "variant"])})
        prev = order
    return pd.DataFrame(out)


def summary(table: pd.DataFrame) -> dict:
    """The headline: where the top policy changes as N grows."""
    r = rankings(table)
    tops = [(row["devices"], row["ranking"].split(" > ")[0]) for _, row in r.iterrows()]
    changes = [f"N={n}: {t}" for i, (n, t) in enumerate(tops) if i == 0 or t != tops[i - 1][1]]
    return {"top_by_devices": dict((str(n), t) for n, t in tops), "top_changes": changes,
            "ranking_changes_at": [int(row["devices"]) for _, row in r.iterrows() if row["changed"]]}
