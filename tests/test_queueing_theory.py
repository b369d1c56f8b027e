"""The GPU server through the whole engine against closed forms (DESIGN.md §6).

The network and edge are made negligible, so Poisson arrivals reach the server unchanged, and
the server sojourn is s1_end_s - up1_end_s. Each check runs long enough that the batch-means 95% CI
is under 5% of the mean, then asserts that the theory value lies inside it.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgevlm.sim import run
from edgevlm.sim.summary import batch_means_ci

MEAN_SERVICE_S = 0.1


def server_sojourns(scenario_dict, rho: float, latency: dict, requests: int, seed: int,
                    speed: dict | None = None) -> np.ndarray:
    lam = rho / MEAN_SERVICE_S
    sc = scenario_dict(
        seed=seed,
        stop={"requests": requests},
        clients={"count": 50, "arrival": {"kind": "poisson", "rate_per_s": lam / 50},
                 "edge": {"device": "ideal"}, "link_classes": [{"share": 1, "uplink_mbps": 1e9}]},
        network={"uplink": {"capacity_mbps": 1e9}, "downlink": {"capacity_mbps": 1e9}},
        server={"scheduler": {"kind": "fifo"}, "latency": latency, **({"speed": speed} if speed else {})},
        policy={"kind": "global_only"},
    )
    result = run(sc)
    assert result.summary["stable"] is True, result.summary["stability"]  # issue 22: stable queues are not flagged
    ev = result.events.sort_values("request_id")
    sojourn = (ev["s1_end_s"] - ev["up1_end_s"]).to_numpy()
    return sojourn[requests // 20:]  # drop the initial transient


def assert_theory_in_ci(x: np.ndarray, theory: float) -> None:
    ci = batch_means_ci(x)
    lo, hi = ci["ci95"]
    assert ci["half_width"] < 0.05 * ci["value"], f"CI too wide to judge: {ci}"
    assert lo <= theory <= hi, f"theory {theory:.4f} outside 95% CI [{lo:.4f}, {hi:.4f}]"


@pytest.mark.slow
@pytest.mark.parametrize("rho,requests", [(0.5, 60_000), (0.8, 200_000)])
def test_mm1_fifo_mean_sojourn(scenario_dict, rho, requests):
    """M/M/1: W = 1/(mu - lambda)."""
    mu = 1 / MEAN_SERVICE_S
    x = server_sojourns(scenario_dict, rho, {"kind": "exponential", "mean_s": MEAN_SERVICE_S}, requests, seed=11)
    assert_theory_in_ci(x, 1 / (mu - rho * mu))


@pytest.mark.slow
@pytest.mark.parametrize("rho,requests", [(0.5, 40_000), (0.8, 120_000)])
def test_md1_mean_sojourn(scenario_dict, rho, requests):
    """M/D/1 (Pollaczek-Khinchine): W = rho/(2 mu (1-rho)) + 1/mu."""
    mu = 1 / MEAN_SERVICE_S
    x = server_sojourns(scenario_dict, rho, {"kind": "deterministic", "service_s": MEAN_SERVICE_S}, requests, seed=5)
    assert_theory_in_ci(x, rho / (2 * mu * (1 - rho)) + 1 / mu)


def test_server_utilisation_matches_load(scenario_dict):
    """Utilisation = lambda * E[S] for a stable queue."""
    lam = 0.6 / MEAN_SERVICE_S
    sc = scenario_dict(
        stop={"requests": 30_000},
        clients={"count": 10, "arrival": {"kind": "poisson", "rate_per_s": lam / 10}, "edge": {"device": "ideal"}},
        server={"latency": {"kind": "deterministic", "service_s": MEAN_SERVICE_S}},
        policy={"kind": "global_only"},
    )
    util = run(sc).summary["utilisation"]["gpu"]
    assert util == pytest.approx(0.6, rel=0.03)
