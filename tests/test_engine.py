"""Engine invariants: determinism, common random numbers, conservation of requests and bytes."""

from __future__ import annotations

import numpy as np
import pytest

from edgevlm.sim import run
from edgevlm.traces.protocol import BBOX_REQUEST_BYTES, TEXT_BYTES_PER_TOKEN
from edgevlm.traces import read_trace


def test_same_scenario_and_seed_give_identical_bytes(scenario_dict, tmp_path):
    sc = scenario_dict()
    run(sc, tmp_path / "a")
    run(sc, tmp_path / "b")
    assert (tmp_path / "a" / "events.parquet").read_bytes() == (tmp_path / "b" / "events.parquet").read_bytes()
    a = (tmp_path / "a" / "summary.json").read_text()
    assert a == (tmp_path / "b" / "summary.json").read_text()


def test_different_seed_changes_the_run(scenario_dict):
    a = run(scenario_dict(seed=1)).events
    b = run(scenario_dict(seed=2)).events
    assert not np.array_equal(a["arrival_s"].to_numpy(), b["arrival_s"].to_numpy())


def test_policies_share_arrivals_and_samples(scenario_dict):
    """Common random numbers: the policy does not change who asks what, when."""
    runs = [run(scenario_dict(policy=p)).events.sort_values("request_id")
            for p in ({"kind": "global_only"}, {"kind": "always_crop"})]
    for col in ("arrival_s", "client_id", "sample_id"):
        assert runs[0][col].tolist() == runs[1][col].tolist()


def test_every_arrival_has_one_terminal_record(scenario_dict):
    ev = run(scenario_dict(stop={"requests": 3000})).events
    assert len(ev) == 3000
    assert sorted(ev["request_id"]) == list(range(3000))
    assert set(ev["status"]) <= {"ok", "dropped", "expired"}


def test_time_limited_run_stops_arrivals_and_drains(scenario_dict):
    ev = run(scenario_dict(stop={"time_s": 200.0, "warmup_s": 20.0})).events
    assert ev["arrival_s"].max() < 200.0
    assert (ev["status"] == "ok").all() and ev["done_s"].notna().all()


@pytest.mark.parametrize("policy", [{"kind": "global_only"}, {"kind": "always_crop", "jpeg_quality": 25},
                                    {"kind": "entropy_threshold", "threshold": 0.5, "jpeg_quality": 95}])
def test_uplink_and_downlink_bytes_match_the_trace(scenario_dict, synthetic_trace, policy):
    overhead_up, overhead_down = 40, 60
    sc = scenario_dict(policy=policy, network={
        "uplink": {"capacity_mbps": 20, "overhead_bytes": overhead_up},
        "downlink": {"capacity_mbps": 100, "overhead_bytes": overhead_down}})
    ev = run(sc).events
    table, prov = read_trace(synthetic_trace)
    tr = table.to_pandas().set_index("sample_id")
    q = prov["jpeg_qualities"].index(policy.get("jpeg_quality", 75))
    rows = tr.loc[ev["sample_id"]]
    crop = ev["stages"].to_numpy() == 2
    glob = rows["global_jpeg_bytes"].map(lambda v: v[q]).to_numpy()
    local = rows["local_jpeg_bytes"].map(lambda v: v[q]).to_numpy()
    question = rows["prompt_tokens"].to_numpy() * TEXT_BYTES_PER_TOKEN
    expected_up = glob + question + overhead_up + np.where(crop, local + overhead_up, 0)
    np.testing.assert_array_equal(ev["uplink_bytes"].to_numpy(), expected_up)
    t1 = rows["s1_min_entropy"].map(len).to_numpy()
    answer = np.where(crop, rows["s2_tokens"].to_numpy(), t1) * TEXT_BYTES_PER_TOKEN
    expected_down = answer + overhead_down + np.where(crop, BBOX_REQUEST_BYTES + overhead_down, 0)
    np.testing.assert_array_equal(ev["downlink_bytes"].to_numpy(), expected_down)
    res = run(sc)
    assert res.summary["uplink"]["bytes_carried"] == ev["uplink_bytes"].sum()
    assert res.summary["downlink"]["bytes_carried"] == ev["downlink_bytes"].sum()


