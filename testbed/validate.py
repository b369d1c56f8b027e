"""`edgevlm testbed` / `edgevlm validate`: run the real system and the simulator on the same arrivals.

Steps (written under OUT/):
  1. trace.parquet   the manifest's trace by the same model (models.extract, on the JPEG-decoded images the
     server sees), unless TESTBED.yaml gives one;
  2. calibration.json, profile.csv   measured pass times (testbed.calibrate; the running server's), the
     server's speed variability (calibrate.speed_fit -> the scenario's server.speed) and edge prep/crop
     times; repeated every round (`rounds`);
  3. per (policy, load): the simulator scenario (scenario.yaml): Poisson arrivals at rho x measured
     capacity, the trace, the measured profile, edge prep/crop times, the same link rates. Its event
     log gives the arrival schedule (time, client, sample) that the real edge client then replays,
     so both see the same arrivals and the same samples;
  4. the testbed: server and client namespaces joined by a shaped veth pair (testbed.netns);
     `edgevlm serve` in one, `edgevlm edge` in the other; events_testbed.parquet (and replayK/ with
     `replays`: the same arrivals again, the testbed's repeatability);
  5. comparison.json per point and OUT/comparison.json overall: mean/p50/p95 latency, throughput,
     uplink and downlink bytes/request, retransmission rate (the crop rate, as sim.summary), each
     sim vs testbed with relative error (sim - testbed) / testbed; cdf.png overlays the latency CDFs.

Stages (functions below): `prepare` (trace, in-process calibration), `calibrate_round` (the idle
network path and the server's pass times, every round), `run_point` (one policy and load on the
simulator and the testbed) and `compare_points` (pool rounds, write comparisons and CDF plots);
`run` strings them together inside `network_namespaces` and `inference_server`, which always tear
down the namespaces, stop the server and close its log. Every simulator scenario goes through
`parse_scenario`, the parser `edgevlm run` uses.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edgevlm.models.backend import load_backend
from edgevlm.models.manifest import Sample, read_manifest
from edgevlm.sim.bandwidth import parse_mahimahi
from edgevlm.sim.errors import UserError
from edgevlm.sim.profiles import EDGES
from edgevlm.sim.runner import run as sim_run
from edgevlm.sim.scenario import Scenario, parse_scenario
from edgevlm.sim.summary import nested_get, summarize
from edgevlm.sim.workload import Workload
from edgevlm.testbed import calibrate
from edgevlm.testbed.config import Testbed
from edgevlm.testbed.edge import build_policy
from edgevlm.testbed.netns import Netns, NetnsUnavailable, Shape
from edgevlm.traces.io import atomic_write
from edgevlm.traces.protocol import ATTENTION_REQUEST_BYTES, BBOX_REQUEST_BYTES, TEXT_BYTES_PER_TOKEN

Say = Callable[[str], None]

METRICS = (("latency_mean_s", ("latency_s", "mean", "value")), ("latency_p50_s", ("latency_s", "p50", "value")),
           ("latency_p95_s", ("latency_s", "p95", "value")), ("throughput_per_s", ("throughput_per_s",)),
           ("uplink_bytes_per_request", ("bytes_per_request", "uplink")),
           ("downlink_bytes_per_request", ("bytes_per_request", "downlink")),
           ("retransmission_rate", ("retransmission_rate",)))
REPO = Path(__file__).resolve().parent.parent
#: With a bandwidth trace, the edge client's run starts this long after it is launched (its start-up:
#: imports, images, the server's health check, one connection per client), at the traces' time 0.
EDGE_START_S = 15.0


def rel_error(sim: float | None, real: float | None) -> float | None:
    if sim is None or real is None:
        return None
    if real == 0:
        return 0.0 if sim == 0 else math.inf
    return (sim - real) / real


def compare(sim_summary: dict, tb_summary: dict) -> dict[str, dict[str, float | None]]:
    out = {}
    for name, path in METRICS:
        s, r = nested_get(sim_summary, *path), nested_get(tb_summary, *path)
        out[name] = {"sim": s, "testbed": r, "rel_error": rel_error(s, r)}
    return out


def point_requests(tb, rate_per_s: float) -> int:
    """Requests of one point: `requests`, or more where that would last under `min_point_s` of arrivals (a
    short point at high load sits inside a few seconds of the host's speed, which can be one slow spell)."""
    return max(tb.requests, math.ceil(tb.min_point_s * rate_per_s))


def speed_block(fit: dict[str, float] | None) -> dict:
    """The scenario's `server.speed` block of a `calibrate.speed_fit` (constant without one)."""
    if fit is None:
        return {"kind": "constant"}
    return {"kind": "lognormal", **{k: round(fit[k], 6) for k in ("jitter_sigma", "drift_sigma", "drift_tau_s")}}


def scenario_dict(tb: Testbed, *, name: str, seed: int, policy: dict, trace: Path, profile: Path,
                  rate_per_client_s: float, visual_tokens: int, vision_px: int, net: dict[str, float],
                  speed: dict | None = None) -> dict:
    """The YAML mapping of one point's simulator scenario (what a user would write)."""
    up, down = tb.network.uplink, tb.network.downlink
    prep_s, crop_s = net["edge_prep_s"], net["edge_crop_s"]
    return {
        "name": name, "seed": seed, "trace": str(trace),
        "stop": {"requests": point_requests(tb, rate_per_client_s * tb.clients), "warmup_s": 0.0},
        "clients": {"count": tb.clients, "arrival": {"kind": "poisson", "rate_per_s": rate_per_client_s},
                    # the device's own times are the measured ones; its hardware block is a placeholder
                    "edge": {"device": {"name": "testbed-edge", "prep_s": prep_s, "crop_s": crop_s,
                                        "hardware": EDGES["imx95"].hardware.model_dump()}},
                    # one shared uplink; each client's access hop (the delay line's per-flow hop), or
                    # none of its own (1 Gbit/s never binds)
                    "link_classes": [{"share": 1.0, "uplink_mbps": up.access_mbps or up.capacity_mbps or 1000.0}]},
        "network": {"uplink": {**up.sim_link(),
                               "propagation_ms": up.propagation_ms + 1e3 * net["uplink_fixed_s"],
                               "overhead_bytes": net["uplink_overhead_bytes"]},
                    "downlink": {**down.sim_link(),
                                 "propagation_ms": down.propagation_ms + 1e3 * net["downlink_fixed_s"],
                                 "overhead_bytes": net["downlink_overhead_bytes"]}},
        "server": {"replicas": 1, "max_queue": tb.server.max_queue,
                   "model": {"name": "testbed-model", "d_model": 32, "n_layers": 4, "params_b": 0.001,
                             "visual_tokens": visual_tokens, "vision_px": vision_px},
                   "scheduler": {"kind": "fifo"}, "latency": {"kind": "profile", "path": str(profile)},
                   "speed": speed_block(speed)},
        # The real edge client runs the gate: the stage-1 reply goes down before the decision.
        "policy": {**policy, "gate": "edge",
                   "gate_values_bytes_per_token": int(net.get("gate_values_bytes_per_token", 12))},
        "slo": {"deadline_s": tb.deadline_s},
    }


def build_scenario(tb: Testbed, **kwargs: Any) -> Scenario:
    """One point's simulator scenario (see scenario_dict), validated by `parse_scenario`."""
    return parse_scenario(scenario_dict(tb, **kwargs), source=f"testbed point {kwargs['name']}")


def with_changes(sc: Scenario, changes: dict) -> Scenario:
    """`sc` with the nested `changes` applied, parsed again like any scenario."""
    data = sc.model_dump(mode="json", exclude_none=True)
    _merge(data, changes)
    return parse_scenario(data, source=f"testbed point {sc.name}")


def _merge(data: dict, changes: dict) -> None:
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            _merge(data[k], v)
        else:
            data[k] = copy.deepcopy(v)


def cpu_split(tb) -> tuple[list[int], list[int]]:
    """(model process CPUs, CPUs of everything else: server event loop, edge client); both empty when
    the model runs in the server process or the engine is timed (nothing pinned)."""
    if not tb.server.model_process or tb.server.engine == "timed":
        return [], []
    avail = sorted(os.sched_getaffinity(0))
    model = list(tb.server.model_cpus or ([avail[-1]] if len(avail) >= 2 else []))
    return model, ([c for c in avail if c not in model] if model else [])


def _pinned(cpus: list[int]):
    """preexec_fn pinning a child (and what it starts) to `cpus`; None when not pinning."""
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def _wait_health(url: str, netns_prefix: list[str], timeout_s: float, proc) -> None:
    code = ("import httpx,sys\ntry:\n r=httpx.get(sys.argv[1],timeout=2)\n sys.exit(0 if r.status_code==200 else 1)\n"
            "except Exception:\n sys.exit(1)")
    end = time.time() + timeout_s
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was ready")
        if subprocess.run(netns_prefix + [sys.executable, "-c", code, url + "/v1/health"]).returncode == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout_s:.0f} s")


