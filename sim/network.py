"""Links: the shared uplink and downlink, with propagation delay and per-message overhead.

Capacity is constant or follows a bandwidth trace (sim/bandwidth.py). Each transfer may carry
its client's access rate: a constant cap in bit/s, or a per-client trace profile.

Disciplines
- `fifo`: one transfer at a time in arrival order, at min(capacity, access rate). The finish time
  is known on arrival, so Lindley's recursion (start = max(now, previous finish)) gives the exact
  FIFO queue at one SimPy event per transfer. On a trace, the finish is the later of the shared
  trace's finish (exact, from its cumulative capacity) and the access link's own finish: exact when
  one of the two bounds dominates throughout, otherwise an optimistic fluid bound.
- `ps` (default, DESIGN.md §3): processor sharing, max-min fair with access caps. Transfers are
  grouped in *cap classes* (one class per distinct constant cap; all uncapped transfers in one
  class; one class per transfer whose client has a trace). Water-filling gives each class a rate
  min(cap, fair level). Every transfer of a class progresses at the same rate, so a class keeps a
  virtual time V (bits served to each of its members) and each member a finish tag F = V at its
  arrival + its bits; members finish in tag order (a heap). An event (arrival, finish, trace step)
  costs O(log n) heap work plus O(K log K) for the water-filling over the K active classes: with
  thousands of uncapped transfers that is O(log n), never O(n). With per-client traces K grows with
  the number of such active transfers and each of them adds an event at every step of its trace
  (`bin_ms`): that cost is the price of time-varying caps.
  When only uncapped transfers are active on a trace-driven link, V advances by
  Δcum_bits / n using the trace's exact cumulative capacity (no event per trace step; Mahimahi
  transfers end exactly at delivery opportunities). With caps active on a trace, the water-filling
  needs a rate, and the trace is read as piecewise constant (Mahimahi: averaged over `bin_ms`).

The link runs one pending timer at a time. SimPy cannot cancel a timeout, so the timer is a plain
event whose callback ignores it unless it is still `self._timer`. An arrival only ever delays
other transfers, so it replaces the timer only if the newcomer itself would finish first;
otherwise the old timer fires early and re-plans. A finish wakes its transfer's process after the
propagation delay through a single scheduled event.
*Independent transfers*: on a constant-capacity link, while every transfer in flight runs at
min(its cap, capacity) and those rates sum to at most the capacity (a lone transfer; capped
clients whose caps fit), max-min gives each its own rate whatever the others do, so its finish is
known on arrival: its wake-up is scheduled at once with no timer and no class state (one SimPy
event, as FIFO). A newcomer that does not fit moves them all into their classes with the bits they
still owe; each gets a fresh wake-up event and its waiting process is moved onto it (`_renew`), so
the stale one fires later with nobody on it. A lone transfer left in the class state by a finish is
likewise scheduled directly until someone joins. `transfer` hands back its wake-up as a 1-tuple
for `yield from`: no generator per message.
`backlog_bytes()` / `backlog_s()` give the unfinished work (per class: sum of tags - n * V, O(K)).
sim/ps_reference.py computes the same finish times by brute force; tests/test_ps_reference.py
holds this class to it on random workloads.

Stats (summary.json "uplink"/"downlink"): utilisation = bits carried / capacity bits offered over
the run; busy_fraction = time with >= 1 transfer; mean_active_transfers (time average); bytes
carried; transfers; slowdown = (finish - arrival) / (bits / nominal capacity), mean and
p50/p95/p99 (quantiles from a seeded reservoir of at most RESERVOIR transfers).
"""

from __future__ import annotations

import math
from heapq import heappop, heappush
from itertools import count
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import simpy
from simpy.events import Event, Timeout
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_serializer, model_validator

from edgevlm.sim.bandwidth import BandwidthTraceConfig, ConstantProfile, load_profile
from edgevlm.sim.interfaces import Link
from edgevlm.sim.lindley import lindley_start
from edgevlm.sim.simpy_adapter import succeed_after, timeout
from edgevlm.sim.transport import NoTransport, transports

#: Default per-message overhead: an HTTP/1.1 request or response line with ~8 typical headers
#: (~250 B) plus one TCP/IPv4 header (40 B) on a persistent connection, rounded to 300 B. Per-segment
#: TCP/IP headers (40 B per 1460 B, ~2.7%) and TLS records are not modelled; set 0 to disable.
DEFAULT_OVERHEAD_BYTES = 300
#: Completion tolerance: a transfer predicted to end within this many seconds ends now.
EPS_S = 1e-9
RESERVOIR = 200_000


