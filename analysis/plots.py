"""Report figures: one consistent seaborn style, labelled axes with units, one function per figure.

Each function takes tidy DataFrames, draws one figure, saves a PNG, and returns its path. Policies
keep the same colour in every figure, and a bound (the oracle) is drawn as a bound, not as a policy.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from edgevlm.analysis.events import PHASES  # noqa: E402

DPI = 110
BOUND_STYLE = dict(color="0.25", linestyle="--", linewidth=1.2)
SYNTHETIC_STAMP = "SYNTHETIC trace: invented numbers, for tests only"
_stamp: str | None = None


def setup_style(synthetic: bool = False) -> None:
    """The report style; with `synthetic`, every figure carries a SYNTHETIC label (it may travel alone)."""
    global _stamp
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.95)
    _stamp = SYNTHETIC_STAMP if synthetic else None


def palette(names: list[str]) -> dict[str, tuple]:
    """A fixed colour per variant name, stable across figures."""
    colours = sns.color_palette("colorblind", n_colors=max(len(names), 1))
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


def accuracy_vs_bytes(table: pd.DataFrame, path: Path, colours: dict) -> Path:
    """Accuracy against uplink bytes per request, the Pareto front of real policies, the oracle as a bound."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pol = table[~table["policy_is_bound"]]
    x, y = pol["uplink_bytes_per_request"].to_numpy() / 1e3, pol["accuracy"].to_numpy()
    front = pareto_front(x, y)
    if len(front) > 1:
        ax.plot(x[front], y[front], color="0.6", linewidth=2, zorder=1, label="Pareto front")
    for _, r in pol.iterrows():
        on_front = r.name in pol.index[front]
        ax.scatter(r["uplink_bytes_per_request"] / 1e3, r["accuracy"], s=70 if on_front else 45,
                   color=colours[r["variant"]], edgecolor="black" if on_front else "none", zorder=3, label=r["variant"])
    for _, r in table[table["policy_is_bound"]].iterrows():
        ax.axhline(r["accuracy"], **BOUND_STYLE)
        ax.scatter(r["uplink_bytes_per_request"] / 1e3, r["accuracy"], marker="*", s=160, color="0.25", zorder=4,
                   label=f"{r['variant']} (bound)")
    ax.set_xlabel("uplink bytes per request (kB)")
    ax.set_ylabel("accuracy (mean VQA score)")
    ax.set_title("Accuracy vs bytes")
    ax.legend(fontsize=8, loc="best")
    return save(fig, path)


def accuracy_vs_compute(table: pd.DataFrame, path: Path, colours: dict) -> Path:
    """Accuracy against FLOPs per request relative to one stage-1 pass (eq. 17-20)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for _, r in table.iterrows():
        bound = bool(r["policy_is_bound"])
        ax.scatter(r["relative_computation"], r["accuracy"], marker="*" if bound else "o", s=160 if bound else 50,
                   color="0.25" if bound else colours[r["variant"]],
                   label=r["variant"] + (" (bound)" if bound else ""), zorder=3)
    ax.set_xlabel("relative computation (FLOPs / FLOPs of global-only)")
    ax.set_ylabel("accuracy (mean VQA score)")
    ax.set_title("Accuracy vs computation")
    ax.legend(fontsize=8, loc="best")
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
                saturation_util: float = 0.95) -> Path:
    """A metric against offered load per variant; points where the GPU or uplink saturates are marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, g in table.groupby("variant", sort=False):
        g = g.sort_values("offered_load_per_s")
        ax.plot(g["offered_load_per_s"], g[metric], marker="o", color=colours[name], label=name)
        sat = g[(g["gpu_utilisation"] >= saturation_util) | (g["uplink_utilisation"] >= saturation_util)]
        ax.scatter(sat["offered_load_per_s"], sat[metric], marker="X", s=90, color="firebrick", zorder=4)
    ax.scatter([], [], marker="X", s=90, color="firebrick", label=f"saturated (util ≥ {saturation_util:.0%})")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    return save(fig, path)


def throughput_over_time(series: dict[str, pd.DataFrame], warmup_s: float, path: Path, colours: dict) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, s in series.items():
        ax.plot(s["t_s"], s["completed_per_s"], color=colours[name], label=name, linewidth=1)
    if warmup_s > 0:
        ax.axvspan(0, warmup_s, color="0.85", label="warm-up (excluded)")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("completed requests/s")
    ax.set_title("Throughput over time")
    ax.legend(fontsize=8, loc="best")
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
