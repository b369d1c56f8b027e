"""The simulator's sub-commands (`run`, `trace validate|synthetic`, `sweep`, `check`) for `edgevlm`.

`register(commands)` adds them; the `edgevlm` entry point (edgevlm/cli.py) calls it with every
other package's, so this module names no package above sim. Bad input raises UserError, which the
entry point prints as one line naming the field (exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgevlm.commands import Commands, add_output_options
from edgevlm.sim import check, sweep
from edgevlm.sim.errors import UserError
from edgevlm.sim.replay import cmd_replay
from edgevlm.sim.runner import Workload, default_scenario_path, resolve_trace, run
from edgevlm.sim.scenario import DEFAULT_TRACE, load_scenario
from edgevlm.sim.stability import UNSTABLE_NOTE
from edgevlm.sim.yamlsafe import read_file as read_yaml
from edgevlm.traces import TraceError, read_trace
from edgevlm.traces.synthetic import write_synthetic


def _cmd_run(args: argparse.Namespace) -> int:
    if args.replay:
        return cmd_replay(args)
    path = Path(args.scenario) if args.scenario else default_scenario_path()
    scenario, base_dir = load_scenario(path)
    if scenario.trace == DEFAULT_TRACE and not args.quiet and "trace" not in (read_yaml(path, "scenario") or {}):
        print(f"note: the scenario names no trace; using the shipped default {DEFAULT_TRACE}", file=sys.stderr)
    if args.seed is not None:
        scenario = scenario.model_copy(update={"seed": args.seed})
    out = Path(args.out) if args.out else Path("runs") / scenario.name
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
    st = s.get("stability") or {}
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
        *([("stability", f"{UNSTABLE_NOTE} (served {f(st['served_per_s'], '{:.2f}')} of "
                          f"{f(st['offered_per_s'], '{:.2f}')} req/s offered; backlog {st['backlog']['start']} -> "
                          f"{st['backlog']['end']} requests); no steady-state CIs")]
          if s.get("stable") is False else []),
        ("latency mean", ci(lat["mean"]) + " s"),
        ("latency p50/p95/p99", " / ".join(f(lat[k]["value"]) for k in ("p50", "p95", "p99")) + " s"),
        ("accuracy", ci(s["accuracy"]) + (f"  ({s['accuracy_note']})" if s.get("accuracy_note") else "")),
        ("uplink bytes/req", f(s["bytes_per_request"]["uplink"], "{:,.0f}")),
        ("comm cost (seed)", "additional " + f(s["additional_comm_cost"]) + " (global-only 0, always-crop 1)"
         + "   relative " + ("n/a (the policy sends no image)" if "comm_cost" not in s
                           else "n/a (trace has no q100)" if s.get("relative_comm_cost") is None
                           else f(s["relative_comm_cost"]) + " (x global image at q100)")),
        ("retransmission rate", f(s["retransmission_rate"])),
        ("utilisation", "  ".join(f"{k} {f(v, '{:.1%}')}" for k, v in s["utilisation"].items())),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _cmd_trace_validate(args: argparse.Namespace) -> int:
    table, prov = read_trace(resolve_trace(args.trace, None))
    print(f"{args.trace}: valid v{prov['format_version']} trace, {table.num_rows} rows, "
          f"source_kind={prov['source_kind']}, model={prov['model_id']}, dataset={prov['dataset_id']}, "
          f"jpeg_qualities={prov['jpeg_qualities']}"
          + ("" if prov["format_version"] >= 2 else "; accuracy does not depend on JPEG quality (v1 trace)"))
    return 0


def _cmd_trace_synthetic(args: argparse.Namespace) -> int:
    if args.samples <= 0:
        raise UserError("--samples: must be a positive integer")
    print(write_synthetic(args.out, args.samples, args.seed, args.format_version))
    return 0


def register(commands: Commands) -> None:
    """The simulator's commands: run, trace validate|synthetic, sweep, check."""
    p = commands.add("run", _cmd_run, "run a scenario YAML and write events.parquet + summary.json",
                     "Run one scenario. Without SCENARIO, runs scenarios/quickstart.yaml on the shipped default "
                     "trace.")
    p.add_argument("scenario", nargs="?", help="scenario YAML file (default: scenarios/quickstart.yaml)")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    add_output_options(p, "run directory to write (default: runs/<scenario name>)", progress=True)
    p.add_argument("--audit", action="store_true",
                   help="also write audit.parquet (every transfer and GPU pass), and server_steps.parquet (KV use "
                        "per scheduler step) where the server has a KV model, so `edgevlm check` can verify "
                        "link capacity, per-request bytes, GPU busy time and the KV cache on every step")
    p.add_argument("--replay", metavar="RUN_DIR",
                   help="rerun RUN_DIR from its stored scenario.yaml and trace, and diff the outputs against it "
                        "(exit 1 if they differ)")
    v = commands.add("validate", _cmd_trace_validate, "check a trace file against its format (v1 or v2, docs/TRACE_FORMAT.md)",
                     group="trace")
    v.add_argument("trace")
    s = commands.add("synthetic", _cmd_trace_synthetic, "write a SYNTHETIC trace (invented numbers, for tests only)",
                     group="trace")
    s.add_argument("out")
    s.add_argument("--samples", type=int, default=2000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--format-version", type=int, choices=(1, 2), default=1,
                   help="1: one score per stage; 2: scores, uncertainties and boxes per JPEG quality")
    sweep.register(commands.top)
    check.register(commands.top)
