"""Batching schedulers: `static` (request-level batches) and `continuous` (iteration-level, vLLM-like).

Each replica is one short SimPy process that loops over batches or iterations; a job costs one
SimPy event for its completion, plus one per batch or iteration that it shares with the others.

`continuous` follows vLLM's scheduler with these simplifications:
- An iteration is one forward pass: the whole prompt of every newly admitted sequence (no chunked
  prefill) together with one decode token of every running sequence; `iteration_s` of the latency
  model times it. The prefill emits a sequence's first token; it leaves after its last one.
- Admission is FCFS while fewer than `max_batch` sequences run, within an optional prefill token
  budget per iteration (`max_batched_tokens`), and while the KV cache holds the prompt plus every
  answer token of all running sequences (`kv_allocation: reserve`). vLLM allocates KV blocks as tokens
  appear and preempts (recomputes) when they run out (`kv_allocation: on_demand`, sim/server/ondemand.py);
  reserving the final length up front never preempts, at the price of admitting somewhat fewer
  sequences when memory binds. A job larger than the whole cache still runs when it is alone.
  summary.json's gpu.kv has the counters and a KV-use series (sim/server/kvcache.py).
- Answer lengths come from the trace, so no sampling, stop strings or beam search.
- Replicas do not share a queue: routing picks one on submission, per GPU pass (a follow-up pass of
  the same request may go to another replica).
`static` waits until `max_batch` jobs are queued or the oldest has waited `max_wait_s`, then runs
them as one batch (`batch_s`: joint prefill, lock-step decode to the longest answer, padding kept);
every job of the batch ends when the batch does.
"""

from __future__ import annotations

import math
from collections import deque
from typing import ClassVar, Literal

import simpy
from pydantic import Field, PositiveInt, model_serializer

from edgevlm.sim.interfaces import Server
from edgevlm.sim.latency import Job
from edgevlm.sim.registry import Strict
from edgevlm.sim.server.kvcache import KvUse, kv_summary


class _Strict(Strict):
    #: Fields added after runs were recorded; left out of the dump at their defaults, so a stored
    #: scenario (and the event log's metadata) keeps its bytes.
    _later_fields: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_later_defaults(self, handler):
        data = handler(self)
        for name in self._later_fields:
            if getattr(self, name) == type(self).model_fields[name].default:
                data.pop(name, None)
        return data


class StaticScheduler(_Strict):
    kind: Literal["static"]
    max_batch: PositiveInt = 8
    max_wait_s: float = Field(0.05, ge=0, description="longest the first job of a batch waits for more")
    _later_fields = ("kv_cache_limit",)
    kv_cache_limit: bool = Field(False, description="take into a batch only the jobs whose padded KV (batch x "
                                 "(longest prompt + longest answer - 1)) fits the KV cache; default off, as before")


class ContinuousScheduler(_Strict):
    kind: Literal["continuous"]
    max_batch: PositiveInt = Field(32, description="most sequences in flight per replica (vLLM max_num_seqs)")
    max_batched_tokens: PositiveInt | None = Field(
        None, description="most prompt tokens prefilled in one iteration (vLLM max_num_batched_tokens); "
                          "one prompt is always admitted")
    kv_cache_limit: bool = Field(True, description="admit only what fits in the KV cache beside the weights")
    _later_fields = ("kv_allocation", "kv_capacity_tokens", "kv_block_tokens", "kv_watermark")
    kv_allocation: Literal["reserve", "on_demand"] = Field(
        "reserve", description="reserve: admit on the final length, never preempt; on_demand: allocate as tokens "
                               "appear and preempt by recomputation (vLLM); see sim/server/kvcache.py")
    kv_capacity_tokens: PositiveInt | None = Field(
        None, description="KV tokens per replica; default: from the hardware and model profiles (roofline), "
                          "unbounded for latency kinds without a memory model")
    kv_block_tokens: PositiveInt = Field(
        1, description="KV allocated in blocks of this many tokens (vLLM: 16); a sequence holds whole blocks, "
                       "the capacity is whole blocks; default 1: token by token, as before")
    kv_watermark: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of the KV blocks an admission must leave free (vLLM's watermark, "
                                         "0.01 there); growth of running sequences may use them; default 0")


