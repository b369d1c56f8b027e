"""A user-space link between two network namespaces: propagation delay and a rate or a Mahimahi trace.

Why: this kernel has `tbf` and `htb` but no `sch_netem`, so tc cannot delay packets, and every earlier
testbed measurement ran at 0 ms propagation (TCP's ramp-up never showed). This does what Mahimahi's
`mm-delay` and `mm-link` do, on TUN devices: one TUN device in each namespace (`ip tuntap`, a
point-to-point address pair, no veth), and one process holding both that reads each IP packet the
kernel sends out of one, and writes it into the other when the link would have delivered it.

Per direction, FIFO, computed when the packet is read (no timer per packet in the queue):
- **Rate** (`rate_mbps`): the packet starts when the previous one finished (or now) and takes
  size x 8 / rate (as tbf, without a burst).
- **Trace** (`trace`, a Mahimahi file: one line per 1500-byte delivery opportunity at that ms,
  looping, time 0 = when the line starts): the same arithmetic as the simulator's `fifo` link on a
  `mahimahi` trace (`sim.bandwidth.MahimahiProfile`: byte-fluid; a packet that starts as the previous
  one ends uses the rest of its opportunity; opportunities with nothing queued are lost).
- **Queue**: drop-tail: a packet that would take the backlog past `queue_bytes` is dropped (default 1 MB; Mahimahi's default is unlimited).
- **Delay**: the packet is written out `delay_ms` after it finished.
- **Access hops** (`access_mbps`, optional): each flow (source address and port: one client's TCP
  connection) first crosses its own FIFO at that rate, and joins the shared queue above when it has,
  in the order the flows' packets get there: per-client access links in front of a shared cell
  uplink, as the simulator's `link_classes` caps in front of its shared link.

The process runs at real-time priority where allowed (SCHED_FIFO; root), as a busy link must not
wait for a CPU on a loaded host. Sizes are IP packets (the TUN devices carry no link header), so a
rate here is an IP-level rate: TCP goodput is rate x MSS / (MSS + 52) with timestamps.
Run as `python -m edgevlm.testbed.delayline SPEC.json`; it prints `ready <time.time() at trace time 0>` once
both devices are open; on SIGUSR1 it restarts the traces (and the rate clocks) at the wall-clock time written in
`SPEC.epoch`, so a run can start exactly at trace time 0 as the simulator's does; on SIGTERM it writes its counters to `SPEC.stats` (JSON) and exits.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import select
import signal
import struct
import sys
import time
from collections import deque
from heapq import heappop, heappush
from itertools import count
from dataclasses import dataclass, field
from pathlib import Path

from edgevlm.sim.bandwidth import ConstantProfile, parse_mahimahi

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
CLONE_NEWNET = 0x40000000
MAX_PACKET = 65536
DEFAULT_QUEUE_BYTES = 1 << 20


@dataclass
class Direction:
    """One direction's service: FIFO over a capacity profile, then a fixed delay."""

    profile: object  # sim.bandwidth ConstantProfile or MahimahiProfile
    delay_s: float
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    free_at_s: float = 0.0  # when the last admitted packet finishes
    end_bits: float = 0.0  # on a trace: the capacity position where it finished
    out: deque = field(default_factory=deque)  # (release_s, packet), release times non-decreasing
    packets: int = 0
    bytes: int = 0
    drops: int = 0
    #: per-flow access hops in front of the shared queue (bit/s), or None
    access_bps: float | None = None
    flow_free_s: dict = field(default_factory=dict)  # flow -> when its access hop frees
    access: list = field(default_factory=list)  # heap of (reaches the shared queue at, seq, packet)
    _seq: count = field(default_factory=count)

    def admit(self, packet: bytes, now_s: float) -> bool:
        """Take a packet read at `now_s`: onto its flow's access hop if there are access hops (it
        reaches the shared queue with `release_access`), else into the shared queue. False if dropped."""
        if self.access_bps is None:
            return self._shared(packet, now_s)
        flow = flow_of(packet)
        done = max(self.flow_free_s.get(flow, 0.0), now_s) + len(packet) * 8.0 / self.access_bps
        self.flow_free_s[flow] = done
        heappush(self.access, (done, next(self._seq), packet))
        return True

    def release_access(self, now_s: float) -> None:
        """Move the packets through their access hop by `now_s` into the shared queue, in the order
        (and at the times) they got through."""
        q = self.access
        while q and q[0][0] <= now_s:
            t, _, packet = heappop(q)
            self._shared(packet, t)

    def _shared(self, packet: bytes, now_s: float) -> bool:
        """Queue a packet reaching the shared queue at `now_s`; False if the queue is full (dropped)."""
        prof, bits = self.profile, len(packet) * 8.0
        if isinstance(prof, ConstantProfile):
            if (self.free_at_s - now_s) * prof.bps / 8 + len(packet) > self.queue_bytes:
                self.drops += 1
                return False
            finish = max(self.free_at_s, now_s) + bits / prof.bps
        else:
            if self.free_at_s > now_s:
                if (self.end_bits - prof.cum_bits(now_s)) / 8 + len(packet) > self.queue_bytes:
                    self.drops += 1
                    return False
                begin = self.end_bits
            else:
                begin = prof.cum_bits(now_s)
            self.end_bits = begin + bits
            finish = prof.time_at(self.end_bits)
        self.free_at_s = max(finish, now_s)
        self.out.append((self.free_at_s + self.delay_s, packet))
        self.packets += 1
        self.bytes += len(packet)
        return True


