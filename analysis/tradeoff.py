"""`edgevlm tradeoff TRACE`: the offline accuracy / communication / computation trade-off of the
crop gates, straight from a trace (no queueing), as in the seed paper's figures and Table II.

Definitions (one request per trace row, `jpeg_quality` q, policy crops the set C):
  accuracy                mean over rows of s2_score if cropped else s1_score
  additional comm cost    sum_{i in C} local_bytes[i,q] / sum_i local_bytes[i,q]: the seed's definition,
                          (bytes - global-only) / (always-crop - global-only) at the same quality, so
                          global-only is 0 and always-crop exactly 1 (as summary.json's additional_comm_cost)
  relative computation    1 + r·(F(N) + F(2N)) / F(N), r = |C|/n, with F(t) = (24 t d² + 4 t² d) L (eq. 17):
                          stage 1 is F(N) on N visual tokens (eq. 18), a crop adds the attention pass F(N)
                          and stage 2 F(2N) (eq. 19), relative to global-only (eq. 20); the simulator's
                          FLOPs accounting, so 1 = global-only and 1 + (F(N)+F(2N))/F(N) = always-crop

Curves (tidy table, one row per point, `group` = a question type or "all"):
  threshold      every metric (min_entropy, shannon, margin) x tokens k (1, 5, all): eta swept over
                 the quantiles of the gate value (`--points`); crop when value >= eta (margin: <=).
  random         crop with probability p, in expectation (exact, no sampling noise): p = 0..1.
  oracle         the bound at each comm cost: crops only rows where s2 > s1, best gain per byte first,
                 with fractional filling between rows (the LP relaxation), so no gate with comm cost <= c
                 can beat it; it ends at the `oracle` policy (all rows with s2 > s1), then stays flat.
  oracle_compute the same bound on the computation axis (crops cost equal FLOPs: best gain first).

Separability (Table II) of the stage-1 gate value for correct (s1_score >= --correct-min) versus
wrong answers: histograms with `--bins` equal-width bins spanning the pooled [min, max] of that
metric and k (the same edges for every question type); p, q the normalised histograms;
overlap = sum min(p, q) (1 = identical), Bhattacharyya distance = -ln sum sqrt(p q) (0 = identical).
AUROC = P(value of a wrong answer ranks as more uncertain than a correct one), ties 1/2.

The JSON summary gives, per metric and k, the additional comm cost needed to reach 99% of
always-crop accuracy, computed exactly over every distinct threshold (the table's eta grid is a
sample of those), plus the same for random and the oracle bound.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from edgevlm.commands import Commands, add_output_options
from edgevlm.sim.errors import UserError
from edgevlm.sim.profiles import MODELS
from edgevlm.sim.runner import write_json
from edgevlm.sim.workload import V1_QUALITY_NOTE, Workload
from edgevlm.traces import TraceError, atomic_write
from edgevlm.sim.runner import resolve_trace

from edgevlm.traces.uncertainty import METRIC_COLUMNS, higher_is_uncertain, uncertain

METRICS = METRIC_COLUMNS
TOKENS: tuple[int | str, ...] = (1, 5, "all")
POOLED = "all"


# ---------------------------------------------------------------- per-group curves


class Group:
    """The arrays of one group of rows that every curve needs."""

    def __init__(self, s1: np.ndarray, s2: np.ndarray, crop_bytes: np.ndarray, crop_compute: float):
        self.n = len(s1)
        self.s1, self.s2 = s1, s2
        self.gain = s2 - s1
        self.crop_bytes = crop_bytes.astype(np.float64)
        #: Always-crop minus global-only bytes: the unit of the seed's additional comm cost.
        self.base_total = float(self.crop_bytes.sum())
        self.crop_compute = crop_compute  # (F(N) + F(2N)) / F(N): relative compute of one crop
        self.acc_global = float(s1.mean())
        self.acc_crop = float(s2.mean())

    def point(self, crop: np.ndarray) -> tuple[float, float, float, float]:
        """(retransmission rate, accuracy, additional comm cost, relative computation) of a crop mask."""
        r = crop.mean()
        acc = np.where(crop, self.s2, self.s1).mean()
        return float(r), float(acc), float(self.crop_bytes[crop].sum() / self.base_total), 1.0 + r * self.crop_compute

    def threshold_prefix(self, values: np.ndarray, higher_is_uncertain: bool):
        """Exact curve over every distinct threshold: (eta, rate, acc, comm) arrays, from no crops to all.

        Rows are cropped most-uncertain first; ties enter together (cut points only where the value changes).
        """
        key = -values if higher_is_uncertain else values
        order = np.argsort(key, kind="stable")
        sv = key[order]
        cut = np.flatnonzero(np.r_[sv[1:] != sv[:-1], True]) + 1  # prefix lengths at value changes
        gain_c = np.r_[0.0, np.cumsum(self.gain[order])]
        bytes_c = np.r_[0.0, np.cumsum(self.crop_bytes[order])]
        counts = np.r_[0, cut]
        eta = np.r_[np.inf if higher_is_uncertain else -np.inf, values[order][cut - 1]]
        return (eta, counts / self.n, self.acc_global + gain_c[counts] / self.n, bytes_c[counts] / self.base_total)

    def oracle_vertices(self, by: str = "comm") -> tuple[np.ndarray, np.ndarray]:
        """Vertices (x, accuracy) of the oracle bound, x = comm cost ('comm') or crop count ('compute')."""
        pos = np.flatnonzero(self.gain > 0)
        if by == "comm":
            w = self.crop_bytes[pos]
            order = np.argsort(-(self.gain[pos] / np.maximum(w, 1e-12)), kind="stable")
            x = np.r_[0.0, np.cumsum(w[order])] / self.base_total
        else:
            order = np.argsort(-self.gain[pos], kind="stable")
            x = np.arange(len(pos) + 1) / self.n
        acc = self.acc_global + np.r_[0.0, np.cumsum(self.gain[pos][order])] / self.n
        return x, acc

    def oracle_at(self, comm: np.ndarray | float) -> np.ndarray:
        """The oracle bound's accuracy at additional comm cost `comm` (flat past the oracle policy)."""
        x, acc = self.oracle_vertices("comm")
        return np.interp(comm, x, acc)

    def cost_to_reach(self, target: float, comm: np.ndarray, acc: np.ndarray) -> float | None:
        """The least comm cost among curve points with accuracy >= target (None if none reaches it)."""
        ok = acc >= target - 1e-12
        return float(comm[ok].min()) if ok.any() else None


