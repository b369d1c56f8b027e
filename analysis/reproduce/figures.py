"""The reproduce figures, one function each, in the report style of analysis/plots.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevlm.analysis import plots
from edgevlm.analysis.plots import plt
from edgevlm.analysis.plots import save as _plots_save
from edgevlm.analysis.reproduce.seed000 import METRIC_COLUMNS, METRIC_LABELS
from edgevlm.analysis.reproduce.seed000 import FIRST_K

_source: str | None = None


def set_source(workload) -> None:
    """Every figure names its trace and source kind bottom-left (a figure may travel alone)."""
    global _source
    p = workload.provenance
    _source = f"trace {workload.path.name} [{p.get('source_kind')}]: {p.get('model_id')}"


def save(fig, path: Path) -> Path:
    if _source:
        fig.text(0.01, 0.005, _source, ha="left", va="bottom", fontsize=7, color="0.35")
    return _plots_save(fig, path)

REF_LINE = dict(color="0.35", linestyle=":", linewidth=1.2)
GATE_COLOUR = "tab:blue"
RANDOM_COLOUR = "0.5"
HD_COLOUR = "purple"


def _lines(ax, s, x_full: float, x0: float = 0.0):
    ax.axhline(s.acc_initial, **REF_LINE)
    ax.axhline(s.acc_full, color="0.35", linestyle="--", linewidth=1.0)
    ax.text(x0, s.acc_initial, " initial inference", va="bottom", fontsize=8, color="0.3")
    ax.text(x0, s.acc_full, " full retransmission", va="bottom", fontsize=8, color="0.3")


def fig4(s, hd: dict | None, path: Path, hd_label: str = "HD model") -> Path:
    """Accuracy vs additional comm cost: the min-entropy gate, random, the initial/full lines, HD."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    c = s.curve("min_entropy")
    ax.plot(c["comm"], c["acc"], color=GATE_COLOUR, label="min-entropy gate (full average)")
    ax.plot([0, 1], [s.acc_initial, s.acc_full], color=RANDOM_COLOUR, linestyle="-.", label="random retransmission")
    _lines(ax, s, 1.0)
    if hd is not None:
        ax.scatter([hd["hd_comm_cost"]], [hd["hd_accuracy"]], marker="D", s=70, color=HD_COLOUR, zorder=4, label=hd_label)
        if hd["gate_comm_cost_beating_hd"] is not None:
            ax.axvline(hd["gate_comm_cost_beating_hd"], color=HD_COLOUR, linestyle=":", linewidth=1,
                       label=f"gate beats HD at {hd['gate_comm_cost_beating_hd']:.2f}")
    ax.set_xlabel("additional communication cost (0 = global only, 1 = always crop)")
    ax.set_ylabel("accuracy (mean VQA score)")
    ax.set_title("Fig. 4 analogue: accuracy vs additional comm cost")
    ax.legend(fontsize=8, loc="best")  # the HD point can sit far right, where a fixed corner would hide it
    return save(fig, path)


def fig5(s, hd: dict | None, path: Path, hd_label: str = "HD model") -> Path:
    """Accuracy vs relative computation (eq. 17-20)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    c = s.curve("min_entropy")
    ax.plot(c["compute"], c["acc"], color=GATE_COLOUR, label="min-entropy gate")
    ax.plot([1, 1 + s.crop_compute], [s.acc_initial, s.acc_full], color=RANDOM_COLOUR, linestyle="-.",
            label="random retransmission")
    _lines(ax, s, 1 + s.crop_compute, 1.0)
    if hd is not None:
        ax.scatter([hd["hd_relative_computation"]], [hd["hd_accuracy"]], marker="D", s=70, color=HD_COLOUR, zorder=4,
                   label=hd_label)
    ax.set_xlabel("relative computation (FLOPs / FLOPs of global-only, eq. 17–20)")
    ax.set_ylabel("accuracy (mean VQA score)")
    ax.set_title("Fig. 5 analogue: accuracy vs computation")
    ax.legend(fontsize=8, loc="best")
    return save(fig, path)


def fig6(s, path: Path) -> Path:
    """The three uncertainty metrics and random on one plot."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for m in METRIC_COLUMNS:
        c = s.curve(m)
        ax.plot(c["comm"], c["acc"], label=METRIC_LABELS[m])
    ax.plot([0, 1], [s.acc_initial, s.acc_full], color=RANDOM_COLOUR, linestyle="-.", label="random")
    ax.axhline(s.target, color="firebrick", linestyle=":", linewidth=1, label="99 % of full retransmission")
    _lines(ax, s, 1.0)
    ax.set_xlabel("additional communication cost")
    ax.set_ylabel("accuracy (mean VQA score)")
    ax.set_title("Fig. 6 analogue: uncertainty metrics (full-sequence average)")
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)