class LinkConfig(BaseModel):
    """One direction of the network (DESIGN.md §3 `network.uplink` / `network.downlink`)."""

    model_config = ConfigDict(extra="forbid")
    capacity_mbps: Optional[PositiveFloat] = None
    discipline: Literal["ps", "fifo"] = "ps"
    propagation_ms: float = Field(0.0, ge=0)
    overhead_bytes: int = Field(DEFAULT_OVERHEAD_BYTES, ge=0,
                                description="headers and handshake bytes added to every message")
    bandwidth_trace: Optional[BandwidthTraceConfig] = None
    #: what TCP adds to the fluid transfer (sim/transport.py); `none` (default) is the discipline alone
    transport: transports.config_union() = NoTransport()

    @model_serializer(mode="wrap")
    def _omit_default_transport(self, handler):
        """Left out at its default, so a stored scenario (and the event log's metadata) keeps its bytes."""
        data = handler(self)
        if self.transport == NoTransport():
            data.pop("transport", None)
        return data

    @model_validator(mode="after")
    def _one_capacity(self):
        if (self.capacity_mbps is None) == (self.bandwidth_trace is None):
            raise ValueError("give exactly one of 'capacity_mbps' or 'bandwidth_trace'")
        return self


class _Slowdowns:
    """Running mean plus a deterministic reservoir sample for quantiles (memory stays bounded).

    Links append to `buf` on their hot path (one list append); every BUFFER values, and before a
    summary, the buffer is folded into the mean and the reservoir in one vectorised step.
    """

    __slots__ = ("n", "total", "sample", "buf", "_rng")
    BUFFER = 8192

    def __init__(self):
        self.n = 0
        self.total = 0.0
        self.sample: list[float] = []
        self.buf: list[float] = []
        self._rng = np.random.default_rng(0)

    def add(self, x: float) -> None:
        self.buf.append(x)
        if len(self.buf) >= self.BUFFER:
            self.flush()

    def flush(self) -> None:
        """Fold the buffer in: algorithm R, item i (1-based) replaces slot j ~ U{0..i-1} if j < RESERVOIR."""
        xs, self.buf = self.buf, []
        if not xs:
            return
        n0 = self.n
        self.n += len(xs)
        self.total += math.fsum(xs)
        room = RESERVOIR - len(self.sample)
        if room > 0:
            self.sample.extend(xs[:room])
            xs = xs[room:]
            n0 += room
        if xs:
            js = self._rng.integers(0, np.arange(n0 + 1, n0 + len(xs) + 1))
            sample = self.sample
            for k in np.flatnonzero(js < RESERVOIR).tolist():  # in order: a later item overwrites
                sample[js[k]] = xs[k]

    def summary(self) -> dict:
        self.flush()
        if not self.n:
            return {"mean": None, "p50": None, "p95": None, "p99": None, "count": 0}
        q = np.percentile(np.asarray(self.sample), [50, 95, 99])
        return {"mean": self.total / self.n, "p50": float(q[0]), "p95": float(q[1]), "p99": float(q[2]),
                "count": self.n}


def slowdown(duration_s: float, nbytes: int, capacity_bps: float) -> float:
    """A transfer's time over its time alone at the nominal capacity (1 for an empty message)."""
    return duration_s * capacity_bps / (nbytes * 8.0) if nbytes > 0 else 1.0


