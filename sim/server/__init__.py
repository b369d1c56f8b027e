"""The GPU server: replicas, a scheduler that batches and orders GPU passes, a latency model that times them.

Every server offers `submit(job, admit)`, a SimPy process returning (start_s, end_s) or None when
admission control (`max_queue` waiting jobs) drops new work; `queue_length()`; and `stats(horizon_s)`,
which lands in summary.json under "gpu": utilisation, jobs, dropped, mean batch size and the
time-average number of waiting jobs.

`server.speed` (registry in sim/speed.py) scales every pass, batch or iteration by a factor read at its
start: constant by default, or lognormal per-pass jitter plus a shared drift.

Schedulers (registry `server.scheduler`): `fifo` (sim/server/fifo.py), `static` and `continuous`
(sim/server/batching.py; KV-cache memory, `kv_allocation` and its counters in sim/server/kvcache.py,
vLLM-like preemption in sim/server/ondemand.py). Routing over `replicas`: `least_loaded` (fewest jobs waiting or running; for
`fifo`, the replica that frees first, i.e. one shared FCFS queue) or `round_robin`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import simpy
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_serializer, field_validator

from edgevlm.sim.errors import ConfigError
from edgevlm.sim.latency import latency_models
from edgevlm.sim.profiles import HARDWARE, MODELS, HardwareProfile, ModelProfile, dump, resolve
from edgevlm.sim.registry import Registry
from edgevlm.sim.server.batching import BatchServer, ContinuousReplica, ContinuousScheduler, StaticReplica, StaticScheduler
from edgevlm.sim.server.fifo import FifoScheduler, FifoServer
from edgevlm.sim.server.ondemand import OnDemandReplica
from edgevlm.sim.server.prefix import PrefixCache, PrefixCacheConfig
from edgevlm.sim.speed import build_speed

schedulers: Registry = Registry("server.scheduler")


@schedulers.register(FifoScheduler)
def _fifo(cfg: FifoScheduler, env: simpy.Environment, server_cfg, latency, speed=None):
    return FifoServer(env, server_cfg.replicas, latency.service_s, server_cfg.max_queue, server_cfg.routing, speed)


@schedulers.register(StaticScheduler)
def _static(cfg: StaticScheduler, env: simpy.Environment, server_cfg, latency, speed=None):
    return BatchServer(env, server_cfg.replicas, latency, server_cfg.max_queue, server_cfg.routing, cfg,
                       StaticReplica, speed)


@schedulers.register(ContinuousScheduler)
def _continuous(cfg: ContinuousScheduler, env: simpy.Environment, server_cfg, latency, speed=None):
    replica = OnDemandReplica if cfg.kv_allocation == "on_demand" else ContinuousReplica
    return BatchServer(env, server_cfg.replicas, latency, server_cfg.max_queue, server_cfg.routing, cfg,
                       replica, speed)


def build_latency(cfg, rng: np.random.Generator, model: ModelProfile, hardware: HardwareProfile, where: str):
    """Build a latency model from its config (`where` is the YAML path of its block, for errors)."""
    return latency_models.build(cfg, rng, model, hardware, where)


def build_server(env: simpy.Environment, cfg, rng: np.random.Generator, speed_rng: np.random.Generator | None = None):
    """Build the server of a validated `ServerConfig` (`speed_rng`: the speed model's own stream)."""

    latency = build_latency(cfg.latency, rng, cfg.model, cfg.hardware, "server")
    speed_cfg = getattr(cfg, "speed", None)  # ServerConfig has it; a bare ServerBase (edge devices) does not
    speed = None if speed_cfg is None else build_speed(speed_cfg, speed_rng if speed_rng is not None else rng)
    kind = cfg.scheduler.kind
    if kind != "fifo":
        if not latency.batchable:
            raise ConfigError("server.latency", f"kind {cfg.latency.kind!r} times whole jobs and cannot batch; "
                              f"scheduler {kind!r} needs one of: roofline, profile, parametric")
        if cfg.scheduler.max_batch > latency.max_batch:
            raise ConfigError("server.scheduler.max_batch",
                              f"{cfg.scheduler.max_batch} is above the largest batch the latency profile "
                              f"measured ({latency.max_batch}); allowed: 1..{latency.max_batch}")
    server = schedulers.build(cfg.scheduler, env, cfg, latency, speed)
    prefix_cfg = getattr(cfg, "prefix_cache", None)
    if prefix_cfg is not None and prefix_cfg.enabled:
        server.prefix = PrefixCache(prefix_cfg, cfg.replicas)
    return server


class ServerBase(BaseModel):
    """Fields shared by every server block; the scenario adds the registry unions."""

    model_config = ConfigDict(extra="forbid")
    replicas: PositiveInt = 1
    model: ModelProfile = Field(MODELS["llava-1.5-7b"], description="a name in sim/profiles.py MODELS, or the "
                                                                     "fields of a custom model")
    hardware: HardwareProfile = Field(HARDWARE["a100-80gb"], description="a name in HARDWARE, or custom fields")
    max_queue: int | None = Field(None, ge=0, description="drop a job when this many are already waiting")
    routing: Literal["least_loaded", "round_robin"] = "least_loaded"

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, v):
        return resolve(v, MODELS, "model")

    @field_validator("hardware", mode="before")
    @classmethod
    def _hardware(cls, v):
        return resolve(v, HARDWARE, "hardware")

    @field_serializer("model")
    def _dump_model(self, v):
        return dump(v, MODELS)

    @field_serializer("hardware")
    def _dump_hardware(self, v):
        return dump(v, HARDWARE)


__all__ = ["BatchServer", "PrefixCacheConfig", "ContinuousScheduler", "FifoScheduler", "FifoServer", "ServerBase", "StaticScheduler",
           "build_latency", "build_server", "schedulers"]