@contextmanager
def network_namespaces(tb: Testbed) -> Iterator[Netns]:
    """The server and client namespaces joined by a veth pair shaped as TESTBED.yaml's network;
    torn down on leaving, whatever happened inside. No root or tc: one-line UserError."""
    up, down = tb.network.uplink, tb.network.downlink
    with ExitStack() as stack:
        try:
            ns = stack.enter_context(Netns(up.shape(), down.shape()))
        except NetnsUnavailable as exc:
            raise UserError(f"testbed: {exc}") from None
        yield ns


@contextmanager
def inference_server(ns: Netns, tb: Testbed, env: dict[str, str], log_path: Path, say: Say,
                     timed: tuple[Path, int, Path] | None = None) -> Iterator[str]:
    """`edgevlm serve` in the server namespace, its output in `log_path`; yields its URL once healthy,
    then stops it (terminate, kill after 10 s) and closes the log. `timed`: (trace, JPEG quality, pass
    times CSV) of `server.engine: timed`."""
    base_url = f"http://{ns.server_ip}:{tb.server.port}"
    model_cpus, other_cpus = cpu_split(tb)
    cmd = (ns.exec_prefix(ns.server)
           + [sys.executable, "-m", "edgevlm", "serve", "--model", tb.model, "--host", ns.server_ip,
              "--port", str(tb.server.port), "--manifest", tb.manifest, "--max-queue", str(tb.server.max_queue),
              "--threads", str(tb.server.threads)]
           + (["--model-process", "--model-spin-s", str(tb.server.model_spin_s)]
              if tb.server.model_process and timed is None else [])
           + (["--model-cpus", ",".join(map(str, model_cpus))] if model_cpus else [])
           + (["--engine", "timed", "--trace", str(timed[0]), "--jpeg-quality", str(timed[1]),
               "--pass-times", str(timed[2])] if timed is not None else []))
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  preexec_fn=_pinned(other_cpus))
        try:
            say("starting the server" + (f" (model process on CPU {','.join(map(str, model_cpus))}, event loop "
                                         f"and edge client on {','.join(map(str, other_cpus))})" if model_cpus else ""))
            _wait_health(base_url, ns.exec_prefix(ns.client), 180, server)
            yield base_url
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@dataclass
class Live:
    """The running testbed: its namespaces, the server's URL, the environment of its processes and
    the trace the edge client's policies are built over."""

    ns: Netns
    tb: Testbed
    env: dict[str, str]
    base_url: str
    trace: Path

    def edge(self, policy: dict, schedule: list[dict], pdir: Path, name: str) -> tuple[pa.Table, dict]:
        """One `edgevlm edge` run in the client namespace; returns (events table, edge info). With a
        bandwidth trace, the run starts when the delay line starts its traces over (trace time 0), as
        the simulator's run starts at its trace's time 0."""
        tb = self.tb
        pdir.mkdir(parents=True, exist_ok=True)
        (pdir / "schedule.json").write_text(json.dumps(schedule))
        t0 = []
        if tb.network.uplink.bandwidth_trace or tb.network.downlink.bandwidth_trace:
            t0 = [time.time() + EDGE_START_S]
            self.ns.restart_traces_at(t0[0])
        cmd = self.ns.exec_prefix(self.ns.client) + [
            sys.executable, "-m", "edgevlm", "edge", "--server", self.base_url, "--manifest", tb.manifest,
            "--trace", str(self.trace), "--policy", json.dumps(policy), "--schedule", str(pdir / "schedule.json"),
            "--clients", str(tb.clients), "--out", str(pdir / "events_testbed.parquet"),
            "--deadline-s", str(tb.deadline_s)] + (["--t0", repr(t0[0])] if t0 else [])
        try:
            p = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=tb.time_limit_s,
                               preexec_fn=_pinned(cpu_split(tb)[1]))
        except subprocess.TimeoutExpired:
            raise UserError(f"testbed: {name} ran past time_limit_s={tb.time_limit_s:g}") from None
        if p.returncode != 0:
            raise UserError(f"testbed: edge client failed for {name}: {p.stderr.strip()[-800:]}")
        info = json.loads((pdir / "events_testbed.json").read_text())
        return pq.read_table(pdir / "events_testbed.parquet").sort_by("request_id"), info