class LinkBase(Link):
    """What both disciplines share: capacity profile, propagation, overhead, stats."""

    discipline = "?"

    def __init__(self, env: simpy.Environment, cfg: LinkConfig, base_dir: Path | None = None,
                 profile_cache: dict | None = None):
        self.env = env
        self.cfg = cfg
        if cfg.bandwidth_trace is not None:
            self.profile = load_profile(cfg.bandwidth_trace, base_dir, profile_cache)
        else:
            self.profile = ConstantProfile(cfg.capacity_mbps * 1e6)
        self.constant = isinstance(self.profile, ConstantProfile)
        self.capacity_bps = self.profile.mean_bps  # nominal: the constant, or the trace's mean
        self.propagation_s = cfg.propagation_ms / 1e3
        self.overhead_bytes = cfg.overhead_bytes
        self.bytes_carried = 0
        self.transfers = 0
        self.transfer_s = 0.0  # sum of (finish - arrival): Little's law gives the mean number active
        self.busy_s = 0.0
        self.slowdowns = _Slowdowns()

    def active_transfers(self) -> int:
        """Transfers sharing the link now (0 for FIFO: the one in service has the whole link)."""
        return 0

    def _record(self, nbytes: int, duration_s: float) -> None:
        """Count one finished transfer's time in the stats."""
        self.transfer_s += duration_s
        self.slowdowns.add(slowdown(duration_s, nbytes, self.capacity_bps))

    def stats(self, horizon_s: float) -> dict:
        offered = self.profile.cum_bits(horizon_s) if horizon_s > 0 else 0.0
        return {
            "discipline": self.discipline,
            "capacity_mbps": self.capacity_bps / 1e6,
            "utilisation": self.bytes_carried * 8.0 / offered if offered > 0 else 0.0,
            "busy_fraction": self.busy_s / horizon_s if horizon_s > 0 else 0.0,
            "mean_active_transfers": self.transfer_s / horizon_s if horizon_s > 0 else 0.0,
            "bytes_carried": self.bytes_carried,
            "transfers": self.transfers,
            "slowdown": self.slowdowns.summary(),
        }


class FifoLink(LinkBase):
    """A FIFO link with per-transfer rate min(capacity, access rate), plus propagation delay."""

    discipline = "fifo"

    def __init__(self, env, cfg, base_dir=None, profile_cache=None):
        super().__init__(env, cfg, base_dir, profile_cache)
        self.free_at_s = 0.0
        self._end_bits = 0.0  # on a trace: the capacity position where the last transfer ended

    def transfer(self, nbytes: int, access=None, flow=None) -> tuple:
        """Carry `nbytes` (already including overhead): the wake-up to `yield from` (see `Link.transfer`)."""
        env = self.env
        now = env._now
        start = lindley_start(self.free_at_s, now)
        bits = nbytes * 8.0
        if self.constant and (access is None or isinstance(access, (float, int))):
            cap = self.capacity_bps
            rate = cap if access is None or access > cap else access
            finish = start + bits / rate
        else:
            # Work-conserving on a trace: a transfer that starts as the previous one ends uses the
            # rest of the delivery opportunity the previous one finished in (byte-fluid).
            prof = self.profile
            if self.free_at_s >= now and not self.constant:
                begin = prof.cum_bits(start - 1e-6)
                if begin < self._end_bits:
                    begin = self._end_bits
            else:
                begin = prof.cum_bits(start)
            self._end_bits = begin + bits
            finish = prof.time_at(self._end_bits)
            if access is not None:
                if isinstance(access, (float, int)):
                    own = start + bits / access
                else:
                    own = access.time_at(access.cum_bits(start) + bits)
                if own > finish:
                    finish = own
            if finish < start:
                finish = start
        self.free_at_s = finish
        self.busy_s += finish - start
        self.bytes_carried += nbytes
        self.transfers += 1
        self._record(nbytes, finish - now)
        return (timeout(env, finish + self.propagation_s - now),)

    def backlog_s(self) -> float:
        """Seconds of queued transmission ahead of a transfer starting now."""
        return max(0.0, self.free_at_s - self.env.now)

    def busy_fraction_until(self, now_s: float) -> float:
        """Busy share up to `now_s`: the work booked past it is one block before `free_at_s`."""
        return (self.busy_s - max(0.0, self.free_at_s - now_s)) / now_s

    def backlog_bytes(self) -> float:
        """Bytes still to send, at the nominal capacity (approximate with access caps or a trace)."""
        return self.backlog_s() * self.capacity_bps / 8.0


class _CapClass:
    """Transfers sharing one access cap: they all progress at `rate`; `v` is bits served to each."""

    __slots__ = ("cap", "profile", "n", "v", "heap", "rate", "sum_f")

    def __init__(self, cap: float, profile=None):
        self.cap = cap
        self.profile = profile  # a per-client trace: the cap is profile.rate_at(t)
        self.n = 0
        self.v = 0.0
        self.sum_f = 0.0  # sum of members' finish tags: unfinished bits = sum_f - n * v
        self.heap: list = []
        self.rate = 0.0