def _gate_values(workload, metric: str, tokens) -> np.ndarray:
    return workload.first_k_mean(METRICS[metric], None if tokens == "all" else int(tokens))


def separability(values: np.ndarray, correct: np.ndarray, edges: np.ndarray,
                 higher_is_uncertain: bool = True) -> dict[str, float]:
    """Histogram overlap, Bhattacharyya distance and AUROC of correct vs wrong gate values."""
    n_c, n_w = int(correct.sum()), int((~correct).sum())
    out = {"n_correct": n_c, "n_wrong": n_w, "overlap": None, "bhattacharyya": None, "auroc": None}
    if n_c == 0 or n_w == 0:
        return out
    v = np.clip(values, edges[0], edges[-1])
    p = np.histogram(v[correct], bins=edges)[0] / n_c
    q = np.histogram(v[~correct], bins=edges)[0] / n_w
    bc = float(np.sqrt(p * q).sum())
    out["overlap"] = float(np.minimum(p, q).sum())
    out["bhattacharyya"] = -math.log(bc) if bc > 0 else math.inf

    ranks = rankdata(values if higher_is_uncertain else -values)  # average ranks: ties count 1/2
    out["auroc"] = float((ranks[~correct].sum() - n_w * (n_w + 1) / 2) / (n_w * n_c))
    return out