def server_pass_times(frames, attention_passes, workload) -> list[dict[str, Any]]:
    """Per trace row: median stage-1, attention and stage-2 pass times the server stamped, from
    testbed event frames (pandas) and the edge's attention pass records (None where not seen)."""
    sid_row = {s: i for i, s in enumerate(workload.sample_id)}
    per: dict[int, dict[str, list[float]]] = {i: {"s1_s": [], "att_s": [], "s2_s": []} for i in range(workload.n)}
    for df in frames:
        df = df[df.status == "ok"]
        for sid, a, b in zip(df.sample_id, df.s1_start_s, df.s1_end_s):
            per[sid_row[sid]]["s1_s"].append(b - a)
        two = df[df.stages == 2]
        for sid, a, b in zip(two.sample_id, two.s2_start_s, two.s2_end_s):
            per[sid_row[sid]]["s2_s"].append(b - a)
    for p in attention_passes:
        per[p["sample"]]["att_s"].append(p["end_s"] - p["start_s"])
    return [{"sample": i, **{k: float(np.median(v)) if v else None for k, v in d.items()}} for i, d in per.items()]


def median_rows(calibrations: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per sample and pass, the median over several calibrations' server pass times (None where no
    calibration timed it): one calibration taken while the host ran slow does not set a whole round."""
    out = []
    for rows in zip(*calibrations):
        d = {"sample": rows[0]["sample"]}
        for k in ("s1_s", "att_s", "s2_s"):
            v = [r[k] for r in rows if r.get(k) is not None]
            d[k] = float(np.median(v)) if v else None
        out.append(d)
    return out


def idle_handoffs(ev, attention_passes) -> np.ndarray:
    """Receive-to-pass-start delays of the stage-1 and stage-2 passes that found the server idle (no other
    pass running or queued when the upload ended). Idle requests one at a time all do on a constant link;
    on a bandwidth trace an outage bunches them, and the queueing behind each other is not hand-off."""
    two = ev[ev.stages == 2]
    passes = np.concatenate([ev[["s1_start_s", "s1_end_s"]].to_numpy(), two[["s2_start_s", "s2_end_s"]].to_numpy(),
                             np.array([[p["start_s"], p["end_s"]] for p in attention_passes]).reshape(-1, 2)])
    out = []
    for up, start in np.concatenate([ev[["up1_end_s", "s1_start_s"]].to_numpy(),
                                     two[["up2_end_s", "s2_start_s"]].to_numpy()]):
        busy = (passes[:, 0] < start - 1e-9) & (passes[:, 1] > up)  # another pass ran past this upload's end
        if not busy.any():
            out.append(start - up)
    return np.asarray(out, dtype=float)


def wire_s(direction, start_s: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
    """Seconds each message takes on this direction's link from `start_s` (run time = trace time), the
    messages in FIFO order as the delay line's queue carries them: bytes / capacity when the link is idle,
    and on a bandwidth trace until its opportunities have carried the bytes, behind any message still
    queued (an outage of the trace holds several one-at-a-time requests). With access hops, a lone
    message runs at the slower of the hop and the link, as the simulator's capped transfer does."""
    if direction.bandwidth_trace is None:
        rate = direction.mean_bps()
        if direction.access_mbps is not None:
            rate = min(rate, direction.access_mbps * 1e6)
        return nbytes * 8.0 / rate
    prof = parse_mahimahi(direction.bandwidth_trace)
    out = np.empty(len(start_s))
    end_bits, free_s = 0.0, 0.0
    for i in np.argsort(start_s, kind="stable"):
        t = float(start_s[i])
        begin = end_bits if free_s > t else prof.cum_bits(t)
        end_bits = begin + 8.0 * float(nbytes[i])
        free_s = max(t, prof.time_at(end_bits))
        out[i] = free_s - t
    return out


