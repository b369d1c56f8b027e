"""Policy comparison reports from finished runs: a summary table, figures, report.html and report.md.

The input is a set of run directories, each with summary.json and events.parquet (and the scenario
in the events metadata). Nothing is re-simulated. The table's numbers come from the runs'
summaries, which the simulator computes from the events. The test suite recomputes them from
events.parquet. report.html is self-contained, with the PNGs embedded, so it can be mailed or
archived as one file.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from edgevlm.analysis import plots
from edgevlm.analysis.events import PHASES, phase_breakdown, read_events, run_scenario, throughput_series
from edgevlm.analysis.tradeoff import tradeoff
from edgevlm.sim.errors import UserError
from edgevlm.sim.profiles import MODELS, ModelProfile, resolve
from edgevlm.sim.summary import nested_get
from edgevlm.sim.workload import Workload
from edgevlm.traces import atomic_write
from edgevlm.sim.stability import UNSTABLE_NOTE


@dataclass
class Report:
    out_dir: Path
    table: pd.DataFrame
    figures: dict[str, Path] = field(default_factory=dict)
    phase_table: pd.DataFrame | None = None
    #: KV-cache counters of the runs whose server has a KV model (None if none has)
    kv_table: pd.DataFrame | None = None
    #: which load the figures without a load axis show
    single_load: str = ""
    html_path: Path | None = None
    md_path: Path | None = None


def _stage1_flops(scenario: dict) -> float | None:
    """FLOPs of one global-only pass for the scenario's server model (the relative-compute unit)."""

    try:
        model = ModelProfile.model_validate(resolve(nested_get(scenario, "server", "model") or "llava-1.5-7b",
                                                    MODELS, "model"))
    except (ValueError, ValidationError):
        return None
    return model.flops(model.visual_tokens)


def _offered_load(scenario: dict) -> float | None:
    arrival = nested_get(scenario, "clients", "arrival") or {}
    rate = arrival.get("rate_per_s", arrival.get("fps"))
    count = nested_get(scenario, "clients", "count")
    return None if rate is None or count is None else float(rate) * float(count)


def run_row(run_dir: Path, label: str | None = None, load_scale: float | None = None) -> dict:
    """One table row from a run directory's summary.json and stored scenario."""
    s = json.loads((run_dir / "summary.json").read_text())
    sc = run_scenario(run_dir)
    lat = s["latency_s"]
    flops = s.get("flops_per_request")
    unit = _stage1_flops(sc)
    row = {
        "variant": label or s["scenario"], "policy": s["policy"], "policy_is_bound": bool(s.get("policy_is_bound")),
        "load_scale": load_scale, "offered_load_per_s": _offered_load(sc), "seed": s["seed"],
        "requests_measured": s["counts"]["measured"], "dropped": s["counts"]["dropped"],
        "accuracy": s["accuracy"]["value"], "accuracy_ci_half": s["accuracy"]["half_width"],
    }
    for k in ("mean", "p50", "p95", "p99"):
        row[f"latency_{k}_s"] = lat[k]["value"]
        row[f"latency_{k}_ci_half"] = lat[k]["half_width"]
    row.update({
        "throughput_per_s": s["throughput_per_s"], "goodput_per_s": s["goodput_per_s"],
        "deadline_met_rate": s["deadline_met_rate"],
        "uplink_bytes_per_request": nested_get(s, "bytes_per_request", "uplink"),
        "downlink_bytes_per_request": nested_get(s, "bytes_per_request", "downlink"),
        "additional_comm_cost": s["additional_comm_cost"], "relative_comm_cost": s.get("relative_comm_cost"),
        "retransmission_rate": s["retransmission_rate"],
        "gpu_utilisation": nested_get(s, "utilisation", "gpu"),
        "uplink_utilisation": nested_get(s, "utilisation", "uplink"),
        "flops_per_request": flops,
        "relative_computation": None if flops is None or not unit else flops / unit,
        "warmup_s": float(nested_get(sc, "stop", "warmup_s") or 0.0),
        "deadline_s": nested_get(sc, "slo", "deadline_s"),
        "source_kind": nested_get(s, "trace", "source_kind"), "trace_path": nested_get(s, "trace", "path"),
        "trace_note": nested_get(s, "trace", "note"),
        "accuracy_note": s.get("accuracy_note"),
        "jpeg_quality": nested_get(sc, "policy", "jpeg_quality"), "run_dir": str(run_dir),
        "stable": s.get("stable"), "offered_per_s": nested_get(s, "stability", "offered_per_s"),
        "served_per_s": nested_get(s, "stability", "served_per_s"),
        "scenario": s["scenario"], "trace_model_id": nested_get(s, "trace", "model_id"),
        "stop_requests": nested_get(sc, "stop", "requests"), "stop_time_s": nested_get(sc, "stop", "time_s"),
        "server": _server_text(sc),
    })
    return row


