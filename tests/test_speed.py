"""Server speed models (sim/speed.py): the factor's statistics, M/G/1 with a jittered pass time against
Pollaczek-Khinchine through the whole engine, drift slowing queues down, determinism and config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from edgevlm.sim import run
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.speed import LognormalSpeed, build_speed

from tests.test_queueing_theory import MEAN_SERVICE_S, assert_theory_in_ci, server_sojourns


def test_constant_and_zero_spread_speed_are_no_factor():
    assert build_speed(LognormalSpeed(), np.random.default_rng(0)) is None
    assert build_speed(LognormalSpeed.model_validate({"kind": "lognormal"}), np.random.default_rng(0)) is None


@pytest.mark.parametrize("jitter,drift", [(0.3, 0.0), (0.0, 0.25), (0.2, 0.15)])
def test_lognormal_factor_has_mean_one_and_the_configured_spread_and_correlation(jitter, drift):
    """Read every 0.1 s with tau 0.5 s: log factor ~ N(-s^2/2, s^2), s^2 = jitter^2 + drift^2, and the
    lag-1 correlation of the log factor is drift^2 exp(-0.1/0.5) / s^2 (jitter is independent per pass)."""
    dt, tau, n = 0.1, 0.5, 40_000
    f = build_speed(LognormalSpeed(jitter_sigma=jitter, drift_sigma=drift, drift_tau_s=tau), np.random.default_rng(3))
    x = np.log([f(k * dt) for k in range(n)])
    s2 = jitter ** 2 + drift ** 2
    # The drift makes samples dependent: judge the mean by batch means (batches of 100 tau).
    b = x[: n // 400 * 400].reshape(400, -1).mean(axis=1)
    half = stats.t.ppf(0.995, len(b) - 1) * b.std(ddof=1) / math.sqrt(len(b))
    assert abs(b.mean() + s2 / 2) < half
    assert x.var() == pytest.approx(s2, rel=0.06)
    r = np.corrcoef(x[:-1], x[1:])[0, 1]
    assert r == pytest.approx(drift ** 2 * math.exp(-dt / tau) / s2, abs=0.03)
    assert np.exp(x).mean() == pytest.approx(1.0, abs=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("rho,sigma,requests", [(0.7, 0.6, 120_000)])
def test_mg1_with_lognormal_jitter_matches_pollaczek_khinchine(scenario_dict, rho, sigma, requests):
    """A deterministic pass D times independent lognormal jitter (mean 1) is an M/G/1 queue with
    E[S] = D, E[S^2] = D^2 exp(sigma^2): W = lambda E[S^2] / (2 (1 - rho)) + E[S]."""
    lam = rho / MEAN_SERVICE_S
    es2 = MEAN_SERVICE_S ** 2 * math.exp(sigma ** 2)
    x = server_sojourns(scenario_dict, rho, {"kind": "deterministic", "service_s": MEAN_SERVICE_S}, requests, seed=7,
                        speed={"kind": "lognormal", "jitter_sigma": sigma})
    assert_theory_in_ci(x, lam * es2 / (2 * (1 - rho)) + MEAN_SERVICE_S)


@pytest.mark.slow
def test_drift_slows_a_loaded_queue_more_than_the_same_spread_of_jitter(scenario_dict):
    """Same mean and spread of pass times, but shared by consecutive passes (drift over 2 s, 20 passes):
    slow spells build queues, so the mean sojourn exceeds the independent-jitter one and the M/D/1 one."""
    rho, n = 0.85, 40_000
    det = server_sojourns(scenario_dict, rho, {"kind": "deterministic", "service_s": MEAN_SERVICE_S}, n, seed=2)
    jit = server_sojourns(scenario_dict, rho, {"kind": "deterministic", "service_s": MEAN_SERVICE_S}, n, seed=2,
                          speed={"kind": "lognormal", "jitter_sigma": 0.2})
    dri = server_sojourns(scenario_dict, rho, {"kind": "deterministic", "service_s": MEAN_SERVICE_S}, n, seed=2,
                          speed={"kind": "lognormal", "drift_sigma": 0.2, "drift_tau_s": 2.0})
    assert det.mean() < jit.mean() < 0.8 * dri.mean()


def test_speed_runs_are_deterministic_and_config_errors_name_the_field(scenario_dict):
    kw = dict(stop={"requests": 400}, server={"speed": {"kind": "lognormal", "jitter_sigma": 0.1, "drift_sigma": 0.1}})
    a, b = run(scenario_dict(**kw)).events, run(scenario_dict(**kw)).events
    assert a.equals(b)
    assert not a.equals(run(scenario_dict(stop={"requests": 400})).events)
    # another speed stream: the same arrivals and samples, other pass times
    kw["server"]["speed"]["stream"] = 1
    a, c = (e.sort_values("request_id", ignore_index=True) for e in (a, run(scenario_dict(**kw)).events))
    for col in ("arrival_s", "sample_id", "client_id"):
        assert c[col].equals(a[col])
    assert not np.allclose(c["s1_end_s"] - c["s1_start_s"], a["s1_end_s"] - a["s1_start_s"])
    for speed, field in (({"kind": "warp"}, "server.speed"), ({"kind": "lognormal", "drift_tau_s": 0}, "drift_tau_s"),
                         ({"kind": "lognormal", "jitter_sigma": -1}, "jitter_sigma")):
        with pytest.raises(ConfigError, match=field):
            run(scenario_dict(stop={"requests": 10}, server={"speed": speed}))
