"""Issue 26 item 2: per-client state as compact arrays, built vectorised, with the same draws as before."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgevlm.sim.access import AccessRates, assign_classes
from edgevlm.sim.bandwidth import ConstantProfile, ShiftedProfile
from edgevlm.sim.engine import Simulation
from edgevlm.sim.scenario import parse_scenario
from edgevlm.sim.workload import Workload


def _listwise(shares, n, order, rates):
    """The per-client list the engine built before (one Python float per client)."""
    counts = [int(s * n) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda k: (-(shares[k] * n - counts[k]), k))
    for k in by_remainder[: n - sum(counts)]:
        counts[k] += 1
    expanded = [r for r, c in zip(rates, counts) for _ in range(c)]
    return [expanded[i] for i in order]


@pytest.mark.parametrize("shares,n", [([0.7, 0.3], 100), ([1 / 3] * 3, 1001), ([0.5, 0.25, 0.25], 7), ([1.0], 1)])
def test_assignment_matches_the_list_construction(shares, n):
    order = np.random.default_rng(n).permutation(n)
    rates = [float(10 ** (k + 6)) for k in range(len(shares))]
    access = AccessRates(rates, assign_classes(shares, n, order))
    assert list(access) == _listwise(shares, n, order, rates)
    assert all(a.__class__ is float for a in access)  # PsLink's fast path tests for exactly float


def test_trace_class_gets_each_client_its_own_offset(monkeypatch):
    base = type("Loop", (), {})()  # a stand-in trace profile: cum_bits/time_at over a 10 s period
    base.mean_bps = base.peak_bps = 1e6
    base.cum_bits = lambda t: t * 1e6
    monkeypatch.setattr("edgevlm.sim.access.period_s", lambda p: 10.0)
    acc = AccessRates([2e6, base], np.array([1, 0, 1]), np.array([0.1, 0.5, 0.9]))
    a0, a2 = acc[0], acc[2]
    assert acc[1] == 2e6 and isinstance(a0, ShiftedProfile) and a0.offset_s == pytest.approx(1.0)
    assert a2.offset_s == pytest.approx(9.0) and acc[0] is a0  # built once, then reused


def test_a_million_clients_cost_bytes_not_objects(synthetic_trace):
    from conftest import base_scenario

    n = 1_000_000
    sc = parse_scenario(base_scenario(synthetic_trace, clients={
        "count": n, "arrival": {"kind": "poisson", "rate_per_s": 1e-5},
        "link_classes": [{"share": 0.7, "uplink_mbps": 10}, {"share": 0.3, "uplink_mbps": 2}]}))
    sim = Simulation(sc, Workload.load(synthetic_trace), lambda req: None)
    assert len(sim.access_bps) == n and sim.access_bps._class.itemsize == 1
    assert sys.getsizeof(sim.access_bps._class) < 1.1 * n  # one byte per client
    assert sim.edge_devices._free.itemsize == 8 and len(sim.edge_devices._free) == n
    shares = np.bincount(np.frombuffer(sim.access_bps._class, np.uint8), minlength=2)
    assert shares.tolist() == [700_000, 300_000]
    assert {sim.access_bps[c] for c in range(0, n, 9973)} == {1e7, 2e6}


def test_constant_trace_class_is_a_float():
    acc = AccessRates([ConstantProfile(3e6).bps], np.zeros(4, np.int64))
    assert list(acc) == [3e6] * 4 and acc[1:3] == [3e6, 3e6]
