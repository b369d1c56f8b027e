"""`fifo`: batch-1 FCFS on `replicas` GPUs, each job's start known on arrival (Lindley's recursion).

With routing `least_loaded` a job goes to the replica that frees first: one shared FCFS queue,
the M/G/c queue of Erlang C. With `round_robin` job k goes to replica k mod c, each replica a
FCFS queue of its own. Either way a job costs one SimPy event.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Literal

import simpy
from pydantic import BaseModel, ConfigDict

from edgevlm.sim.interfaces import Server
from edgevlm.sim.latency import Job
from edgevlm.sim.lindley import lindley_start
from edgevlm.sim.simpy_adapter import timeout


class FifoScheduler(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["fifo"] = "fifo"


class FifoServer(Server):
    """Batch-1 FCFS over `replicas` identical GPUs; optional admission limit on waiting jobs."""

    books_on_arrival = True

    def __init__(self, env: simpy.Environment, replicas: int, service_s, max_queue: int | None,
                 routing: str = "least_loaded", speed=None):
        self.env = env
        self.replicas = replicas
        self.service_s = service_s
        self.speed = speed  # factor(start_s) on each pass's time (sim/speed.py), or None
        self.max_queue = max_queue
        self.round_robin = routing == "round_robin" and replicas > 1
        self._free = [0.0] * replicas
        # start times of admitted jobs not yet started, one non-decreasing deque per FCFS queue;
        # started ones are dropped as jobs arrive, so each holds at most the jobs now waiting
        self._starts: list[deque[float]] = [deque() for _ in range(replicas if self.round_robin else 1)]
        self._next = 0
        self.prefix = None  # PrefixCache (sim/server/prefix.py) when server.prefix_cache is enabled
        self.busy_s = 0.0
        self.wait_s = 0.0
        self.jobs = 0
        self.dropped = 0

    def queue_length(self) -> int:
        """Jobs admitted but not yet in service, now."""
        now, n = self.env.now, 0
        for starts in self._starts:
            while starts and starts[0] <= now:
                starts.popleft()
            n += len(starts)
        return n

    def submit(self, job: Job, admit: bool = False):
        """Process: run `job`; returns (start_s, end_s), or None if admission control drops it.

        Only new work (`admit=True`) is subject to `max_queue`; follow-up passes always enter.
        """
        span = self.book(job, admit)
        if span is None:
            return None
        yield timeout(self.env, span[1] - self.env.now)
        return span

    def book(self, job: Job, admit: bool = False) -> tuple[float, float] | None:
        """Place `job` in the schedule now (Lindley's recursion) without waiting: (start_s, end_s) or None."""
        now = self.env._now
        if admit and self.max_queue is not None and self.queue_length() >= self.max_queue:
            self.dropped += 1
            return None
        free = self._free
        if self.round_robin:
            k = self._next
            self._next = (k + 1) % self.replicas
            start = free[k]
            starts = self._starts[k]
        elif self.prefix is not None:  # the replica that frees first, by index (its cache is its own)
            k = min(range(self.replicas), key=free.__getitem__)
            start = free[k]
            starts = self._starts[0]
        else:
            k = -1
            start = heapq.heappop(free)
            starts = self._starts[0]
        if self.prefix is not None:
            job = self.prefix.route(max(k, 0), job)
        if start < now:  # lindley_start, inlined
            start = now
        dur = self.service_s(job)
        if self.speed is not None:
            dur *= self.speed(start)
        end = start + dur
        if k < 0:
            heapq.heappush(free, end)
        else:
            free[k] = end
        if start > now:
            while starts and starts[0] <= now:
                starts.popleft()
            starts.append(start)
            self.wait_s += start - now
        self.busy_s += dur
        self.jobs += 1
        return start, end

    def busy_fraction_until(self, now_s: float) -> float:
        """Busy share up to `now_s`: each replica's booked work past `now_s` is one block at its end."""
        ahead_s = sum(max(0.0, f - now_s) for f in self._free)
        return (self.busy_s - ahead_s) / (now_s * self.replicas)

    def stats(self, horizon_s: float) -> dict:
        return {
            "utilisation": self.busy_s / (horizon_s * self.replicas) if horizon_s > 0 else 0.0,
            "jobs": self.jobs,
            "dropped": self.dropped,
            "mean_batch": 1.0,
            # Little's law: the integral of the waiting count is the sum of the waits (all jobs ended by horizon_s)
            "mean_queue_length": self.wait_s / horizon_s if horizon_s > 0 else 0.0,
        } | ({"prefix_cache": self.prefix.stats()} if self.prefix is not None else {})