def message_bytes(g, c, workload, qi: int, crop_share: float) -> tuple[float, float, float]:
    """Per-message HTTP bytes up and down, and the stage-1 reply's uncertainty bytes per token, for a
    policy that crops `crop_share` of requests, from idle global_only (`g`: one message each way) and
    always_crop (`c`: three each way, the edge-gate protocol) event logs.

    Message kinds differ (the stage-1 upload carries the question in its URL, the box request is a
    small JSON body), while a simulated link charges one overhead per message. So the overheads are
    the ones that make the mean bytes per request exact at this policy's mix of one- and
    three-message requests. The uncertainty bytes per token are the least-squares slope over the
    stage-1 token counts (0 when every answer has the same length: then the overhead absorbs them).
    """
    sid = {s: i for i, s in enumerate(workload.sample_id)}
    parts = []
    for ev, crop in ((g, False), (c, True)):
        rows = ev["sample_id"].map(sid).to_numpy()
        t1 = workload.s1_tokens[rows].astype(np.float64)
        up_pay = workload.global_bytes[rows, qi] + workload.question_bytes[rows]
        down_pay = t1 * TEXT_BYTES_PER_TOKEN
        if crop:
            up_pay = up_pay + ATTENTION_REQUEST_BYTES + workload.local_bytes[rows, qi]
            down_pay = down_pay + BBOX_REQUEST_BYTES + workload.s2_tokens[rows] * TEXT_BYTES_PER_TOKEN
        parts.append((ev.uplink_bytes.to_numpy() - up_pay, ev.downlink_bytes.to_numpy() - down_pay, t1,
                      3.0 if crop else 1.0))
    t_all = np.concatenate([t for _, _, t, _ in parts])
    gate_bytes = 0.0
    if np.ptp(t_all) > 0:  # slope of the extra downlink bytes on stage-1 tokens, per message count
        x = np.concatenate([np.stack([np.full(len(t), m), t], 1) for _, _, t, m in parts])
        (_, gate_bytes), *_ = np.linalg.lstsq(x, np.concatenate([d for _, d, _, _ in parts]), rcond=None)
        gate_bytes = max(0.0, float(gate_bytes))
    w = (1.0 - crop_share, crop_share)
    msgs = sum(wk * m for wk, (_, _, _, m) in zip(w, parts))
    up_overhead = sum(wk * float(np.mean(u)) for wk, (u, _, _, _) in zip(w, parts)) / msgs
    down_overhead = sum(wk * float(np.mean(d - gate_bytes * t)) for wk, (_, d, t, _) in zip(w, parts)) / msgs
    return up_overhead, down_overhead, gate_bytes


# ---------------------------------------------------------------- stage 1: the trace and in-process calibration


@dataclass
class Setup:
    """What every round starts from: the trace, its workload and manifest rows, and the model's pass
    times measured in this process (`calibrate.measure`)."""

    trace: Path
    workload: Workload
    quality: int
    meas: dict[str, Any]
    edge_prep_s: float
    edge_crop_s: float
    visual_tokens: int
    vision_px: int


def prepare(tb: Testbed, out: Path, say: Say, progress: bool) -> Setup:
    """The trace of the manifest (extracted unless TESTBED.yaml gives one) and the in-process pass
    times (calibration.json, profile.csv)."""
    import torch  # defers torch (the [models] extra)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # no flush-denormal here: it is process-global state (the server process sets it)
    try:
        samples = read_manifest(tb.manifest)
        by_id: dict[str, Sample] = {s.sample_id: s for s in samples}
        backend = load_backend(tb.model)
        trace = Path(tb.trace) if tb.trace else out / "trace.parquet"
        quality = int(tb.policies[0].get("jpeg_quality", 75))
        if not trace.exists():
            from edgevlm.models.extract import ExtractOptions, extract  # defers PIL (the [models] extra)

            say(f"extracting the trace of {len(samples)} samples -> {trace}")
            extract(backend, samples, trace, ExtractOptions(
                dataset_id=Path(tb.manifest).stem, source_kind=backend.settings.source_kind or "tiny-local",
                progress=progress, notes="testbed validation trace",
                infer_jpeg_quality=quality), manifest=tb.manifest)
        workload = Workload.load(trace).at_quality(quality, "policies[0].jpeg_quality")
        missing = [sid for sid in workload.sample_id if sid not in by_id]
        if missing:
            raise UserError(f"trace: sample_id {missing[0]!r} is not in the manifest {tb.manifest}")
        rows_samples = [by_id[sid] for sid in workload.sample_id]
        say(f"calibrating ({tb.calibration.repeats} repeats x {len(rows_samples)} samples)")
        meas = calibrate.measure(backend, rows_samples, workload, quality, tb.calibration.repeats)
        px = backend.vision_input_px
        del backend
    finally:
        torch.set_num_threads(threads)
    prof_rows = calibrate.profile_rows(meas, workload)
    calibrate.write_profile(prof_rows, out / "profile.csv")
    prep_s = float(np.mean([r["prep_s"] for r in meas["rows"]]))
    crop_s = float(np.mean([r["crop_s"] for r in meas["rows"]]))
    (out / "calibration.json").write_text(json.dumps({"rows": meas["rows"], "profile": prof_rows,
                                                      "edge_prep_s": prep_s, "edge_crop_s": crop_s}, indent=1))
    return Setup(trace, workload, quality, meas, prep_s, crop_s, meas["visual_tokens"], px)


# ---------------------------------------------------------------- stage 2: calibration on the live testbed


