"""The link transport model (sim/transport.py): slow start's closed form, the stall arithmetic on a
real link, and that the default (`none`) leaves every result byte-identical."""

from __future__ import annotations

import math

import pytest
import simpy

from edgevlm.sim.network import LinkConfig, build_link
from edgevlm.sim.transport import slow_start_windows, stall_s


def test_windows_are_the_closed_form():
    for w0 in (1, 2, 4, 10):
        for k in range(1, 3000):
            assert slow_start_windows(k, w0) == math.ceil(math.log2(k / w0 + 1) - 1e-12), (k, w0)
    assert [slow_start_windows(k, 10) for k in (1, 10, 11, 30, 31, 70, 71)] == [1, 1, 2, 2, 3, 3, 4]


def _alone(cfg: LinkConfig, nbytes: int) -> float:
    env = simpy.Environment()
    link = build_link(env, cfg)
    out = []

    def go():
        yield from link.transfer(nbytes)
        out.append(env.now)

    env.process(go())
    env.run()
    return out[0]


@pytest.mark.parametrize("segments", [1, 10, 11, 30, 31, 70, 71, 200])
def test_one_transfer_from_idle_takes_its_slow_start_rounds(segments):
    """Large bandwidth-delay product (1 Gbit/s, 40 ms RTT): k segments from idle arrive
    (K - 1) (RTT + S) + (k - w0 (2^(K-1) - 1)) S + one-way delay after they were sent,
    K = ceil(log2(k/10 + 1)), S = one 1500-byte segment's time."""
    cfg = LinkConfig(capacity_mbps=1000, propagation_ms=20, overhead_bytes=0, transport={"kind": "tcp"})
    nbytes = 1448 * segments
    k_windows = math.ceil(math.log2(segments / 10 + 1))
    s = 1500 * 8 / 1e9
    expect = (k_windows - 1) * (0.040 + s) + (segments - 10 * (2 ** (k_windows - 1) - 1)) * s + 0.020
    assert _alone(cfg, nbytes) == pytest.approx(expect, rel=1e-9)
    # the stall sum holds per window too: S + RTT - w0 2^(p-1) S, summed
    assert stall_s(segments, 10, s, 0.04) == pytest.approx(sum(s + 0.04 - 10 * 2 ** (p - 1) * s
                                                               for p in range(1, k_windows)))


def test_no_stall_where_a_window_outlasts_the_rtt_and_rtt_override():
    """At 1 Mbit/s a 10-segment window takes 120 ms > 40 ms RTT: the ACK clock never idles, TCP = fluid
    (+ headers). rtt_ms overrides 2 x propagation."""
    tcp = LinkConfig(capacity_mbps=1, propagation_ms=20, overhead_bytes=0, transport={"kind": "tcp"})
    fluid = LinkConfig(capacity_mbps=1, propagation_ms=20, overhead_bytes=0)
    n = 1448 * 50
    assert _alone(tcp, n) == pytest.approx(_alone(fluid, n + 52 * 50), rel=1e-12)
    fast = dict(capacity_mbps=1000, propagation_ms=5, overhead_bytes=0)
    a = _alone(LinkConfig(**fast, transport={"kind": "tcp", "rtt_ms": 60}), 1448 * 11)
    s = 1500 * 8 / 1e9
    assert a == pytest.approx(0.060 + s + s + 0.005)  # one round trip, then the 11th segment


def test_shared_link_uses_the_fair_share_at_start():
    """Two transfers on a 10 Mbit/s, 100 ms RTT link: the second one starts while the first is on the
    link (its stalls are over at 0.166 s, its 48 ms of bytes not), so its window time is computed at
    half the capacity, and it stalls less than the first did."""
    env = simpy.Environment()
    link = build_link(env, LinkConfig(capacity_mbps=10, propagation_ms=50, overhead_bytes=0,
                                      transport={"kind": "tcp"}))
    done = {}

    def go(name, at, nbytes):
        yield env.timeout(at)
        yield from link.transfer(nbytes)
        done[name] = env.now

    env.process(go("a", 0.0, 1448 * 40))
    env.process(go("b", 0.18, 1448 * 40))
    env.run()
    s = 1500 * 8 / 10e6
    first = stall_s(40, 10, s, 0.1)
    assert stall_s(40, 10, 2 * s, 0.1) < first
    assert link.stats(done["b"])["transport"]["stall_s_total"] == pytest.approx(first + stall_s(40, 10, 2 * s, 0.1))


def test_default_transport_changes_nothing(tmp_path, synthetic_trace):
    """`transport: {kind: none}` written out is the default: same event bytes, and the stored scenario
    leaves the field out."""
    from edgevlm.sim.runner import run
    from edgevlm.sim.scenario import parse_scenario

    base = {"name": "t", "seed": 3, "trace": str(synthetic_trace), "stop": {"requests": 300},
            "clients": {"count": 20, "arrival": {"kind": "poisson", "rate_per_s": 0.2}},
            "network": {"uplink": {"capacity_mbps": 5, "propagation_ms": 20}},
            "policy": {"kind": "entropy_threshold", "threshold": 0.6}}
    explicit = {**base, "network": {"uplink": {"capacity_mbps": 5, "propagation_ms": 20, "transport": {"kind": "none"}}}}
    tcp = {**base, "network": {"uplink": {"capacity_mbps": 5, "propagation_ms": 20, "transport": {"kind": "tcp"}}}}
    a, b, c = (parse_scenario(d, source="test") for d in (base, explicit, tcp))
    assert "transport" not in a.to_yaml() and a.to_yaml() == b.to_yaml()
    run(a, tmp_path / "a")
    run(b, tmp_path / "b")
    run(c, tmp_path / "c")
    assert (tmp_path / "a" / "events.parquet").read_bytes() == (tmp_path / "b" / "events.parquet").read_bytes()
    import pyarrow.parquet as pq

    lat = [pq.read_table(tmp_path / x / "events.parquet").column("latency_s").to_pandas().mean() for x in "ac"]
    assert lat[1] > lat[0]  # synthetic images of 10-30 KB stall in slow start at 40 ms RTT


def test_flows_restart_only_when_idle():
    """idle_restart_ms: a client's first message stalls, the next one 100 ms later rides the open window,
    one after more than the restart time stalls again; a message while the flow is busy never stalls."""
    env = simpy.Environment()
    link = build_link(env, LinkConfig(capacity_mbps=1000, propagation_ms=20, overhead_bytes=0,
                                      transport={"kind": "tcp", "idle_restart_ms": 300}))
    took = {}

    def go(name, at, flow):
        yield env.timeout(at)
        t = env.now
        yield from link.transfer(1448 * 30, None, flow)
        took[name] = env.now - t

    for name, at, flow in (("first", 0.0, 1), ("warm", 0.2, 1), ("other", 0.5, 2), ("cold", 1.0, 1),
                           ("busy", 1.01, 1)):
        env.process(go(name, at, flow))
    env.run()
    fluid = 1500 * 30 * 8 / 1e9 + 0.020
    assert took["warm"] == pytest.approx(fluid) and took["busy"] == pytest.approx(fluid, rel=0.01)
    assert took["first"] > fluid + 0.035 and took["cold"] == pytest.approx(took["first"])
    assert took["other"] == pytest.approx(took["first"])  # another client's first message
