"""Trace format v2 (per-quality values), the simulator reading them, the seed's cost measures,
the v1 flag and provenance labels. Traces are SYNTHETIC (traces/synthetic.py), built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgevlm.sim import run
from edgevlm.sim.check import check_run_dir
from edgevlm.sim.cli import format_summary
from edgevlm.sim.compare import format_table
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.policies import policies
from edgevlm.sim.workload import V1_QUALITY_NOTE, Workload
from edgevlm.traces import TraceError, read_provenance, read_trace, write_trace
from edgevlm.traces.quality import at_quality
from edgevlm.traces.synthetic import JPEG_QUALITIES_V2, generate_table_v2, provenance, write_synthetic
from tests.conftest import base_scenario

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def v2_trace(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("v2") / "syn-v2.parquet", n_samples=300, seed=11,
                           format_version=2)


@pytest.fixture(scope="module")
def v2_table(v2_trace):
    return read_trace(v2_trace)


def v2_scenario(trace, policy, **kw):
    return base_scenario(trace, policy=policy, stop={"requests": 1500}, **kw)


# ---------------------------------------------------------------- format

def test_v2_round_trip_and_each_quality_is_a_valid_v1_view(v2_trace, v2_table):
    table, prov = v2_table
    assert prov["format_version"] == 2 and prov["source_kind"] == "synthetic"
    assert prov["jpeg_qualities"] == JPEG_QUALITIES_V2 and "SYNTHETIC" in prov["notes"]
    assert "s1_score" not in table.column_names  # v2 keeps each value once, at its quality
    s1 = np.array(table.column("s1_score_q").to_pylist())
    ent = table.column("s1_min_entropy_q").to_pylist()
    for k, q in enumerate(JPEG_QUALITIES_V2):
        view = at_quality(table, prov, q)
        np.testing.assert_array_equal(view.column("s1_score").to_numpy(), s1[:, k].astype(np.float32))
        assert view.column("s1_min_entropy").to_pylist() == [row[k] for row in ent]
        assert view.column("bbox_x1").to_pylist() == [row[k] for row in table.column("bbox_x1_q").to_pylist()]
    # the synthetic generator makes accuracy depend on the quality (monotone per sample by construction)
    assert (np.diff(s1.mean(axis=0)) >= 0).all() and s1[:, -1].mean() - s1[:, 0].mean() > 0.2


@pytest.mark.parametrize("corrupt, message", [
    (lambda rows: rows["s1_score_q"][3].__setitem__(1, 1.5),
     r"v2bad\.parquet: column 's1_score_q' \(jpeg_quality 10\) has scores outside \[0, 1\]"),
    (lambda rows: rows["s2_score_q"].__setitem__(5, rows["s2_score_q"][5][:3]),
     r"v2bad\.parquet: column 's2_score_q' row 5 has 3 values, expected 7"),
    (lambda rows: rows["s1_margin_q"][2].__setitem__(4, [0.1] * 9),
     r"v2bad\.parquet: column 's1_margin_q' \(jpeg_quality 75\) row 2 has 9 tokens"),
    (lambda rows: rows["bbox_x1_q"][6].__setitem__(2, 99_999),
     r"v2bad\.parquet: bbox \(columns 'bbox_x0_q' \(jpeg_quality 25\).*row 6"),
    (lambda rows: rows["s2_tokens_q"][1].__setitem__(0, 0),
     r"v2bad\.parquet: column 's2_tokens_q' \(jpeg_quality 5\) must be positive"),
    (lambda rows: rows["hd_score_q"][1].__setitem__(6, None),
     r"v2bad\.parquet: column 'hd_score_q' row 1 has a null element"),
    (lambda rows: rows["local_jpeg_bytes"][0].__setitem__(3, 0),
     r"v2bad\.parquet: column 'local_jpeg_bytes' has non-positive byte sizes"),
])
def test_v2_validation_errors_name_the_file_and_the_column(tmp_path, corrupt, message):
    table, prov = generate_table_v2(20, 1), provenance(20, 1, format_version=2)
    rows = {c: table.column(c).to_pylist() for c in table.column_names}
    corrupt(rows)
    bad = pa.table({c: pa.array(v, type=table.schema.field(c).type) for c, v in rows.items()})
    with pytest.raises(TraceError, match=message):
        write_trace(bad, tmp_path / "v2bad.parquet", prov)
    assert not (tmp_path / "v2bad.parquet").exists()
    # the reader names them the same way
    pq.write_table(bad.replace_schema_metadata({b"edgevlm": json.dumps(prov).encode()}), tmp_path / "v2bad.parquet")
    with pytest.raises(TraceError, match=message):
        read_trace(tmp_path / "v2bad.parquet")


def test_v2_missing_or_v1_columns_are_named(tmp_path):
    table, prov = generate_table_v2(10, 2), provenance(10, 2, format_version=2)
    with pytest.raises(TraceError, match=r"x\.parquet: missing required column 's1_shannon_q'"):
        write_trace(table.drop_columns(["s1_shannon_q"]), tmp_path / "x.parquet", prov)
    with pytest.raises(TraceError, match=r"x\.parquet: unknown column 's1_score'; v2 columns are"):
        write_trace(table.append_column("s1_score", pa.array([0.5] * 10)), tmp_path / "x.parquet", prov)


# ---------------------------------------------------------------- the simulator at quality q

@pytest.mark.parametrize("quality", [10, 50, 100])
@pytest.mark.parametrize("policy", [{"kind": "global_only"}, {"kind": "always_crop"},
                                    {"kind": "entropy_threshold", "threshold": 0.5, "tokens": 5}])
def test_accuracy_at_quality_is_the_mean_of_the_per_quality_scores_the_policy_picked(v2_trace, v2_table,
                                                                                   policy, quality):
    table, prov = v2_table
    k = prov["jpeg_qualities"].index(quality)
    res = run(v2_scenario(v2_trace, {**policy, "jpeg_quality": quality}))
    ev = res.events.sort_values("request_id")
    rows = {sid: i for i, sid in enumerate(table.column("sample_id").to_pylist())}
    idx = np.array([rows[s] for s in ev["sample_id"]])
    s1 = np.array(table.column("s1_score_q").to_pylist(), dtype=np.float32)[idx, k]
    s2 = np.array(table.column("s2_score_q").to_pylist(), dtype=np.float32)[idx, k]
    cropped = ev["stages"].to_numpy() >= 2
    ok = (ev["status"] == "ok").to_numpy()
    # the crop decision is the gate on the uncertainties measured at this quality
    if policy["kind"] == "entropy_threshold":
        ent = table.column("s1_min_entropy_q").to_pylist()
        gate = np.array([np.mean(ent[i][k][:5]) >= 0.5 for i in idx])
        np.testing.assert_array_equal(cropped[ok], gate[ok])
        assert 0 < cropped[ok].mean() < 1
    else:
        assert (cropped[ok] == (policy["kind"] == "always_crop")).all()
    picked = np.where(cropped, s2, s1)
    np.testing.assert_allclose(ev["score"].to_numpy()[ok], picked[ok], rtol=0, atol=1e-6)
    measured = ok & (ev["arrival_s"].to_numpy() >= res.scenario.stop.warmup_s)
    assert res.summary["accuracy"]["value"] == pytest.approx(float(picked[measured].astype(np.float64).mean()),
                                                             abs=1e-6)
    # the bytes on the wire are the ones measured at this quality (crop of the box found at q)
    glob = np.array(table.column("global_jpeg_bytes").to_pylist())[idx, k]
    local = np.array(table.column("local_jpeg_bytes").to_pylist())[idx, k]
    assert res.summary["comm_cost"]["image_bytes_per_request"] == pytest.approx(
        float((glob + np.where(cropped, local, 0))[ok & measured].mean()))
    assert res.summary["trace"]["accuracy_depends_on_jpeg_quality"] is True
    assert "note" not in res.summary["trace"]


def test_accuracy_changes_with_quality_and_random_draws_do_not(v2_trace):
    runs = {q: run(v2_scenario(v2_trace, {"kind": "always_crop", "jpeg_quality": q})) for q in (5, 100)}
    other = run(v2_scenario(v2_trace, {"kind": "global_only", "jpeg_quality": 5}))
    a, b, c = (r.events.sort_values("request_id") for r in (runs[5], runs[100], other))
    # common random numbers: arrivals and sampled rows do not depend on the quality or the policy
    for x in (b, c):
        np.testing.assert_array_equal(a["arrival_s"].to_numpy(), x["arrival_s"].to_numpy())
        np.testing.assert_array_equal(a["sample_id"].to_numpy(), x["sample_id"].to_numpy())
    assert runs[100].summary["accuracy"]["value"] > runs[5].summary["accuracy"]["value"] + 0.1


def test_a_quality_not_in_the_trace_is_a_config_error_listing_the_available_ones(v2_trace):
    with pytest.raises(ConfigError, match=r"policy\.jpeg_quality: 60 is not in the trace's jpeg_qualities; "
                                          r"available: 5, 10, 25, 50, 75, 95, 100"):
        run(v2_scenario(v2_trace, {"kind": "always_crop", "jpeg_quality": 60}))


def test_a_policy_built_on_the_wrong_quality_view_refuses(v2_trace):
    from edgevlm.sim.policies.two_stage import AlwaysCrop

    cfg = AlwaysCrop(kind="always_crop", jpeg_quality=10)
    wl = Workload.load(v2_trace)  # the view at the highest quality
    with pytest.raises(ValueError, match="jpeg_quality 10 was given the trace view at 100"):
        policies.build(cfg, wl, np.random.default_rng(0))
    pol = policies.build(cfg, wl.for_policy(cfg), np.random.default_rng(0))
    np.testing.assert_array_equal(pol.score2, wl.at_quality(10).s2_score)
    assert wl.at_quality(10) is wl.for_policy(cfg)  # views are cached per quality


def test_full_cloud_reads_the_hd_score_and_bytes_at_quality(v2_trace, v2_table):
    table, prov = v2_table
    k = prov["jpeg_qualities"].index(25)
    res = run(v2_scenario(v2_trace, {"kind": "full_cloud", "jpeg_quality": 25}))
    ev = res.events[res.events["status"] == "ok"]
    rows = {sid: i for i, sid in enumerate(table.column("sample_id").to_pylist())}
    idx = np.array([rows[s] for s in ev["sample_id"]])
    hd = np.array(table.column("hd_score_q").to_pylist(), dtype=np.float32)[idx, k]
    np.testing.assert_allclose(ev["score"].to_numpy(), hd, atol=1e-6)
    sent = np.array(table.column("hd_jpeg_bytes").to_pylist())[idx, k]
    measured = (ev["arrival_s"] >= res.scenario.stop.warmup_s).to_numpy()
    assert res.summary["comm_cost"]["image_bytes_per_request"] == pytest.approx(sent[measured].mean())


# ---------------------------------------------------------------- the seed's cost measures

@pytest.mark.parametrize("which", ["v1", "v2"])
def test_always_crop_costs_exactly_one_and_global_only_zero(which, v2_trace, synthetic_trace):
    trace = synthetic_trace if which == "v1" else v2_trace
    q = 10 if which == "v1" else 50
    # an overloaded server with admission drops: the measures count the served requests
    kw = {"server": {"replicas": 1, "model": "llava-1.5-7b", "scheduler": {"kind": "fifo"}, "max_queue": 2},
          "clients": {"count": 20, "arrival": {"kind": "poisson", "rate_per_s": 0.4},
                      "link_classes": [{"share": 1.0, "uplink_mbps": 10}]}}
    crop = run(v2_scenario(trace, {"kind": "always_crop", "jpeg_quality": q}, **kw)).summary
    glob = run(v2_scenario(trace, {"kind": "global_only", "jpeg_quality": q}, **kw)).summary
    gate = run(v2_scenario(trace, {"kind": "entropy_threshold", "threshold": 0.5, "jpeg_quality": q}, **kw)).summary
    assert crop["counts"]["dropped"] > 0
    assert crop["additional_comm_cost"] == 1.0
    assert glob["additional_comm_cost"] == 0.0
    assert 0.0 < gate["additional_comm_cost"] < 1.0
    if which == "v2":  # the trace has q100: relative to the global image at q100
        assert 0 < glob["relative_comm_cost"] < crop["relative_comm_cost"]
        assert crop["comm_cost"]["relative_comm_cost_reference"] == "global image at JPEG quality 100"
        at100 = run(v2_scenario(trace, {"kind": "global_only", "jpeg_quality": 100}, **kw)).summary
        assert at100["relative_comm_cost"] == 1.0
    else:  # the v1 synthetic trace stops at q95
        assert crop["relative_comm_cost"] is None
        assert "not available" in crop["comm_cost"]["relative_comm_cost_reference"]
    for s in (crop, glob):
        assert "additional" in format_summary(s) and "relative" in format_summary(s)


def test_check_recomputes_the_cost_measures_of_a_v2_run(v2_trace, tmp_path):
    out = tmp_path / "run"
    run(v2_scenario(v2_trace, {"kind": "entropy_threshold", "threshold": 0.5, "jpeg_quality": 25}), out)
    rep = check_run_dir(out)
    assert rep.ok, rep.format()
    s = json.loads((out / "summary.json").read_text())
    s["relative_comm_cost"] *= 1.1
    (out / "summary.json").write_text(json.dumps(s))
    assert any("relative_comm_cost" in v.message for v in check_run_dir(out).violations)


# ---------------------------------------------------------------- v1 still runs, and says so

def test_a_v1_trace_still_runs_and_is_flagged_everywhere(synthetic_trace, v2_trace, tmp_path):
    s = run(v2_scenario(synthetic_trace, {"kind": "always_crop", "jpeg_quality": 10})).summary
    assert s["trace"]["format_version"] == 1 and s["trace"]["accuracy_depends_on_jpeg_quality"] is False
    assert s["trace"]["note"] == V1_QUALITY_NOTE == "accuracy does not depend on JPEG quality (v1 trace)"
    assert V1_QUALITY_NOTE in format_summary(s)
    hi = run(v2_scenario(synthetic_trace, {"kind": "always_crop", "jpeg_quality": 95})).summary
    assert hi["accuracy"]["value"] == s["accuracy"]["value"]  # what the note warns about
    import pandas as pd

    table = pd.DataFrame([{"variant": "a", "policy": "always_crop", "policy_is_bound": False, "load_scale": 1.0,
                           "accuracy": 0.5, "trace_note": V1_QUALITY_NOTE}])
    assert f"note: {V1_QUALITY_NOTE}" in format_table(table)
    assert "note:" not in format_table(table.assign(trace_note=None))
    # reports say it too
    from edgevlm.analysis.report import build_report

    run_dir = tmp_path / "v1run"
    run(v2_scenario(synthetic_trace, {"kind": "global_only", "jpeg_quality": 75}), run_dir)
    rep = build_report([run_dir], tmp_path / "rep", tradeoff=False)
    assert V1_QUALITY_NOTE in rep.md_path.read_text()
    assert V1_QUALITY_NOTE in (tmp_path / "rep" / "report.html").read_text()
    v2 = run(v2_scenario(v2_trace, {"kind": "global_only", "jpeg_quality": 75})).summary
    assert V1_QUALITY_NOTE not in format_summary(v2)


# ---------------------------------------------------------------- provenance

def test_shipped_traces_are_labelled_and_from_clean_commits():
    """Every shipped trace says what it is; a trace from a model trained here is tiny-local, never real."""
    shipped = sorted((ROOT / "traces").glob("*.parquet"))
    assert shipped
    for path in shipped:
        prov = read_provenance(path)
        if prov["model_id"].startswith("tiny-"):
            assert prov["source_kind"] == "tiny-local", path.name
        if prov["source_kind"] == "synthetic":
            assert path.name.startswith("synthetic"), path.name
        commit = prov["generator"].rsplit("commit ", 1)[-1].rstrip(")")
        assert not commit.endswith("-dirty") and commit != "unknown", (path.name, prov["generator"])


def test_the_shipped_tiny_model_declares_tiny_local():
    for settings in (ROOT / "models" / "weights").glob("*/edgevlm.json"):
        assert json.loads(settings.read_text()).get("source_kind") == "tiny-local", settings


# ---------------------------------------------------------------- the default trace (tiny-scenetext-v2)

SHIPPED_V2 = ROOT / "traces" / "tiny-scenetext-v2.parquet"


def test_hd_tokens_are_converted_to_the_served_models_images():
    from edgevlm.sim.policies.full_cloud import hd_tokens_for_model
    assert hd_tokens_for_model([320, 128], 64, 576) == [2880, 1152]   # 5 and 2 tiny-model images
    assert hd_tokens_for_model([2880], 576, 576) == [2880]             # already in LLaVA-1.5's units
    assert hd_tokens_for_model([2880], None, 576) == [2880]            # units not recorded: taken as given


def test_full_cloud_on_the_tiny_trace_costs_an_hd_pass_of_the_served_model():
    """The tiny model's thumbnail + 4 tiles (5 x 64 tokens) becomes 5 x 576 tokens of LLaVA-1.5-7B."""
    from edgevlm.sim.profiles import MODELS
    res = run(base_scenario(SHIPPED_V2, policy={"kind": "full_cloud", "jpeg_quality": 75}, stop={"requests": 300}))
    tiles = set(pq.read_table(SHIPPED_V2, columns=["hd_tiles"]).column(0).to_pylist())
    assert tiles == {5}
    model = MODELS["llava-1.5-7b"]
    assert res.summary["flops_per_request"] == pytest.approx(model.flops(5 * model.visual_tokens), rel=1e-9)
    assert res.summary["flops_per_request"] > 4 * model.flops(model.visual_tokens)


def test_full_edge_says_its_accuracy_is_stage_one_on_the_device():
    res = run(base_scenario(SHIPPED_V2, policy={"kind": "full_edge"}, stop={"requests": 300}))
    note = res.summary["accuracy_note"]
    assert note.startswith("full-edge accuracy = stage-1 accuracy on the device")
    text = format_summary(res.summary)
    assert note in text and "n/a (the policy sends no image)" in text
    other = run(base_scenario(SHIPPED_V2, policy={"kind": "global_only", "jpeg_quality": 75}, stop={"requests": 300}))
    assert "accuracy_note" not in other.summary
    assert "n/a" not in format_summary(other.summary).split("comm cost")[1].split("\n")[0]