def _server_text(sc: dict) -> str:
    """'llava-1.5-7b on 1 x a100-80gb, fifo scheduler, roofline latency' from a stored scenario."""
    server = sc.get("server") or {}

    def name(v, default):
        return v.get("name", "custom") if isinstance(v, dict) else (v or default)

    return (f"{name(server.get('model'), 'llava-1.5-7b')} on {server.get('replicas', 1)} x "
            f"{name(server.get('hardware'), 'default hardware')}, {nested_get(server, 'scheduler', 'kind') or 'fifo'} "
            f"scheduler, {nested_get(server, 'latency', 'kind') or 'roofline'} latency")


def expand_run_dirs(paths: list[str | os.PathLike]) -> list[tuple[Path, str | None, float | None]]:
    """Run directories with their labels: a compare output (results.parquet + runs/) expands to its runs."""
    out: list[tuple[Path, str | None, float | None]] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{p}: not found")
        if (p / "summary.json").is_file():
            out.append((p, None, None))
        elif (p / "results.parquet").is_file() and (p / "runs").is_dir():
            res = pd.read_parquet(p / "results.parquet")
            multi = "load_scale" in res and res["load_scale"].nunique() > 1
            for _, r in res.iterrows():
                rd = Path(r["run_dir"]) if r.get("run_dir") else None
                if rd is None or not (rd / "summary.json").is_file():
                    rd = p / "runs" / (r["variant"] + (f"-load{r['load_scale']:g}" if multi else ""))
                out.append((rd, r["variant"], float(r["load_scale"]) if "load_scale" in r else None))
        else:
            raise UserError(f"{p}: not a run directory (no summary.json) nor a compare output (no results.parquet)")
    return out


