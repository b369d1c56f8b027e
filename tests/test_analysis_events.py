"""Event-log analysis: phases add up to latency, series match the events they come from."""

from __future__ import annotations

import numpy as np
import pytest

from edgevlm.analysis.events import (PHASES, link_utilisation_series, phase_breakdown, queue_length_series, read_events,
                             throughput_series)
from edgevlm.sim import run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, synthetic_trace):
    from conftest import base_scenario

    d = tmp_path_factory.mktemp("run")
    run(base_scenario(synthetic_trace, stop={"requests": 1500, "warmup_s": 20.0},
                      policy={"kind": "entropy_threshold", "threshold": 0.5}), d)
    return d


def test_phases_add_up_to_latency(run_dir):
    ph = phase_breakdown(run_dir, warmup_s=20.0)
    np.testing.assert_allclose(ph[list(PHASES)].sum(axis=1), ph["latency_s"], rtol=1e-9, atol=1e-12)
    assert (ph[list(PHASES[:-1])] >= -1e-12).all().all()
    assert np.abs(ph["other"]).max() < 1e-9  # the two-stage protocol has no unaccounted step
    ev = read_events(run_dir, ["arrival_s", "status", "s2_end_s"])
    assert len(ph) == int(((ev["arrival_s"] >= 20.0) & (ev["status"] == "ok")).sum())
    assert (ph["crop_round_trip"] > 0).sum() == int(ev.loc[ev["arrival_s"] >= 20.0, "s2_end_s"].notna().sum())


def test_queue_length_series_counts_waiting_requests(run_dir):
    q = queue_length_series(run_dir, dt_s=0.5)
    ev = read_events(run_dir, ["up1_end_s", "s1_start_s", "up2_end_s", "s2_start_s"])
    for t in q["t_s"].to_numpy()[::37]:
        waiting = (((ev["up1_end_s"] <= t) & (ev["s1_start_s"] > t)).sum()
                   + ((ev["up2_end_s"] <= t) & (ev["s2_start_s"] > t)).sum())
        assert q.loc[q["t_s"] == t, "queue_length"].item() == waiting
    assert q["queue_length"].min() >= 0 and q["queue_length"].max() > 0


def test_throughput_series_counts_every_completion(run_dir):
    s = throughput_series(run_dir, dt_s=5.0)
    assert (s["completed_per_s"] * 5.0).sum() == pytest.approx(1500)
    assert not s["after_warmup"].iloc[0] and s["after_warmup"].iloc[-1]
    assert s.loc[s["t_s"] >= 20.0, "after_warmup"].all()


def test_link_utilisation_series_conserves_bytes(run_dir):
    u = link_utilisation_series(run_dir, dt_s=2.0)
    ev = read_events(run_dir, ["uplink_bytes"])
    assert (u["bits_per_s"] * 2.0 / 8).sum() == pytest.approx(ev["uplink_bytes"].sum())
    assert 0 < u["utilisation"].mean() < 1
