"""The SimPy engine: it builds clients, links, server and policy from a scenario and runs requests.

A request's protocol lives in its policy (`Policy.life`; sim/interfaces.py lists what the engine
needs of links, server and policy). The policy sees the built simulation once (`Policy.bind`),
then the engine gives each request's protocol its building blocks: edge profile, `send_up`,
`send_down`, `infer`, `drop`, `finish`. It also creates requests as the arrival process asks. Every request ends with one terminal record in the event log.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Callable

import simpy

from edgevlm.sim.access import AccessRates, assign_classes
from edgevlm.sim.arrivals import arrival_processes
from edgevlm.sim.bandwidth import BandwidthTraceError, ConstantProfile, load_profile
from edgevlm.sim.edge import EdgeDevices
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.latency import Job
from edgevlm.sim.network import build_link
from edgevlm.sim.policies import policies
from edgevlm.sim.rng import Batched, Streams
from edgevlm.sim.scenario import Scenario, check_fifo_access_caps
from edgevlm.sim.simpy_adapter import run as run_events, start, timeout
from edgevlm.sim.server import build_server
from edgevlm.sim.server.encoder import build_encoder_pool, encode_job
from edgevlm.sim.workload import Workload

#: Tokens of the generic prompt ("Write a general description of the image.") in the attention pass.
GENERIC_PROMPT_TOKENS = 12

NAN = math.nan


def sample_jobs(workload: Workload, visual_tokens: int) -> dict[int, list[Job]]:
    """Per sample row, the GPU job of stage 1, the attention pass (0) and stage 2 (public: a stand-in
    server that must time its passes exactly as the simulator does builds the same jobs)."""
    prompt = workload.table.column("prompt_tokens").to_numpy().tolist()
    t1, t2 = workload.s1_tokens.tolist(), workload.s2_tokens.tolist()
    n_v = visual_tokens
    return {
        1: [Job(1, 1, n_v, p, t) for p, t in zip(prompt, t1)],
        0: [Job(0, 1, n_v, GENERIC_PROMPT_TOKENS, 0) for _ in prompt],
        2: [Job(2, 2, 2 * n_v, p, t) for p, t in zip(prompt, t2)],
    }


class Request:
    """One request's path through the system; NaN marks a step it skipped."""

    __slots__ = ("request_id", "client_id", "sample", "arrival_s", "edge_done_s", "up1_end_s",
                 "s1_start_s", "s1_end_s", "crop_req_end_s", "up2_end_s", "s2_start_s", "s2_end_s",
                 "done_s", "uplink_bytes", "downlink_bytes", "stages", "score", "flops", "status",
                 # progressive only (sim/policies/progressive.py; NaN / 0 for the other protocols)
                 "prog_levels", "prog_last_start_s", "prog_last_end_s", "prog_down_s", "prog_up_s",
                 "prog_queue_s", "prog_infer_s")

    def __init__(self, request_id: int, client_id: int, sample: int, now: float):
        self.request_id = request_id
        self.client_id = client_id
        self.sample = sample
        self.arrival_s = now
        self.edge_done_s = self.up1_end_s = self.s1_start_s = self.s1_end_s = NAN
        self.crop_req_end_s = self.up2_end_s = self.s2_start_s = self.s2_end_s = self.done_s = NAN
        self.uplink_bytes = self.downlink_bytes = self.stages = 0
        self.score = NAN
        self.flops = 0.0
        self.status = "ok"
        self.prog_levels = 0
        self.prog_last_start_s = self.prog_last_end_s = NAN
        self.prog_down_s = self.prog_up_s = self.prog_queue_s = self.prog_infer_s = NAN


