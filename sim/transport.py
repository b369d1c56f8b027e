"""Transport models on a link (`network.uplink.transport`): what TCP adds to a fluid transfer.

- `none` (default): the link's discipline alone (processor sharing or FIFO of fluid bits): every
  earlier result is unchanged, byte for byte (the field is left out of stored scenarios at its default).
- `tcp`: slow start from idle before the fluid transfer. Why: a testbed message of 10-20 KB on a
  20-60 ms RTT spends most of its time waiting for ACKs, not sending, which fluid sharing cannot show.

The `tcp` model (the static-window latency model of Kurose & Ross, "Computer Networking", §3 delay
modelling, with an initial window of w0 segments instead of 1). A message of `nbytes` is
k = ceil(nbytes / mss) segments. Linux restarts from the initial window after an idle connection
(`tcp_slow_start_after_idle`, on by default), so every message on the testbed's persistent
connections starts at w0. Slow start sends windows of w0, 2 w0, 4 w0, ... segments; the message needs

    K = ceil(log2(k / w0 + 1))  windows  (the smallest K with w0 (2^K - 1) >= k).

With S = one segment's time at the transfer's rate r (S = (mss + header) 8 / r) and RTT the round
trip, the sender idles after window p (p = 1..K-1) until the first ACK of that window returns, for

    stall_p = max(0, S + RTT - w0 2^(p-1) S),

so the transfer takes  sum_p stall_p  longer than the fluid transfer of its bytes. Where the
bandwidth-delay product is large (every stall positive), the sum telescopes: a message alone on an
idle link is delivered (K - 1) (RTT + S) + (k - w0 (2^(K-1) - 1)) S + one-way delay after it was sent,
i.e. K - 1 round trips (each one segment's time longer, for the ACK of the window's first segment)
and then the last window's segments. The model
simplifications: the stalls come first (the message enters the link's sharing only after them, as
it sends nothing while it waits), the rate r is the message's fair share when it starts
(capacity / (transfers in flight + 1), at most its access cap), loss and the bottleneck queue are not
modelled, and each segment carries `header_bytes` of TCP/IP header (timestamps on: 52) on the wire.
RTT: `rtt_ms`, or twice the link's propagation delay when null.

Which messages start from idle: with `idle_restart_ms: null` every one (a new connection each, or
always idle past the restart time); otherwise the engine's flow (one per client: the edge keeps its
connections open) restarts only on its first message and after being idle longer than
`idle_restart_ms`; a message sent while the flow is busy rides its open window (no stalls).
"""

from __future__ import annotations

from typing import Any, Generator, Literal, Optional

from pydantic import Field, PositiveFloat, PositiveInt
from simpy.events import Timeout

from edgevlm.sim.interfaces import Link
from edgevlm.sim.registry import Registry, Strict

transports: Registry = Registry("network.transport")


class NoTransport(Strict):
    kind: Literal["none"] = "none"


class TcpTransport(Strict):
    kind: Literal["tcp"]
    init_cwnd_segments: PositiveInt = Field(10, description="initial congestion window (Linux: 10, RFC 6928)")
    mss_bytes: PositiveInt = Field(1448, description="payload per segment (1500-byte MTU, timestamps on)")
    header_bytes: int = Field(52, ge=0, description="TCP/IP header bytes per segment on the wire")
    rtt_ms: Optional[PositiveFloat] = Field(None, description="round-trip time; null: 2 x the link's propagation")
    idle_restart_ms: Optional[float] = Field(
        None, ge=0, description="null: every message starts from the initial window (new connections); else a "
        "flow (a client's connection) restarts from it only on its first message or after this long idle: "
        "Linux cubic/reno restart after an idle RTO (about RTT + 200 ms); bbr keeps its window (a large value)")


def slow_start_windows(segments: int, init_cwnd: int) -> int:
    """K: windows of slow start (w0, 2 w0, ...) a message of `segments` needs: ceil(log2(k / w0 + 1))."""
    if segments <= 0:
        return 0
    k = 1
    while init_cwnd * ((1 << k) - 1) < segments:  # exact integers, no float log
        k += 1
    return k


