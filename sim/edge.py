"""The edge side: the device profile (image handling times) and full-edge VLM execution.

Each client owns one device, so full-edge inference never waits for other clients; a client's own
requests run one at a time in arrival order (FCFS, Lindley's recursion over the device's free
time, one SimPy event per pass). The edge model is timed by the same latency-model kinds as the
server (`clients.edge.latency`), on the device's accelerator (`EdgeProfile.hardware`).
"""

from __future__ import annotations

from array import array

import simpy
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from edgevlm.sim.lindley import lindley_start
from edgevlm.sim.latency import Job, RooflineLatency, latency_models
from edgevlm.sim.profiles import EDGES, MODELS, EdgeProfile, ModelProfile, dump, resolve


class EdgeConfig(BaseModel):
    """`clients.edge`: the device, and the VLM that the full-edge policy runs on it."""

    model_config = ConfigDict(extra="forbid")
    device: EdgeProfile = Field(EDGES["imx95"], description="a name in sim/profiles.py EDGES, or custom fields")
    model: ModelProfile = Field(MODELS["mobilevlm-1.7b"], description="the full-edge VLM: a name or custom fields")
    latency: latency_models.config_union() = RooflineLatency()  # type: ignore[valid-type]

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, v):
        return resolve(v, EDGES, "edge device")

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, v):
        return resolve(v, MODELS, "model")

    @field_serializer("device")
    def _dump_device(self, v):
        return dump(v, EDGES)

    @field_serializer("model")
    def _dump_model(self, v):
        return dump(v, MODELS)


class EdgeDevices:
    """One FCFS accelerator per client for full-edge inference; stats land in summary.json under "edge"."""

    def __init__(self, env: simpy.Environment, cfg: EdgeConfig, n_clients: int, rng):
        self.env = env
        self.cfg = cfg
        self.n_clients = n_clients
        self._rng = rng
        self._latency = None
        self._free = array("d", bytes(8 * n_clients))  # each device's free time; 8 bytes per client
        self.busy_s = 0.0
        self.jobs = 0
        self.flops = 0.0

    @property
    def latency(self):
        """Built on first use, so a scenario that never runs the VLM on the edge never reads its profile."""
        if self._latency is None:
            self._latency = latency_models.build(self.cfg.latency, self._rng, self.cfg.model,
                                                 self.cfg.device.hardware, "clients.edge")
        return self._latency

    def job(self, prompt_tokens: int, out_tokens: int) -> Job:
        """Stage-1 pass of the edge model on one image."""
        return Job(1, 1, self.cfg.model.visual_tokens, prompt_tokens, out_tokens)

    def run(self, client_id: int, job: Job):
        """Process: run `job` on the client's device; returns (start_s, end_s)."""
        return self.run_for(client_id, self.latency.service_s(job),
                            self.cfg.model.flops(job.visual_tokens + job.prompt_tokens))

    def run_for(self, client_id: int, duration_s: float, flops: float):
        """Process: occupy the client's device for `duration_s` (FCFS after its earlier work), counting
        `flops`; returns (start_s, end_s). Progressive encoding uses it for the vision tower + codec."""
        env = self.env
        now = env.now
        start = lindley_start(self._free[client_id], now)
        end = self._free[client_id] = start + duration_s
        self.busy_s += duration_s
        self.jobs += 1
        self.flops += flops
        yield env.timeout(end - now)
        return start, end

    def stats(self, horizon_s: float) -> dict:
        return {
            "utilisation": self.busy_s / (horizon_s * self.n_clients) if horizon_s > 0 else 0.0,
            "jobs": self.jobs,
            "model": self.cfg.model.name,
            "flops_per_job": self.flops / self.jobs if self.jobs else None,
        }
