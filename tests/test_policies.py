"""Policy identities: threshold 0 is always_crop, a threshold above every value is global_only."""

from __future__ import annotations

import numpy as np
import pytest

from edgevlm.sim import run
from edgevlm.sim.policies.two_stage import uncertainty
from edgevlm.sim.workload import Workload
from edgevlm.traces import read_trace

COMPARED = ["request_id", "arrival_s", "done_s", "uplink_bytes", "downlink_bytes", "stages", "score", "flops"]


def events_of(scenario_dict, policy):
    return run(scenario_dict(policy=policy)).events.sort_values("request_id")[COMPARED].reset_index(drop=True)


def test_threshold_zero_on_min_entropy_is_always_crop(scenario_dict):
    a = events_of(scenario_dict, {"kind": "entropy_threshold", "metric": "min_entropy", "threshold": 0.0})
    b = events_of(scenario_dict, {"kind": "always_crop"})
    assert (b["stages"] == 2).all()
    assert a.equals(b)


@pytest.mark.parametrize("metric", ["min_entropy", "shannon"])
def test_threshold_above_every_value_is_global_only(scenario_dict, synthetic_trace, metric):
    top = uncertainty(Workload.load(synthetic_trace), metric, 5).max()
    a = events_of(scenario_dict, {"kind": "entropy_threshold", "metric": metric, "threshold": float(top) + 1e-3})
    b = events_of(scenario_dict, {"kind": "global_only"})
    assert (b["stages"] == 1).all()
    assert a.equals(b)


def test_margin_triggers_at_or_below_threshold(scenario_dict):
    """margin: small p1 - p2 is uncertain, so threshold 1 crops everything and 0 nothing (no margin here is 0)."""
    assert events_of(scenario_dict, {"kind": "entropy_threshold", "metric": "margin", "threshold": 1.0}).equals(
        events_of(scenario_dict, {"kind": "always_crop"}))
    assert events_of(scenario_dict, {"kind": "entropy_threshold", "metric": "margin", "threshold": 0.0}).equals(
        events_of(scenario_dict, {"kind": "global_only"}))


@pytest.mark.parametrize("tokens", [1, 5, "all"])
def test_crop_decisions_follow_the_first_k_token_mean(scenario_dict, synthetic_trace, tokens):
    table, _ = read_trace(synthetic_trace)
    ents = table.column("s1_min_entropy").to_pylist()
    k = None if tokens == "all" else tokens
    by_id = dict(zip(table.column("sample_id").to_pylist(), [np.mean(e[:k]) for e in ents]))
    ev = run(scenario_dict(policy={"kind": "entropy_threshold", "threshold": 0.5, "tokens": tokens})).events
    want = np.array([by_id[s] >= 0.5 for s in ev["sample_id"]])
    np.testing.assert_array_equal(ev["stages"].to_numpy() == 2, want)


def test_accuracy_is_the_mean_of_the_picked_stage_scores(scenario_dict, synthetic_trace):
    tr = read_trace(synthetic_trace)[0].to_pandas().set_index("sample_id")
    res = run(scenario_dict(policy={"kind": "entropy_threshold", "threshold": 0.5}))
    ev = res.events
    rows = tr.loc[ev["sample_id"]]
    picked = np.where(ev["stages"] == 2, rows["s2_score"], rows["s1_score"])
    np.testing.assert_allclose(ev["score"], picked, rtol=1e-6)
    assert res.summary["accuracy"]["value"] == pytest.approx(picked.mean(), rel=1e-6)


def test_cropping_more_costs_more_bytes(scenario_dict):
    costs = [run(scenario_dict(policy={"kind": "entropy_threshold", "threshold": t})).summary["additional_comm_cost"]
             for t in (2.0, 0.8, 0.3, 0.0)]
    assert costs[0] >= 0 and all(a < b for a, b in zip(costs, costs[1:]))
    assert run(scenario_dict(policy={"kind": "global_only"})).summary["additional_comm_cost"] == 0.0


def test_unknown_jpeg_quality_names_the_field_and_allowed_values(scenario_dict):
    from edgevlm.sim.errors import ConfigError

    with pytest.raises(ConfigError, match=r"policy\.jpeg_quality: 60 is not in .*10, 25, 50, 75, 95"):
        run(scenario_dict(policy={"kind": "global_only", "jpeg_quality": 60}))


@pytest.mark.parametrize("kind", ["entropy_threshold", "always_crop", "global_only"])
def test_edge_gate_makes_the_same_decisions_with_one_more_message_each_way(scenario_dict, synthetic_trace, kind):
    """gate: edge sends the stage-1 reply (answer + 12 B of uncertainty per token) down before the
    decision; a crop then costs one box request up (8 B + overhead). Decisions are unchanged."""
    from edgevlm.sim.network import DEFAULT_OVERHEAD_BYTES as OH
    from edgevlm.traces.protocol import ATTENTION_REQUEST_BYTES, TEXT_BYTES_PER_TOKEN
    pol = {"kind": kind} | ({"threshold": 0.6} if kind == "entropy_threshold" else {})
    server = events_of(scenario_dict, pol)
    edge = events_of(scenario_dict, pol | {"gate": "edge"})
    np.testing.assert_array_equal(edge["stages"], server["stages"])
    crop = server["stages"].to_numpy() == 2
    s1_tokens = Workload.load(synthetic_trace).s1_tokens
    ev = run(scenario_dict(policy=pol)).events.sort_values("request_id")
    idx = {s: k for k, s in enumerate(Workload.load(synthetic_trace).sample_id.tolist())}
    t1 = s1_tokens[[idx[s] for s in ev["sample_id"]]]
    np.testing.assert_array_equal(edge["uplink_bytes"] - server["uplink_bytes"],
                                  np.where(crop, ATTENTION_REQUEST_BYTES + OH, 0))
    reply1 = t1 * (TEXT_BYTES_PER_TOKEN + 12)
    np.testing.assert_array_equal(edge["downlink_bytes"] - server["downlink_bytes"],
                                  np.where(crop, reply1 + OH, reply1 - t1 * TEXT_BYTES_PER_TOKEN))
    extra = (edge["done_s"] - edge["arrival_s"]) - (server["done_s"] - server["arrival_s"])
    if crop.any():  # a crop waits for a downlink and an uplink more: two 20 ms propagation delays
        # (plus two small transfers; queueing at the GPU shifts a few requests either way)
        assert 0.040 <= extra[crop].median() < 0.050
    if (~crop).any():
        assert np.abs(extra[~crop]).median() < 0.01
