"""Report figures: one consistent seaborn style, labelled axes with units, one function per figure.

Each function takes tidy DataFrames, draws one figure, saves a PNG, and returns its path. Policies
keep the same colour in every figure, and a bound (the oracle) is drawn as a bound, not as a policy.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.lines import Line2D

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from edgevlm.analysis.events import PHASES  # noqa: E402

#: 6.4 in x 144 dpi = 920 px: sharp on a laptop screen at the report's width (max 1100 px)
DPI = 144
#: Below this share of requests within the deadline, a variant is marked and kept off the Pareto front.
MIN_DEADLINE_MET = 0.5
UNSTABLE_STYLE = dict(marker="X", s=110, color="firebrick", zorder=5)
BOUND_STYLE = dict(color="0.25", linestyle="--", linewidth=1.2)
SYNTHETIC_STAMP = "SYNTHETIC trace: invented numbers, for tests only"
_stamp: str | None = None


def setup_style(synthetic: bool = False) -> None:
    """The report style; with `synthetic`, every figure carries a SYNTHETIC label (it may travel alone)."""
    global _stamp
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.95)
    _stamp = SYNTHETIC_STAMP if synthetic else None


def palette(names: list[str]) -> dict[str, tuple]:
    """A fixed colour per variant name, stable across figures; tab10 keeps ten names on distinct hues
    (the colorblind palette's orange and ochre read alike), husl beyond ten."""
    colours = sns.color_palette("tab10" if len(names) <= 10 else "husl", n_colors=max(len(names), 1))
    return {n: colours[i % len(colours)] for i, n in enumerate(names)}


def save(fig, path: Path) -> Path:
    """tight_layout, write the PNG, close; stamps SYNTHETIC when setup_style said so."""
    if _stamp:
        fig.text(0.99, 0.005, _stamp, ha="right", va="bottom", fontsize=7.5, color="firebrick")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of points no other point beats: fewer or equal x with higher y (or equal y, less x)."""
    order = np.lexsort((-y, x))
    front, best = [], -np.inf
    for i in order:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return np.array(front, dtype=int)


def _misses_deadline(r) -> bool:
    met = r.get("deadline_met_rate")
    return met is not None and met == met and met < MIN_DEADLINE_MET


def accuracy_vs_bytes(table: pd.DataFrame, path: Path, colours: dict) -> Path:
    """Accuracy against uplink bytes per request: the Pareto front of deployable policies that meet the
    deadline, variants that mostly miss it marked, the oracle as a bound (dashed)."""
    fig, ax = plt.subplots(figsize=(8.6, 4.6))
    pol = table[~table["policy_is_bound"]]
    meets = pol[[not _misses_deadline(r) for _, r in pol.iterrows()]]
    x, y = meets["uplink_bytes_per_request"].to_numpy() / 1e3, meets["accuracy"].to_numpy()
    front = meets.index[pareto_front(x, y)] if len(meets) else []
    if len(front) > 1:
        f = meets.loc[front]
        ax.plot(f["uplink_bytes_per_request"] / 1e3, f["accuracy"], color="0.6", linewidth=2, zorder=1,
                label="Pareto front (policies meeting the deadline)")
    for i, r in pol.iterrows():
        on_front = i in front
        ax.scatter(r["uplink_bytes_per_request"] / 1e3, r["accuracy"], s=80 if on_front else 50,
                   color=colours[r["variant"]], edgecolor="black" if on_front else "none", linewidth=1.4,
                   zorder=3, label=r["variant"])
        if _misses_deadline(r):
            ax.scatter(r["uplink_bytes_per_request"] / 1e3, r["accuracy"], marker="o", s=260, facecolor="none",
                       edgecolor="firebrick", linewidth=1.5, zorder=2)
    for _, r in table[table["policy_is_bound"]].iterrows():
        ax.axhline(r["accuracy"], **BOUND_STYLE)
        ax.scatter(r["uplink_bytes_per_request"] / 1e3, r["accuracy"], marker="*", s=160, color="0.25", zorder=4,
                   label=f"{r['variant']} (bound, not a policy)")
    handles, _ = ax.get_legend_handles_labels()

    handles += [Line2D([], [], label="dashed: oracle accuracy (upper bound)", **BOUND_STYLE),
                Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="black",
                       markersize=8, label="black edge: on the Pareto front"),
                Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="firebrick",
                       markersize=12, label=f"red ring: < {MIN_DEADLINE_MET:.0%} within the deadline (off the front)")]
    ax.set_xlabel("uplink bytes per request (kB)")
    ax.set_ylabel("accuracy (mean VQA score)")
    ax.set_title("Accuracy vs bytes")
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save(fig, path)


def accuracy_vs_compute(table: pd.DataFrame, path: Path, colours: dict) -> Path:
    """Accuracy against server FLOPs per request relative to one global-only server pass (eq. 17-20).

    Only server work counts: a variant that runs on the edge device (full_edge) sits at 0 by definition."""
    fig, ax = plt.subplots(figsize=(8.6, 4.6))
    for _, r in table.iterrows():
        bound = bool(r["policy_is_bound"])
        ax.scatter(r["relative_computation"], r["accuracy"], marker="*" if bound else "o", s=160 if bound else 50,
                   color="0.25" if bound else colours[r["variant"]],
                   label=r["variant"] + (" (bound, not a policy)" if bound else ""), zorder=3)
        if r["relative_computation"] == 0:
            ax.annotate("all work on the edge device:\nno server FLOPs", (0, r["accuracy"]), xytext=(12, -4),
                        textcoords="offset points", fontsize=8, va="top")
    ax.set_xlabel("server computation per request\n(FLOPs / one global-only server pass; edge-device work not counted)")
    ax.set_ylabel("accuracy (mean VQA score)")
    ax.set_title("Accuracy vs server computation")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save(fig, path)


def latency_cdfs(latencies: dict[str, np.ndarray], path: Path, colours: dict, deadline_s: float | None) -> Path:
    """Empirical CDF of end-to-end latency per variant, log time axis, the SLO deadline marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, lat in latencies.items():
        if lat.size:
            x = np.sort(lat)
            ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", color=colours[name], label=name)
    if deadline_s:
        ax.axvline(deadline_s, color="firebrick", linestyle=":", label=f"deadline {deadline_s:g} s")
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency (s, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.01)
    ax.set_title("Latency CDF")
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)