def calibrate_network(live: Live, workload: Workload, quality: int, gap_s: float, out: Path,
                      busy_gap_s: float | None = None) -> dict[str, Any]:
    """Requests one at a time on the idle testbed (global_only, then always_crop): the fixed software
    time per message (mean) beyond the wire time (HTTP stacks, JSON, event loops), which the simulator gets as
    extra propagation; the per-message HTTP bytes beyond its payload model (link overhead_bytes); and
    the edge's prep and crop times in the real client process.

    The server's pass times come from the idle always_crop and global_only requests, or, with
    `busy_gap_s`, from a third run (always_crop, arrivals every `busy_gap_s`, i.e. above capacity) that
    keeps the server busy (TESTBED.yaml calibration.server_passes: busy)."""
    tb = live.tb
    qi = workload.quality_index(quality)
    # calibration.idle_requests (32 by default; the median of 16 moved by 5-8 ms between runs on a loaded
    # host), spread over the clients' connections as the run uses them (each idle between its requests).
    n = max(tb.calibration.idle_requests, 2 * workload.n)
    sched = [{"request_id": k, "client_id": k % tb.clients, "sample": k % workload.n,
              "arrival_s": 0.2 + k * gap_s} for k in range(n)]
    res = {}
    for kind in ("global_only", "always_crop"):
        ev, info = live.edge({"kind": kind, "jpeg_quality": quality}, sched, out / f"calibration-{kind}",
                             f"calibration ({kind})")
        res[kind] = (ev.to_pandas(), info)
    g, ginfo = res["global_only"]
    c, cinfo = res["always_crop"]
    g = g[g.status == "ok"]
    c = c[c.status == "ok"]
    up_overhead, down_overhead, gate_bytes = message_bytes(g, c, workload, qi, crop_share=0.0)
    # beyond the wire time (alone on the link; on a trace from where the run's trace time stood, each edge
    # run starting at trace time 0) and the emulated propagation (the scenario has both already). The
    # median: one host stall in these few idle requests (seen: 146 ms against 18-36 ms) moved the mean by 8 ms.
    up_fixed = np.median((g.up1_end_s - g.edge_done_s).to_numpy()
                       - wire_s(tb.network.uplink, g.edge_done_s.to_numpy(), g.uplink_bytes.to_numpy())) \
        - tb.network.uplink.propagation_ms / 1e3
    down_fixed = np.median((g.done_s - g.s1_end_s).to_numpy()
                         - wire_s(tb.network.downlink, g.s1_end_s.to_numpy(), g.downlink_bytes.to_numpy())) \
        - tb.network.downlink.propagation_ms / 1e3
    prep = [v for v in (ginfo["edge_prep_s"], cinfo["edge_prep_s"]) if v is not None]
    # Pass times as the real server process runs them (its event loop shares the CPU and the GIL).
    server_rows = server_pass_times([g, c], cinfo["attention_passes"], workload)
    # every pass with its start time, per run (the speed fit pairs passes within one run only)
    passes = [calibrate.pass_records([g], [], workload), calibrate.pass_records([c], cinfo["attention_passes"], workload)]
    # the idle server's hand-off from receiving a request to starting its pass (event loop -> model thread)
    delay = np.concatenate([idle_handoffs(g, ginfo["attention_passes"]), idle_handoffs(c, cinfo["attention_passes"])])
    if busy_gap_s is not None:
        busy = [{"request_id": k, "client_id": k % tb.clients, "sample": k % workload.n,
                 "arrival_s": 0.2 + k * busy_gap_s} for k in range(3 * workload.n)]
        b, binfo = live.edge({"kind": "always_crop", "jpeg_quality": quality}, busy, out / "calibration-busy",
                             "calibration (busy server)")
        b = b.to_pandas()
        server_rows = server_pass_times([b[b.status == "ok"]], binfo["attention_passes"], workload)
        passes.append(calibrate.pass_records([b], binfo["attention_passes"], workload))
    return {"server_rows": server_rows, "server_passes": passes, "idle_logs": (g, c),
            "server_start_delay_s": max(0.0, float(np.mean(delay))),
            "uplink_overhead_bytes": max(0, int(round(up_overhead))),
            "downlink_overhead_bytes": max(0, int(round(down_overhead))),
            "gate_values_bytes_per_token": max(0, int(round(gate_bytes))),
            "uplink_fixed_s": max(0.0, float(up_fixed)), "downlink_fixed_s": max(0.0, float(down_fixed)),
            "edge_prep_s": float(np.mean(prep)), "edge_crop_s": cinfo["edge_crop_s"] or 0.0}


@dataclass
class RoundCalibration:
    """One round's calibration: the network path (`net`), the server's typical pass times (`meas`),
    the times the simulator gets (`meas_sim`: scaled by the speed fit's mean ratio, if any), the
    speed fit, the profile CSV written from them, and the idle requests' event logs."""

    net: dict[str, Any]
    meas: dict[str, Any]
    meas_sim: dict[str, Any]
    speed_fit: dict[str, float] | None
    profile: Path
    idle_logs: tuple[Any, Any]


