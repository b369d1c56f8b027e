"""The testbed's sub-commands `serve`, `edge`, `testbed` and `validate`, added by register(commands).

Heavy imports (torch, fastapi, httpx: the [testbed] and [models] extras) stay inside the handlers,
so `edgevlm --help` stays fast and lists these commands without those extras installed."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import numpy as np

from edgevlm.commands import Commands, add_output_options
from edgevlm.models.backend import BackendError
from edgevlm.models.manifest import ManifestError, read_manifest
from edgevlm.sim.errors import UserError
from edgevlm.sim.workload import Workload
from edgevlm.testbed.config import DEFAULT_MODEL, load_testbed
from edgevlm.testbed.edge import Arrival, build_policy, run_edge, write_events
from edgevlm.testbed.engine import ModelProcessError, parse_cpus
from edgevlm.testbed.validate import run


def _cmd_serve(args: argparse.Namespace) -> int:
    model = args.model
    if model is None and args.engine != "timed":
        if not DEFAULT_MODEL.is_dir():
            raise UserError(f"--model: the default tiny model {DEFAULT_MODEL} does not exist here; "
                            "pass --model DIR (a checkpoint directory)")
        model = str(DEFAULT_MODEL)
    if args.max_queue < 1:
        raise UserError("--max-queue: must be a positive integer")
    from edgevlm.testbed.server import serve  # defers fastapi

    cpus = parse_cpus(args.model_cpus, "--model-cpus") if args.model_cpus else None
    if args.model_spin_s < 0:
        raise UserError(f"--model-spin-s: must be >= 0 seconds, got {args.model_spin_s}")
    if (cpus or args.model_spin_s) and not args.model_process:
        raise UserError("--model-cpus / --model-spin-s: need --model-process (the passes run in the server "
                        "process otherwise)")
    timed = None
    if args.engine == "timed":
        if not (args.trace and args.pass_times and args.jpeg_quality):
            raise UserError("--engine timed: needs --trace, --jpeg-quality and --pass-times")
        if args.model_process:
            raise UserError("--model-process: the timed engine runs no model")
        timed = {"trace": args.trace, "quality": args.jpeg_quality, "pass_times": args.pass_times,
                 "visual_tokens": args.visual_tokens}
    if args.max_batch < 1 or args.max_wait_s < 0:
        raise UserError("--max-batch: must be >= 1; --max-wait-s: must be >= 0")
    if args.max_batch > 1 and timed is None:
        raise UserError("--max-batch: batching needs --engine timed")
    try:
        serve(model, args.host, args.port, manifest=args.manifest, max_queue=args.max_queue,
              max_body_bytes=args.max_body_bytes, threads=args.threads, model_process=args.model_process,
              model_cpus=cpus, model_spin_s=args.model_spin_s, timed=timed, max_batch=args.max_batch,
              max_wait_s=args.max_wait_s)
    except (BackendError, ModelProcessError) as exc:
        raise UserError(str(exc)) from None
    return 0


def _cmd_edge(args: argparse.Namespace) -> int:
    try:
        samples = {s.sample_id: s for s in read_manifest(args.manifest)}
    except ManifestError as exc:
        raise UserError(str(exc)) from None
    try:
        policy_cfg = json.loads(args.policy)
    except ValueError as exc:
        raise UserError(f"--policy: not valid JSON ({exc})") from None
    policy = build_policy(policy_cfg, args.trace)
    workload: Workload = policy.workload
    missing = [s for s in workload.sample_id if s not in samples]
    if missing:
        raise UserError(f"--trace: sample_id {missing[0]!r} is not in the manifest")
    rows = [samples[s] for s in workload.sample_id]
    if args.schedule:
        arrivals = [Arrival(**a) for a in json.loads(Path(args.schedule).read_text())]
    else:
        if args.rate_per_s is None or args.requests is None:
            raise UserError("--rate-per-s and --requests are needed without --schedule")
        rng = np.random.default_rng(args.seed)
        t = np.cumsum(rng.exponential(1 / args.rate_per_s, args.requests))
        arrivals = [Arrival(k, int(rng.integers(args.clients)), int(rng.integers(workload.n)), float(t[k]))
                    for k in range(args.requests)]
    px = int(workload.provenance.get("vision_input_px"))
    try:
        done, info = asyncio.run(run_edge(args.server, rows, policy, arrivals, vision_px=px, n_clients=args.clients,
                                          health_timeout_s=args.health_timeout_s, t0=args.t0))
    except RuntimeError as exc:
        raise UserError(f"edge: {exc}") from None
    out = Path(args.out)
    write_events(done, list(workload.sample_id), policy.name, out, args.deadline_s)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    ok = sum(r.status == "ok" for r in done)
    print(f"edge: {ok}/{len(done)} ok, {len(info['errors'])} errors; wrote {out}", file=sys.stderr)
    return 0


def _cmd_testbed(args: argparse.Namespace, compare_sim: bool = False) -> int:
    tb, _ = load_testbed(args.testbed)
    out = Path(args.out) if args.out else Path("runs") / f"testbed-{tb.name}"
    result = run(tb, out, compare_sim=compare_sim, progress=not args.quiet)
    if not args.quiet:
        print(format_points(result["points"]))
        print(f"wrote {out / 'comparison.json'}")
    return 0


def format_points(points) -> str:
    lines = [f"{'point':<28}{'metric':<28}{'sim':>12}{'testbed':>12}{'error':>9}"]
    for p in points:
        for k, v in p["metrics"].items():
            f = lambda x: "-" if x is None else f"{x:.4g}"
            e = "-" if v["rel_error"] is None else f"{100 * v['rel_error']:+.1f}%"
            lines.append(f"{p['point']:<28}{k:<28}{f(v['sim']):>12}{f(v['testbed']):>12}{e:>9}")
    return "\n".join(lines)


def register(commands: Commands) -> None:
    s = commands.add("serve", _cmd_serve, "run the real inference server (FastAPI + uvicorn)",
                     "Serve stage 1, the relative-attention box and stage 2 over HTTP (see testbed/server.py for the "
                     "endpoints).")
    s.add_argument("--model", help="checkpoint directory (default: models/weights/tiny-scenetext-v1)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--manifest", help="only accept sample ids of this manifest (others get 404)")
    s.add_argument("--max-queue", type=int, default=64, help="refuse stage 1 with 429 beyond this many waiting passes")
    s.add_argument("--max-body-bytes", type=int, default=4 << 20, help="largest request body (413 beyond)")
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    s.add_argument("--model-process", action="store_true",
                   help="run the model passes in a process of their own, as a separate device: the HTTP event "
                        "loop then never shares the GIL with a pass")
    s.add_argument("--model-cpus", metavar="LIST",
                   help="with --model-process: pin the model process to these CPUs, e.g. '1' or '2,3'")
    s.add_argument("--model-spin-s", type=float, default=0.0, metavar="S",
                   help="with --model-process: after each pass, busy-poll up to S seconds for the next one, so a "
                        "dedicated core does not go idle between close passes (default 0: block)")
    s.add_argument("--engine", choices=("model", "timed"), default="model",
                   help="model: run the model's passes; timed: no model, each pass held for the simulator's "
                        "time and answered from the trace (testbed/timed.py)")
    s.add_argument("--trace", help="with --engine timed: the trace the answers come from")
    s.add_argument("--jpeg-quality", type=int, help="with --engine timed: the trace's quality to answer at")
    s.add_argument("--pass-times", metavar="CSV", help="with --engine timed: a latency profile "
                   "(phase,batch,tokens,seconds) or a per-sample table (sample_id,s1_s,att_s,s2_s)")
    s.add_argument("--max-batch", type=int, default=1, help="with --engine timed: static batches of up to this "
                   "many passes, as the simulator's `static` scheduler (default 1: one pass at a time, `fifo`)")
    s.add_argument("--max-wait-s", type=float, default=0.05, help="with --max-batch: longest the first pass of "
                   "a batch waits for more (the scheduler's max_wait_s)")
    s.add_argument("--visual-tokens", type=int, help="with --engine timed and a profile: visual tokens per image "
                   "(default: the trace's)")

    e = commands.add("edge", _cmd_edge, "run a real edge client against `edgevlm serve`",
                     "Replay a schedule (or a Poisson stream) of manifest samples with a simulator policy; writes "
                     "an event log (DESIGN.md §5).")
    e.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8000")
    e.add_argument("--manifest", required=True)
    e.add_argument("--trace", required=True, help="trace of the manifest (the policy object is built over it)")
    e.add_argument("--policy", default='{"kind": "global_only", "jpeg_quality": 75}',
                   help="the scenario policy block as JSON")
    e.add_argument("--schedule", help="JSON list of {request_id, client_id, sample, arrival_s}")
    e.add_argument("--rate-per-s", type=float, help="Poisson rate without --schedule")
    e.add_argument("--requests", type=int, help="request count without --schedule")
    e.add_argument("--clients", type=int, default=1)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--deadline-s", type=float, default=2.0)
    e.add_argument("--health-timeout-s", type=float, default=60.0)
    e.add_argument("--t0", type=float, help="the run's time origin (time.time()); default: once the server is "
                   "healthy. The testbed sets it to when its bandwidth traces start over")
    e.add_argument("--out", default="events_testbed.parquet")

    for name, cmp in (("testbed", False), ("validate", True)):
        t = commands.add(
            name, lambda a, c=cmp: _cmd_testbed(a, c),
            "run the testbed and the matching simulator scenario, and compare them" if cmp else
            "run the real system in network namespaces",
            "Namespaced server + client over a tc-shaped veth pair (needs root). "
            + ("Writes comparison.json and latency CDF plots." if cmp else ""))
        t.add_argument("testbed", help="TESTBED.yaml")
        add_output_options(t, "output folder (default: runs/testbed-<name>)")