def test_timestamps_are_monotone_along_each_path(scenario_dict):
    ev = run(scenario_dict(policy={"kind": "entropy_threshold", "threshold": 0.4})).events
    steps = ["arrival_s", "edge_done_s", "up1_end_s", "s1_start_s", "s1_end_s", "crop_req_end_s",
             "up2_end_s", "s2_start_s", "s2_end_s", "done_s"]
    t = ev[steps].to_numpy()
    for row in t:
        present = row[~np.isnan(row)]
        assert (np.diff(present) >= 0).all()
    crop = ev["stages"] == 2
    assert ev.loc[crop, "s2_end_s"].notna().all() and ev.loc[~crop, "s2_end_s"].isna().all()
    np.testing.assert_allclose(ev["latency_s"], ev["done_s"] - ev["arrival_s"])


def test_flops_follow_the_stage_costs(scenario_dict):
    ev = run(scenario_dict(policy={"kind": "entropy_threshold", "threshold": 0.4})).events
    d, L, n = 4096, 32, 576
    flops = lambda k: (24 * k * d * d + 4 * k * k * d) * L  # noqa: E731  (eq. 17, LLaVA-1.5-7B)
    expected = np.where(ev["stages"] == 2, 2 * flops(n) + flops(2 * n), flops(n))
    np.testing.assert_allclose(ev["flops"], expected, rtol=1e-12)


def test_admission_limit_drops_new_requests(scenario_dict):
    sc = scenario_dict(clients={"count": 20, "arrival": {"kind": "poisson", "rate_per_s": 1.0}},
                       server={"max_queue": 5, "latency": {"kind": "deterministic", "service_s": 0.2}},
                       policy={"kind": "global_only"})
    res = run(sc)
    ev = res.events
    dropped = ev["status"] == "dropped"
    assert dropped.mean() > 0.5  # offered load 4x capacity
    assert ev.loc[dropped, "s1_start_s"].isna().all() and ev.loc[dropped, "score"].isna().all()
    assert res.summary["counts"]["dropped"] == dropped.sum()
    assert res.summary["gpu"]["dropped"] == dropped.sum()


def test_periodic_arrivals_are_evenly_spaced_per_client(scenario_dict):
    ev = run(scenario_dict(stop={"requests": 600},
                           clients={"count": 6, "arrival": {"kind": "periodic", "fps": 2.0}})).events
    for _, g in ev.groupby("client_id"):
        np.testing.assert_allclose(np.diff(np.sort(g["arrival_s"].to_numpy())), 0.5)
    assert ev["client_id"].nunique() == 6


def test_link_classes_get_their_shares_of_clients(scenario_dict):
    from edgevlm.sim.engine import Simulation
    from edgevlm.sim.scenario import parse_scenario
    from edgevlm.sim.workload import Workload

    sc = parse_scenario(scenario_dict(clients={
        "count": 10, "arrival": {"kind": "poisson", "rate_per_s": 1},
        "link_classes": [{"share": 0.7, "uplink_mbps": 10}, {"share": 0.3, "uplink_mbps": 1}]}))
    sim = Simulation(sc, Workload.load(sc.trace), lambda r: None)
    assert sorted(sim.access_bps) == [1e6] * 3 + [1e7] * 7


def test_summary_counts_and_accuracy_come_from_events(scenario_dict):
    res = run(scenario_dict(stop={"requests": 3000, "warmup_s": 50.0}))
    ev, s = res.events, res.summary
    meas = ev[(ev["arrival_s"] >= 50.0) & (ev["status"] == "ok")]
    assert s["counts"]["measured_ok"] == len(meas)
    assert s["accuracy"]["value"] == pytest.approx(meas["score"].mean(), rel=1e-6)
    assert s["latency_s"]["mean"]["value"] == pytest.approx(meas["latency_s"].mean())
    assert s["latency_s"]["p95"]["value"] == pytest.approx(np.percentile(meas["latency_s"], 95))
    assert s["retransmission_rate"] == pytest.approx((meas["stages"] == 2).mean())
    assert s["counts"]["arrived"] == len(ev) == 3000
    assert s["counts"]["ok"] == int((ev["status"] == "ok").sum())
    assert s["counts"]["measured"] == int((ev["arrival_s"] >= 50.0).sum())