def calibrate_round(live: Live, setup: Setup, gap_s: float, busy_gap_s: float | None, rdir: Path,
                    seen_rows: list[list[dict]], seen_passes: list[list[tuple]], say: Say) -> RoundCalibration:
    """Re-measure the network path and the server's pass times; the pass times (and the speed fit) use
    this and every earlier round's calibrations (`seen_rows`, `seen_passes`, extended here)."""
    tb, workload = live.tb, setup.workload
    say(f"calibrating the network path (idle requests, one at a time) and the server's pass times "
        f"({tb.calibration.server_passes})")
    net = calibrate_network(live, workload, setup.quality, gap_s, rdir, busy_gap_s)
    seen_rows.append(net.pop("server_rows"))
    seen_passes += net.pop("server_passes")
    idle_logs = net.pop("idle_logs")
    say("calibration: " + ", ".join(f"{k}={v:.4g}" for k, v in net.items()))
    meas = calibrate.with_server_times(setup.meas, median_rows(seen_rows))  # typical (median) pass times
    fit = None
    meas_sim = meas
    if tb.calibration.server_speed == "lognormal":
        # the pass times' spread and drift, and the mean occupancy per pass (see testbed/README.md)
        fit = calibrate.speed_fit(seen_passes)
        meas_sim = calibrate.mean_times(meas, fit["mean_ratio"], net["server_start_delay_s"])
        say("server speed: " + ", ".join(f"{k}={v:.4g}" for k, v in fit.items()))
    prof_rows = calibrate.profile_rows(meas_sim, workload)
    profile = calibrate.write_profile(prof_rows, rdir / "profile.csv")
    (rdir / "calibration.json").write_text(json.dumps({"rows": meas["rows"], "profile": prof_rows,
                                                      "server_speed": fit, **net}, indent=1))
    return RoundCalibration(net, meas, meas_sim, fit, profile, idle_logs)


# ---------------------------------------------------------------- stage 3: one point, simulated and measured


def _simulate(sc: Scenario, out: Path, replications: int):
    """Run `sc` once, or with a lognormal server speed `replications` times, each on its own speed path
    (server.speed.stream k: same arrivals and samples). Returns the first run's events (the arrivals the
    testbed replays), all runs' events pooled (request ids + k x 10^6) and each run's event table."""
    n = replications if sc.server.speed.kind != "constant" else 1
    tables = []
    for k in range(n):
        sck = with_changes(sc, {"server": {"speed": {"stream": k}}}) if n > 1 else sc
        d = out if k == 0 else out.with_name(f"{out.name}-replication{k}")
        sim_run(sck, d)
        tables.append(pq.read_table(d / "events.parquet").sort_by("request_id"))
    return tables[0], _concat(tables, step=10**6), tables


def run_point(live: Live, workload: Workload, policy: dict, sc: Scenario, meas: dict, pdir: Path, name: str,
              say: Say, start_delay_s: float = 0.0) -> dict[str, Any]:
    """One (policy, load) run: simulate `sc`, replay its arrivals on the testbed, re-simulate with the pass
    times the server showed (diagnostic). Returns the three event tables without the warm-up requests
    (the simulator's pooled over its speed replications), each one's own summary, and the run's counts."""
    tb, ns = live.tb, live.ns
    rate = sc.clients.arrival.rate_per_s * tb.clients
    say(f"{name}: simulating (lambda = {rate:.3f}/s)")
    ev, sim_pool, sim_reps = _simulate(sc, pdir / "sim", tb.calibration.speed_replications)
    (pdir / "scenario.yaml").write_text(sc.to_yaml())
    sid_to_row = {s: i for i, s in enumerate(workload.sample_id)}
    schedule = [{"request_id": int(r), "client_id": int(c), "sample": sid_to_row[s], "arrival_s": float(a)}
                for r, c, s, a in zip(ev.column("request_id").to_pylist(), ev.column("client_id").to_pylist(),
                                      ev.column("sample_id").to_pylist(), ev.column("arrival_s").to_pylist())]
    say(f"{name}: running the testbed ({len(schedule)} requests, {schedule[-1]['arrival_s']:.1f} s of arrivals)")
    tcp0 = ns.tcp_stats(ns.client)
    q0 = ns.qdisc_bytes(ns.client, ns.veth_c), ns.qdisc_bytes(ns.server, ns.veth_s)
    tb_ev, edge_info = live.edge(policy, schedule, pdir, name)
    tcp1 = ns.tcp_stats(ns.client)
    q1 = ns.qdisc_bytes(ns.client, ns.veth_c), ns.qdisc_bytes(ns.server, ns.veth_s)
    n = len(schedule)
    warm = float(np.sort(ev.column("arrival_s").to_numpy())[min(tb.warmup_requests, n - 1)]) \
        if tb.warmup_requests else 0.0
    # Diagnostic, not a prediction: the same simulation with the pass times the server showed during
    # THIS run, which separates queueing-model error from service-time drift under load.
    tb_df = tb_ev.to_pandas()
    meas_pt = calibrate.with_server_times(meas, server_pass_times([tb_df], edge_info["attention_passes"], workload))
    changes: dict[str, Any] = {}
    if sc.server.speed.kind != "constant":  # the speed model fitted on this run's own passes
        fit_pt = calibrate.speed_fit([calibrate.pass_records([tb_df], edge_info["attention_passes"], workload)])
        changes["speed"] = speed_block(fit_pt)
        meas_pt = calibrate.mean_times(meas_pt, fit_pt["mean_ratio"], start_delay_s)
    prof_pt = calibrate.write_profile(calibrate.profile_rows(meas_pt, workload), pdir / "profile_in_situ.csv")
    sc_pt = with_changes(sc, {"server": {**changes, "latency": {"path": str(prof_pt)}}})
    _, situ, situ_reps = _simulate(sc_pt, pdir / "sim_in_situ", tb.calibration.speed_replications)

    def kept(t):
        return t.filter(pc.greater_equal(t["arrival_s"], warm))

    def summary(t, reps=None):
        s = summarize(t, warmup_s=warm, comm=None, components={})
        if reps and len(reps) > 1:  # pooled replications: latency and bytes over all; throughput per run
            s["throughput_per_s"] = float(np.mean([summarize(r, warmup_s=warm, comm=None,
                                                             components={})["throughput_per_s"] for r in reps]))
        return s

    summ = {"sim": summary(sim_pool, sim_reps), "testbed": summary(tb_ev), "in_situ": summary(situ, situ_reps)}
    for label, k in (("", "sim"), (f" (diagnostic, in-situ pass times x{meas_pt['server_scale']:.2f})", "in_situ")):
        say(f"{name}{label}: " + "  ".join(f"{m} {_pct(v['rel_error'])}" for m, v in
                                           compare(summ[k], summ["testbed"]).items()))
    # The testbed against itself: the same arrivals and samples replayed; how far a replay lands from the
    # first run is the noise floor of any simulator-vs-testbed error at this point.
    replays = []
    for k in range(1, tb.replays):
        rev, _ = live.edge(policy, schedule, pdir / f"replay{k}", f"{name} replay {k}")
        replays.append(compare(summary(rev), summ["testbed"]))
        say(f"{name} testbed replay {k} vs first: " + "  ".join(
            f"{m} {_pct(replays[-1][m]['rel_error'])}" for m in ("latency_mean_s", "latency_p95_s")))
    return {"sim_ev": kept(sim_pool), "tb_ev": kept(tb_ev), "situ_ev": kept(situ), "summaries": summ,
            "lambda_per_s": rate, "requests": n, "testbed_ok": summ["testbed"]["counts"]["ok"],
            "testbed_errors": edge_info["errors"][:5], "server_scale": meas_pt["server_scale"], "replays": replays,
            "wire": {"uplink_bytes_per_request": (q1[0] - q0[0]) / n, "downlink_bytes_per_request": (q1[1] - q0[1]) / n,
                     "tcp_out_segs": tcp1["out_segs"] - tcp0["out_segs"],
                     "tcp_retrans_segs": tcp1["retrans_segs"] - tcp0["retrans_segs"]}}


