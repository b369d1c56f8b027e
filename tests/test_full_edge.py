"""full_edge: the VLM runs on the client's device, only the answer goes up, the server does nothing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from edgevlm.sim import run
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.latency import Job, Roofline
from edgevlm.sim.profiles import EDGES, MODELS
from edgevlm.traces.protocol import TEXT_BYTES_PER_TOKEN
from edgevlm.traces import read_trace
from edgevlm.traces.io import write_trace


def trace_rows(path, sample_ids):
    table, _ = read_trace(path)
    return table.to_pandas().set_index("sample_id").loc[sample_ids]


def test_full_edge_sends_only_the_answer_and_scores_edge_score(scenario_dict, synthetic_trace):
    overhead = 40
    res = run(scenario_dict(policy={"kind": "full_edge"}, stop={"requests": 600},
                            network={"uplink": {"capacity_mbps": 20, "overhead_bytes": overhead},
                                     "downlink": {"capacity_mbps": 100}}))
    ev, s = res.events, res.summary
    rows = trace_rows(synthetic_trace, ev["sample_id"])
    answer = rows["s1_min_entropy"].map(len).to_numpy() * TEXT_BYTES_PER_TOKEN
    np.testing.assert_array_equal(ev["uplink_bytes"], answer + overhead)
    assert (ev["downlink_bytes"] == 0).all()
    assert (ev["stages"] == 1).all() and ev["s2_start_s"].isna().all() and ev["crop_req_end_s"].isna().all()
    np.testing.assert_allclose(ev["score"], rows["edge_score"].to_numpy(), rtol=1e-6)
    assert (ev["flops"] == 0).all()  # the event log counts server FLOPs
    assert s["gpu"]["jobs"] == 0 and s["uplink"]["bytes_carried"] == ev["uplink_bytes"].sum()
    assert s["edge"]["jobs"] == 600 and s["edge"]["model"] == "mobilevlm-1.7b"


def test_full_edge_times_the_pass_with_the_edge_latency_model(scenario_dict, synthetic_trace):
    ev = run(scenario_dict(policy={"kind": "full_edge"}, stop={"requests": 300})).events
    rows = trace_rows(synthetic_trace, ev["sample_id"])
    lat = Roofline(MODELS["mobilevlm-1.7b"], EDGES["imx95"].hardware)
    want = [lat.service_s(Job(1, 1, 144, int(p), len(e))) for p, e in zip(rows["prompt_tokens"], rows["s1_min_entropy"])]
    np.testing.assert_allclose(ev["s1_end_s"] - ev["s1_start_s"], want, rtol=1e-9)
    assert 1.0 < np.mean(want) < 10.0  # a 1.7B VLM on a 2 TOPS NPU takes seconds
    # no JPEG encode: the pass starts on arrival unless the client's own device is still busy
    assert (ev["s1_start_s"] >= ev["arrival_s"]).all()
    assert (ev["done_s"] > ev["s1_end_s"]).all() and (ev["edge_done_s"] == ev["s1_end_s"]).all()


def test_full_edge_runs_one_pass_at_a_time_per_device(scenario_dict):
    ev = run(scenario_dict(policy={"kind": "full_edge"}, stop={"requests": 400},
                           clients={"count": 2, "arrival": {"kind": "poisson", "rate_per_s": 1.0},
                                    "edge": {"device": "imx95", "latency": {"kind": "deterministic", "service_s": 0.5}}})
             ).events
    np.testing.assert_allclose(ev["s1_end_s"] - ev["s1_start_s"], 0.5)
    for _, g in ev.sort_values("arrival_s").groupby("client_id"):
        start, end = g["s1_start_s"].to_numpy(), g["s1_end_s"].to_numpy()
        assert (start[1:] >= end[:-1] - 1e-12).all()  # FCFS on the device
        np.testing.assert_allclose(start, np.maximum(g["arrival_s"].to_numpy(),
                                                     np.concatenate([[0.0], end[:-1]])))


def test_full_edge_with_a_custom_edge_model(scenario_dict):
    tiny = {"name": "tiny", "d_model": 512, "n_layers": 4, "params_b": 0.05, "visual_tokens": 49, "vision_px": 224}
    base = run(scenario_dict(policy={"kind": "full_edge"}, stop={"requests": 200})).events
    small = run(scenario_dict(policy={"kind": "full_edge"}, stop={"requests": 200},
                              clients={"count": 20, "arrival": {"kind": "poisson", "rate_per_s": 0.05},
                                       "edge": {"model": tiny}})).events
    assert (small["s1_end_s"] - small["s1_start_s"]).mean() < 0.1 * (base["s1_end_s"] - base["s1_start_s"]).mean()


@pytest.mark.parametrize("how", ["absent", "all_null"])
def test_full_edge_without_edge_score_is_a_clear_error(scenario_dict, synthetic_trace, tmp_path, how):
    table, prov = read_trace(synthetic_trace)
    if how == "absent":
        table = table.drop_columns(["edge_score"])
    else:
        table = table.set_column(table.column_names.index("edge_score"), "edge_score",
                                 pa.nulls(table.num_rows, pa.float32()))
    path = write_trace(table, tmp_path / "no_edge.parquet", {k: v for k, v in prov.items() if k != "format_version"})
    d = scenario_dict(policy={"kind": "full_edge"})
    d["trace"] = str(path)
    with pytest.raises(ConfigError, match=r"^policy\.kind: full_edge needs the trace column 'edge_score'.*no_edge"):
        run(d)