class BatchServer(Server):
    """Replicas with their own queues; a job goes to one by `routing`, then waits for its batch."""

    def __init__(self, env: simpy.Environment, replicas: int, latency, max_queue: int | None, routing: str,
                 cfg, replica_cls, speed=None):
        self.env = env
        self.latency = latency
        self.speed = speed  # factor(start_s) on each batch's or iteration's time (sim/speed.py), or None
        self.cfg = cfg
        self.max_queue = max_queue
        self.round_robin = routing == "round_robin"
        self.reps = [replica_cls(self) for _ in range(replicas)]
        self._next = 0
        self.prefix = None  # PrefixCache (sim/server/prefix.py) when server.prefix_cache is enabled
        self.waiting = 0
        self.busy_s = 0.0
        self.wait_s = 0.0
        self.jobs = 0
        self.dropped = 0
        self.batches = 0
        self.batched_seqs = 0

    def queue_length(self) -> int:
        """Jobs submitted but not yet in a batch, over all replicas."""
        return self.waiting

    def kv_uses(self) -> list[KvUse]:
        return [r.kv for r in self.reps] if math.isfinite(self.reps[0].kv.capacity) else []

    def _route(self):
        reps = self.reps
        if len(reps) == 1:
            return reps[0]
        if self.round_robin:
            k = self._next
            self._next = (k + 1) % len(reps)
            return reps[k]
        return min(reps, key=lambda r: len(r.waiting) + r.n_running)

    def submit(self, job: Job, admit: bool = False):
        """Process: run `job` in some batch; returns (start_s, end_s), or None if admission drops it."""
        if admit and self.max_queue is not None and self.waiting >= self.max_queue:
            self.dropped += 1
            return None
        done = self.env.event()
        rep = self._route()
        if self.prefix is not None:
            job = self.prefix.route(self.reps.index(rep), job)
        rep.waiting.append((job, done, self.env.now))
        self.waiting += 1
        self.jobs += 1
        rep.kick()
        span = yield done
        return span

    def stats(self, horizon_s: float) -> dict:
        h = horizon_s
        return {
            "utilisation": self.busy_s / (h * len(self.reps)) if h > 0 else 0.0,
            "jobs": self.jobs,
            "dropped": self.dropped,
            # static: jobs per batch; continuous: sequences per iteration (prefills and decodes)
            "mean_batch": self.batched_seqs / self.batches if self.batches else 0.0,
            # Little's law: the integral of the waiting count is the sum of the waits (all jobs ended by h)
            "mean_queue_length": self.wait_s / h if h > 0 else 0.0,
            "batches" if isinstance(self.cfg, StaticScheduler) else "iterations": self.batches,
        } | {"kv": kv_summary([r.kv for r in self.reps], self.cfg.kv_allocation if isinstance(
                self.cfg, ContinuousScheduler) else "padded_batch", h)} \
          | ({"prefix_cache": self.prefix.stats()} if self.prefix is not None else {})


class StaticReplica:
    def __init__(self, server: BatchServer):
        self.server = server
        self.waiting: deque = deque()
        self.n_running = 0
        self._wake = None
        self._full = None
        cfg = server.cfg
        self.kv = KvUse(server.latency.kv_capacity_tokens if cfg.kv_cache_limit else float("inf"))
        server.env.process(self.loop())

    def kick(self) -> None:
        if self._wake is not None:
            ev, self._wake = self._wake, None
            ev.succeed()
        elif self._full is not None and len(self.waiting) >= self.server.cfg.max_batch:
            ev, self._full = self._full, None
            ev.succeed()

    def loop(self):
        srv = self.server
        env, waiting = srv.env, self.waiting
        max_batch, max_wait = srv.cfg.max_batch, srv.cfg.max_wait_s
        batch_s = srv.latency.batch_s
        while True:
            if not waiting:
                self._wake = env.event()
                yield self._wake
            if len(waiting) < max_batch:
                wait = waiting[0][2] + max_wait - env.now
                if wait > 0:
                    self._full = env.event()
                    yield self._full | env.timeout(wait)
                    self._full = None
            k = min(len(waiting), max_batch)
            kv = self.kv
            longest_n = longest_out = 0
            for i in range(k):  # padded KV of the first i + 1 jobs: HF generate pads prompts and answers
                job = waiting[i][0]
                n = max(longest_n, job.visual_tokens + job.prompt_tokens)
                out = max(longest_out, job.out_tokens - 1 if job.out_tokens > 1 else 0)
                if i and (i + 1) * (n + out) > kv.capacity:
                    k = i
                    break
                longest_n, longest_out = n, out
            batch = [waiting.popleft() for _ in range(k)]
            start = env.now
            srv.waiting -= k
            srv.wait_s += sum(start - t for _, _, t in batch)
            dur = batch_s([j for j, _, _ in batch])
            if srv.speed is not None:
                dur *= srv.speed(start)
            self.n_running = k
            srv.busy_s += dur
            srv.batches += 1
            srv.batched_seqs += k
            yield env.timeout(dur)
            kv.admitted += k
            kv.note(env.now, k * (longest_n + longest_out), k)
            self.n_running = 0
            span = (start, env.now)
            for _, done, _ in batch:
                done.succeed(span)