def run_policy_points(live: Live, setup: Setup, cal: RoundCalibration, policy: dict, rnd: int, out: Path,
                      say: Say) -> dict[str, dict[str, Any]]:
    """Every load of one policy in round `rnd`: each point's scenario at rho x the policy's measured
    capacity, with the message bytes of its crop share; returns the point results by name."""
    tb, workload = live.tb, setup.workload
    pol = build_policy(policy, setup.trace)
    crop = [bool(pol.decide_live({c: workload.token_values(c)[i] for c in
                                  ("s1_min_entropy", "s1_shannon", "s1_margin")}))
            for i in range(workload.n)]
    service_s = calibrate.mean_service_s(cal.meas_sim, crop)
    ou, od, gv = message_bytes(*cal.idle_logs, workload, workload.quality_index(setup.quality), float(np.mean(crop)))
    net_p = dict(cal.net, uplink_overhead_bytes=max(0, int(round(ou))),
                 downlink_overhead_bytes=max(0, int(round(od))), gate_values_bytes_per_token=int(round(gv)))
    say(f"{policy['kind']}: crop share {np.mean(crop):.3f}; per-message bytes up {ou:.0f}, "
        f"down {od:.0f}; uncertainty {gv:.1f} B/token")
    results = {}
    for rho in tb.loads:
        name = f"{policy['kind']}-rho{rho:g}"
        pdir = out / name if tb.rounds == 1 else out / name / f"round{rnd + 1}"
        pdir.mkdir(parents=True, exist_ok=True)
        rate = rho / service_s / tb.clients
        sc = build_scenario(tb, name=name, seed=tb.seed + rnd,  # fresh arrivals and samples each round
                            policy=policy, trace=setup.trace, profile=cal.profile, rate_per_client_s=rate,
                            visual_tokens=setup.visual_tokens, vision_px=setup.vision_px, net=net_p,
                            speed=cal.speed_fit)
        r = run_point(live, workload, policy, sc, cal.meas, pdir, name, say, cal.net["server_start_delay_s"])
        r.update(rho=rho, policy=policy["kind"], mean_service_s=service_s)
        results[name] = r
    return results


# ---------------------------------------------------------------- stage 4: comparison


def compare_points(runs: dict[str, list[dict[str, Any]]], tb: Testbed, out: Path, compare_sim: bool,
                   say: Say) -> list[dict[str, Any]]:
    """Each point's rounds pooled (pool_rounds) into OUT/<point>/comparison.json, with the latency CDF
    plot when comparing with the simulator; returns the points."""
    points = []
    for name, rs in runs.items():
        point = {"point": name, **pool_rounds(rs)}
        pdir = out / name
        (pdir / "comparison.json").write_text(json.dumps(point, indent=1))
        if compare_sim:
            plot_cdf(_concat([r["sim_ev"] for r in rs]), _concat([r["tb_ev"] for r in rs]), pdir / "cdf.png",
                     name + (f" ({tb.rounds} rounds pooled)" if tb.rounds > 1 else ""))
        points.append(point)
        if tb.rounds > 1:
            say(f"{name}, {tb.rounds} rounds pooled: " + "  ".join(
                f"{k} {_pct(v['rel_error'])}" for k, v in point["metrics"].items()))
    return points


def _concat(tables, step: int = 10**9):
    """Event tables of several runs as one, request ids made distinct (run k adds k x `step`)."""
    out = []
    for k, t in enumerate(tables):
        i = t.schema.get_field_index("request_id")
        rid = pc.add(t["request_id"], pa.scalar(k * step, t.schema.field(i).type))
        out.append(t.set_column(i, "request_id", rid))
    return pa.concat_tables(out)


