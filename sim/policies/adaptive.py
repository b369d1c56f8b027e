"""`adaptive_threshold`: a load-aware entropy gate. It raises η when the system is under pressure and
skips crops that would miss the deadline, so cropping uses spare capacity and never causes overload.

The controller, evaluated at each crop decision (after stage 1), with observed state only:

    pressure P = max( q_gpu / gpu_queue_ref,                       GPU jobs waiting
                      b_up / uplink_backlog_ref_s,                 uplink backlog, seconds at capacity
                      max(0, L̄ / D - latency_target) / (1 - latency_target) )   recent latency vs deadline
    η(P)       = min(threshold_max, threshold + gain · max(0, P - dead_zone))    (margin: threshold - ...)

q_gpu and b_up come from `Simulation.gpu_queue_length()` / `uplink_backlog_s()` (any link or
server); L̄ is an EWMA of the latencies of this policy's completed requests (time constant
`latency_window` completions); D is `slo.deadline_s`. With P below the dead zone, η = threshold
and the gate is exactly `entropy_threshold`, so an unloaded system sees the fixed-η behaviour.

Deadline guard (`deadline_guard: true`): the crop is skipped when

    (now - arrival) + (crop_cost_passes + q_gpu) · t̄_pass + b_up + crop_bytes·8/rate + propagation + edge crop time > D

where t̄_pass is an EWMA of observed stage-1 GPU pass times and rate = min(uplink capacity, the
client's access rate): the stage-1 answer then goes out in time instead of a late stage-2 one.

Objective. A crop only adds time, so plain goodput (answers within the deadline per second) is
maximised by never cropping (global_only); the controller aims at score goodput, the VQA score
delivered within the deadline per second (`score_goodput_per_s` in summary.json), while keeping
plain goodput close to global_only's. Defaults (threshold 0.3 = the accuracy-best fixed eta of the
shipped SYNTHETIC trace, gain 1, gpu_queue_ref 1, dead_zone 0) were tuned at 3-5 req/s with the
parametric latency model and hold on scenarios/overload.yaml (roofline A100, 8 req/s);
`python bench/adaptive.py` reports the gain over the best fixed eta with a paired CI over seeds.
A larger dead_zone (e.g. 1: tolerate one waiting job) gives up some of the overload gain for an
exact match with the fixed gate at light load.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt

from edgevlm.sim.bandwidth import ConstantProfile
from edgevlm.sim.policies.base import TwoStagePolicy, policies
from edgevlm.sim.policies.two_stage import EntropyThreshold, uncertainty
from edgevlm.sim.workload import Workload
from edgevlm.traces.uncertainty import higher_is_uncertain, uncertain


class AdaptiveThreshold(EntropyThreshold):
    kind: Literal["adaptive_threshold"]  # type: ignore[assignment]
    threshold: float = Field(0.3, description="η when unloaded (bits; p1−p2 for margin)")
    gain: float = Field(1.0, ge=0, description="η added per unit of pressure above the dead zone")
    threshold_max: Optional[float] = Field(None, description="cap on η (default: none, so heavy load stops crops)")
    dead_zone: float = Field(0.0, ge=0, description="pressure below this leaves η at `threshold`")
    gpu_queue_ref: PositiveFloat = Field(1.0, description="GPU jobs waiting that count as pressure 1")
    uplink_backlog_ref_s: PositiveFloat = Field(0.5, description="uplink backlog (s) that counts as pressure 1")
    latency_target: float = Field(0.5, ge=0, lt=1, description="recent latency above this fraction of the "
                                                                 "deadline adds pressure")
    latency_window: PositiveInt = Field(32, description="EWMA time constant of recent latency, in completions")
    deadline_guard: bool = Field(True, description="skip a crop predicted to finish after the deadline")
    crop_cost_passes: float = Field(2.5, ge=0, description="GPU time of attention pass + stage 2, in stage-1 "
                                                           "passes (LLaVA-1.5: about 2.4)")


class AdaptiveThresholdPolicy(TwoStagePolicy):
    name = "adaptive_threshold"

    def __init__(self, cfg: AdaptiveThreshold, workload: Workload, rng: np.random.Generator):
        super().__init__(cfg, workload, rng)
        self.values = uncertainty(workload, cfg.metric, cfg.tokens).tolist()
        self.sign = 1.0 if higher_is_uncertain(cfg.metric) else -1.0  # margin: a higher eta crops more
        self.eta0 = cfg.threshold
        self.gain = cfg.gain
        self.eta_cap = math.inf if cfg.threshold_max is None else cfg.threshold_max
        self.dead = cfg.dead_zone
        self.q_ref = cfg.gpu_queue_ref
        self.b_ref = cfg.uplink_backlog_ref_s
        self.lat_target = cfg.latency_target
        self.alpha = 1.0 / cfg.latency_window
        self.guard = cfg.deadline_guard
        self.crop_passes = cfg.crop_cost_passes
        self.lat_ewma_s = 0.0
        self.pass_ewma_s: float | None = None
        self.up_profile = None  # per-run constants from the built links, set by `bind`
        self.cap_bps = self.rtt_s = math.nan
        self.overhead_bytes = 0
        # Controller trace, for analysis: decisions seen, crops skipped by the guard, mean η.
        self.decisions = self.guard_skips = 0
        self.eta_sum = 0.0

    def bind(self, sim) -> None:
        """Per-run constants from the built links: the uplink's capacity (constant or a trace
        profile), the round trip of a crop (up, and twice down: box request, answer) and overhead."""
        up, down = sim.uplink, sim.downlink
        self.up_profile = None if isinstance(up.profile, ConstantProfile) else up.profile
        self.cap_bps = up.capacity_bps
        self.rtt_s = up.propagation_s + 2 * down.propagation_s + sim.edge.crop_s
        self.overhead_bytes = up.overhead_bytes

    def upload_s(self, bits: float, access, now: float) -> float:
        """Seconds to send `bits` alone from `now`, at min(uplink capacity, the client's access rate);
        either may follow a bandwidth trace (then read from its cumulative capacity)."""
        prof = self.up_profile
        if prof is None and access.__class__ is float:
            cap = self.cap_bps
            return bits / (cap if access > cap else access)
        link_s = (bits / self.cap_bps if prof is None else prof.time_at(prof.cum_bits(now) + bits) - now)
        if access is None:
            return link_s
        own_s = bits / access if isinstance(access, (int, float)) else access.time_at(access.cum_bits(now) + bits) - now
        return own_s if own_s > link_s else link_s

    def pressure(self, sim) -> tuple[float, int, float]:
        """(P, GPU queue length, uplink backlog s) now."""
        q = sim.gpu_queue_length()
        b = sim.uplink_backlog_s()
        deadline = sim.deadline_s
        lat = (self.lat_ewma_s / deadline - self.lat_target) / (1.0 - self.lat_target)
        return max(q / self.q_ref, b / self.b_ref, lat if lat > 0 else 0.0), q, b

    def eta(self, p: float) -> float:
        excess = p - self.dead
        if excess <= 0:
            return self.eta0
        return self.eta0 + self.sign * min(self.gain * excess, self.eta_cap - self.eta0)

    def decide(self, req, sim) -> bool:
        pass_s = req.s1_end_s - req.s1_start_s
        self.pass_ewma_s = pass_s if self.pass_ewma_s is None else self.pass_ewma_s + 0.05 * (pass_s - self.pass_ewma_s)
        p, q, b = self.pressure(sim)
        eta = self.eta(p)
        self.decisions += 1
        self.eta_sum += eta
        v = self.values[req.sample]
        if not uncertain(v, self.cfg.metric, eta):
            return False
        if self.guard:
            now = sim.env.now
            bits = (self.up2_bytes[req.sample] + self.overhead_bytes) * 8.0
            predicted = ((self.crop_passes + q) * self.pass_ewma_s + b
                         + self.upload_s(bits, sim.access_bps[req.client_id], now) + self.rtt_s)
            if now - req.arrival_s + predicted > sim.deadline_s:
                self.guard_skips += 1
                return False
        return True

    def life(self, sim, req):
        yield from super().life(sim, req)
        if req.status == "ok":
            self.lat_ewma_s += self.alpha * (req.done_s - req.arrival_s - self.lat_ewma_s)

    def stats(self) -> dict:
        return {"decisions": self.decisions, "guard_skips": self.guard_skips,
                "mean_threshold": self.eta_sum / self.decisions if self.decisions else None}


policies.register(AdaptiveThreshold)(AdaptiveThresholdPolicy)
