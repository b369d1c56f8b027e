"""The `edgevlm` command line. Bad input prints one line naming the field and exits with code 2.

Sub-commands beyond `run` and `trace validate|synthetic` live in their own modules and are listed
in COMMAND_MODULES / TRACE_COMMAND_MODULES.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Sequence

from edgevlm.sim.errors import UserError
from edgevlm.traces import TraceError

EXIT_USAGE = 2

#: Modules that add top-level sub-commands: each has `register(subparsers)` (or `module:function`) and keeps heavy imports
#: inside its handlers, so `edgevlm --help` stays fast. A module that fails to import is skipped.
COMMAND_MODULES: tuple[str, ...] = ("edgevlm.sim.sweep", "edgevlm.sim.check", "edgevlm.analysis.cli", "edgevlm.analysis.tradeoff",
                                    "edgevlm.analysis.reproduce.cli", "edgevlm.testbed.cli")
#: Modules that add `edgevlm trace ...` sub-commands the same way. models.cli is optional: the
#: simulator itself never needs torch.
TRACE_COMMAND_MODULES: tuple[str, ...] = ("edgevlm.models.cli", "edgevlm.analysis.cli:register_trace")


def _cmd_run(args: argparse.Namespace) -> int:
    from edgevlm.sim.runner import default_scenario_path, run
    from edgevlm.sim.scenario import load_scenario

    if args.replay:
        from edgevlm.sim.replay import cmd_replay

        return cmd_replay(args)
    path = Path(args.scenario) if args.scenario else default_scenario_path()
    scenario, base_dir = load_scenario(path)
    if args.seed is not None:
        scenario = scenario.model_copy(update={"seed": args.seed})
    out = Path(args.out) if args.out else Path("runs") / scenario.name
    from edgevlm.sim.runner import Workload, resolve_trace

    try:
        workload = Workload.load(resolve_trace(scenario.trace, base_dir))
    except TraceError as exc:
        raise UserError(f"trace: {exc}") from None
    if workload.synthetic and not args.quiet:
        print(f"note: trace {workload.path.name} is SYNTHETIC (invented numbers, for tests only)", file=sys.stderr)
    result = run(scenario, out, progress=not args.no_progress and not args.quiet, workload=workload,
                 audit=args.audit, base_dir=base_dir)
    if not args.quiet:
        print(format_summary(result.summary))
        print(f"wrote {out / 'events.parquet'}, {out / 'summary.json'}")
    return 0


def format_summary(s: dict) -> str:
    """A short human table of a summary.json."""

    def f(v, fmt="{:.3f}"):
        return "-" if v is None else fmt.format(v)

    def ci(d, fmt="{:.3f}"):
        lo, hi = d["ci95"]
        return f(d["value"], fmt) + ("" if lo is None else f"  [{fmt.format(lo)}, {fmt.format(hi)}]")

    lat = s["latency_s"]
    trace = s["trace"]
    label = " (SYNTHETIC, tests only)" if trace.get("source_kind") == "synthetic" else ""
    rows = [
        ("scenario", f"{s['scenario']}  policy={s['policy']}"
                     + (" (a BOUND, not a policy)" if s.get("policy_is_bound") else "") + f"  seed={s['seed']}"),
        ("trace", f"{Path(trace['path']).name}  [{trace.get('source_kind')}]{label}"
                  + (f"  -- {trace['note']}" if trace.get("note") else "")),
        ("requests", f"{s['counts']['arrived']} arrived, {s['counts']['ok']} ok, "
                     f"{s['counts']['dropped']} dropped; {s['counts']['measured']} after warm-up"),
        ("throughput", f(s["throughput_per_s"], "{:.2f}") + " req/s   goodput " + f(s["goodput_per_s"], "{:.2f}")
         + " req/s"),
        ("latency mean", ci(lat["mean"]) + " s"),
        ("latency p50/p95/p99", " / ".join(f(lat[k]["value"]) for k in ("p50", "p95", "p99")) + " s"),
        ("accuracy", ci(s["accuracy"])),
        ("uplink bytes/req", f(s["bytes_per_request"]["uplink"], "{:,.0f}")),
        ("comm cost (seed)", "additional " + f(s["additional_comm_cost"]) + " (global-only 0, always-crop 1)"
         + "   relative " + ("n/a (trace has no q100)" if s.get("relative_comm_cost") is None
                           else f(s["relative_comm_cost"]) + " (x global image at q100)")),
        ("retransmission rate", f(s["retransmission_rate"])),
        ("utilisation", "  ".join(f"{k} {f(v, '{:.1%}')}" for k, v in s["utilisation"].items())),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _cmd_trace_validate(args: argparse.Namespace) -> int:
    from edgevlm.traces import read_trace

    table, prov = read_trace(args.trace)
    print(f"{args.trace}: valid v{prov['format_version']} trace, {table.num_rows} rows, "
          f"source_kind={prov['source_kind']}, model={prov['model_id']}, dataset={prov['dataset_id']}, "
          f"jpeg_qualities={prov['jpeg_qualities']}"
          + ("" if prov["format_version"] >= 2 else "; accuracy does not depend on JPEG quality (v1 trace)"))
    return 0


def _cmd_trace_synthetic(args: argparse.Namespace) -> int:
    from edgevlm.traces.synthetic import write_synthetic

    if args.samples <= 0:
        raise UserError("--samples: must be a positive integer")
    print(write_synthetic(args.out, args.samples, args.seed, args.format_version))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="edgevlm",
        description="Simulate collaborative edge-to-server VLM inference (two-stage crops, progressive "
                    "refinement) at scale, driven by cached model traces.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a scenario YAML and write events.parquet + summary.json",
                       description="Run one scenario. Without SCENARIO, runs scenarios/quickstart.yaml on the "
                                   "shipped default trace.")
    p.add_argument("scenario", nargs="?", help="scenario YAML file (default: scenarios/quickstart.yaml)")
    p.add_argument("--out", help="run directory to write (default: runs/<scenario name>)")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.add_argument("--audit", action="store_true",
                   help="also write audit.parquet (every transfer and GPU pass) so `edgevlm check` can verify "
                        "link capacity, per-request bytes and GPU busy time")
    p.add_argument("--replay", metavar="RUN_DIR",
                   help="rerun RUN_DIR from its stored scenario.yaml and trace, and diff the outputs against it "
                        "(exit 1 if they differ)")
    p.set_defaults(func=_cmd_run)

    t = sub.add_parser("trace", help="trace files: validate, generate synthetic, extract from a VLM")
    tsub = t.add_subparsers(dest="trace_command", required=True, metavar="TRACE_COMMAND")
    v = tsub.add_parser("validate", help="check a trace file against its format (v1 or v2, docs/TRACE_FORMAT.md)")
    v.add_argument("trace")
    v.set_defaults(func=_cmd_trace_validate)
    s = tsub.add_parser("synthetic", help="write a SYNTHETIC trace (invented numbers, for tests only)")
    s.add_argument("out")
    s.add_argument("--samples", type=int, default=2000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--format-version", type=int, choices=(1, 2), default=1,
                   help="1: one score per stage; 2: scores, uncertainties and boxes per JPEG quality")
    s.set_defaults(func=_cmd_trace_synthetic)
    for module in TRACE_COMMAND_MODULES:
        _register_optional(tsub, module)
    for module in COMMAND_MODULES:
        _register_optional(sub, module)
    return ap


def _register_optional(subparsers, module: str) -> None:
    """Add sub-commands from a module that may be absent (its heavy imports stay lazy)."""
    name, _, func = module.partition(":")
    try:
        mod = importlib.import_module(name)
    except ImportError:
        return
    getattr(mod, func or "register")(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UserError, TraceError) as exc:
        print(f"edgevlm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("edgevlm: error: out of memory; make the scenario smaller (clients.count, stop)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        if getattr(exc, "out_dir", None) is not None:  # sim.interrupt.RunInterrupted: partial outputs written
            print(f"edgevlm: interrupted at simulated time {exc.sim_time_s:.3f} s; partial results in "
                  f"{exc.out_dir} (summary.json \"complete\": false)", file=sys.stderr)
        else:
            print("edgevlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