def build_report(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike, *, title: str = "Policy comparison",
                 tradeoff: bool = True) -> Report:
    """Write the PNGs, report.html, report.md and results.parquet for a set of runs into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = expand_run_dirs(run_dirs)
    table = pd.DataFrame([run_row(d, label, scale) for d, label, scale in runs])
    rep = Report(out, table)
    plots.setup_style(synthetic=bool((table["source_kind"] == "synthetic").any()))
    names = list(dict.fromkeys(table["variant"]))
    colours = plots.palette(names)
    base_load = table[table["load_scale"].fillna(1.0) == 1.0] if table["load_scale"].notna().any() else table
    if base_load.empty:
        base_load = table.drop_duplicates("variant")
    base_load = base_load.drop_duplicates("variant")
    rep.single_load = _single_load_text(base_load)
    figs = rep.figures
    figs["accuracy_vs_bytes"] = plots.accuracy_vs_bytes(base_load, out / "accuracy_vs_bytes.png", colours)
    if base_load["relative_computation"].notna().any():
        figs["accuracy_vs_compute"] = plots.accuracy_vs_compute(
            base_load[base_load["relative_computation"].notna()], out / "accuracy_vs_compute.png", colours)
    lat, phases, series = {}, {}, {}
    for _, r in base_load.iterrows():
        ev = read_events(r["run_dir"], ["latency_s", "arrival_s", "status"])
        ok = (ev["status"] == "ok") & (ev["arrival_s"] >= r["warmup_s"])
        lat[r["variant"]] = ev.loc[ok, "latency_s"].to_numpy()
        phases[r["variant"] + (" UNSTABLE*" if r.get("stable") is False else "")] = phase_breakdown(r["run_dir"], warmup_s=r["warmup_s"])[list(PHASES)].mean()
        series[r["variant"]] = throughput_series(r["run_dir"], dt_s=_bin_s(r))
    deadline = base_load["deadline_s"].dropna()
    figs["latency_cdf"] = plots.latency_cdfs(lat, out / "latency_cdf.png", colours,
                                             float(deadline.iloc[0]) if len(deadline) else None)
    rep.phase_table = pd.DataFrame(phases).T
    figs["latency_breakdown"] = plots.latency_breakdown(rep.phase_table, out / "latency_breakdown.png")
    figs["throughput_over_time"] = plots.throughput_over_time(series, float(base_load["warmup_s"].max()),
                                                              out / "throughput_over_time.png", colours)
    if table.groupby("variant")["offered_load_per_s"].nunique().max() > 1:
        figs["load_latency"] = plots.load_curves(table, "latency_p95_s", "p95 latency (s, log scale)",
                                                 "Load vs p95 latency", out / "load_latency.png", colours,
                                                 log_y=True, deadline_s=float(deadline.iloc[0]) if len(deadline) else None)
        figs["goodput_vs_load"] = plots.load_curves(table, "goodput_per_s", "goodput (requests/s within deadline)",
                                                    "Goodput vs load", out / "goodput_vs_load.png", colours)
    kv = {i: b for i, b in ((i, kv_block(r["run_dir"])) for i, r in table.iterrows()) if b is not None}
    if kv:
        rep.kv_table = kv_table(table, kv)
        shown = {base_load.loc[i, "variant"]: kv[i] for i in base_load.index if i in kv}
        if shown:
            figs["kv_use"] = plots.kv_use_over_time(shown, float(base_load["warmup_s"].max()), out / "kv_use.png",
                                                    colours)
    tradeoff_tables = _tradeoff(table, out) if tradeoff else None
    if tradeoff_tables is not None:
        figs["tradeoff"] = plots.tradeoff_curves(tradeoff_tables[0], out / "tradeoff.png")
    table_out = table.drop(columns=["run_dir"]).assign(run_dir=table["run_dir"])
    atomic_write(out / "results.parquet", lambda tmp: table_out.to_parquet(tmp, index=False))
    rep.html_path = out / "report.html"
    rep.md_path = out / "report.md"
    html_text, md_text = _render(title, rep, tradeoff_tables)
    atomic_write(rep.html_path, lambda tmp: Path(tmp).write_text(html_text, encoding="utf-8"))
    atomic_write(rep.md_path, lambda tmp: Path(tmp).write_text(md_text, encoding="utf-8"))
    return rep


def kv_block(run_dir: str | os.PathLike) -> dict | None:
    """summary.json's gpu.kv (with gpu.prefix_cache), or None when the run's server has no KV model."""
    s = json.loads((Path(run_dir) / "summary.json").read_text())
    kv = nested_get(s, "gpu", "kv")
    if not isinstance(kv, dict) or kv.get("capacity_tokens") is None:
        return None
    return kv | {"prefix_cache": nested_get(s, "gpu", "prefix_cache")}


def kv_table(table: pd.DataFrame, kv: dict) -> pd.DataFrame:
    """One row of KV-cache counters per run with a KV model (`kv`: table index -> kv_block), as strings."""
    show_load = table["load_scale"].notna().any() and table["load_scale"].nunique() > 1
    prefix = any(b["prefix_cache"] for b in kv.values())
    rows = []
    for i, b in kv.items():
        r = table.loc[i]
        cap = b["capacity_tokens"]
        row = {"variant": r["variant"]}
        if show_load:
            row["load ×"] = f"{r['load_scale']:g}"
        row |= {
            "allocation": b["allocation"], "capacity (tokens)": f"{cap:,}",
            "peak in use (tokens)": f"{b['peak_tokens']:,} ({b['peak_tokens'] / cap:.0%})",
            "peak sequences": f"{b['peak_sequences']:,}", "admissions": f"{b['admitted']:,}",
            "preemptions": f"{b['preempted']:,}", "recomputed tokens": f"{b['recomputed_tokens']:,}",
        }
        if prefix:
            pc = b["prefix_cache"]
            looked = pc["hits"] + pc["misses"] if pc else 0
            row["prefix hits"] = f"{pc['hits']:,} of {looked:,}" + (f" ({pc['hits'] / looked:.0%})" if looked else "") \
                if pc else "off"
        rows.append(row)
    return pd.DataFrame(rows)


def _single_load_text(base_load: pd.DataFrame) -> str:
    scale = base_load["load_scale"].dropna()
    offered = base_load["offered_load_per_s"].dropna()
    return ((f"load × {scale.iloc[0]:g} of the base scenario" if len(scale) else "each run's own load")
            + (f" (offered {offered.iloc[0]:.2f} requests/s)" if offered.nunique() == 1 else ""))


def _uniq(values) -> str:
    vals = [str(v) for v in dict.fromkeys(v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v)))]
    return ", ".join(vals) if vals else "–"


def context_rows(rep: Report) -> list[tuple[str, str]]:
    """What the report shows: scenario, trace and its source, requests, seed, deadline, server, figure load."""
    t = rep.table
    names = _uniq(n.split(".")[0] for n in t["scenario"])
    stop = _uniq(f"{int(r)} requests per run" if r is not None and r == r else f"{ts:g} s of arrivals per run"
                 for r, ts in zip(t["stop_requests"], t["stop_time_s"]))
    warm = _uniq(f"{w:g} s" for w in t["warmup_s"])
    traces = _uniq(f"{Path(p).name} [{k}; model {m}]" for p, k, m in zip(t["trace_path"], t["source_kind"],
                                                                         t["trace_model_id"]))
    return [
        ("scenario", f"{names}: {t['variant'].nunique()} variant(s), {len(t)} run(s)"),
        ("trace", traces),
        ("requests", f"{stop}; warm-up {warm} excluded; {_uniq(t['requests_measured'])} measured"),
        ("seed", _uniq(t["seed"]) + " (common random numbers: the same arrivals and samples in every variant)"),
        ("deadline", _uniq(f"{d:g} s" for d in t["deadline_s"])),
        ("server", _uniq(t["server"])),
        ("single-load figures", f"accuracy vs bytes/compute, latency CDF and breakdown, throughput over time: "
                                f"{rep.single_load}"),
    ]


def _bin_s(row) -> float:
    load = row["offered_load_per_s"] or 1.0
    return float(max(1.0, 200.0 / load))  # about 200 completions per bin at the offered load


def _tradeoff(table: pd.DataFrame, out: Path):
    """The offline trade-off of the runs' trace (curves, separability, summary), or None if unavailable."""

    path = table["trace_path"].dropna()
    if path.empty or not Path(path.iloc[0]).is_file():
        return None
    quality = table["jpeg_quality"].dropna()
    wl = Workload.load(path.iloc[0])
    q = int(quality.iloc[0]) if len(quality) and int(quality.iloc[0]) in wl.qualities else wl.qualities[-1]
    curves, sep, summary = tradeoff(wl, jpeg_quality=q)
    atomic_write(out / "tradeoff.parquet", lambda tmp: curves.to_parquet(tmp, index=False))
    atomic_write(out / "separability.parquet", lambda tmp: sep.to_parquet(tmp, index=False))
    return curves, sep, summary


