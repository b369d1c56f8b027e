"""Seed 2's 1 Mbit/s experiment and the same cell at scale (issue 20): tables from compare outputs.

`seed004_table(compare_dirs)` gives one row per run: devices N, variant, network latency (uplink +
downlink phases of analysis.events.phase_breakdown) and end-to-end latency (mean, p95), accuracy,
uplink bytes, levels used, and the stability evidence (`stability`). Network latency is read from
the audit log (compare with --audit), so the two-stage crop round trip's messages count too. `level_table(trace, codec_eval)`
gives per-level bytes, accuracy and same-answer rate. `python -m edgevlm.analysis.seed004 --out DIR`
runs scenarios/compare_seed004_1mbps.yaml and compare_seed004_scale.yaml and writes DIR/seed004.md,
DIR/seed004.csv and DIR/seed004_network_latency.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from edgevlm.analysis.events import phase_breakdown, read_events, run_scenario
from edgevlm.sim.audit import LINKS
from edgevlm.sim.compare import run_compare
from edgevlm.traces import atomic_write, read_provenance

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
COMPARES = ("compare_seed004_1mbps.yaml", "compare_seed004_scale.yaml")
#: Latency may grow this much (last third vs first third of the measured window) in a stable run.
DRIFT_LIMIT = 1.25


def stability(run: str | os.PathLike) -> dict:
    """Served vs offered rate in the measured window, and latency drift across it.

    Window: from the warm-up to the last arrival. offered = arrivals in it / its length; served =
    completions in it / its length; `rate_ok` when they differ by less than 1.96 x the Poisson standard
    error of the arrivals plus one request's worth (a request in flight at each end). drift = mean
    latency of the last third of arrivals / the first third; `stable` = rate_ok and drift <= DRIFT_LIMIT
    (a queue that never settles grows its latency with the run and lags completions behind arrivals).
    """
    sc = run_scenario(run)
    warm = float(sc.get("stop", {}).get("warmup_s", 0.0))
    ev = read_events(run, ["arrival_s", "done_s", "latency_s", "status"])
    end = float(ev["arrival_s"].max())
    span = end - warm
    arrived = int(((ev["arrival_s"] >= warm) & (ev["arrival_s"] <= end)).sum())
    ok = ev["status"] == "ok"
    served = int((ok & (ev["done_s"] >= warm) & (ev["done_s"] <= end)).sum())
    tol = 1.96 * math.sqrt(max(arrived, 1)) + 1 + float((ev["status"] != "ok").sum())
    m = ev[ok & (ev["arrival_s"] >= warm)].sort_values("arrival_s")
    k = len(m) // 3
    drift = float(m["latency_s"].iloc[-k:].mean() / m["latency_s"].iloc[:k].mean()) if k else math.nan
    rate_ok = abs(served - arrived) <= tol
    return {"offered_per_s": arrived / span, "served_per_s": served / span, "rate_ok": bool(rate_ok),
            "latency_drift": drift, "stable": bool(rate_ok and drift <= DRIFT_LIMIT)}


def network_s(run: str | os.PathLike, request_ids: np.ndarray) -> np.ndarray:
    """Seconds each request spent on the links: the sum of its messages' transfer times (hand-over to
    arrival, propagation included) from audit.parquet. A request's messages are sequential, so this is
    its uplink + downlink time, including two-stage's box request and crop, which phase_breakdown
    folds into `crop_round_trip`."""

    a = pq.read_table(Path(run) / "audit.parquet", columns=["resource", "request_id", "start_s", "end_s"]).to_pandas()
    a = a[a["resource"].isin(LINKS)]
    per = (a["end_s"] - a["start_s"]).groupby(a["request_id"]).sum()
    return per.reindex(request_ids).fillna(0.0).to_numpy()


def run_row(run: str | os.PathLike) -> dict:
    """Network and end-to-end latency, accuracy and stability of one run directory (run with --audit)."""
    sc = run_scenario(run)
    warm = float(sc.get("stop", {}).get("warmup_s", 0.0))
    ph = phase_breakdown(run, warmup_s=warm)  # same rows as ev: ok requests after the warm-up, in file order
    ev = read_events(run, ["request_id", "arrival_s", "status", "score", "uplink_bytes", "stages", "prog_levels"])
    ev = ev[(ev["status"] == "ok") & (ev["arrival_s"] >= warm)]
    net = pd.Series(network_s(run, ev["request_id"].to_numpy()))
    acc = ev["score"].astype(float)
    row = {"devices": int(sc["clients"]["count"]), "policy": sc["policy"]["kind"],
           "network_mean_s": float(net.mean()), "network_p95_s": float(net.quantile(0.95)),
           "e2e_mean_s": float(ph["latency_s"].mean()), "e2e_p95_s": float(ph["latency_s"].quantile(0.95)),
           "edge_mean_s": float(ph["edge"].mean()), "server_mean_s": float((ph["queue"] + ph["inference"]).mean()),
           "accuracy": float(acc.mean()), "accuracy_ci": float(1.96 * acc.std(ddof=1) / math.sqrt(len(acc))),
           "uplink_bytes": float(ev["uplink_bytes"].mean()),
           "levels_mean": float(ev["prog_levels"].mean()) if (ev["prog_levels"] > 0).any() else math.nan,
           "requests": int(len(ev))}
    row.update(stability(run))
    return row


def seed004_table(compare_dirs: list[str | os.PathLike]) -> pd.DataFrame:
    """One row per run of the given compare output directories (their results.parquet)."""
    rows = []
    for d in compare_dirs:
        res = pd.read_parquet(Path(d) / "results.parquet")
        for _, r in res.iterrows():
            variant = str(r["variant"]).rsplit("_N", 1)[0]
            rows.append({"variant": variant, **run_row(r["run_dir"])})
    return pd.DataFrame(rows).sort_values(["devices", "variant"], kind="stable").reset_index(drop=True)


def level_table(trace: str | os.PathLike, codec_eval: str | os.PathLike | None = None) -> pd.DataFrame:
    """Per codec level: mean cumulative bytes and accuracy over the trace; same-answer rate (answer equal
    to the one on the uncompressed tokens) from a models.codec_eval JSON when given (the trace has no
    per-level answer text), for the codec kind the trace's provenance names, with its sample count."""

    t = pq.read_table(trace, columns=["prog_bytes", "prog_score", "prog_min_entropy"])
    b = np.array(t.column("prog_bytes").to_pylist(), float)
    s = np.array(t.column("prog_score").to_pylist(), float)
    e = np.array(t.column("prog_min_entropy").to_pylist(), float)
    out = pd.DataFrame({"level": np.arange(1, b.shape[1] + 1), "cum_bytes": b.mean(0), "accuracy": s.mean(0),
                        "mean_min_entropy": e.mean(0), "trace_samples": b.shape[0]})
    if codec_eval is not None:
        ce = json.loads(Path(codec_eval).read_text())
        kind = (read_provenance(trace).get("progressive") or {}).get("kind") or next(iter(ce["codecs"]))
        out["same_answer"] = ce["codecs"][kind]["same_answer_as_uncompressed"]
        out["eval_accuracy"] = ce["codecs"][kind]["accuracy"]
        out["eval_samples"] = ce["n_samples"]
        out.attrs["uncompressed_accuracy"] = ce["uncompressed_accuracy"]
    return out