def latency_breakdown(phases: pd.DataFrame, path: Path) -> Path:
    """Mean seconds per phase, stacked per variant (rows: variants, columns: PHASES)."""
    fig, ax = plt.subplots(figsize=(7.2, 0.5 * len(phases) + 2.2))
    colours = sns.color_palette("Set2", n_colors=len(PHASES))
    left = np.zeros(len(phases))
    for colour, phase in zip(colours, PHASES):
        vals = phases[phase].to_numpy()
        ax.barh(phases.index, vals, left=left, color=colour, label=phase.replace("_", " "))
        left += vals
    # An overloaded variant can take 100x the others; clip the axis so the rest stay readable.
    limit = 2.5 * float(np.median(left)) if len(left) else 0.0
    if limit > 0 and left.max() > 2 * limit:
        ax.set_xlim(0, limit)
        for y, total in enumerate(left):
            if total > limit:
                ax.text(limit * 0.98, y, f"{total:,.1f} s →", ha="right", va="center", fontsize=8,
                        bbox=dict(facecolor="white", edgecolor="none", alpha=0.8))
        ax.set_xlabel("mean latency per request (s; longer bars clipped, total shown)")
    else:
        ax.set_xlabel("mean latency per request (s)")
    ax.set_title("Latency breakdown by phase")
    ax.invert_yaxis()
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    return save(fig, path)


def load_curves(table: pd.DataFrame, metric: str, ylabel: str, title: str, path: Path, colours: dict,
                log_y: bool = False, deadline_s: float | None = None) -> Path:
    """A metric against offered load per variant; unstable points (the queue grows) are marked."""
    fig, ax = plt.subplots(figsize=(8.6, 4.6))
    for name, g in table.groupby("variant", sort=False):
        g = g.sort_values("offered_load_per_s")
        ax.plot(g["offered_load_per_s"], g[metric], marker="o", color=colours[name], label=name)
        bad = g[g["stable"].eq(False)] if "stable" in g else g.iloc[:0]
        ax.scatter(bad["offered_load_per_s"], bad[metric], **UNSTABLE_STYLE)
    ax.scatter([], [], label="UNSTABLE: queue grows (value depends on run length)", **UNSTABLE_STYLE)
    if deadline_s:
        ax.axhline(deadline_s, color="firebrick", linestyle=":", label=f"deadline {deadline_s:g} s")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save(fig, path)