# ---------------------------------------------------------------- rendering

DISPLAY = [  # (column, header, format, CI column)
    ("variant", "variant", "{}", None), ("load_scale", "load ×", "{:g}", None),
    ("accuracy", "accuracy", "{:.3f}", "accuracy_ci_half"),
    ("latency_mean_s", "latency mean (s)", "{:.3f}", "latency_mean_ci_half"),
    ("latency_p50_s", "p50 (s)", "{:.3f}", "latency_p50_ci_half"),
    ("latency_p95_s", "p95 (s)", "{:.3f}", "latency_p95_ci_half"),
    ("latency_p99_s", "p99 (s)", "{:.3f}", "latency_p99_ci_half"),
    ("throughput_per_s", "throughput (req/s)", "{:.2f}", None), ("goodput_per_s", "goodput (req/s)", "{:.2f}", None),
    ("uplink_bytes_per_request", "bytes/req (kB)", "{:.1f}", None),
    ("additional_comm_cost", "add. comm cost (crop=1)", "{:.3f}", None),
    ("relative_comm_cost", "rel. comm cost (q100=1)", "{:.3f}", None),
    ("retransmission_rate", "retx rate", "{:.3f}", None),
    ("gpu_utilisation", "GPU util", "{:.1%}", None), ("uplink_utilisation", "uplink util", "{:.1%}", None),
    ("relative_computation", "rel. server compute", "{:.2f}", None),
    ("flops_per_request", "server TFLOPs/req", "{:.2f}", None),
]


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The summary table as strings: value ± 95% CI half-width; bounds labelled '(bound)'."""
    rows = []
    show_load = table["load_scale"].notna().any() and table["load_scale"].nunique() > 1
    for _, r in table.iterrows():
        cells = {}
        for col, head, fmt, ci in DISPLAY:
            if col == "load_scale" and not show_load:
                continue
            v = r.get(col)
            if col == "uplink_bytes_per_request" and v is not None:
                v = v / 1e3
            if col == "flops_per_request" and v is not None:
                v = v / 1e12
            if v is None or (isinstance(v, float) and np.isnan(v)):
                text = "–"
            else:
                text = fmt.format(v)
                if ci and r[ci] is not None and not np.isnan(r[ci]):
                    text += f" ± {fmt.format(r[ci])}"
            if col == "variant" and r["policy_is_bound"]:
                text += " (bound)"
            if col == "variant" and r.get("stable") is False:
                text += " UNSTABLE*"
            cells[head] = text
        rows.append(cells)
    return pd.DataFrame(rows)


#: The summary table in two parts (HTML table ids), each narrow enough for the page; both lead with the variant.
SUMMARY_PARTS = {("Accuracy, latency and throughput", "summary"): ("accuracy", "latency mean (s)", "p50 (s)", "p95 (s)",
                                                                   "p99 (s)", "throughput (req/s)", "goodput (req/s)"),
                 ("Communication and computation", "summary_cost"): (
                     "bytes/req (kB)", "add. comm cost (crop=1)", "rel. comm cost (q100=1)", "retx rate", "GPU util",
                     "uplink util", "rel. server compute", "server TFLOPs/req")}


def summary_parts(disp: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """The display table split by SUMMARY_PARTS, each with the leading variant (and load) columns."""
    lead = [c for c in ("variant", "load ×") if c in disp.columns]
    return [(key, disp[lead + [c for c in cols if c in disp.columns]]) for key, cols in SUMMARY_PARTS.items()]


def unstable_note(table: pd.DataFrame) -> str:
    """'* UNSTABLE: queue grows; ...' with each unstable run's served vs offered rate ('' if none)."""
    bad = table[table["stable"].eq(False)] if "stable" in table else table.iloc[:0]
    if bad.empty:
        return ""
    return (f"* {UNSTABLE_NOTE}: " + "; ".join(
        f"{r['variant']}" + (f" at load × {r['load_scale']:g}" if r["load_scale"] == r["load_scale"]
                             and r["load_scale"] is not None else "")
        + f" serves {r['served_per_s']:.2f} of {r['offered_per_s']:.2f} requests/s offered"
        for _, r in bad.iterrows()) + ". Their latency is shown without a CI: it has no steady state.")