class PsLink(LinkBase):
    """Processor sharing, max-min fair under access caps, by per-class virtual time (see module doc)."""

    discipline = "ps"

    def __init__(self, env, cfg, base_dir=None, profile_cache=None):
        super().__init__(env, cfg, base_dir, profile_cache)
        self._cap_threshold = self.profile.peak_bps  # a cap at or above it never binds
        self._fit_bps = self.capacity_bps * (1.0 + 1e-9)  # independent transfers' rates fit under it
        self._uncapped = _CapClass(math.inf)
        self._shared: dict[float, _CapClass] = {}  # constant cap -> class
        self._active: list[_CapClass] = []
        self._seq = count()
        self.n = 0
        self._last_s = 0.0
        self._last_cum = 0.0
        self._dirty = True
        self._timer: simpy.Event | None = None
        self._timer_at = math.inf
        self.events = 0  # link events: arrivals + finishes + timer wake-ups
        self._spec = None  # (class, record, finish_s) of a lone transfer whose wake-up is already scheduled
        # Independent transfers (see `transfer`): a heap of (finish_s, seq, record, rate_bps, access),
        # the sum of their rates, and when the current run of them began.
        self._ind: list = []
        self._ind_bps = 0.0
        self._ind_t0 = 0.0
        self._order: list | None = None  # active classes by cap; rebuilt when membership changes
        self._n_traced = 0  # active classes whose cap follows a trace (their order changes with time)
        self._all_capped = False  # valid while not _dirty: every active class runs at its cap ...
        self._slack_bps = 0.0  # ... leaving this much capacity unused

    # ---------------------------------------------------------------- the process

    def transfer(self, nbytes: int, access=None, flow=None) -> tuple:
        """Carry `nbytes` (already including overhead): the wake-up to `yield from` (see `Link.transfer`).

        While the transfers in flight run at their own caps and the caps fit in the capacity,
        nobody's rate depends on anybody else: each runs at min(cap, capacity) and its finish is
        known on arrival. Such *independent* transfers get their wake-up scheduled at once (one
        SimPy event, as FIFO) and never enter the class state. A newcomer that does not fit makes
        them all join the class state (`_join`), where water-filling takes over.
        """
        env = self.env
        now = env._now
        ind = self._ind
        if ind:
            if ind[0][0] <= now + EPS_S:
                self._retire(now)
        elif self._spec is not None:
            self._settle(now)
        if self.n == 0 and self.constant and (access is None or access.__class__ is float):
            cap = self.capacity_bps
            if access is not None and access < cap:
                cap = access
            if self._ind_bps + cap <= self._fit_bps:
                finish = now + nbytes * 8.0 / cap
                rec = [timeout(env, finish + self.propagation_s - now), now, nbytes]
                if not ind:
                    self._ind_t0 = now
                heappush(ind, (finish, next(self._seq), rec, cap, access))
                self._ind_bps += cap
                self.events += 1
            else:
                self._join(now)
                rec = self._enqueue(nbytes, access, now)
        else:
            if ind:
                self._join(now)
            rec = self._enqueue(nbytes, access, now)
        return (rec[0],)  # `_renew` moves its waiter along if the transfer's wake-up changes

    def _enqueue(self, nbytes: int, access, now: float) -> list:
        """Add a transfer to its cap class and re-plan; returns its record."""
        env = self.env
        if now > self._last_s:
            self._advance(now)
        if access is None or isinstance(access, (float, int)):
            cls = self._class_of(access)
        else:
            cls = _CapClass(math.nan, access)
        if cls.n == 0:
            cls.v = cls.sum_f = 0.0
            self._active.append(cls)
            self._order = None
            if cls.profile is not None:
                self._n_traced += 1
        rec = [Event(env), now, nbytes]  # [wake-up event, arrival_s, bytes]
        tag = cls.v + nbytes * 8.0
        cls.sum_f += tag
        heappush(cls.heap, (tag, next(self._seq), rec))
        cls.n += 1
        self.n += 1
        self.events += 1
        cap = cls.cap
        if (self._all_capped and not self._dirty and self._spec is None and cls.profile is None
                and cap <= self._slack_bps - 1e-9 * self.capacity_bps):
            # It fits under its cap and nobody else's rate changes: O(log n), no water-filling.
            cls.rate = cap
            self._slack_bps -= cap
            finish = now + nbytes * 8.0 / cap
            if finish < self._timer_at:
                self._arm(finish, now)
            return rec
        self._dirty = True
        self._plan(now)
        return rec

    # ---------------------------------------------------------------- a lone transfer
    # Most of the time a lightly loaded link carries one transfer. Its finish is then known, so its
    # wake-up is scheduled directly (one SimPy event, as on a FIFO link). If another transfer
    # arrives first, that wake-up goes stale: the record gets a fresh event and the waiting process
    # moves onto it (`_renew`).

    def _speculate(self, cls: _CapClass, finish_s: float, now: float) -> None:
        rec = cls.heap[0][2]
        self._spec = (cls, rec, finish_s)
        succeed_after(rec[0], finish_s + self.propagation_s - now)

    def _settle(self, now: float) -> None:
        """Retire the lone transfer if it is done by `now`; otherwise hand it back to the timer."""
        cls, rec, finish_s = self._spec
        self._spec = None
        if finish_s <= now + EPS_S:  # it is over: book it (its wake-up is already scheduled)
            self.busy_s += finish_s - self._last_s
            self._last_s = finish_s
            cls.heap.clear()
            cls.n = self.n = 0
            cls.sum_f = 0.0
            self._active.clear()
            self._order = None
            self._dirty = True
            self._book(rec, finish_s)
        else:
            self._renew(rec)
            self._dirty = True  # it needs a timer again: re-plan

    def _renew(self, rec: list) -> None:
        """Give a transfer a fresh, untriggered wake-up, moving whoever waits on the old one (already
        scheduled for a time that no longer holds) onto it: the old one fires later with nobody on it."""
        old = rec[0]
        new = rec[0] = Event(self.env)
        new.callbacks, old.callbacks = old.callbacks, []

    def _book(self, rec: list, finish_s: float) -> None:
        """Count a finished transfer in the link's stats."""
        self.events += 1
        self.bytes_carried += rec[2]
        self.transfers += 1
        self._record(rec[2], finish_s - rec[1])

    # ---------------------------------------------------------------- independent transfers

    def _retire(self, now: float) -> None:
        """Book the independent transfers finished by `now` (their wake-ups are already scheduled).
        The hot path of a lightly loaded link, so `_book` is inlined."""
        ind = self._ind
        limit = now + EPS_S
        capacity_bps = self.capacity_bps
        slowdowns = self.slowdowns
        buf = slowdowns.buf
        k = carried = 0
        ind_bps, transfer_s = self._ind_bps, self.transfer_s  # sums kept in the same order as before
        while ind and ind[0][0] <= limit:
            finish_s, _, rec, rate, _ = heappop(ind)
            ind_bps -= rate
            nbytes = rec[2]
            duration = finish_s - rec[1]
            k += 1
            carried += nbytes
            transfer_s += duration
            buf.append(duration * capacity_bps / (nbytes * 8.0) if nbytes > 0 else 1.0)  # slowdown()
            if not ind:  # the run of independent transfers is over
                self.busy_s += finish_s - self._ind_t0
                self._last_s = finish_s
                ind_bps = 0.0
                self._dirty = True
        self._ind_bps, self.transfer_s = ind_bps, transfer_s
        self.events += k
        self.transfers += k
        self.bytes_carried += carried
        if len(buf) >= slowdowns.BUFFER:
            slowdowns.flush()

    def _join(self, now: float) -> None:
        """Move every independent transfer into its cap class as of `now`: its tag is what it still
        has to send. Their scheduled wake-ups go stale (each gets a fresh event, `_renew`); `_plan` re-arms."""
        self._retire(now)
        ind = self._ind
        if not ind:
            return
        self.busy_s += now - self._ind_t0
        self._last_s = now
        for finish_s, _, rec, rate, access in sorted(ind):
            cls = self._class_of(access)
            if cls.n == 0:
                cls.v = cls.sum_f = 0.0
                self._active.append(cls)
            tag = cls.v + (finish_s - now) * rate
            cls.sum_f += tag
            heappush(cls.heap, (tag, next(self._seq), rec))
            cls.n += 1
            self.n += 1
            self._renew(rec)
        ind.clear()
        self._ind_bps = 0.0
        self._order = None
        self._dirty = True

    def _class_of(self, access) -> _CapClass:
        """The cap class of a constant access rate (None: uncapped)."""
        if access is None or access >= self._cap_threshold:
            return self._uncapped
        cls = self._shared.get(access)
        if cls is None:
            cls = self._shared[access] = _CapClass(access)
        return cls

    def _ind_left_bits(self, now: float) -> float:
        """Bits the independent transfers still have to send at `now`."""
        return sum((f - now) * rate for f, _, _, rate, _ in self._ind if f > now)

    # ---------------------------------------------------------------- fluid state

    def _advance(self, now: float) -> None:
        """Serve every active class from the last event to `now` at the rates then in force."""
        dt = now - self._last_s
        if dt <= 0.0:
            return
        if self.n:
            self.busy_s += dt
            if not self.constant and len(self._active) == 1 and self._active[0] is self._uncapped:
                cum = self.profile.cum_bits(now)
                self._serve_exact(cum - self._last_cum, now)
                self._last_cum = cum
            else:
                for cls in self._active:
                    cls.v += cls.rate * dt
        self._last_s = now
        if not self.constant:
            self._last_cum = self.profile.cum_bits(now)

    def _serve_exact(self, bits: float, now: float) -> None:
        """Share `bits` of trace capacity equally among the uncapped transfers, smallest tag first:
        a transfer that needs less than its share finishes, and the rest goes to the others (a
        trace delivers in bursts, so several transfers may end at one delivery opportunity)."""
        u = self._uncapped
        heap = u.heap
        while bits > 0.0 and heap:
            need = (heap[0][0] - u.v) * u.n
            if need > bits + 1e-9:
                u.v += bits / u.n
                return
            bits -= need if need > 0.0 else 0.0
            u.v = heap[0][0] if need > 0.0 else u.v
            self._finish(u, now)

    def _rates(self, now: float) -> None:
        """Water-filling: each class gets min(cap, fair level); O(K log K) in active classes."""
        active = self._active
        if len(active) == 1 and active[0].profile is None and active[0].cap == math.inf:
            cls = active[0]
            cls.rate = (self.capacity_bps if self.constant else self.profile.rate_at(now + EPS_S)) / cls.n
            return
        capacity = self.capacity_bps if self.constant else self.profile.rate_at(now + EPS_S)
        for cls in active:
            if cls.profile is not None:
                cls.cap = cls.profile.rate_at(now + EPS_S)
        if self._order is None or self._n_traced:
            self._order = sorted(active, key=_cap_key)
        remaining, left = capacity, self.n
        all_capped = True
        for cls in self._order:
            fair = remaining / left
            if cls.cap <= fair:
                cls.rate = cls.cap
                remaining -= cls.cap * cls.n
                left -= cls.n
            else:  # this class and every later one (larger caps) share `fair`
                cls.rate = fair
                all_capped = False
        # Every class at its cap: capacity to spare, so a newcomer that fits leaves every rate as is.
        self._all_capped = all_capped and self.constant and not self._n_traced
        self._slack_bps = remaining

    def _next_change(self, now: float) -> float:
        """The next time a rate changes by itself (a trace step), in rate mode."""
        t = math.inf if self.constant else self.profile.next_change(now + EPS_S)
        for cls in self._active:
            if cls.profile is not None:
                c = cls.profile.next_change(now + EPS_S)
                if c < t:
                    t = c
        return t

    def _plan(self, now: float) -> None:
        """Finish every transfer due now, then arm the timer for the next finish or rate change."""
        if self._spec is not None:
            return
        while self.n:
            active = self._active
            if len(active) == 1:  # the common case, kept cheap: one class, no water-filling
                cls = active[0]
                if self.constant and cls.profile is None:
                    if self._dirty:
                        fair = self.capacity_bps / cls.n
                        cls.rate = cls.cap if cls.cap < fair else fair
                        self._all_capped = cls.cap < fair
                        self._slack_bps = self.capacity_bps - cls.rate * cls.n
                        self._dirty = False
                    best_t = now + (cls.heap[0][0] - cls.v) / cls.rate
                    if best_t <= now + EPS_S:
                        self._finish(cls, now)
                        continue
                    if cls.n == 1:
                        self._speculate(cls, best_t, now)
                    elif best_t < self._timer_at:
                        self._arm(best_t, now)
                    return
                if not self.constant and cls is self._uncapped:  # exact mode on a trace
                    best_t = self.profile.time_at(self._last_cum + (cls.heap[0][0] - cls.v) * cls.n)
                    if best_t <= now + EPS_S:
                        self._finish(cls, now)
                        continue
                    if best_t < self._timer_at:
                        self._arm(best_t, now)
                    return
                if self._dirty:
                    if self.constant and cls.profile is None:
                        fair = self.capacity_bps / cls.n
                        cls.rate = cls.cap if cls.cap < fair else fair
                    else:
                        self._rates(now)
                    self._dirty = False
                best_t, best = now + (cls.heap[0][0] - cls.v) / cls.rate if cls.rate > 0.0 else math.inf, cls
            else:
                if self._dirty:
                    self._rates(now)
                    self._dirty = False
                best_t, best = math.inf, None
                for cls in active:
                    if cls.rate > 0.0:
                        t = now + (cls.heap[0][0] - cls.v) / cls.rate
                        if t < best_t:
                            best_t, best = t, cls
            if best_t <= now + EPS_S:
                self._finish(best, now)
                continue
            if not self.constant or len(active) > 1 or best.profile is not None:
                change = self._next_change(now)
                if change < best_t:
                    best_t = change
            if best_t < self._timer_at:
                self._arm(best_t, now)
            return

    def _finish(self, cls: _CapClass, now: float) -> None:
        """Book the first transfer of `cls` as finished now; wake its process after propagation."""
        tag, _, rec = heappop(cls.heap)
        cls.n -= 1
        self.n -= 1
        if self._all_capped and not self._dirty:
            self._slack_bps += cls.rate  # the others stay at their caps
        else:
            self._dirty = True
        cls.sum_f -= tag
        if cls.n == 0:
            cls.sum_f = 0.0
            self._active.remove(cls)
            self._order = None
            if cls.profile is not None:
                self._n_traced -= 1
            if cls.profile is None and cls is not self._uncapped and len(self._shared) > 64:
                del self._shared[cls.cap]
        self._book(rec, now)
        succeed_after(rec[0], self.propagation_s)

    def _arm(self, at_s: float, now: float) -> None:
        timer = Timeout(self.env, at_s - now)
        timer.callbacks.append(self._on_timer)
        self._timer, self._timer_at = timer, at_s

    def _on_timer(self, timer: simpy.Event) -> None:
        if timer is not self._timer:
            return  # superseded
        self._timer, self._timer_at = None, math.inf
        now = self.env.now
        if self._ind:  # no class state to plan (a timer left over from before): book who is done
            self._retire(now)
            return
        if self._spec is not None:
            if self._spec[2] > now + EPS_S:
                return  # the lone transfer's wake-up is still right
            self._settle(now)
        self.events += 1
        self._advance(now)
        if not self.constant or self._n_traced:
            self._dirty = True  # a trace stepped
        self._plan(now)

    def backlog_bytes(self) -> float:
        """Bytes the transfers in flight still have to send."""
        now = self.env.now
        if self._ind:
            return self._ind_left_bits(now) / 8.0
        if self._spec is not None and self._spec[2] <= now + EPS_S:
            self._settle(now)
        if now > self._last_s:
            self._advance(now)  # serve up to now at the rates in force (the plan stays valid)
        return max(0.0, sum(c.sum_f - c.n * c.v for c in self._active)) / 8.0

    def backlog_s(self) -> float:
        """Unfinished work in seconds at the nominal capacity (the trace's mean on a trace link)."""
        return self.backlog_bytes() * 8.0 / self.capacity_bps

    def active(self) -> int:
        """Transfers in flight now."""
        now = self.env.now
        if self._ind:
            self._retire(now)
            return len(self._ind)
        if self._spec is not None and self._spec[2] <= now + EPS_S:
            self._settle(now)
        return self.n

    def active_transfers(self) -> int:
        return self.active()

    def stats(self, horizon_s: float) -> dict:
        if self._ind:
            self._retire(horizon_s)
        if self._spec is not None and self._spec[2] <= horizon_s + EPS_S:
            self._settle(horizon_s)
        return super().stats(horizon_s)


def _cap_key(cls: _CapClass) -> float:
    return cls.cap


def build_link(env: simpy.Environment, cfg: LinkConfig, base_dir: Path | None = None,
               profile_cache: dict | None = None) -> Link:
    """The link of `cfg`, wrapped by its transport model (`none`: the link itself)."""
    link = (PsLink if cfg.discipline == "ps" else FifoLink)(env, cfg, base_dir, profile_cache)
    return transports.build(cfg.transport, link)