class Simulation:
    """One scenario's world: environment, components, and the request factory."""

    def __init__(self, scenario: Scenario, workload: Workload, on_terminal: Callable[[Request], None],
                 base_dir: Path | None = None):
        self.scenario = sc = scenario
        workload = workload.for_policy(sc.policy)  # the trace as measured at the policy's JPEG quality
        self.base_dir = Path(base_dir) if base_dir is not None else None  # relative bandwidth traces
        self._profiles: dict = {}  # each bandwidth trace file is parsed once per run
        self.workload = workload
        self.env = env = simpy.Environment()
        self.streams = Streams(sc.seed)
        self.model = sc.server.model  # a ModelProfile
        self.edge = sc.clients.edge.device  # an EdgeProfile: prep_s, crop_s, hardware
        self.uplink = self._build_link("network.uplink", sc.network.uplink)
        self.downlink = self._build_link("network.downlink", sc.network.downlink)
        if not isinstance(self.uplink.profile, ConstantProfile):  # a trace: constant caps vs its peak
            check_fifo_access_caps(sc, trace_peak_bps=self.uplink.profile.peak_bps)
        self.server = build_server(env, sc.server, self.streams["service"], self.streams["speed"])
        #: Where the server knows a job's span on arrival (FIFO, Lindley's recursion), GPU passes wait
        #: on one timeout after `book` instead of running `submit` (sim/interfaces.py Server).
        self._book = self.server.book if self.server.books_on_arrival else None
        self.edge_devices = EdgeDevices(env, sc.clients.edge, sc.clients.count, self.streams["edge"])
        self.policy = policies.build(sc.policy, workload, self.streams["policy"])
        self.deadline_s = sc.slo.deadline_s
        self._on_terminal = on_terminal
        self.access_bps = self._assign_link_classes()
        #: Constant access rates as (rate per class, class per client): two C-level indexings per
        #: upload instead of `AccessRates.__getitem__`; None where a class follows a trace.
        self._access_const = self.access_bps.class_rates() if self.access_bps.constant else None
        self._jobs = self._build_jobs()
        n_v = self.model.visual_tokens
        self.stage_flops = {1: self.model.flops(n_v), 0: self.model.flops(n_v), 2: self.model.flops(2 * n_v)}
        self._prefix = getattr(self.server, "prefix", None)
        enc = sc.server.encoder
        self.encoder = None if enc is None else build_encoder_pool(env, enc, self.model)
        self.stage2_reuse_flops = self.model.flops(2 * n_v) - self.model.flops(n_v)
        self._booked_gpu = self._book is not None and self._prefix is None and self.encoder is None
        rng = self.streams["samples"]
        self._draw_sample = Batched(lambda n: rng.integers(0, workload.n, n))
        self.max_requests = sc.stop.requests
        self.arrivals_end_s = sc.stop.time_s if sc.stop.time_s is not None else math.inf
        self.arrived = 0
        self.terminal = 0
        self.gpu_in_system = 0  # GPU passes submitted and not yet finished (any server), for gpu_queue_length
        #: Optional sim.audit.AuditLog recording every transfer and GPU pass (set before `run`).
        self.audit = None
        self.policy.bind(self)
        arrival_processes.build(sc.clients.arrival, self, sc.clients.count)

    def _assign_link_classes(self) -> AccessRates:
        """Each client's access rate: classes get exact shares of the clients, in a seeded shuffle.

        A constant class gives a rate in bit/s; a trace class gives each client the trace started
        at a uniform random offset in its period, drawn from the `network` stream.
        """
        sc = self.scenario.clients
        client_class = assign_classes([c.share for c in sc.link_classes], sc.count,
                                      self.streams["clients"].permutation(sc.count))
        rates: list = [c.uplink_mbps * 1e6 if c.uplink_mbps is not None else None for c in sc.link_classes]
        offsets = None
        if any(c.bandwidth_trace is not None for c in sc.link_classes):
            offsets = self.streams["network"].random(sc.count)
            for k, c in enumerate(sc.link_classes):
                if c.bandwidth_trace is None or not (client_class == k).any():
                    continue
                try:
                    base = load_profile(c.bandwidth_trace, self.base_dir, self._profiles)
                except BandwidthTraceError as exc:
                    raise ConfigError(f"clients.link_classes[{k}].bandwidth_trace", str(exc)) from None
                rates[k] = base.bps if isinstance(base, ConstantProfile) else base
        return AccessRates(rates, client_class, offsets)

    def _build_link(self, path: str, cfg):
        try:
            return build_link(self.env, cfg, self.base_dir, self._profiles)
        except BandwidthTraceError as exc:
            raise ConfigError(f"{path}.bandwidth_trace", str(exc)) from None

    def _build_jobs(self) -> dict[int, list[Job]]:
        """The GPU jobs of each sample for stage 1, the attention pass (0) and stage 2."""
        return sample_jobs(self.workload, self.model.visual_tokens)

    # ------------------------------------------------------------ request factory

    def spawn(self, client_id: int) -> bool:
        """Start a request from `client_id` now; False once the stopping rule ends arrivals."""
        env = self.env
        now = env._now
        if self.arrived == self.max_requests or now >= self.arrivals_end_s:
            return False
        req = Request(self.arrived, client_id, self._draw_sample(), now)
        self.arrived += 1
        start(self.policy.life(self, req))  # env.process without its two events (sim/simpy_adapter.py)
        return True

    # ------------------------------------------------------------ building blocks for policies

    def send_up(self, req: Request, payload_bytes: int):
        """Process: carry a message from the request's client to the server."""
        link = self.uplink
        nbytes = payload_bytes + link.overhead_bytes
        req.uplink_bytes += nbytes
        client = req.client_id
        const = self._access_const
        access = const[0][const[1][client]] if const is not None else self.access_bps[client]
        gen = link.transfer(nbytes, access, client)
        if self.audit is not None:
            return self.audit.transfer(self.env, gen, "uplink", req.request_id, nbytes)
        return gen

    def send_down(self, req: Request, payload_bytes: int):
        """Process: carry a message from the server to the request's client."""
        link = self.downlink
        nbytes = payload_bytes + link.overhead_bytes
        req.downlink_bytes += nbytes
        gen = link.transfer(nbytes, None, req.client_id)
        if self.audit is not None:
            return self.audit.transfer(self.env, gen, "downlink", req.request_id, nbytes)
        return gen

    def infer(self, req: Request, stage: int, admit: bool = False):
        """Process: run one GPU pass for the request (stage 1, 2, or 0 = the attention pass).

        Returns (start_s, end_s), or None if admission control (`admit`) dropped the request.
        Follow-up passes of an admitted request are never dropped.
        """
        job = self._jobs[stage][req.sample]
        if self._booked_gpu and self.audit is None:
            return self._gpu_booked(req, job, stage, admit)
        prefix = self._prefix
        if prefix is None or stage == 0:
            return self._gpu(req, job, stage, self.stage_flops[stage], admit, stage)
        return self._gpu_prefix(req, replace(job, prefix_key=req.request_id), stage, admit, prefix)

    def _gpu_booked(self, req: Request, job: Job, stage: int, admit: bool):
        """Process: `_gpu` for the common case, a server that books on arrival with no prefix cache,
        encoder pool or audit (the same steps in the same order; tests compare the event logs)."""
        self.gpu_in_system += 1
        span = self._book(job, admit)
        if span is not None:
            yield timeout(self.env, span[1] - self.env._now)
        self.gpu_in_system -= 1
        if span is not None:
            req.flops += self.stage_flops[stage]
            if stage:
                req.stages = stage
        return span

    def _gpu_prefix(self, req: Request, job: Job, stage: int, admit: bool, prefix):
        """Process: `_gpu` with prefix reuse; a stage 2 that reused stage 1's KV books the incremental
        FLOPs(2·n_v) - FLOPs(n_v) (sim/server/prefix.py)."""
        flops = self.stage_flops[stage]
        span = yield from self._gpu(req, job, stage, 0.0, admit, stage)
        if span is not None:
            req.flops += self.stage2_reuse_flops if stage == 2 and prefix.was_hit(req.request_id) else flops
        return span

    def infer_job(self, req: Request, job: Job, flops: float, admit: bool = False):
        """Process: run an arbitrary GPU `job` (HD tokens, a progressive level) for the request.

        Like `infer`, but the caller gives the Job and its FLOPs and sets `req.stages` itself.
        Returns (start_s, end_s), or None if admission control (`admit`) dropped the request.
        """
        return self._gpu(req, job, job.stage, flops, admit, 0)

    def _gpu(self, req: Request, job: Job, stage: int, flops: float, admit: bool, sets_stages: int):
        """Process: one GPU pass, counted in `gpu_in_system` while submitted; books its FLOPs and,
        if `sets_stages`, records it as the request's last stage."""
        if self.encoder is not None and job.stage and job.images:
            yield from self.encoder.submit(encode_job(job))
            job = replace(job, images=0)
        self.gpu_in_system += 1
        book = self._book
        if book is not None:  # the span is known on arrival: one timeout, no nested process
            span = book(job, admit)
            if span is not None:
                yield timeout(self.env, span[1] - self.env._now)
        else:
            span = yield from self.server.submit(job, admit)
        self.gpu_in_system -= 1
        if span is not None:
            if self.audit is not None:
                self.audit.gpu(req.request_id, stage, *span)
            req.flops += flops
            if sets_stages:
                req.stages = sets_stages
        return span

    # ------------------------------------------------------------ observed state, for load-aware policies

    def uplink_backlog_s(self) -> float:
        """Seconds of uplink work queued ahead of a new transfer, at the link's nominal capacity."""
        return self.uplink.backlog_s()

    def gpu_queue_length(self) -> int:
        """GPU passes waiting: passes submitted and not finished, less one in service per replica.

        Counted by the engine around `server.submit`, so it works whatever the server (the FIFO
        server only tracks its own queue under admission control). For a batching server it counts
        the jobs beyond one per replica, an upper bound on those not yet in a batch.
        """
        waiting = self.gpu_in_system - self.scenario.server.replicas
        return waiting if waiting > 0 else 0

    def infer_edge(self, req: Request, job: Job):
        """Process: run a VLM pass on the request's own edge device; returns (start_s, end_s)."""
        return self.edge_devices.run(req.client_id, job)

    def drop(self, req: Request) -> None:
        req.status = "dropped"
        req.score = NAN
        self._terminate(req)

    def finish(self, req: Request) -> None:
        self._terminate(req)

    def _terminate(self, req: Request) -> None:
        req.done_s = self.env._now
        self.terminal += 1
        self._on_terminal(req)

    # ------------------------------------------------------------ running

    def run(self) -> float:
        """Run until arrivals stop and every request has ended; returns the final time."""
        run_events(self.env)
        return self.env.now
