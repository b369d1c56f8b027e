"""The user-space delay line (testbed/delayline.py): its per-packet arithmetic (no root needed), and on
real namespaces a ping and a bulk TCP transfer seeing the configured RTT and rate, and TCP over a
short synthetic Mahimahi trace delivering what the trace allows (the GPL cellular traces are not used)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgevlm.sim.bandwidth import ConstantProfile, parse_mahimahi
from edgevlm.testbed.delayline import Direction

MSS_SHARE = 1448 / 1500  # TCP payload per full IP packet (20 IP + 20 TCP + 12 timestamp option bytes)


def test_rate_and_delay_arithmetic():
    d = Direction(ConstantProfile(8e6), delay_s=0.02, queue_bytes=3000)
    assert d.admit(b"x" * 1500, 0.0) and d.admit(b"x" * 1500, 0.0)  # 1.5 ms each, back to back
    assert [t for t, _ in d.out] == pytest.approx([0.0215, 0.023])
    assert not d.admit(b"x" * 1500, 0.0) and d.drops == 1  # 3000 B queued: full
    assert d.admit(b"x" * 100, 0.01)  # idle again: starts at once
    assert d.out[-1][0] == pytest.approx(0.01 + 100 * 8 / 8e6 + 0.02)


def test_trace_arithmetic_is_the_simulators_fifo_on_mahimahi(tmp_path):
    """Opportunities at 1, 1, 5, 9 ms (period 9): byte-fluid, leftovers of an opportunity carried to the
    next packet, opportunities with nothing queued lost."""
    (tmp_path / "t.up").write_text("1\n1\n5\n9\n")
    d = Direction(parse_mahimahi(tmp_path / "t.up"), delay_s=0.0)
    d.admit(b"x" * 1000, 0.0)  # first opportunity at 1 ms
    d.admit(b"x" * 1000, 0.0)  # 500 B left of it, then the second one at 1 ms
    d.admit(b"x" * 1500, 0.0)  # 1000 B left at 1 ms, then 5 ms
    d.admit(b"x" * 100, 0.007)  # idle at 7 ms (the rest of 5 ms's opportunity is lost): 9 ms
    assert [round(t * 1e3, 6) for t, _ in d.out] == [1, 1, 5, 9]


def _reason():
    from edgevlm.testbed.netns import unavailable_reason
    import os

    return unavailable_reason() or (None if os.path.exists("/dev/net/tun") else "no /dev/net/tun")


PING = r'''
import socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(3)
out = []
for i in range(int(sys.argv[2])):
    h = struct.pack("!BBHHH", 8, 0, 0, 77, i) + b"p" * 56
    h = h[:2] + struct.pack("!H", csum(h)) + h[4:]
    t = time.perf_counter(); s.sendto(h, (sys.argv[1], 0))
    while s.recv(2000)[20] != 0:
        pass
    out.append(time.perf_counter() - t); time.sleep(0.03)
print(out)
'''
SINK = r'''
import json, socket, sys, time
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind((sys.argv[1], 9000)); ls.listen(1)
print("listening", flush=True)
c, _ = ls.accept(); got = 0; marks = []
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    got += len(b); marks.append((time.time(), got))
print(json.dumps(marks))
'''
SEND = r'''
import socket, sys, time
s = socket.create_connection((sys.argv[1], 9000)); t = time.time(); s.sendall(b"z" * int(sys.argv[2])); s.close(); print(t)
'''


def bulk(ns, nbytes: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(start time, receive times, bytes received by then) of one TCP transfer client -> server."""
    sink = subprocess.Popen(ns.exec_prefix(ns.server) + [sys.executable, "-c", SINK, ns.server_ip],
                            stdout=subprocess.PIPE, text=True)
    assert sink.stdout.readline().strip() == "listening"
    sent = subprocess.run(ns.exec_prefix(ns.client) + [sys.executable, "-c", SEND, ns.server_ip, str(nbytes)],
                          capture_output=True, text=True, timeout=120)
    marks = np.array(json.loads(sink.communicate(timeout=60)[0]))
    return float(sent.stdout), marks[:, 0], marks[:, 1]


def _ip(src_last: int, sport: int, size: int) -> bytes:
    """A minimal IPv4/TCP packet of `size` bytes from 10.0.0.<src_last>:<sport>."""
    head = bytes([0x45, 0]) + size.to_bytes(2, "big") + bytes(5) + bytes([6]) + bytes(2) \
        + bytes([10, 0, 0, src_last]) + bytes([10, 0, 0, 1])
    return head + sport.to_bytes(2, "big") + bytes(size - 22)


