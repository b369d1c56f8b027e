"""Issue 22 item 4: an overloaded run is flagged `stable: false` with its evidence; stable runs are not."""

from __future__ import annotations

import numpy as np
import pytest

from edgevlm.sim import run
from edgevlm.sim.cli import format_summary
from edgevlm.sim.stability import UNSTABLE_NOTE, assess

MEAN_SERVICE_S = 0.1


def mm1(scenario_dict, rho: float, requests: int, seed: int, warmup_s: float = 0.0) -> dict:
    lam = rho / MEAN_SERVICE_S
    sc = scenario_dict(
        seed=seed, stop={"requests": requests, "warmup_s": warmup_s},
        clients={"count": 50, "arrival": {"kind": "poisson", "rate_per_s": lam / 50},
                 "edge": {"device": "ideal"}, "link_classes": [{"share": 1, "uplink_mbps": 1e9}]},
        network={"uplink": {"capacity_mbps": 1e9}, "downlink": {"capacity_mbps": 1e9}},
        server={"scheduler": {"kind": "fifo"}, "latency": {"kind": "exponential", "mean_s": MEAN_SERVICE_S}},
        policy={"kind": "global_only"})
    return run(sc).summary


def test_assess_on_constructed_paths():
    rng = np.random.default_rng(0)
    arrival = np.sort(rng.uniform(0, 1000, 5000))
    stable = assess(arrival, arrival + rng.exponential(0.5, arrival.size), (0.0, 1000.0))
    assert stable["stable"] is True
    # a server that finishes one request per 0.25 s behind 5 arrivals/s: the backlog grows linearly
    done = np.arange(1, arrival.size + 1) * 0.25
    grow = assess(arrival, done, (0.0, 1000.0))
    assert grow["stable"] is False
    assert grow["offered_per_s"] == pytest.approx(5.0, rel=0.01) and grow["served_per_s"] == pytest.approx(4.0, rel=0.01)
    assert grow["deficit_per_s_ci95"][0] > 0.5 and grow["backlog"]["end"] > 900
    assert assess(arrival[:20], arrival[:20] + 1, (0.0, 4.0))["stable"] is None  # too few to judge


@pytest.mark.parametrize("seed", range(5))
def test_long_stable_runs_at_rho_0_9_are_not_flagged(scenario_dict, seed):
    s = mm1(scenario_dict, 0.9, 40_000, seed, warmup_s=50.0)
    assert s["stable"] is True, s["stability"]
    assert s["latency_s"]["mean"]["half_width"] is not None


@pytest.mark.parametrize("rho", [1.05, 1.3])
def test_overloaded_runs_are_flagged_with_evidence(scenario_dict, rho):
    s = mm1(scenario_dict, rho, 40_000, 1)
    st = s["stability"]
    assert s["stable"] is False and st["stable"] is False
    assert st["served_per_s"] < 0.98 * st["offered_per_s"]
    assert st["served_per_s"] == pytest.approx(1 / MEAN_SERVICE_S, rel=0.05)  # the server's capacity
    assert st["backlog"]["mean_last_third"] > st["backlog"]["mean_first_third"]
    assert st["deficit_per_s_ci95"][0] > 0
    # no steady-state CI is reported for a run without a steady state
    assert all(v["half_width"] is None and v["ci95"] == [None, None] for v in s["latency_s"].values())
    text = format_summary(s)
    assert UNSTABLE_NOTE in text and "no steady-state CIs" in text
    assert "[" not in next(line for line in text.splitlines() if line.startswith("latency mean"))


def test_quickstart_is_stable(tmp_path):
    from tests.test_cli import ROOT

    s = run(ROOT / "scenarios" / "quickstart.yaml").summary
    assert s["stable"] is True, s["stability"]
    assert UNSTABLE_NOTE not in format_summary(s)