def throughput_over_time(series: dict[str, pd.DataFrame], warmup_s: float, path: Path, colours: dict) -> Path:
    """Completions per second over time, one small panel per variant on shared axes."""
    n = max(len(series), 1)
    cols = 2 if n > 1 else 1
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(8.6, 1.7 * rows + 0.8), sharex=True, sharey=True, squeeze=False)
    for ax, (name, s) in zip(axes.flat, series.items()):
        ax.plot(s["t_s"], s["completed_per_s"], color=colours[name], linewidth=1)
        if warmup_s > 0:
            ax.axvspan(0, warmup_s, color="0.85")
        ax.set_title(name, fontsize=9, loc="left")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.supxlabel("simulated time (s)" + ("; grey: warm-up (excluded)" if warmup_s > 0 else ""), fontsize=10)
    fig.supylabel("completed requests/s", fontsize=10)
    fig.suptitle("Throughput over time")
    return save(fig, path)


def tradeoff_curves(curves: pd.DataFrame, path: Path, tokens: str = "5") -> Path:
    """Offline accuracy vs additional comm cost: one line per metric (first k tokens), random, oracle bound."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pooled = curves[curves["group"] == "all"]
    thr = pooled[(pooled["curve"] == "threshold") & (pooled["tokens"] == tokens)]
    for metric, g in thr.groupby("metric", sort=False):
        g = g.sort_values("additional_comm_cost")
        ax.plot(g["additional_comm_cost"], g["accuracy"], label=f"{metric} (k={tokens})")
    rnd = pooled[pooled["curve"] == "random"].sort_values("additional_comm_cost")
    ax.plot(rnd["additional_comm_cost"], rnd["accuracy"], color="0.5", linestyle=":", label="random")
    orc = pooled[pooled["curve"] == "oracle"].sort_values("additional_comm_cost")
    right = float(pooled["additional_comm_cost"].max())  # the bound stays flat past its last vertex
    ax.plot(np.r_[orc["additional_comm_cost"], right], np.r_[orc["accuracy"], orc["accuracy"].iloc[-1]],
            label="oracle (bound)", **BOUND_STYLE)
    ax.set_xlabel("additional comm cost (seed): 0 = global-only, 1 = always-crop")
    ax.set_ylabel("accuracy (mean VQA score)")
    ax.set_title("Offline trade-off (no queueing)")
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)


def kv_use_over_time(kv: dict[str, dict], warmup_s: float, path: Path, colours: dict) -> Path:
    """KV tokens in use over time, one panel per variant with a KV model: the most held on the fullest
    replica in each bin of summary.json's use series, the capacity (dark dashed) and the bins with
    preemptions (red triangles along the time axis)."""
    n = max(len(kv), 1)
    fig, axes = plt.subplots(n, 1, figsize=(8.6, 1.9 * n + 1.2), sharex=True, squeeze=False)
    for ax, (name, k) in zip(axes.flat, kv.items()):
        use = k["use_series"]
        bin_s, tokens = use["bin_s"], np.asarray(use["max_tokens"], float) / 1e3
        t = np.arange(tokens.size + 1) * bin_s
        cap = k["capacity_tokens"] / 1e3
        ax.stairs(tokens, t, baseline=None, color=colours[name], linewidth=1.2,
                  label=f"most in use per bin (peak {k['peak_tokens']:,})")
        ax.axhline(cap, color="0.15", linestyle="--", linewidth=1.0, label=f"capacity {k['capacity_tokens']:,}")
        pre = np.asarray(use.get("preempted") or [], int)
        hit = np.flatnonzero(pre > 0)
        if hit.size:
            ax.plot((hit + 0.5) * bin_s, np.full(hit.size, 0.04), linestyle="", marker="^", markersize=6,
                    color="firebrick", transform=ax.get_xaxis_transform(), clip_on=False,
                    label=f"bins with preemptions ({int(pre.sum()):,} in all)")
        if warmup_s > 0:
            ax.axvspan(0, warmup_s, color="0.88", zorder=0)
        ax.set_ylim(0, max(cap, float(tokens.max(initial=0.0))) * 1.35)
        ax.set_title(f"{name}: {k['allocation']}, bins of {bin_s:g} s", fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper right", ncol=3, frameon=False, handlelength=1.6, columnspacing=1.0)
    fig.supxlabel("simulated time (s)" + ("; grey: warm-up" if warmup_s > 0 else ""), fontsize=10)
    fig.supylabel("KV tokens in use (thousands)", fontsize=10)
    fig.suptitle("KV-cache use over time (fullest replica)")
    return save(fig, path)
