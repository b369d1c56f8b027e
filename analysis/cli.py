"""CLI sub-commands of analysis/: `compare` (run + report), `report` (from runs), `trace inspect`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgevlm.analysis.inspect import format_inspect, inspect_trace, plot_trace
from edgevlm.commands import Commands, add_output_options
from edgevlm.sim.compare import COMPARE_VERSION, format_table, load_compare, run_compare
from edgevlm.sim.errors import UserError
from edgevlm.sim.runner import resolve_trace, write_json
from edgevlm.traces import atomic_write


def _cmd_compare(args: argparse.Namespace) -> int:
    from edgevlm.analysis.report import build_report  # defers matplotlib, seaborn

    overrides: dict = {}
    if args.requests is not None:
        if args.requests <= 0:
            raise UserError("--requests: must be a positive integer")
        overrides["stop"] = {"requests": args.requests, "time_s": None}
    if args.seed is not None:
        overrides["seed"] = args.seed
    spec, _ = load_compare(args.file)
    out = Path(args.out) if args.out else Path("runs") / spec.name
    out.mkdir(parents=True, exist_ok=True)
    df = run_compare(args.file, out, overrides=overrides, progress=not args.no_progress and not args.quiet,
                     audit=args.audit)
    atomic_write(out / "results.parquet", lambda tmp: df.to_parquet(tmp, index=False))
    write_json(out / "compare.json", {"name": spec.name, "format_version": COMPARE_VERSION,
                                      "file": str(args.file), "overrides": overrides, "runs": len(df)})
    if not args.no_report:
        rep = build_report([out], out / "report", title=f"Policy comparison: {spec.name}")
    if not args.quiet:
        if (df["source_kind"] == "synthetic").any():
            print("note: SYNTHETIC trace (invented numbers, for tests only)")
        print(format_table(df))
        print(f"wrote {out / 'results.parquet'}" + ("" if args.no_report else f", {rep.html_path}"))
    broken = df[df["check_ok"].eq(False)]
    for _, r in broken.iterrows():
        print(f"edgevlm: variant {r['variant']} breaks an invariant: {r['check_violations']}", file=sys.stderr)
    return 1 if len(broken) else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from edgevlm.analysis.report import build_report  # defers matplotlib, seaborn

    rep = build_report(args.runs, args.out, title=args.title, tradeoff=not args.no_tradeoff)
    print(f"wrote {rep.html_path}, {rep.md_path}, {len(rep.figures)} figures, {rep.out_dir / 'results.parquet'}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_trace(resolve_trace(args.trace, None))
    print(format_inspect(info))
    if args.plot:
        for p in plot_trace(info, args.plot):
            print(f"wrote {p}")
    return 0


def register(commands: Commands) -> None:
    """The analysis commands: compare (run + report), report (from runs), trace inspect."""
    p = commands.add(
        "compare", _cmd_compare, "run policy variants on one workload (common random numbers) and write a report",
        "Run every variant of a compare file (a base scenario plus named policy variants, optional load axis) with "
        "the same seed. Writes DIR/results.parquet (one row per variant), DIR/runs/<variant>/ and DIR/report/ "
        "(report.html with embedded figures, report.md, PNGs). See sim/compare.py for the file format.")
    p.add_argument("file", help="compare YAML file, e.g. scenarios/compare_policies.yaml")
    p.add_argument("--requests", type=int, help="override every variant's stop rule with this many requests")
    p.add_argument("--seed", type=int, help="override the seed (still common to all variants)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML/Markdown report and figures")
    add_output_options(p, "output directory (default: runs/<compare name>)", audit=True, progress=True)

    r = commands.add("report", _cmd_report, "rebuild a comparison report from finished runs (no re-simulation)",
                     "Build report.html, report.md, the figures and results.parquet from run directories (each "
                     "with summary.json and events.parquet) or compare output directories.")
    r.add_argument("runs", nargs="+", help="run directories or compare output directories")
    r.add_argument("--out", required=True, help="report directory")
    r.add_argument("--title", default="Policy comparison")
    r.add_argument("--no-tradeoff", action="store_true", help="skip the offline trade-off section")

    i = commands.add("inspect", _cmd_inspect, "provenance, counts per question type, distributions, stage accuracy",
                     "Summarise a trace: provenance, rows per question type, distributions of entropies, bytes and "
                     "scores, stage-1/stage-2 accuracy.", group="trace")
    i.add_argument("trace")
    i.add_argument("--plot", metavar="DIR", help="also write figures (PNG) into DIR")