def test_access_hops_pace_each_flow_then_share_the_link():
    """Access hops of 2 Mbit/s (6 ms per 1500 B) in front of an 8 Mbit/s link (1.5 ms): one flow's
    packets leave 6 ms apart; two flows' packets interleave at the shared queue in the order they got
    through their hops; a 1 Mbit/s link below the hops queues them FIFO there."""
    from edgevlm.testbed.delayline import flow_of

    a, b = _ip(2, 40000, 1500), _ip(2, 40002, 1500)
    assert flow_of(a) != flow_of(b) and flow_of(a) == flow_of(_ip(2, 40000, 60))
    d = Direction(ConstantProfile(8e6), delay_s=0.01, access_bps=2e6)
    for p in (a, a, b):
        assert d.admit(p, 0.0)
    assert not d.out and len(d.access) == 3  # all still in their hops
    d.release_access(0.0059)
    assert not d.out
    d.release_access(0.02)
    # flow a: through its hop at 6 and 12 ms; flow b at 6 ms (after a's first, in arrival order)
    assert [round(t * 1e3, 6) for t, _ in d.out] == [6 + 1.5 + 10, 6 + 3 + 10, 12 + 1.5 + 10]
    slow = Direction(ConstantProfile(1e6), delay_s=0.0, access_bps=2e6)
    for p in (a, b):
        slow.admit(p, 0.0)
    slow.release_access(1.0)
    assert [round(t * 1e3, 6) for t, _ in slow.out] == [6 + 12, 6 + 24]  # FIFO at the 1 Mbit/s link


@pytest.mark.slow
def test_a_bulk_transfer_runs_at_its_access_hops_rate():
    """A 2 Mbit/s access hop in front of an 8 Mbit/s link, 10 ms each way: bulk TCP's goodput after the
    first 25 % of 600 kB is the hop's rate within 5 %."""
    if reason := _reason():
        pytest.skip(reason)
    from edgevlm.testbed.netns import Netns, Shape

    with Netns(Shape(8.0, 10.0, access_mbps=2.0), Shape(8.0, 10.0)) as ns:
        t0, t, got = bulk(ns, 600_000)
    k = np.searchsorted(got, 0.25 * got[-1])
    goodput = (got[-1] - got[k]) * 8 / (t[-1] - t[k])
    assert goodput == pytest.approx(2e6 * MSS_SHARE, rel=0.05)


@pytest.mark.slow
def test_ping_and_bulk_tcp_see_the_configured_rtt_and_rate():
    """40 ms RTT (20 ms each way), 8 Mbit/s: ping RTT and TCP goodput (after the first 25 % of the bytes,
    past slow start) within 5 %."""
    if reason := _reason():
        pytest.skip(reason)
    from edgevlm.testbed.netns import Netns, Shape

    with Netns(Shape(8.0, 20.0), Shape(8.0, 20.0)) as ns:
        assert ns.delay_line
        p = subprocess.run(ns.exec_prefix(ns.client) + [sys.executable, "-c", PING, ns.server_ip, "10"],
                           capture_output=True, text=True, timeout=60)
        rtt = np.array(eval(p.stdout))  # noqa: S307 (our own script's list of floats)
        # each 84-byte echo also takes 84 us per direction to serialise at 8 Mbit/s
        assert np.median(rtt) == pytest.approx(0.040 + 2 * 84 * 8 / 8e6, rel=0.05)
        t0, t, got = bulk(ns, 2_000_000)
        k = np.searchsorted(got, 0.25 * got[-1])
        goodput = (got[-1] - got[k]) * 8 / (t[-1] - t[k])
        assert goodput == pytest.approx(8e6 * MSS_SHARE, rel=0.05)
        # the whole transfer: rate time plus about one RTT of handshake and a few of slow start
        assert t[-1] - t0 > 2_000_000 * 8 / (8e6 * MSS_SHARE) + 0.04
    stats = ns.delay_line_stats()
    assert stats["up"]["drops"] == 0 and stats["up"]["bytes"] > 2_000_000


@pytest.mark.slow
def test_tcp_over_a_synthetic_mahimahi_trace(tmp_path):
    """A 200 ms trace: 3 opportunities per ms for 100 ms (36 Mbit/s), then 1 per 2 ms (6 Mbit/s), looping;
    10 ms each way. Bulk TCP's bytes never run ahead of the trace's opportunities (+ one-way delay), and
    its goodput over whole trace periods after the first 25 % of a 4 MB transfer (past slow start) is the
    trace's mean rate (21 Mbit/s) within 5 %."""
    if reason := _reason():
        pytest.skip(reason)
    from edgevlm.testbed.netns import Netns, Shape

    lines = [t for ms in range(1, 101) for t in (ms, ms, ms)] + list(range(102, 201, 2))
    trace = tmp_path / "synthetic.up"
    trace.write_text("".join(f"{t}\n" for t in lines))
    prof = parse_mahimahi(trace)
    assert prof.mean_bps == pytest.approx(21e6)
    with Netns(Shape(21.0, 10.0, trace=str(trace)), Shape(50.0, 10.0)) as ns:
        t0, t, got = bulk(ns, 4_000_000)
        line_t0 = ns.line_t0
    rel = t - line_t0 - 0.010  # trace time at which the bytes left the link
    first = np.ceil(rel[np.searchsorted(got, 0.25 * got[-1])] / 0.2)
    last = np.floor(rel[-1] / 0.2)
    assert last - first >= 4
    a, b = np.interp([first * 0.2, last * 0.2], rel, got)
    goodput = (b - a) * 8 / ((last - first) * 0.2)
    assert goodput == pytest.approx(prof.mean_bps * MSS_SHARE, rel=0.05)
    # bytes by time x never exceed the payload of the opportunities up to x - 10 ms (1 ms of slack for stamps)
    cap = np.array([prof.cum_bits(x - line_t0 - 0.010 + 0.001) / 8 * MSS_SHARE for x in t])
    assert np.all(got <= cap + 1500)