def pool_rounds(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """One point's comparison over its rounds: latency, bytes and retransmission rate from all measured
    requests of all rounds together; throughput the mean of the rounds' (each over its own window).
    With one round this is exactly that round's comparison."""
    def pooled(key: str, summ: str) -> dict:
        s = summarize(_concat([r[key] for r in rs]), warmup_s=0.0, comm=None, components={})
        tput = [r["summaries"][summ]["throughput_per_s"] for r in rs]
        s["throughput_per_s"] = None if any(v is None for v in tput) else float(np.mean(tput))
        return s

    tb_sum = pooled("tb_ev", "testbed")
    point = {"policy": rs[0]["policy"], "rho": rs[0]["rho"], "rounds": len(rs),
             "lambda_per_s": float(np.mean([r["lambda_per_s"] for r in rs])),
             "mean_service_s": float(np.mean([r["mean_service_s"] for r in rs])),
             "requests": sum(r["requests"] for r in rs), "testbed_ok": sum(r["testbed_ok"] for r in rs),
             "testbed_errors": [e for r in rs for e in r["testbed_errors"]][:5],
             "wire": {k: float(np.mean([r["wire"][k] for r in rs])) for k in rs[0]["wire"]},
             "metrics": compare(pooled("sim_ev", "sim"), tb_sum),
             "diagnostic_in_situ_service": {
                 "server_scale_vs_calibration": [r["server_scale"] for r in rs],
                 "metrics": compare(pooled("situ_ev", "in_situ"), tb_sum)}}
    if any(r.get("replays") for r in rs):
        point["testbed_replays_vs_first"] = [r["replays"] for r in rs]
    if len(rs) > 1:
        point["per_round"] = [{"lambda_per_s": r["lambda_per_s"], "server_scale_in_situ": r["server_scale"],
                               "metrics": compare(r["summaries"]["sim"], r["summaries"]["testbed"])} for r in rs]
    return point


def run(tb: Testbed, out: Path, *, compare_sim: bool = True, progress: bool = True) -> dict[str, Any]:
    """The whole measurement of one TESTBED.yaml; returns the overall comparison dict."""

    def say(msg: str) -> None:
        if progress:
            print(f"[testbed] {msg}", file=sys.stderr, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    setup = prepare(tb, out, say, progress)
    workload, quality, rows = setup.workload, setup.quality, setup.meas["rows"]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MALLOC_MMAP_THRESHOLD_="33554432", OMP_NUM_THREADS=str(tb.server.threads))
    runs: dict[str, list[dict]] = {}
    calibrations: list[dict] = []
    # the timed engine holds each pass for the simulator's time under the in-process calibration's profile
    timed = None
    if tb.server.engine == "timed":  # its own copy: the rounds' calibrated profiles are written later
        timed = (setup.trace, quality, out / "profile_timed.csv")
        timed[2].write_bytes((out / "profile.csv").read_bytes())
    with network_namespaces(tb) as ns, inference_server(ns, tb, env, out / "server.log", say, timed) as base_url:
        live = Live(ns, tb, env, base_url, setup.trace)
        gap_s = 3 * max(r["s1_s"] + r["att_s"] + r["s2_s"] for r in rows) + 0.05
        # Every sample through all three passes once, unmeasured, so the first calibration does not time
        # the model process's first passes (first allocations, cold caches).
        say("warming up the server (every sample once, always_crop; not measured)")
        live.edge({"kind": "always_crop", "jpeg_quality": quality},
                  [{"request_id": k, "client_id": 0, "sample": k, "arrival_s": 0.1 + 0.01 * k} for k in range(workload.n)],
                  out / "warmup", "warm-up")
        busy_gap_s = (float(np.mean([r["s1_s"] + r["att_s"] + r["s2_s"] for r in rows])) / 1.5
                      if tb.calibration.server_passes == "busy" else None)
        seen_rows: list[list[dict]] = []  # the server's pass times of every calibration so far
        seen_passes: list[list[tuple]] = []  # ... and every pass with its start time, per calibration run
        for rnd in range(tb.rounds):
            # Every round re-measures the network path and the server's pass times, then runs every
            # point once: a slow drift of the host's speed hits all points alike. Each point's simulation
            # uses the calibrations taken before it (the per-sample median of the pass times over this and
            # the earlier rounds): a prediction, not a fit.
            tag = f"round {rnd + 1}/{tb.rounds}: " if tb.rounds > 1 else ""
            rdir = out if tb.rounds == 1 else out / f"round{rnd + 1}"
            rdir.mkdir(parents=True, exist_ok=True)
            say_r = lambda m, t=tag: say(t + m)  # noqa: E731
            cal = calibrate_round(live, setup, gap_s, busy_gap_s, rdir, seen_rows, seen_passes, say_r)
            calibrations.append({"round": rnd + 1, "server_scale": cal.meas["server_scale"],
                                 "server_speed": cal.speed_fit, **cal.net})
            for policy in tb.policies:
                for name, r in run_policy_points(live, setup, cal, policy, rnd, out, say_r).items():
                    runs.setdefault(name, []).append(r)
    points = compare_points(runs, tb, out, compare_sim, say)
    result = {"testbed": tb.model_dump(), "model": tb.model, "trace": str(setup.trace),
              "trace_source_kind": workload.provenance.get("source_kind"),
              "calibration": {"in_process_edge_prep_s": setup.edge_prep_s, "in_process_edge_crop_s": setup.edge_crop_s,
                              **(calibrations[0] if len(calibrations) == 1 else {"rounds": calibrations})},
              "points": points}
    (out / "comparison.json").write_text(json.dumps(result, indent=1))
    return result


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.1f}%"


def plot_cdf(sim_events, tb_events, path: Path, title: str) -> None:
    """Sim and testbed latency CDFs in one plot."""
    import matplotlib  # defers matplotlib (slow to import; only this plot needs it)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # defers matplotlib

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, ev in (("simulator", sim_events), ("testbed", tb_events)):
        lat = np.sort(np.asarray(ev.column("latency_s").to_pylist(), dtype=float))
        lat = lat[np.isfinite(lat)]
        ax.step(lat, np.arange(1, lat.size + 1) / max(lat.size, 1), where="post", label=label)
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("CDF")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
