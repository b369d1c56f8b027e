"""Prefix reuse between the two stages (`server.prefix_cache`): stage 2 starts from stage 1's cached KV.

A two-stage request's stage-2 prompt begins with its stage-1 prompt (global image + question); a
server that keeps stage 1's KV, as vLLM's and SGLang's prefix caches do, prefills only the rest (the
local image's tokens) and encodes only the local image. Each replica keeps the prefixes of the
stage-1 passes routed to it, up to `capacity_tokens`, evicting the least recently stored first. A
stage 2 that finds its prefix on the replica it is routed to is a hit: the prefix leaves the cache
(it becomes the sequence's own KV) and the pass costs

    FLOPs(c + m) - FLOPs(c) = (24·m·d² + 4·m·(2c + m)·d)·L

for m new tokens after c cached ones, from the seed's FLOPs(n) = (24·n·d² + 4·n²·d)·L (eq. 17);
the request's FLOPs count FLOPs(2·n_v) - FLOPs(n_v) instead of FLOPs(2·n_v), the prompt's text tokens
left out as in the seed. A miss (evicted, or routed to another replica) pays full price.

Each prefix is read at most once (by its own stage 2), so least-recently-used and first-in-first-out
eviction coincide; `eviction: lru` names it. The cache is a budget of its own: vLLM keeps cached
blocks in its free pool and evicts them when running sequences need room, which is not modelled.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class PrefixCacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    capacity_tokens: PositiveInt | None = Field(None, description="prefix tokens kept per replica; None: no limit")
    eviction: Literal["lru"] = "lru"


class PrefixCache:
    """Per-replica stores of stage-1 prefixes (request -> tokens), with hit/miss/eviction counters."""

    def __init__(self, cfg: PrefixCacheConfig, replicas: int):
        self.capacity = cfg.capacity_tokens or float("inf")
        self.stores: list[OrderedDict[int, int]] = [OrderedDict() for _ in range(replicas)]
        self.held = [0] * replicas
        self.hits = self.misses = self.evictions = self.reused_tokens = 0
        self._hit_keys: set[int] = set()

    def route(self, replica: int, job):
        """The job as replica `replica` runs it: a stage 1 stores its prefix; a stage 2 reuses it if cached."""
        key = job.prefix_key
        if key is None:
            return job
        store = self.stores[replica]
        if job.stage == 1:
            n = job.visual_tokens + job.prompt_tokens
            while store and self.held[replica] + n > self.capacity:
                self.held[replica] -= store.popitem(last=False)[1]
                self.evictions += 1
            if n <= self.capacity:
                store[key] = n
                self.held[replica] += n
            return job
        if job.stage != 2:
            return job
        n = store.pop(key, None)
        if n is None:
            self.misses += 1
            return job
        self.held[replica] -= n
        self.hits += 1
        self.reused_tokens += n
        self._hit_keys.add(key)
        return replace(job, images=max(0, job.images - 1), cached_tokens=n)

    def was_hit(self, key: int) -> bool:
        """Whether the stage 2 of request `key` reused its prefix (asked once, after the pass)."""
        if key in self._hit_keys:
            self._hit_keys.discard(key)
            return True
        return False

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "reused_tokens": self.reused_tokens}
