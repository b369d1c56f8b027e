"""PsLink (sim/network.py, optimised) against the brute-force reference (sim/ps_reference.py).

Random workloads with simultaneous arrivals, equal sizes, equal caps, caps at and around the
capacity, zero-rate trace steps and per-client access traces must give the same finish times
(relative 1e-9; the link snaps a finish within EPS_S = 1 ns to the current event).
"""

from __future__ import annotations

import math

import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevlm.sim.bandwidth import (ConstantProfile, ShiftedProfile, mahimahi_lines, parse_csv, parse_mahimahi,
                                   write_mahimahi)
from edgevlm.sim.network import LinkConfig, PsLink
from edgevlm.sim.ps_reference import ps_finish_times, ps_finish_times_bursty, water_fill

CAPACITY_BPS = 8e6
CAPS = [None, 1e6, 2e6, 2e6, 4e6, 8e6, 16e6, "trace"]  # 2 Mbit/s twice: ties are likely


def fast_finish_times(cfg: LinkConfig, arrivals_s, sizes_bytes, access) -> list[float]:
    """Finish times on the optimised PsLink (no propagation, no overhead), in input order."""
    env = simpy.Environment()
    link = PsLink(env, cfg)
    done = [math.nan] * len(sizes_bytes)

    def one(i):
        yield env.timeout(arrivals_s[i])
        yield from link.transfer(sizes_bytes[i], access[i])
        done[i] = env.now

    for i in range(len(sizes_bytes)):
        env.process(one(i))
    env.run()
    return done


def assert_same(fast, ref):
    assert len(fast) == len(ref)
    for i, (f, r) in enumerate(zip(fast, ref)):
        assert f == pytest.approx(r, rel=1e-9, abs=2e-9), f"transfer {i}: fast {f!r} vs reference {r!r}"


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("ps_ref")
    csv = d / "steps.csv"
    csv.write_text("t_s,mbps\n0,6\n0.25,0\n0.5,15\n1.5,3\n")
    mm = write_mahimahi(d / "up.mahi", mahimahi_lines([8.0, 2.0, 12.0, 0.5, 6.0], seed=3))
    return {"csv": str(csv), "mahimahi": str(mm)}


transfer = st.tuples(
    st.one_of(st.integers(0, 40).map(lambda k: k * 0.05), st.floats(0, 2, allow_nan=False)),  # grid: ties
    st.one_of(st.sampled_from([1000, 25_000, 100_000]), st.integers(1, 300_000)),
    st.sampled_from(CAPS),
    st.floats(0, 2, allow_nan=False),  # where a trace-capped client starts in its trace
)


def test_water_fill_by_hand():
    assert water_fill(10.0, {"a": math.inf, "b": 2.0, "c": 3.0}) == {"b": 2.0, "c": 3.0, "a": 5.0}
    assert water_fill(6.0, {"a": 4.0, "b": 4.0, "c": 4.0}) == {"a": 2.0, "b": 2.0, "c": 2.0}
    assert water_fill(9.0, {"a": 1.0, "b": 8.0}) == {"a": 1.0, "b": 8.0}


def test_reference_by_hand():
    """10 Mbit/s, 2 and 4 Mbit at t=0 share 5/5 until 0.4 s; the 4 Mbit one then runs alone to 0.6 s.
    A 1 Mbit/s-capped client beside an uncapped one gets 1, the other 9."""
    c = ConstantProfile(10e6)
    assert ps_finish_times([0, 0], [2e6, 4e6], [None, None], c) == pytest.approx([0.4, 0.6])
    assert ps_finish_times([0, 0], [1e6, 9e6], [1e6, None], c) == pytest.approx([1.0, 1.0])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(transfer, min_size=1, max_size=40), st.sampled_from(["const", "csv"]))
def test_ps_link_matches_the_reference_with_caps_ties_and_traces(traces, transfers, capacity):
    csv = parse_csv(traces["csv"])
    cfg = (LinkConfig(capacity_mbps=CAPACITY_BPS / 1e6, overhead_bytes=0) if capacity == "const" else
           LinkConfig(bandwidth_trace={"kind": "csv", "path": traces["csv"]}, overhead_bytes=0))
    arrivals = [t[0] for t in transfers]
    sizes = [t[1] for t in transfers]
    access = [ShiftedProfile(csv, t[3]) if t[2] == "trace" else t[2] for t in transfers]
    ref = ps_finish_times(arrivals, [b * 8.0 for b in sizes], access,
                          ConstantProfile(CAPACITY_BPS) if capacity == "const" else csv)
    assert_same(fast_finish_times(cfg, arrivals, sizes, access), ref)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(transfer, min_size=1, max_size=40))
def test_ps_link_matches_the_reference_on_a_bursty_trace_without_caps(traces, transfers):
    """Mahimahi capacity, uncapped transfers: the link integrates the trace's delivery opportunities."""
    prof = parse_mahimahi(traces["mahimahi"])
    cfg = LinkConfig(bandwidth_trace={"kind": "mahimahi", "path": traces["mahimahi"]}, overhead_bytes=0)
    arrivals = [t[0] for t in transfers]
    sizes = [t[1] for t in transfers]
    ref = ps_finish_times_bursty(arrivals, [b * 8.0 for b in sizes], prof)
    assert_same(fast_finish_times(cfg, arrivals, sizes, [None] * len(sizes)), ref)
