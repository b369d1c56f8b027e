"""Issue 20: the progressive system model, the FIFO-with-caps trap, and the shipped seed004 compares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgevlm.sim import run
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.latency import Job, Roofline
from edgevlm.sim.profiles import EDGES, HARDWARE, MODELS
from edgevlm.sim.progressive_cost import ProgressiveCost
from edgevlm.sim.scenario import parse_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def prog_scenario(scenario_dict, **over):
    d = scenario_dict(policy={"kind": "progressive", "thresholds": [0.5, 0.4, 0.0]},
                      clients={"count": 1, "arrival": {"kind": "poisson", "rate_per_s": 0.002},
                               "link_classes": [{"share": 1.0, "uplink_mbps": 1}]},
                      stop={"requests": 300}, **over)
    return d


def test_edge_phase_is_the_vision_tower_plus_the_codec_on_the_device_worked_by_hand(scenario_dict):
    # i.MX95 NPU (sim/profiles.py): 2 TFLOP/s INT8 peak at 10 % => 2e11 FLOP/s; 25.6 GB/s at 60 % => 15.36 GB/s.
    # LLaVA-1.5's tower, CLIP ViT-L/14-336 read at layer -2: (24*577*1024^2 + 4*577^2*1024) * 23 FLOPs
    tower_flops = 365_340_225_536
    tower_s = tower_flops / 2e11  # 1.82670112768 s; its 0.3035e9 int8 weights take only 0.0198 s to read
    codec_flops = 2 * 576 * 1024 * 1024  # project 576 tokens of width 1024 on 1024 axes: 1,207,959,552
    codec_s = codec_flops / 2e11  # 0.00603979776 s (the 1 MB matrix reads in 0.07 ms)
    prep_s = 0.025  # EDGES["imx95"].prep_s: resize to the vision input
    by_hand = prep_s + tower_s + codec_s
    assert by_hand == pytest.approx(1.85774092544, rel=1e-12)

    cost = ProgressiveCost(MODELS["llava-1.5-7b"], EDGES["imx95"])
    assert cost.tower_flops == pytest.approx(tower_flops, rel=1e-12)
    assert cost.edge_encode_s == pytest.approx(tower_s + codec_s, rel=1e-12)
    res = run(prog_scenario(scenario_dict))
    ev = res.events.sort_values("request_id")
    edge = (ev["edge_done_s"] - ev["arrival_s"]).to_numpy()
    # A request that finds its device idle takes exactly the modelled time; one that arrives while
    # the device still encodes the previous frame waits for it (FCFS), never less.
    # (differences of absolute times near 1e5 s: 1 ns tolerance)
    assert edge[0] == pytest.approx(by_hand, abs=1e-9)
    assert edge.min() == pytest.approx(by_hand, abs=1e-9) and (edge >= by_hand - 1e-9).all()
    assert np.mean(np.isclose(edge, by_hand, rtol=0, atol=1e-9)) > 0.95
    # The device's work shows in summary "edge": one job per request, tower + codec FLOPs each.
    assert res.summary["edge"]["jobs"] == len(ev)
    assert res.summary["edge"]["flops_per_job"] == pytest.approx(tower_flops + codec_flops, rel=1e-12)


def test_a_token_pass_has_no_vision_encode(scenario_dict):
    model, a100 = MODELS["llava-1.5-7b"], HARDWARE["a100-80gb"]
    cost = ProgressiveCost(model, EDGES["imx95"])
    job = cost.token_job(prompt_tokens=20, out_tokens=4)
    assert job.images == 0 and job.visual_tokens == 576
    # FLOPs before the LLM: codec decoder 2*576*1024^2 + projector 2*576*(1024*4096 + 4096^2); no tower.
    pre = 2 * 576 * 1024 ** 2 + 2 * 576 * (1024 * 4096 + 4096 ** 2)
    assert job.pre_flops == pytest.approx(pre, rel=1e-12)
    assert cost.token_pass_flops() == pytest.approx(model.flops(576) + pre, rel=1e-12)
    assert model.vision_tower_tflops * 1e12 > 10 * pre  # the tower would dominate if it were there
    # Time: the same pass on an image minus the vision encode (0.405 TFLOPs at 312 x 0.4 TFLOP/s) plus `pre`.
    roof = Roofline(model, a100)
    image = Job(1, 1, 576, 20, 4)
    flop_rate = 312e12 * 0.4
    want = roof.service_s(image) - model.vision_tflops * 1e12 / flop_rate + pre / flop_rate
    assert roof.service_s(job) == pytest.approx(want, rel=1e-12)
    assert roof.service_s(image) - roof.service_s(job) == pytest.approx(0.0032482674 - 0.0002032624, rel=1e-6)
    # In a run: every pass (level 1 and each refinement) is a token pass, in FLOPs and in time.
    res = run(prog_scenario(scenario_dict))
    ev = res.events
    np.testing.assert_allclose(ev["flops"], ev["stages"] * cost.token_pass_flops(), rtol=1e-12)
    from edgevlm.sim.workload import Workload

    w = Workload.load(res.scenario.trace)
    idx = {s: i for i, s in enumerate(w.table.column("sample_id").to_pylist())}
    rows = [idx[s] for s in ev["sample_id"]]
    prompt = w.table.column("prompt_tokens").to_numpy()[rows]
    out = w.s1_tokens[rows]
    want = [roof.service_s(cost.token_job(int(p), int(t))) for p, t in zip(prompt, out)]
    np.testing.assert_allclose(ev["s1_end_s"] - ev["s1_start_s"], want, rtol=1e-9)
    refined = ev["prog_last_end_s"].notna().to_numpy()
    assert refined.any() and (~refined).any()
    np.testing.assert_allclose((ev["prog_last_end_s"] - ev["prog_last_start_s"])[refined],
                               np.asarray(want)[refined], rtol=1e-9)
    # Refinements recompute the whole prefill: each round's pass costs what the level-1 pass did.
    np.testing.assert_allclose(ev["prog_infer_s"][refined],
                               (ev["stages"] - 1)[refined] * np.asarray(want)[refined], rtol=1e-9)


def test_fifo_uplink_with_binding_access_caps_is_rejected_with_what_to_use(scenario_dict):
    cli = {"count": 4, "arrival": {"kind": "poisson", "rate_per_s": 0.1},
           "link_classes": [{"share": 0.5, "uplink_mbps": 100}, {"share": 0.5, "uplink_mbps": 1}]}
    net = {"uplink": {"capacity_mbps": 100, "discipline": "fifo"}, "downlink": {"capacity_mbps": 100}}
    with pytest.raises(ConfigError) as err:
        parse_scenario(scenario_dict(clients=cli, network=net))
    msg = str(err.value)
    assert err.value.path == "network.uplink.discipline"
    assert "clients.link_classes[1].uplink_mbps 1 is below network.uplink.capacity_mbps 100" in msg
    assert "use `network.uplink.discipline: ps`" in msg
    # Caps that cannot bind are fine on a FIFO link; the same caps on a PS link are fine.
    ok = dict(cli, link_classes=[{"share": 1.0, "uplink_mbps": 100}])
    assert parse_scenario(scenario_dict(clients=ok, network=net)).network.uplink.discipline == "fifo"
    ps = {**net, "uplink": {"capacity_mbps": 100, "discipline": "ps"}}
    parse_scenario(scenario_dict(clients=cli, network=ps))
    # The CLI answers with the one-line error and exit 2 (no traceback).
    import subprocess
    import sys

    import yaml

    path = Path(scenario_dict()["trace"]).parent / "fifo_caps.yaml"
    path.write_text(yaml.safe_dump(scenario_dict(clients=cli, network=net)))
    p = subprocess.run([sys.executable, "-m", "edgevlm", "run", str(path), "--out", str(path.parent / "o")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "network.uplink.discipline" in p.stderr and "Traceback" not in p.stderr


def test_shipped_seed004_scenario_is_progressive_on_the_tiny_trace_and_every_scenario_parses():
    from edgevlm.sim.scenario import load_scenario

    sc, _ = load_scenario(SCENARIOS / "seed004_1mbps.yaml")
    assert sc.trace.endswith("tiny-scenetext-v2.parquet") and sc.policy.kind == "progressive"
    assert [c.uplink_mbps for c in sc.clients.link_classes] == [1.0] and sc.clients.edge.device.name == "imx95"
    for f in sorted(SCENARIOS.glob("*.yaml")):  # no shipped scenario falls into the FIFO-with-caps trap
        if not f.name.startswith(("compare_", "sweep_")):
            load_scenario(f)


@pytest.mark.parametrize("compare", ["compare_seed004_1mbps.yaml"])
def test_every_variant_of_the_shipped_1mbps_compare_is_stable(compare, tmp_path):
    from edgevlm.analysis.seed004 import seed004_table
    from edgevlm.sim.compare import run_compare

    df = run_compare(SCENARIOS / compare, tmp_path, progress=False, audit=True)
    df.to_parquet(tmp_path / "results.parquet", index=False)
    assert df["check_ok"].all(), df[["variant", "check_violations"]]
    table = seed004_table([tmp_path])
    assert len(table) == 9
    for _, r in table.iterrows():
        assert r["rate_ok"] and r["stable"], r.to_dict()
    net = table.set_index("variant")["network_mean_s"]
    # network latency (uplink + downlink): the original image takes ~0.65 s at 1 Mbit/s, level 1 a few ms
    assert net["progressive_L1"] < net["global_only"] < net["full_cloud"]
    assert net["full_edge"] < net["progressive_L1"]  # full-edge sends only its answer


def test_the_scaled_cell_at_1000_devices_settles_for_progressive_and_flags_full_cloud(tmp_path):
    """N = 1000 (compare_seed004_scale.yaml): progressive (entropy-driven) loads the GPUs most and must
    settle (served = offered, no latency drift); full_cloud's 1024-px originals (~129 kB at 25 req/s,
    ~26 Mbit/s) exceed the 20 Mbit/s cell uplink, so its run must be flagged unstable, served < offered."""
    from edgevlm.analysis.seed004 import seed004_table
    from edgevlm.sim.compare import load_compare, run_compare

    spec, _ = load_compare(SCENARIOS / "compare_seed004_scale.yaml")
    data = spec.model_dump()
    data["base"] = str(SCENARIOS / "seed004_1mbps.yaml")
    data["variants"] = [v for v in data["variants"] if v["name"] in ("full_cloud_N1000", "progressive_N1000")]
    assert len(data["variants"]) == 2
    for v in data["variants"]:
        v["set"]["stop"] = {"requests": 15000, "warmup_s": 60}
    df = run_compare(data, tmp_path, progress=False, audit=True)
    df.to_parquet(tmp_path / "results.parquet", index=False)
    table = seed004_table([tmp_path])
    assert (table["devices"] == 1000).all()
    rows = {r["variant"]: r for _, r in table.iterrows()}
    for r in rows.values():
        assert r["offered_per_s"] == pytest.approx(25.0, rel=0.05)
    assert rows["progressive"]["stable"], rows["progressive"].to_dict()
    cloud = rows["full_cloud"]
    assert not cloud["stable"] and cloud["served_per_s"] < 0.9 * cloud["offered_per_s"], cloud.to_dict()
    assert cloud["uplink_bytes"] * 8 * cloud["offered_per_s"] > 20e6


def test_phase_breakdown_counts_every_progressive_round_and_sums_to_the_latency(scenario_dict, tmp_path):
    from edgevlm.analysis.events import phase_breakdown

    res = run(prog_scenario(scenario_dict), tmp_path / "r")
    ph = phase_breakdown(tmp_path / "r")
    ev = res.events.sort_values("request_id").reset_index(drop=True)
    assert np.abs(ph["other"]).max() < 1e-9 and ph["crop_round_trip"].eq(0).all()
    # uplink = level 1 + every increment; downlink = every level request + the answer
    up1 = (ev["up1_end_s"] - ev["edge_done_s"]).to_numpy()
    np.testing.assert_allclose(ph["uplink"], up1 + ev["prog_up_s"].fillna(0).to_numpy(), atol=1e-9)
    refined = ev["prog_levels"].to_numpy() > 1
    assert (ph["downlink"][refined] > ph["downlink"][~refined].max()).all()  # extra round trips cost downlink


def test_full_cloud_native_sends_the_original_and_runs_one_ordinary_pass(scenario_dict, synthetic_trace):
    from edgevlm.sim.workload import Workload

    res = run(scenario_dict(policy={"kind": "full_cloud", "jpeg_quality": 75, "resolution": "native"}))
    ev = res.events
    w = Workload.load(synthetic_trace)
    idx = {s: i for i, s in enumerate(w.table.column("sample_id").to_pylist())}
    rows = np.array([idx[s] for s in ev["sample_id"]])
    q = w.quality_index(75)
    overhead = res.scenario.network.uplink.overhead_bytes
    np.testing.assert_array_equal(ev["uplink_bytes"], w.original_bytes[rows, q] + w.question_bytes[rows] + overhead)
    np.testing.assert_allclose(ev["score"], w.s1_score[rows], rtol=1e-6)
    np.testing.assert_allclose(ev["flops"], MODELS["llava-1.5-7b"].flops(576))
    assert (ev["stages"] == 1).all()


def test_level_table_reads_trace_levels_and_the_codec_eval_same_answer_rate():
    import json

    from edgevlm.analysis.seed004 import level_table

    root = Path(__file__).resolve().parent.parent
    ev_json = root / "models/weights/tiny-scenetext-v1/codec/eval_heldout700.json"
    lv = level_table(root / "traces/tiny-scenetext-v1.parquet", ev_json)
    want = json.loads(ev_json.read_text())["codecs"]["pca_levels"]
    assert lv["level"].tolist() == [1, 2, 3, 4]
    assert lv["same_answer"].tolist() == want["same_answer_as_uncompressed"]
    assert lv["cum_bytes"].is_monotonic_increasing and (lv["trace_samples"] == 2100).all()
    assert lv["accuracy"].iloc[0] < lv["accuracy"].iloc[-1]


def test_fifo_on_a_trace_driven_uplink_checks_caps_against_the_traces_peak(scenario_dict, tmp_path):
    """A constant cap above the trace's busiest millisecond never binds (the testbed's 1 Gbit/s
    placeholder); one below it is rejected when the engine has read the trace, naming the field."""
    from edgevlm.sim.bandwidth import write_mahimahi
    from edgevlm.sim.runner import run

    trace = write_mahimahi(tmp_path / "t.up", [1, 1, 1, 2, 5, 9])  # 3 packets in ms 1: peak 36 Mbit/s
    net = {"uplink": {"bandwidth_trace": {"kind": "mahimahi", "path": str(trace)}, "discipline": "fifo"},
           "downlink": {"capacity_mbps": 100}}
    cli = {"count": 2, "arrival": {"kind": "poisson", "rate_per_s": 0.5},
           "link_classes": [{"share": 1.0, "uplink_mbps": 1000}]}
    stop = {"requests": 20, "warmup_s": 0.0}
    sc = parse_scenario(scenario_dict(clients=cli, network=net, stop=stop))
    run(sc, tmp_path / "ok")  # runs
    slow = parse_scenario(scenario_dict(clients=dict(cli, link_classes=[{"share": 1.0, "uplink_mbps": 20}]),
                                        network=net, stop=stop))
    with pytest.raises(ConfigError) as err:
        run(slow, tmp_path / "slow")
    assert err.value.path == "network.uplink.discipline"
    assert "uplink_mbps 20 is below the uplink trace's peak rate 36 Mbit/s" in str(err.value)
    assert not (tmp_path / "slow" / "events.parquet").exists()
