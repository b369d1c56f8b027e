"""The three interfaces the engine (sim/engine.py) is written against: `Link`, `Server`, `Policy`.

Each lists exactly what `Simulation` and the run summary call, so a new link discipline, scheduler
or policy only has to implement these methods (and register its config). Built-ins: links in
sim/network.py, servers in sim/server/, policies in sim/policies/.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Generator, Iterable, Optional

import numpy as np

from edgevlm.traces.eventlog import TIME_COLUMNS

if TYPE_CHECKING:
    from edgevlm.sim.engine import Request, Simulation
    from edgevlm.sim.latency import Job

#: (start_s, end_s) of a GPU pass.
Span = tuple[float, float]


class Link(ABC):
    """One direction of the network: transfers with propagation delay and per-message overhead."""

    #: Bytes added to every message (headers); the engine adds them before `transfer`.
    overhead_bytes: int
    #: One-way propagation delay, seconds.
    propagation_s: float
    #: Nominal capacity in bit/s: the constant, or a bandwidth trace's mean.
    capacity_bps: float
    #: The capacity over time (sim/bandwidth.py: cum_bits, time_at, rate_at, next_change).
    profile: Any

    @abstractmethod
    def transfer(self, nbytes: int, access=None, flow=None) -> Iterable:
        """Carry `nbytes` (overhead included), capped by the client's `access` rate (None: uncapped;
        float bit/s; or a per-client profile). `flow`: the connection it belongs to (the client),
        which only a transport model reads. The transfer is handed to the link on the call; a process
        waits for its delivery with `yield from link.transfer(...)`, whose value is None: a generator,
        or (the built-in links) a 1-tuple holding the wake-up event, which costs no generator frame
        per message (whoever waits on it is moved along if the link replaces that event)."""

    @abstractmethod
    def backlog_bytes(self) -> float:
        """Bytes the transfers in flight still have to send, now."""

    @abstractmethod
    def backlog_s(self) -> float:
        """Seconds of queued transmission ahead of a transfer starting now, at the nominal capacity."""

    @abstractmethod
    def stats(self, horizon_s: float) -> dict:
        """summary.json's "uplink"/"downlink" block for a run that ended at `horizon_s`."""

    def busy_fraction_until(self, now_s: float) -> Optional[float]:
        """Share of [0, now_s] spent transmitting, leaving out work booked past `now_s` (a run
        stopped early); None where the link cannot tell."""
        return None


class Server(ABC):
    """The GPU server: a scheduler over replicas, timed by a latency model."""

    #: True when `book` can place a job the moment it arrives (its span is known then, e.g. FIFO by
    #: Lindley's recursion): the engine then waits on one timeout instead of running `submit`.
    books_on_arrival: bool = False

    @abstractmethod
    def submit(self, job: "Job", admit: bool = False) -> Generator:
        """Process: run `job`; returns its Span, or None if admission control (`admit`, new work
        only) drops it."""

    def book(self, job: "Job", admit: bool = False) -> Optional[Span]:
        """Place `job` now without waiting: its Span, or None if dropped. Only where `books_on_arrival`."""
        raise NotImplementedError(f"{type(self).__name__} does not know a job's span on arrival")

    @abstractmethod
    def queue_length(self) -> int:
        """Jobs admitted and not yet in service (or not yet in a batch), now."""

    @abstractmethod
    def stats(self, horizon_s: float) -> dict:
        """summary.json's "gpu" block for a run that ended at `horizon_s`."""

    def kv_uses(self) -> list:
        """The KV-cache meters (sim/server/kvcache.py KvUse) of its replicas; empty without a KV model."""
        return []

    def busy_fraction_until(self, now_s: float) -> Optional[float]:
        """Per-replica busy share of [0, now_s], leaving out work booked past `now_s` (a run
        stopped early); None where the server cannot tell."""
        return None


class Policy(ABC):
    """A built policy: it owns one request's protocol as a SimPy process (`life`)."""

    name = "policy"
    #: The order in which this protocol sets the event log's time columns (skipped ones stay null);
    #: `edgevlm check` verifies timestamps never go backwards along it.
    step_order: tuple[str, ...] = TIME_COLUMNS
    #: Which s<k>_start_s / s<k>_end_s spans in the event log are server GPU passes.
    server_stages: tuple[int, ...] = (1, 2)
    #: True for analysis bounds (the oracle) that no deployable gate can implement; summaries flag it.
    is_bound = False

    def __init__(self, cfg, workload, rng: np.random.Generator):
        self.cfg = cfg
        self.workload = workload
        self.rng = rng

    def bind(self, sim: "Simulation") -> None:
        """Called once with the built simulation (links, server, edge devices, model), before the
        first request: precompute what depends on it here, never from the raw scenario."""

    @abstractmethod
    def life(self, sim: "Simulation", req: "Request") -> Generator:
        """The request's SimPy process; it ends with exactly one `sim.finish(req)` or `sim.drop(req)`."""
