"""random_retransmit, oracle and full_cloud on a SYNTHETIC trace: identities, bounds and errors."""

from __future__ import annotations

import numpy as np
import pytest

from edgevlm.sim import run
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.workload import Workload
from edgevlm.traces import read_trace
from edgevlm.traces.io import write_trace
from edgevlm.traces.synthetic import generate_table, provenance

COMPARED = ["request_id", "arrival_s", "done_s", "uplink_bytes", "downlink_bytes", "stages", "score", "flops"]


def events(scenario_dict, policy, **kw):
    return run(scenario_dict(policy=policy, **kw)).events.sort_values("request_id").reset_index(drop=True)


def trace_rows(path, ev):
    return read_trace(path)[0].to_pandas().set_index("sample_id").loc[ev["sample_id"]]


def test_random_p1_is_always_crop_and_p0_is_global_only(scenario_dict):
    always = events(scenario_dict, {"kind": "always_crop"})
    r1 = events(scenario_dict, {"kind": "random_retransmit", "p": 1.0})
    assert (r1["uplink_bytes"] == always["uplink_bytes"]).all()
    assert r1[COMPARED].equals(always[COMPARED])
    assert events(scenario_dict, {"kind": "random_retransmit", "p": 0.0})[COMPARED].equals(
        events(scenario_dict, {"kind": "global_only"})[COMPARED])


def test_random_is_reproducible_and_crops_at_rate_p(scenario_dict):
    a = events(scenario_dict, {"kind": "random_retransmit", "p": 0.3})
    b = events(scenario_dict, {"kind": "random_retransmit", "p": 0.3})
    assert a.equals(b)
    rate = (a["stages"] == 2).mean()
    n = len(a)
    assert abs(rate - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)  # binomial, 4 sigma
    other = events(scenario_dict, {"kind": "random_retransmit", "p": 0.3}, seed=99)
    assert not other["stages"].equals(a["stages"])


def test_random_crops_are_nested_in_p_common_random_numbers(scenario_dict):
    """Request r's coin is the same for every p, so a larger p only adds crops."""
    lo = events(scenario_dict, {"kind": "random_retransmit", "p": 0.2})
    hi = events(scenario_dict, {"kind": "random_retransmit", "p": 0.5})
    assert ((lo["stages"] == 2) <= (hi["stages"] == 2)).all()


def test_oracle_crops_exactly_where_stage2_scores_higher_and_is_flagged_a_bound(scenario_dict, synthetic_trace):
    res = run(scenario_dict(policy={"kind": "oracle"}))
    ev = res.events
    rows = trace_rows(synthetic_trace, ev)
    np.testing.assert_array_equal(ev["stages"].to_numpy() == 2, (rows["s2_score"] > rows["s1_score"]).to_numpy())
    assert res.summary["policy_is_bound"] is True
    assert run(scenario_dict(policy={"kind": "always_crop"})).summary["policy_is_bound"] is False
    # The bound: its accuracy is the best of both stages on every request.
    np.testing.assert_allclose(ev["score"], np.maximum(rows["s1_score"], rows["s2_score"]), rtol=1e-6)


def test_full_cloud_sends_the_original_once_and_scores_hd(scenario_dict, synthetic_trace):
    res = run(scenario_dict(policy={"kind": "full_cloud", "jpeg_quality": 50}))
    ev = res.events
    rows = trace_rows(synthetic_trace, ev)
    q = read_trace(synthetic_trace)[1]["jpeg_qualities"].index(50)
    overhead = res.scenario.network.uplink.overhead_bytes
    want = np.array([b[q] for b in rows["original_jpeg_bytes"]]) + rows["prompt_tokens"].to_numpy() * 4 + overhead
    np.testing.assert_array_equal(ev["uplink_bytes"], want)
    np.testing.assert_allclose(ev["score"], rows["hd_score"], rtol=1e-6)
    assert (ev["stages"] == 1).all() and ev["crop_req_end_s"].isna().all() and ev["s2_start_s"].isna().all()
    from edgevlm.sim.profiles import MODELS

    m = MODELS["llava-1.5-7b"]
    np.testing.assert_allclose(ev["flops"], [m.flops(t) for t in rows["hd_visual_tokens"]])
    assert res.summary["additional_comm_cost"] > 1.0  # the original is far larger than the global image


def test_full_cloud_without_hd_columns_names_them(tmp_path, scenario_dict):
    table = generate_table(60, seed=2).drop_columns(["hd_score", "hd_visual_tokens"])
    path = write_trace(table, tmp_path / "nohd.parquet", provenance(60, 2))
    with pytest.raises(ConfigError, match=r"policy\.kind: full_cloud needs the trace columns hd_score, "
                                          r"hd_visual_tokens; .*lacks: hd_score \(absent\), hd_visual_tokens"):
        run(dict(scenario_dict(policy={"kind": "full_cloud"}), trace=str(path)))


def test_jpeg_quality_changes_bytes_not_scores(scenario_dict):
    lo = events(scenario_dict, {"kind": "always_crop", "jpeg_quality": 10})
    hi = events(scenario_dict, {"kind": "always_crop", "jpeg_quality": 95})
    assert (lo["uplink_bytes"] < hi["uplink_bytes"]).all()
    np.testing.assert_array_equal(lo["score"], hi["score"])
    for kind in ("random_retransmit", "oracle", "full_cloud", "adaptive_threshold"):
        pol = {"kind": kind, "jpeg_quality": 60} | ({"p": 0.5} if kind == "random_retransmit" else {})
        with pytest.raises(ConfigError, match=r"policy\.jpeg_quality: 60 is not in"):
            run(scenario_dict(policy=pol))