def fig7(s, steps: dict, path: Path) -> Path:
    """(a) mean min-entropy per step, correct vs incorrect; (b) starting token; (c) full average."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    ax = axes[0]
    st = np.array(steps["step"])
    for key, colour in (("correct", "tab:green"), ("incorrect", "tab:red")):
        y = np.array([np.nan if v is None else v for v in steps[key]], dtype=float)
        ax.plot(st, y, marker="o", color=colour, label=key)
    ax.set_xlabel("generation step")
    ax.set_ylabel("mean min-entropy (bits)")
    ax.set_title("(a) per step")
    ax.legend(fontsize=8)
    for ax, k, title in ((axes[1], 1, "(b) starting token"), (axes[2], None, "(c) full-sequence average")):
        v = s.gate_values("min_entropy", k)
        lo, hi = float(v.min()), float(v.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1, 21)
        ax.hist(v[s.correct], bins=edges, density=True, alpha=0.55, color="tab:green", label="correct")
        ax.hist(v[~s.correct], bins=edges, density=True, alpha=0.55, color="tab:red", label="incorrect")
        ax.set_xlabel("min-entropy (bits)")
        ax.set_ylabel("density")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("Fig. 7 analogue: min-entropy of correct vs incorrect stage-1 answers", fontsize=11)
    return save(fig, path)


def fig8(s, path: Path) -> Path:
    """The min-entropy gate averaged over the first k tokens."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for k in FIRST_K:
        c = s.curve("min_entropy", k)
        label = "full average" if k is None else f"{k}-token average"
        for ax in axes:
            ax.plot(c["comm"], c["acc"], label=label)
    for ax in axes:
        ax.axhline(s.target, color="firebrick", linestyle=":", linewidth=1)
        ax.set_xlabel("additional communication cost")
        ax.set_ylabel("accuracy (mean VQA score)")
    axes[0].set_title("(a) overall")
    lo = s.acc_initial + 0.75 * (s.acc_full - s.acc_initial)
    axes[1].set_ylim(lo, s.acc_full + 0.25 * (s.acc_full - s.acc_initial) + 1e-6)
    axes[1].set_title("(b) high-accuracy region (dotted: 99 % of full)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Fig. 8 analogue: first-k-token aggregation", fontsize=11)
    return save(fig, path)


def fig12(d: dict, path: Path) -> Path:
    """Accuracy vs relative comm cost (bytes / global at q100) per JPEG quality."""
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    per_q = d["per_quality"]
    cols = plots.sns.color_palette("viridis", n_colors=len(per_q))
    for p, colour in zip(per_q, cols):
        ax.plot(p["gate_cost"], p["gate_acc"], color=colour, linewidth=1.2, label=f"gate, q{p['quality']}")
    ax.plot([p["global_only"][0] for p in per_q], [p["global_only"][1] for p in per_q], "s--", color="0.45",
            label="global only")
    ax.plot([p["full"][0] for p in per_q], [p["full"][1] for p in per_q], "o--", color="black", label="full retransmission")
    ax.axhline(d["target"], color="firebrick", linestyle=":", linewidth=1, label="99 % of full at q100")
    ax.set_xlabel("relative communication cost (bytes / global image at JPEG q100)")
    ax.set_ylabel("accuracy (mean VQA score)")
    ax.set_title("Fig. 12 analogue: with JPEG compression")
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    return save(fig, path)


def at_scale(table, deadline_s: float | None, path: Path, title: str) -> Path:
    """p95 latency (log) and accuracy within the deadline against the number of devices."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
    names = list(dict.fromkeys(table["variant"]))
    colours = plots.palette(names)
    for name in names:
        g = table[table["variant"] == name].sort_values("devices")
        for ax, col in ((axes[0], "latency_p95_s"), (axes[1], "deadline_accuracy")):
            ax.plot(g["devices"], g[col], marker="o", color=colours[name], label=name)
            bad = g[~g["stable"]]
            ax.scatter(bad["devices"], bad[col], marker="X", s=90, color="firebrick", zorder=4)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("devices sharing the cell (log scale)")
        ax.scatter([], [], marker="X", s=90, color="firebrick", label="unstable (queue grows)")
    if deadline_s:
        axes[0].axhline(deadline_s, color="firebrick", linestyle=":", label=f"deadline {deadline_s:g} s")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("p95 end-to-end latency (s, log scale)")
    axes[0].set_title("p95 latency vs devices")
    axes[1].set_ylabel("accuracy within the deadline\n(mean score, late answers count 0)")
    axes[1].set_title("accuracy within the deadline vs devices")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[1].legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle(title, fontsize=11)
    return save(fig, path)
