"""Links: the shared uplink and downlink. A transfer waits its turn, then serialises at the rate
min(link capacity, the client's access rate), then propagates.

`fifo` serves transfers one at a time in arrival order. With a fixed service time known on
arrival, the finish time follows Lindley's recursion, start = max(now, previous finish). So a
transfer costs a single SimPy event, and the result is the exact FIFO queue.
"""

from __future__ import annotations

from typing import Literal

import simpy
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat


class LinkConfig(BaseModel):
    """One direction of the network (DESIGN.md §3 `network.uplink` / `network.downlink`)."""

    model_config = ConfigDict(extra="forbid")
    capacity_mbps: PositiveFloat
    discipline: Literal["fifo"] = "fifo"
    propagation_ms: float = Field(0.0, ge=0)
    overhead_bytes: int = Field(0, ge=0, description="headers and handshake bytes added to every message")


class FifoLink:
    """A FIFO link with per-transfer rate min(capacity, access rate), plus propagation delay."""

    def __init__(self, env: simpy.Environment, cfg: LinkConfig):
        self.env = env
        self.capacity_bps = cfg.capacity_mbps * 1e6
        self.propagation_s = cfg.propagation_ms / 1e3
        self.overhead_bytes = cfg.overhead_bytes
        self.free_at_s = 0.0
        self.busy_s = 0.0
        self.bytes_carried = 0
        self.transfers = 0

    def transfer(self, nbytes: int, access_bps: float | None = None):
        """Process: carry `nbytes` (already including overhead); returns once delivered."""
        env = self.env
        rate = self.capacity_bps if access_bps is None or access_bps > self.capacity_bps else access_bps
        tx_s = nbytes * 8.0 / rate
        now = env.now
        start = self.free_at_s if self.free_at_s > now else now
        self.free_at_s = start + tx_s
        self.busy_s += tx_s
        self.bytes_carried += nbytes
        self.transfers += 1
        yield env.timeout(self.free_at_s + self.propagation_s - now)

    def backlog_s(self) -> float:
        """Seconds of queued transmission ahead of a transfer starting now."""
        return max(0.0, self.free_at_s - self.env.now)

    def stats(self, horizon_s: float) -> dict:
        return {
            "utilisation": self.busy_s / horizon_s if horizon_s > 0 else 0.0,
            "bytes_carried": self.bytes_carried,
            "transfers": self.transfers,
        }


def build_link(env: simpy.Environment, cfg: LinkConfig) -> FifoLink:
    return FifoLink(env, cfg)