def tradeoff(workload, *, jpeg_quality: int = 75, model: str = "llava-1.5-7b", points: int = 101,
             bins: int = 20, correct_min: float = 0.5, tokens=TOKENS) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(curves table, separability table, JSON summary) of a Workload; see the module docstring."""

    prof = MODELS[model]
    n_v = prof.visual_tokens
    crop_compute = (prof.flops(n_v) + prof.flops(2 * n_v)) / prof.flops(n_v)
    workload = workload.at_quality(jpeg_quality, "--jpeg-quality")  # a v2 trace: values measured at q
    q = workload.quality_index(jpeg_quality, "--jpeg-quality")
    crop = workload.local_bytes[:, q].astype(np.float64)
    s1, s2 = workload.s1_score.astype(np.float64), workload.s2_score.astype(np.float64)
    qt_col = "question_type"
    qtypes = (np.array(workload.table.column(qt_col).to_pylist(), dtype=object)
              if qt_col in workload.table.column_names else np.full(workload.n, None, dtype=object))
    groups = {POOLED: np.ones(workload.n, dtype=bool)}
    for t in sorted({t for t in qtypes if t is not None}):
        groups[t] = qtypes == t

    curve_rows: list[dict[str, Any]] = []
    sep_rows: list[dict[str, Any]] = []
    summary_groups: dict[str, Any] = {}
    values = {(m, k): _gate_values(workload, m, k) for m in METRICS for k in tokens}
    edges = {}
    for (m, k), v in values.items():
        lo, hi = float(v.min()), float(v.max())
        edges[(m, k)] = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)

    for gname, mask in groups.items():
        g = Group(s1[mask], s2[mask], crop[mask], crop_compute)
        target = 0.99 * g.acc_crop
        gsum: dict[str, Any] = {"rows": g.n, "accuracy_global_only": g.acc_global, "accuracy_always_crop": g.acc_crop,
                                "target_accuracy": target, "always_crop_comm_cost": float(crop[mask].sum() / g.base_total),
                                "comm_cost_to_99pct_always_crop": {}}
        reach = gsum["comm_cost_to_99pct_always_crop"]
        common = {"group": gname}
        for (m, k), v_all in values.items():
            v = v_all[mask]
            hi_unc = higher_is_uncertain(m)
            eta, rate, acc, comm = g.threshold_prefix(v, hi_unc)
            reach.setdefault(m, {})[str(k)] = g.cost_to_reach(target, comm, acc)
            grid = np.unique(np.quantile(v, np.linspace(0, 1, points)))
            grid = np.r_[grid, np.inf if hi_unc else -np.inf]
            for e in grid:
                cm = uncertain(v, m, e)
                r, a, c, comp = g.point(cm)
                curve_rows.append({**common, "curve": "threshold", "metric": m, "tokens": str(k), "eta": float(e),
                                   "p": None, "retransmission_rate": r, "accuracy": a, "additional_comm_cost": c,
                                   "relative_computation": comp})
            correct = s1[mask] >= correct_min
            sep_rows.append({**common, "metric": m, "tokens": str(k), "bins": bins, "correct_min_score": correct_min,
                             **separability(v, correct, edges[(m, k)], hi_unc)})
        for m in METRICS:
            best = min(((c, k) for k, c in reach[m].items() if c is not None), default=None)
            reach[m]["best"] = None if best is None else {"tokens": best[1], "comm_cost": best[0]}
        all_crop_comm = gsum["always_crop_comm_cost"]
        for p in np.linspace(0, 1, points):
            curve_rows.append({**common, "curve": "random", "metric": None, "tokens": None, "eta": None, "p": float(p),
                               "retransmission_rate": float(p),
                               "accuracy": g.acc_global + p * (g.acc_crop - g.acc_global),
                               "additional_comm_cost": p * all_crop_comm, "relative_computation": 1 + p * crop_compute})
        gain = g.acc_crop - g.acc_global
        p_needed = (target - g.acc_global) / gain if gain > 0 else (0.0 if target <= g.acc_global else None)
        reach["random"] = None if p_needed is None or p_needed > 1 else max(0.0, p_needed) * all_crop_comm
        x, acc = g.oracle_vertices("comm")
        cnt = np.r_[0, np.arange(1, len(x))] / g.n
        for xi, ai, ri in zip(x, acc, cnt):
            curve_rows.append({**common, "curve": "oracle", "metric": None, "tokens": None, "eta": None, "p": None,
                               "retransmission_rate": float(ri), "accuracy": float(ai),
                               "additional_comm_cost": float(xi), "relative_computation": 1 + ri * crop_compute})
        reach["oracle"] = g.cost_to_reach(target, x, acc)
        if reach["oracle"] is not None:  # the bound fills fractionally: interpolate the crossing
            j = int(np.searchsorted(acc, target - 1e-12))
            if 0 < j < len(x) and acc[j] > acc[j - 1]:
                reach["oracle"] = float(x[j - 1] + (target - acc[j - 1]) / (acc[j] - acc[j - 1]) * (x[j] - x[j - 1]))
        xr, accr = g.oracle_vertices("compute")
        for ri, ai in zip(xr, accr):
            curve_rows.append({**common, "curve": "oracle_compute", "metric": None, "tokens": None, "eta": None,
                               "p": None, "retransmission_rate": float(ri), "accuracy": float(ai),
                               "additional_comm_cost": None, "relative_computation": 1 + ri * crop_compute})
        gsum["oracle_policy"] = dict(zip(("retransmission_rate", "accuracy", "additional_comm_cost",
                                          "relative_computation"), g.point(g.gain > 0)))
        summary_groups[gname] = gsum

    curves = pd.DataFrame(curve_rows)
    sep = pd.DataFrame(sep_rows)
    prov = workload.provenance
    summary = {
        "trace": {"path": str(workload.path), "source_kind": prov.get("source_kind"), "model_id": prov.get("model_id"),
                  "dataset_id": prov.get("dataset_id"), "rows": workload.n,
                  "format_version": prov.get("format_version"),
                  **({} if workload.per_quality else {"note": V1_QUALITY_NOTE})},
        "synthetic": prov.get("source_kind") == "synthetic",
        "jpeg_quality": jpeg_quality, "model": model, "points": points,
        "separability_binning": {"bins": bins, "edges": "equal width over the pooled [min, max] of each metric and k",
                                 "correct": f"s1_score >= {correct_min}"},
        "relative_computation_per_crop": crop_compute,
        "pooled": summary_groups[POOLED],
        "by_question_type": {k: v for k, v in summary_groups.items() if k != POOLED},
        "separability": {f"{r['metric']}/k={r['tokens']}": {"overlap": r["overlap"], "bhattacharyya": r["bhattacharyya"],
                                                            "auroc": r["auroc"]}
                         for r in sep_rows if r["group"] == POOLED},
    }
    return curves, sep, summary


# ---------------------------------------------------------------- CLI


def _cmd_tradeoff(args: argparse.Namespace) -> int:
    if args.points < 2:
        raise UserError("--points: must be at least 2")
    if args.bins < 1:
        raise UserError("--bins: must be a positive integer")

    if args.model not in MODELS:
        raise UserError(f"--model: unknown model {args.model!r}; allowed: {', '.join(MODELS)}")

    try:
        workload = Workload.load(resolve_trace(args.trace, None))
    except (TraceError, FileNotFoundError, OSError) as exc:
        raise UserError(f"trace: {exc}") from None
    curves, sep, summary = tradeoff(workload, jpeg_quality=args.jpeg_quality, model=args.model, points=args.points,
                                    bins=args.bins, correct_min=args.correct_min)
    out = Path(args.out) if args.out else Path("runs") / ("tradeoff-" + Path(args.trace).stem)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("tradeoff", curves), ("separability", sep)):
        atomic_write(out / f"{name}.parquet", lambda tmp, df=df: df.to_parquet(tmp, index=False))
        if args.csv:
            atomic_write(out / f"{name}.csv", lambda tmp, df=df: df.to_csv(tmp, index=False))
    write_json(out / "tradeoff.json", summary)
    if not args.quiet:
        print(format_summary(summary))
        print(f"wrote {out / 'tradeoff.parquet'}, {out / 'separability.parquet'}, {out / 'tradeoff.json'}")
    return 0


def format_summary(s: dict) -> str:
    def f(v):
        return "   -  " if v is None else f"{v:6.3f}"

    p = s["pooled"]
    label = "  [SYNTHETIC trace: invented numbers, tests only]" if s["synthetic"] else ""
    note = f"  ({s['trace']['note']})" if s["trace"].get("note") else ""
    lines = [f"trace {Path(s['trace']['path']).name}: {s['trace']['rows']} rows, q={s['jpeg_quality']}{label}{note}",
             f"accuracy: global-only {p['accuracy_global_only']:.3f}, always-crop {p['accuracy_always_crop']:.3f} "
             f"(additional comm cost {p['always_crop_comm_cost']:.3f}); target 99% = {p['target_accuracy']:.3f}",
             "comm cost to reach the target (pooled):   k=1     k=5     all    | overlap  Bhatt.  AUROC (k=all)"]
    reach = p["comm_cost_to_99pct_always_crop"]
    for m in METRICS:
        sp = s["separability"][f"{m}/k=all"]
        lines.append(f"  {m:<14}{'':24}" + "  ".join(f(reach[m][str(k)]) for k in TOKENS)
                     + f"  | {f(sp['overlap'])}  {f(sp['bhattacharyya'])}  {f(sp['auroc'])}")
    lines.append(f"  {'random':<38}{f(reach['random'])}")
    lines.append(f"  {'oracle (bound)':<38}{f(reach['oracle'])}")
    return "\n".join(lines)


def register(commands: Commands) -> None:
    p = commands.add(
        "tradeoff", _cmd_tradeoff, "offline accuracy vs comm cost vs computation of the crop gates (no queueing)",
        "Sweep the entropy gate (min_entropy, shannon, margin; k = 1, 5, all) on a trace and write the accuracy / "
        "additional comm cost / relative computation curves with the random and oracle curves (tradeoff.parquet), "
        "the correct-vs-wrong separability per metric and question type (separability.parquet), and a JSON "
        "summary (tradeoff.json). See analysis/tradeoff.py.")
    p.add_argument("trace", help="trace Parquet file")
    p.add_argument("--jpeg-quality", type=int, default=75, help="JPEG quality of the byte sizes (default 75)")
    p.add_argument("--model", default="llava-1.5-7b", help="model profile for FLOPs (default llava-1.5-7b)")
    p.add_argument("--points", type=int, default=101, help="eta quantiles and random p values per curve (default 101)")
    p.add_argument("--bins", type=int, default=20, help="histogram bins for the separability (default 20)")
    p.add_argument("--correct-min", type=float, default=0.5,
                   help="a stage-1 answer counts as correct when s1_score >= this (default 0.5)")
    p.add_argument("--csv", action="store_true", help="also write the tables as CSV")
    add_output_options(p, "output directory (default: runs/tradeoff-<trace name>)")
