"""The GPU server: replicas, a scheduler that orders jobs, and a latency model that times them.

`fifo` runs one job at a time per replica, in arrival order, on whichever replica frees first
(FCFS M/G/c). As on the links, each job's start is known on arrival (Lindley's recursion over the
replicas' free times), so a job costs one SimPy event.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Literal

import numpy as np
import simpy
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from sim.latency import Job, latency_models
from sim.registry import Registry

schedulers: Registry = Registry("server.scheduler")


class FifoScheduler(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["fifo"] = "fifo"


class FifoServer:
    """Batch-1 FCFS over `replicas` identical GPUs; optional admission limit on waiting jobs."""

    def __init__(self, env: simpy.Environment, replicas: int, service_s, max_queue: int | None):
        self.env = env
        self.replicas = replicas
        self.service_s = service_s
        self.max_queue = max_queue
        self._free = [0.0] * replicas
        self._starts: deque[float] = deque()  # start times of waiting jobs (kept only with max_queue)
        self.busy_s = 0.0
        self.jobs = 0
        self.dropped = 0

    def queue_length(self) -> int:
        """Jobs admitted but not yet in service (tracked when `max_queue` is set, else 0)."""
        now, starts = self.env.now, self._starts
        while starts and starts[0] <= now:
            starts.popleft()
        return len(starts)

    def submit(self, job: Job, admit: bool = False):
        """Process: run `job`; returns (start_s, end_s), or None if admission control drops it.

        Only new work (`admit=True`) is subject to `max_queue`; follow-up passes always enter.
        """
        env = self.env
        now = env.now
        if admit and self.max_queue is not None and self.queue_length() >= self.max_queue:
            self.dropped += 1
            return None
        free = self._free
        start = heapq.heappop(free)
        if start < now:
            start = now
        dur = self.service_s(job)
        end = start + dur
        heapq.heappush(free, end)
        if start > now and self.max_queue is not None:
            self._starts.append(start)
        self.busy_s += dur
        self.jobs += 1
        yield env.timeout(end - now)
        return start, end

    def stats(self, horizon_s: float) -> dict:
        return {
            "utilisation": self.busy_s / (horizon_s * self.replicas) if horizon_s > 0 else 0.0,
            "jobs": self.jobs,
            "dropped": self.dropped,
            "mean_batch": 1.0,
        }


@schedulers.register(FifoScheduler)
def _fifo(cfg: FifoScheduler, env: simpy.Environment, replicas: int, service_s, max_queue: int | None):
    return FifoServer(env, replicas, service_s, max_queue)


def build_server(env: simpy.Environment, cfg, rng: np.random.Generator):
    """Build the server of a validated `ServerConfig`."""
    service_s = latency_models.build(cfg.latency, rng)
    return schedulers.build(cfg.scheduler, env, cfg.replicas, service_s, cfg.max_queue)


class ServerBase(BaseModel):
    """Fields shared by every server block; the scenario adds the registry unions."""

    model_config = ConfigDict(extra="forbid")
    replicas: PositiveInt = 1
    model: str = "llava-1.5-7b"
    hardware: str = "a100-80gb"
    max_queue: int | None = Field(None, ge=0, description="drop a job when this many are already waiting")