class ContinuousReplica:
    def __init__(self, server: BatchServer):
        self.server = server
        self.waiting: deque = deque()
        self.n_running = 0  # sequences that have been prefilled and not yet finished
        self._wake = None
        cfg = server.cfg
        cap = cfg.kv_capacity_tokens or server.latency.kv_capacity_tokens if cfg.kv_cache_limit else float("inf")
        self.block_tokens = bt = cfg.kv_block_tokens
        self.capacity_blocks = cap if math.isinf(cap) else math.floor(cap / bt)
        self.watermark_blocks = 0 if math.isinf(cap) else math.floor(cfg.kv_watermark * self.capacity_blocks)
        # the KV that whole blocks can hold (blocks of 1 token: the capacity as before, fractions included)
        self.kv = KvUse(cap if bt == 1 else self.capacity_blocks * bt)
        server.env.process(self.loop())

    def kick(self) -> None:
        if self._wake is not None:
            ev, self._wake = self._wake, None
            ev.succeed()

    def loop(self):
        srv = self.server
        env, waiting, cfg = srv.env, self.waiting, srv.cfg
        iteration_s = srv.latency.iteration_s
        max_batch = cfg.max_batch
        token_budget = cfg.max_batched_tokens or float("inf")
        kv = self.kv
        bt = self.block_tokens
        kv_cap = self.capacity_blocks * bt - self.watermark_blocks * bt  # an admission leaves the watermark free
        ctx = 0.0  # context tokens held by running sequences
        reserved = 0.0  # KV tokens reserved for running sequences' final lengths, in whole blocks
        finish: dict[int, list] = {}  # iteration -> sequences whose last token it emits
        it = 0
        while True:
            if not waiting and not self.n_running:
                self._wake = env.event()
                yield self._wake
            n_dec = self.n_running
            new = []
            tokens = 0
            while waiting and n_dec + len(new) < max_batch:
                job = waiting[0][0]
                n = job.visual_tokens + job.prompt_tokens
                final = n + (job.out_tokens - 1 if job.out_tokens > 1 else 0)
                if bt > 1:
                    final = -(-final // bt) * bt
                if (n_dec or new) and (reserved + final > kv_cap or (new and tokens + n > token_budget)):
                    break
                new.append(waiting.popleft())
                tokens += n
                reserved += final
            start = env.now
            dur = iteration_s([j for j, _, _ in new], n_dec, ctx)
            if srv.speed is not None:
                dur *= srv.speed(start)
            srv.busy_s += dur
            srv.batches += 1
            srv.batched_seqs += n_dec + len(new)
            if new:
                srv.waiting -= len(new)
                srv.wait_s += sum(start - t for _, _, t in new)
            yield env.timeout(dur)
            ctx += n_dec
            kv.admitted += len(new)
            for job, done, _ in new:
                n = job.visual_tokens + job.prompt_tokens
                steps = job.out_tokens - 1 if job.out_tokens > 1 else 0
                ctx += n
                self.n_running += 1
                finish.setdefault(it + steps, []).append((done, start, n + steps, -(-(n + steps) // bt) * bt))
            kv.note(env.now, ctx, self.n_running)
            ended = finish.pop(it, None)
            if ended:
                end = env.now
                for done, s, final, booked in ended:
                    ctx -= final
                    reserved -= booked
                    done.succeed((s, end))
                self.n_running -= len(ended)
            it += 1