def flow_of(packet: bytes) -> tuple[bytes, bytes]:
    """An IPv4 packet's source address and (TCP/UDP) source port: one client connection."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        port = packet[ihl:ihl + 2] if packet[9] in (6, 17) else b""
        return packet[12:16], port
    return b"", b""


def build_direction(spec: dict) -> Direction:
    """{"delay_ms": d, "rate_mbps": r} or {"delay_ms": d, "trace": path}, optional "queue_bytes" and
    "access_mbps" (per-flow access hops)."""
    if spec.get("trace"):
        prof = parse_mahimahi(spec["trace"])
    else:
        prof = ConstantProfile(float(spec["rate_mbps"]) * 1e6)
    access = spec.get("access_mbps")
    return Direction(prof, float(spec.get("delay_ms", 0.0)) / 1e3, int(spec.get("queue_bytes", DEFAULT_QUEUE_BYTES)),
                     access_bps=None if access is None else float(access) * 1e6)


def _setns(netns: str) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({netns})")
    finally:
        os.close(fd)


def open_tun(netns: str, dev: str) -> int:
    """Attach to the TUN device `dev` of namespace `netns` (made by `ip tuntap add ... mode tun`)."""
    _setns(netns)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def _realtime() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(20))
        return True
    except (PermissionError, OSError, AttributeError):
        return False


def forward(fd_a: int, fd_b: int, up: Direction, down: Direction, stop, t0: float, epoch=lambda: None) -> None:
    """The loop: a->b is `up`, b->a is `down`, times from `t0` (time.monotonic; a trace starts
    there); returns when `stop()` is true. `epoch()`: a new time origin (time.monotonic) once asked
    for, or None; the line switches to it when it comes (packets already timed keep their times)."""
    route = {fd_a: (up, fd_b), fd_b: (down, fd_a)}
    dirs = ((up, fd_b), (down, fd_a))
    pending = None
    while not stop():
        pending = epoch() or pending
        if pending is not None and time.monotonic() >= pending:
            shift = pending - t0
            for d, _ in dirs:  # the same packets in flight, on the new clock
                d.out = deque((r - shift, p) for r, p in d.out)
                d.access = [(r - shift, k, p) for r, k, p in d.access]  # still sorted: a heap
                d.flow_free_s = {f: r - shift for f, r in d.flow_free_s.items()}
                d.free_at_s, d.end_bits = 0.0, 0.0
            t0, pending = pending, None
        heads = [d.out[0][0] for d, _ in dirs if d.out] + [d.access[0][0] for d, _ in dirs if d.access]
        now = time.monotonic() - t0
        if pending is not None:
            heads.append(pending - t0)
        timeout = max(0.0, min(heads) - now) if heads else 0.5
        try:
            ready, _, _ = select.select([fd_a, fd_b], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic() - t0
        for d, _ in dirs:  # what got through its access hop joins the shared queue before newer packets
            if d.access:
                d.release_access(now)
        for fd in ready:
            d, _ = route[fd]
            for _ in range(256):
                try:
                    pkt = os.read(fd, MAX_PACKET)
                except BlockingIOError:
                    break
                d.admit(pkt, now)
        now = time.monotonic() - t0
        for d, out_fd in dirs:
            q = d.out
            while q and q[0][0] <= now:
                try:
                    os.write(out_fd, q.popleft()[1])
                except OSError:  # the other side went away (teardown): drop
                    pass


def main(argv: list[str] | None = None) -> int:
    spec_path = Path((argv or sys.argv[1:])[0])
    spec = json.loads(spec_path.read_text())
    up, down = build_direction(spec["up"]), build_direction(spec["down"])
    fd_a = open_tun(spec["a_ns"], spec["a_dev"])
    fd_b = open_tun(spec["b_ns"], spec["b_dev"])
    rt = _realtime()
    stopping, asked = [], []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    signal.signal(signal.SIGUSR1, lambda *_: asked.append(1))

    def epoch():  # SIGUSR1: SPEC.epoch holds the wall-clock time the trace is to restart at
        if not asked:
            return None
        asked.clear()
        wall_at = float(Path(str(spec_path) + ".epoch").read_text())
        return wall_at - time.time() + time.monotonic()

    t0, wall = time.monotonic(), time.time()
    print(f"ready {wall!r}", flush=True)  # the wall-clock time a trace starts at
    try:
        forward(fd_a, fd_b, up, down, lambda: bool(stopping), t0, epoch)
    finally:
        stats = {"realtime": rt, **{name: {"packets": d.packets, "bytes": d.bytes, "drops": d.drops}
                                    for name, d in (("up", up), ("down", down))}}
        Path(str(spec_path) + ".stats").write_text(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
