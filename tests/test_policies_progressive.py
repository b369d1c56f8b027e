"""progressive: levels follow the per-level entropy thresholds; bytes are the cumulative level sizes."""

from __future__ import annotations

import numpy as np
import pytest

from edgevlm.sim import run
from edgevlm.sim.errors import ConfigError
from edgevlm.traces import read_trace
from edgevlm.traces.io import write_trace
from edgevlm.traces.synthetic import generate_table, provenance


def run_prog(scenario_dict, **policy):
    res = run(scenario_dict(policy={"kind": "progressive", **policy}))
    return res, res.events.sort_values("request_id").reset_index(drop=True)


def rows_of(path, ev):
    return read_trace(path)[0].to_pandas().set_index("sample_id").loc[ev["sample_id"]]


def test_zero_thresholds_take_every_level_and_pay_the_cumulative_bytes(scenario_dict, synthetic_trace):
    res, ev = run_prog(scenario_dict, thresholds=[0.0, 0.0, 0.0])
    rows = rows_of(synthetic_trace, ev)
    assert (ev["stages"] == 3).all()
    cum = np.array([b[-1] for b in rows["prog_bytes"]])
    overhead = res.scenario.network.uplink.overhead_bytes  # per message: level 1 and two increments
    np.testing.assert_array_equal(ev["uplink_bytes"], cum + rows["prompt_tokens"].to_numpy() * 4 + 3 * overhead)
    np.testing.assert_allclose(ev["score"], [s[-1] for s in rows["prog_score"]], rtol=1e-6)
    # One token pass per level (no vision tower: sim/progressive_cost.py).
    from edgevlm.sim.profiles import EDGES, MODELS
    from edgevlm.sim.progressive_cost import ProgressiveCost

    np.testing.assert_allclose(ev["flops"], 3 * ProgressiveCost(MODELS["llava-1.5-7b"], EDGES["imx95"]).token_pass_flops())
    assert (ev["prog_levels"] == 3).all()
    # Timestamps in protocol order: level 1, then the increments, then the answer; crop columns stay null.
    order = ["arrival_s", "edge_done_s", "up1_end_s", "s1_start_s", "s1_end_s", "prog_last_start_s",
             "prog_last_end_s", "done_s"]
    t = ev[order].to_numpy()
    assert (np.diff(t, axis=1) >= -1e-12).all()
    assert ev[["crop_req_end_s", "up2_end_s", "s2_start_s", "s2_end_s"]].isna().all().all()
    sums = ev[["prog_down_s", "prog_up_s", "prog_queue_s", "prog_infer_s"]].sum(axis=1)
    np.testing.assert_allclose(ev["s1_end_s"] + sums, ev["prog_last_end_s"], rtol=1e-12)
    assert res.summary["retransmission_rate"] == 1.0


def test_thresholds_above_every_value_send_level_one_only(scenario_dict, synthetic_trace):
    top = max(max(e) for e in read_trace(synthetic_trace)[0].column("prog_min_entropy").to_pylist())
    res, ev = run_prog(scenario_dict, thresholds=top + 1.0)
    rows = rows_of(synthetic_trace, ev)
    assert (ev["stages"] == 1).all()
    np.testing.assert_array_equal(ev["uplink_bytes"], np.array([b[0] for b in rows["prog_bytes"]])
                                  + rows["prompt_tokens"].to_numpy() * 4 + res.scenario.network.uplink.overhead_bytes)
    np.testing.assert_allclose(ev["score"], [s[0] for s in rows["prog_score"]], rtol=1e-6)
    assert ev["prog_last_end_s"].isna().all() and ev["prog_up_s"].isna().all() and (ev["prog_levels"] == 1).all()
    assert res.summary["retransmission_rate"] == 0.0


def test_level_choice_follows_each_levels_entropy(scenario_dict, synthetic_trace):
    thr = [0.5, 0.4, 0.0]
    _, ev = run_prog(scenario_dict, thresholds=thr)
    ents = rows_of(synthetic_trace, ev)["prog_min_entropy"]
    want = [1 + (e[0] >= thr[0]) + (e[0] >= thr[0] and e[1] >= thr[1]) for e in ents]
    np.testing.assert_array_equal(ev["stages"], want)
    assert len(set(want)) == 3  # the case exercises every level count
    _, capped = run_prog(scenario_dict, thresholds=[0.0, 0.0, 0.0], max_levels=2)
    assert (capped["stages"] == 2).all()


def test_threshold_list_must_match_the_trace_levels(scenario_dict):
    with pytest.raises(ConfigError, match=r"policy\.thresholds: needs 3 values, one per level .*got 2"):
        run_prog(scenario_dict, thresholds=[0.1, 0.2])
    with pytest.raises(ConfigError, match=r"policy\.max_levels: the trace has 3 levels"):
        run_prog(scenario_dict, thresholds=0.1, max_levels=4)
    with pytest.raises(ConfigError, match=r"policy\.reference_jpeg_quality: 60 is not in"):
        run_prog(scenario_dict, thresholds=0.1, reference_jpeg_quality=60)


def test_trace_without_levels_is_a_clear_error(tmp_path, scenario_dict):
    table = generate_table(50, seed=4).drop_columns(["prog_bytes", "prog_score", "prog_min_entropy"])
    path = write_trace(table, tmp_path / "noprog.parquet", provenance(50, 4))
    with pytest.raises(ConfigError, match=r"policy\.kind: progressive needs the trace columns prog_bytes"):
        run(dict(scenario_dict(policy={"kind": "progressive", "thresholds": 0.1}), trace=str(path)))
