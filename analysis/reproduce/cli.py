"""`edgevlm reproduce seed000|seed004 [--trace T] [--out DIR] [--at-scale]`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from edgevlm.commands import Commands
from edgevlm.sim.errors import UserError
from edgevlm.sim.runner import default_scenario_path, resolve_trace
from edgevlm.sim.scenario import load_scenario
from edgevlm.analysis.reproduce import at_scale as scale
from edgevlm.analysis.reproduce.simruns import scenarios_dir
from edgevlm.sim.workload import Workload
from edgevlm.traces import TraceError
from tqdm import tqdm
from edgevlm.analysis.reproduce import seed000
from edgevlm.analysis.reproduce.columns import TraceView
from edgevlm.analysis.reproduce import seed004
from edgevlm.analysis.reproduce import at_scale as scale
from edgevlm.analysis.events import run_scenario
from edgevlm.analysis.reproduce.report import provenance_line

SEEDS = {"seed000": "Song & Kim, Collaborative Edge-to-Server Inference for Vision-Language Models",
         "seed004": "Hsu et al., arXiv 2604.26508: progressive semantic communication for edge-cloud VLM "
                    "inference (abstract only)"}


def default_trace() -> Path:
    """The quickstart scenario's trace: the project's default."""
    scenario, base_dir = load_scenario(default_scenario_path())
    return resolve_trace(scenario.trace, base_dir)


def reproduce(seed: str, trace: Path, out: Path, *, at_scale: bool = False, progress: bool = True,
              devices=None, requests: int | None = None):
    """Run one seed's reproduction into out/ (report.html, reproduce.json, PNGs, runs/); returns the Reproduction."""
    from edgevlm.analysis import plots  # defers matplotlib
    from edgevlm.analysis.reproduce import figures, report  # defers matplotlib

    try:
        workload = Workload.load(trace)
    except (TraceError, OSError) as exc:
        raise UserError(f"--trace: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    plots.setup_style(synthetic=workload.synthetic)
    figures.set_source(workload)
    info = report.trace_info(workload)
    kw = {} if requests is None else {"requests": requests}
    if seed == "seed000":

        with tqdm(total=len(seed000.ITEMS), unit="item", desc="seed000", disable=not progress, dynamic_ncols=True) as bar:
            s, items = seed000.items(TraceView(workload), bar)
        rep = report.Reproduction(seed, SEEDS[seed], info, items, figures=seed000.figures(s, items, out),
                                  notes=[seed000.__doc__.split("\n\n", 1)[1].strip()])
        spec = seed000.at_scale_spec(s, trace) if at_scale else None
    else:
        rows, skipped, spec = seed004.simulate(workload, trace, out / "runs", progress=progress, **kw)
        items = seed004.items(workload, rows, skipped, spec)
        tables = {f"The 1 Mbit/s comparison ({seed004.COMPARE_FILE}, {len(rows)} runs; network = uplink + "
                  "downlink phases, end-to-end = edge + network + server)": seed004.table(rows, skipped, spec)}
        lv = seed004.level_rows(workload)
        if lv is not None:
            tables["Per progressive level (cumulative bytes and accuracy over the trace; same-answer rate: "
                   + lv.attrs.get("same_answer_source", "") + ")"] = lv
        rep = report.Reproduction(seed, SEEDS[seed], info, items,
                                  figures={"latency_1mbps.png": seed004.figure(rows, out / "latency_1mbps.png")},
                                  tables=tables, notes=[seed004.__doc__.split("\n\n", 1)[1].strip()],
                                  paper_setting="the paper's VLM on its i.MX95 and GPU-server testbed")
        spec = None
        if at_scale:
            tab = seed004.simulate_scale(workload, trace, out / "runs" / "at_scale", rows, progress=progress,
                                         devices=devices, **kw)
            _scale_report(rep, seed, tab.rename(columns={"e2e_mean_s": "latency_mean_s", "e2e_p95_s": "latency_p95_s"}),
                          out, f"{seed004.SCALE_FILE}: N = {', '.join(map(str, sorted(set(tab['devices']))))} devices, "
                               "each on its own 1 Mbit/s access link, sharing the cell uplink and the server; "
                               "N = 1 is the 1 Mbit/s comparison. " + scale.RANKING)
    if spec is not None:
        tab = scale.run(spec, scenarios_dir(), out / "runs" / "at_scale", progress=progress,
                        **({} if devices is None else {"devices": devices}))
        _scale_report(rep, seed, tab, out, scale.__doc__.split("\n\n", 1)[1].strip())
    report.write(rep, out)
    return rep


def _scale_report(rep, seed: str, tab, out: Path, description: str) -> None:
    """The at-scale table, rankings, summary and figure into the Reproduction."""
    from edgevlm.analysis.reproduce import figures  # defers matplotlib

    rep.figures["at_scale.png"] = figures.at_scale(tab, _deadline(tab), out / "at_scale.png",
                                                   f"{seed} at scale: N devices sharing one cell")
    rep.at_scale = {"table": tab.drop(columns=["run_dir"]), "rankings": scale.rankings(tab),
                    "summary": scale.summary(tab), "description": description}


def _deadline(tab) -> float | None:
    sc = run_scenario(Path(tab["run_dir"].iloc[0]))
    return (sc.get("slo") or {}).get("deadline_s")


def _cmd_reproduce(args: argparse.Namespace) -> int:
    trace = Path(args.trace) if args.trace else default_trace()
    if not trace.is_file():
        raise UserError(f"--trace: {trace}: trace file not found")
    out = Path(args.out) if args.out else Path("runs") / f"reproduce-{args.seed}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a directory")
    t0 = time.perf_counter()
    rep = reproduce(args.seed, trace, out, at_scale=args.at_scale, progress=not args.no_progress and not args.quiet)
    if not args.quiet:
        print(provenance_line(rep.trace, rep.paper_setting))
        width = max(len(i.key) for i in rep.items)
        for it in rep.items:
            print(f"  {it.key:<{width}}  {it.verdict_line()}")
        if rep.at_scale is not None:
            print("  at scale, top policy: " + "; ".join(rep.at_scale["summary"]["top_changes"]))
        print(f"wrote {out / 'report.html'}, {out / 'reproduce.json'} ({time.perf_counter() - t0:.0f} s)")
    return 0


def register(commands: Commands) -> None:
    p = commands.top.add_parser(
        "reproduce", help="a seed paper's results beside ours, each with a verdict (report.html, reproduce.json)",
        description="seed000 (Song & Kim): Figs. 4-8, 12 and Tables II-III recomputed offline from the trace. "
                    "seed004 (Hsu et al.): the 1 Mbit/s comparison simulated with the compare machinery. Each item "
                    "shows the paper's value beside ours and a verdict computed by a stated rule; an item the trace "
                    "cannot answer says which column it needs. See analysis/reproduce/.")
    p.add_argument("seed", choices=sorted(SEEDS), help="which seed paper")
    p.add_argument("--trace", help="trace Parquet file (default: the quickstart scenario's trace)")
    p.add_argument("--out", help="output directory (default: runs/reproduce-<seed>)")
    p.add_argument("--at-scale", action="store_true",
                   help="also run the comparison with N = 1..1000 devices sharing a cell (p95 latency vs N)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=_cmd_reproduce)