def stall_s(segments: int, init_cwnd: int, segment_s: float, rtt_s: float) -> float:
    """Seconds the sender idles waiting for ACKs in slow start (module doc): sum over p = 1..K-1 of
    max(0, S + RTT - w0 2^(p-1) S)."""
    total = 0.0
    for p in range(1, slow_start_windows(segments, init_cwnd)):
        idle = segment_s + rtt_s - init_cwnd * (1 << (p - 1)) * segment_s
        if idle > 0:
            total += idle
    return total


class TcpLink(Link):
    """A link whose transfers first stall as TCP slow start from idle would (module doc), then run on
    the wrapped link's fluid discipline with their segment headers."""

    def __init__(self, inner, cfg: TcpTransport):
        self.inner, self.cfg = inner, cfg
        self.env = inner.env
        self.overhead_bytes = inner.overhead_bytes
        self.propagation_s = inner.propagation_s
        self.capacity_bps = inner.capacity_bps
        self.profile = inner.profile
        self.discipline = inner.discipline
        self.rtt_s = cfg.rtt_ms / 1e3 if cfg.rtt_ms is not None else 2 * inner.propagation_s
        self.stalls = 0
        self.stall_total_s = 0.0
        self.idle_restart_s = None if cfg.idle_restart_ms is None else cfg.idle_restart_ms / 1e3
        self._last_s: dict = {}  # flow -> when its last message was delivered (or is due)
        self._busy: dict = {}  # flow -> messages in flight

    def _cold(self, flow) -> bool:
        """Does this message start from the initial window?"""
        if self.idle_restart_s is None or flow is None:
            return True
        if self._busy.get(flow):
            return False  # the connection is sending: its window is open
        last = self._last_s.get(flow)
        return last is None or self.env.now - last > self.idle_restart_s

    def transfer(self, nbytes: int, access=None, flow=None) -> Generator:
        cfg = self.cfg
        segments = -(-nbytes // cfg.mss_bytes)
        wire = nbytes + segments * cfg.header_bytes
        if not self._cold(flow):
            self._busy[flow] = self._busy.get(flow, 0) + 1
            yield from self.inner.transfer(wire, access, flow)
            self._busy[flow] -= 1
            self._last_s[flow] = self.env.now
            return
        self._busy[flow] = self._busy.get(flow, 0) + 1
        share = self.capacity_bps / (1 + self.inner.active_transfers())
        if isinstance(access, (int, float)) and access < share:
            share = access
        elif access is not None and not isinstance(access, (int, float)):
            share = min(share, access.rate_at(self.env.now))
        idle = stall_s(segments, cfg.init_cwnd_segments, (cfg.mss_bytes + cfg.header_bytes) * 8.0 / share, self.rtt_s)
        if idle > 0:
            self.stalls += 1
            self.stall_total_s += idle
            yield Timeout(self.env, idle)
        yield from self.inner.transfer(wire, access, flow)
        self._busy[flow] -= 1
        self._last_s[flow] = self.env.now

    def backlog_bytes(self) -> float:
        return self.inner.backlog_bytes()

    def backlog_s(self) -> float:
        return self.inner.backlog_s()

    def busy_fraction_until(self, now_s: float):
        return self.inner.busy_fraction_until(now_s)

    def active_transfers(self) -> int:
        return self.inner.active_transfers()

    def stats(self, horizon_s: float) -> dict:
        s = self.inner.stats(horizon_s)
        s["transport"] = {"kind": "tcp", "rtt_ms": self.rtt_s * 1e3, "stalled_transfers": self.stalls,
                          "stall_s_total": self.stall_total_s}
        return s


@transports.register(NoTransport)
def _none(cfg: NoTransport, link) -> Any:
    return link


@transports.register(TcpTransport)
def _tcp(cfg: TcpTransport, link) -> Any:
    return TcpLink(link, cfg)