def phase_view(phases: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per phase: one number format, all-zero phases dropped."""
    keep = [c for c in phases.columns if (phases[c].abs() > 0).any()]
    return phases[keep].map(lambda v: f"{v:.3f}")


def _html_table(df: pd.DataFrame, **kw) -> str:
    """A table in a box that scrolls sideways if the window is narrower than the table (the page never does)."""
    return f"<div class='scroll'>{df.to_html(escape=True, **kw)}</div>"


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


FIGURE_TITLES = {
    "accuracy_vs_bytes": "Accuracy vs uplink bytes per request (Pareto front; the oracle is a bound)",
    "accuracy_vs_compute": "Accuracy vs server computation (edge-device work is not counted)",
    "latency_cdf": "Latency CDFs",
    "latency_breakdown": "Latency breakdown by phase",
    "throughput_over_time": "Throughput over time, one panel per variant (warm-up shaded)",
    "load_latency": "p95 latency vs offered load (log scale; deadline and unstable points marked)",
    "goodput_vs_load": "Goodput vs offered load",
    "tradeoff": "Offline trade-off: accuracy vs additional comm cost per metric, random, oracle bound",
    "kv_use": "KV-cache use over time: most tokens in use per bin on the fullest replica, capacity dashed, "
              "bins with preemptions marked",
}

KV_NOTE = ("Runs whose server has a KV-cache model (batching with a finite KV capacity, sim/server/kvcache.py). "
           "Capacity: KV tokens per replica. Peak: most tokens in use at once on one replica (a lone sequence "
           "larger than the cache still runs, so it may pass 100%). Admissions = GPU jobs + preemptions: a "
           "preempted sequence frees its KV and is admitted again, recomputing its prompt and the tokens it had "
           "generated (recomputed tokens).")


def _separability_view(sep: pd.DataFrame) -> pd.DataFrame:
    view = sep[sep["tokens"] == "5"][["group", "metric", "overlap", "bhattacharyya", "auroc"]]
    return view.rename(columns={"group": "question type"}).round(3)


def _render(title: str, rep: Report, tradeoff_tables) -> tuple[str, str]:
    table = rep.table
    disp = display_table(table)
    synthetic = (table["source_kind"] == "synthetic").any()
    note = ("<p class='warn'><b>SYNTHETIC trace</b>: invented numbers from traces/synthetic.py, for tests only; "
            "these results describe no model.</p>") if synthetic else ""
    trace_notes = sorted(set(table["trace_note"].dropna())) if "trace_note" in table else []
    trace_notes += sorted(set(table["accuracy_note"].dropna())) if "accuracy_note" in table else []
    note += "".join(f"<p class='warn'>Note: {html.escape(n)}.</p>" for n in trace_notes)
    cost_legend = ("add. comm cost: the seed's additional communication cost, (bytes − global-only) / "
                   "(always-crop − global-only) at the same JPEG quality (0 = global-only, 1 = always-crop); "
                   "rel. comm cost: image bytes / global image bytes at JPEG quality 100 (the seed's Fig. 12 axis). "
                   "Both count image payloads of served requests; bytes/req counts everything on the uplink.")
    ctx = context_rows(rep)
    unstable = unstable_note(table)
    caveat = ("Values are steady-state (after warm-up), ± the 95% batch-means CI half-width"
              + (", except rows marked UNSTABLE*." if unstable else "."))
    ctx_html = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in ctx)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;"
             "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}.warn{color:#a00}"
             "table.context td,table.context th{text-align:left}"
             "img{max-width:100%;box-sizing:border-box;border:1px solid #eee;margin:6px 0}"
             ".scroll{max-width:100%;overflow-x:auto}"
             "</style></head><body>",
             f"<h1>{html.escape(title)}</h1>{note}",
             f"<h2>What this report shows</h2><table class='context'>{ctx_html}</table>",
             f"<p>{html.escape(caveat)}</p>",
             "<h2>Summary</h2>", *(f"<h3>{html.escape(head)}</h3>" + _html_table(part, index=False, table_id=tid)
                                   for (head, tid), part in summary_parts(disp)),
             f"<p class='warn'>{html.escape(unstable)}</p>" if unstable else "",
             f"<p>{html.escape(cost_legend)}</p>"]
    md = [f"# {title}", "", "**SYNTHETIC trace: invented numbers, for tests only.**" if synthetic else "",
          *(f"**Note: {n}.**" for n in trace_notes),
          "## What this report shows", "", _md_table(pd.DataFrame(ctx, columns=["", "value"])), "",
          caveat, "", "## Summary", "",
          *(f"### {head}\n\n{_md_table(part)}\n" for (head, _), part in summary_parts(disp)),
          unstable, "", cost_legend, ""]
    phases = phase_view(rep.phase_table)
    parts.append("<h2>Mean latency by phase (s)</h2>" + _html_table(phases))
    md += ["## Mean latency by phase (s)", "", _md_table(phases.reset_index(names="variant")), ""]
    if rep.kv_table is not None:
        parts += ["<h2>KV cache</h2>", _html_table(rep.kv_table, index=False, table_id="kv"),
                  f"<p>{html.escape(KV_NOTE)}</p>"]
        md += ["## KV cache", "", _md_table(rep.kv_table), "", KV_NOTE, ""]
    parts.append("<h2>Figures</h2>")
    md.append("## Figures\n")
    for key, path in rep.figures.items():
        data = base64.b64encode(path.read_bytes()).decode()
        cap = html.escape(FIGURE_TITLES.get(key, key))
        parts.append(f"<h3>{cap}</h3><img alt='{html.escape(key)}' src='data:image/png;base64,{data}'>")
        md.append(f"### {FIGURE_TITLES.get(key, key)}\n\n![{key}]({path.name})\n")
    if tradeoff_tables is not None:
        _, sep, summary = tradeoff_tables
        reach = summary["pooled"]["comm_cost_to_99pct_always_crop"]
        rows = [{"gate": m, **{f"k={k}": (None if v is None else round(v, 3)) for k, v in reach[m].items() if k != "best"}}
                for m in ("min_entropy", "shannon", "margin")]
        rows += [{"gate": g, "k=all": None if reach[g] is None else round(reach[g], 3)} for g in ("random", "oracle")]
        reach_df = pd.DataFrame(rows).astype(object).fillna("–")
        sepv = _separability_view(sep)
        parts += ["<h2>Offline trade-off</h2><p>Additional comm cost needed to reach 99% of always-crop accuracy "
                  "(pooled; the oracle is a bound):</p>", _html_table(reach_df, index=False),
                  "<h3>Separability of correct vs wrong stage-1 answers (k=5, per question type)</h3>",
                  _html_table(sepv, index=False)]
        md += ["## Offline trade-off", "", "Additional comm cost to reach 99% of always-crop accuracy (pooled):", "",
               _md_table(reach_df), "", "### Separability (k=5, per question type)", "", _md_table(sepv), ""]
    parts.append("</body></html>")
    return "\n".join(parts), "\n".join(md)