def format_markdown(table: pd.DataFrame) -> str:
    cols = ["devices", "variant", "network_mean_s", "network_p95_s", "e2e_mean_s", "e2e_p95_s", "accuracy",
            "uplink_bytes", "levels_mean", "offered_per_s", "served_per_s", "latency_drift", "stable"]
    t = table[cols].copy()
    for c in ("network_mean_s", "network_p95_s", "e2e_mean_s", "e2e_p95_s", "latency_drift"):
        t[c] = t[c].map(lambda x: f"{x:.3f}")
    t["accuracy"] = [f"{a:.3f} ± {c:.3f}" for a, c in zip(table["accuracy"], table["accuracy_ci"])]
    t["uplink_bytes"] = t["uplink_bytes"].map(lambda x: f"{x:,.0f}")
    t["levels_mean"] = t["levels_mean"].map(lambda x: "" if math.isnan(x) else f"{x:.2f}")
    for c in ("offered_per_s", "served_per_s"):
        t[c] = t[c].map(lambda x: f"{x:.4g}")
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "\n".join("| " + " | ".join(str(v) for v in r) + " |" for r in t.itertuples(index=False))


def format_levels(levels: pd.DataFrame) -> str:
    cols = list(levels.columns)
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return head + "\n".join("| " + " | ".join(fmt(v) for v in r) + " |" for r in levels.itertuples(index=False))


def plot_network(table: pd.DataFrame, path: str | os.PathLike, trace_label: str = "tiny-model trace") -> Path:
    """Network and end-to-end latency vs devices per variant; unstable runs (queue grows) ringed in red."""
    import matplotlib  # defers matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # defers matplotlib

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for v, g in table.groupby("variant", sort=False):
        g = g.sort_values("devices")
        for ax, col in zip(axes, ("network_mean_s", "e2e_mean_s")):
            ax.plot(g["devices"], g[col], marker="o", label=v)
            bad = g[~g["stable"].astype(bool)]
            ax.scatter(bad["devices"], bad[col], s=160, facecolors="none", edgecolors="#b22222", linewidths=1.6,
                       zorder=5, label="_unstable")
            for x, y in zip(bad["devices"], bad[col]):
                ax.annotate(f"{v} UNSTABLE", (x, y), textcoords="offset points", xytext=(-8, -14), ha="right",
                            fontsize=7, color="#b22222")
    for ax, title in zip(axes, ("network latency (uplink + downlink), mean", "end-to-end latency, mean")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("devices N sharing the 20 Mbit/s cell uplink (1 Mbit/s access each)")
        ax.set_ylabel("seconds")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(f"seed004: {trace_label}, LLaVA-1.5-7B costs, i.MX95 NPU edge; red ring: unstable (queue grows, "
                 "latency depends on run length)", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    p = Path(path)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgevlm.analysis.seed004", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--codec-eval", help="models.codec_eval JSON for the same-answer rate per level")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dirs = []
    for name in COMPARES:
        d = out / Path(name).stem
        df = run_compare(SCENARIOS / name, d, progress=False, audit=True)
        atomic_write(d / "results.parquet", lambda tmp, df=df: df.to_parquet(tmp, index=False))
        dirs.append(d)
    table = seed004_table(dirs)
    atomic_write(out / "seed004.csv", lambda tmp: table.to_csv(tmp, index=False))
    md = format_markdown(table)
    first_run = pd.read_parquet(dirs[0] / "results.parquet")["run_dir"].iloc[0]
    trace = run_scenario(first_run).get("trace")
    if trace:
        lv = level_table(trace, args.codec_eval)
        md += f"\n\nPer level (trace {trace}):\n\n" + format_levels(lv)
    atomic_write(out / "seed004.md", lambda tmp: Path(tmp).write_text(md + "\n"))
    label = f"{Path(trace).name} ({read_provenance(trace)['source_kind']})" if trace else "trace unknown"
    plot_network(table, out / "seed004_network_latency.png", label)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
