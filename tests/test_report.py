"""Comparison reports: the shipped compare runs, every figure is written, numbers match the events,
and the HTML renders in a real headless Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compare_out(tmp_path_factory):
    """The shipped compare_policies.yaml through the CLI, on a short horizon."""
    out = tmp_path_factory.mktemp("compare")
    proc = subprocess.run([sys.executable, "-m", "edgevlm", "compare", "scenarios/compare_policies.yaml", "--out", str(out),
                           "--requests", "1500", "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


def test_compare_runs_every_variant_of_the_shipped_file(compare_out):
    import yaml

    spec = yaml.safe_load((ROOT / "scenarios" / "compare_policies.yaml").read_text())
    table = pd.read_parquet(compare_out / "report" / "results.parquet")
    scales = spec.get("load", {}).get("scale", [1.0])
    assert list(dict.fromkeys(table["variant"])) == [v["name"] for v in spec["variants"]]
    assert len(table) == len(spec["variants"]) * len(scales)
    assert table.loc[table["variant"] == "oracle", "policy_is_bound"].all()


def test_every_figure_exists_and_is_a_png(compare_out):
    rep = compare_out / "report"
    for name in ("accuracy_vs_bytes", "accuracy_vs_compute", "latency_cdf", "latency_breakdown",
                 "throughput_over_time", "tradeoff"):
        data = (rep / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    assert "![latency_cdf](latency_cdf.png)" in (rep / "report.md").read_text()
    # the FIFO server has no KV model: no KV section or figure
    assert not (rep / "kv_use.png").exists() and "KV cache" not in (rep / "report.md").read_text()


def test_table_numbers_equal_those_recomputed_from_events(compare_out):
    table = pd.read_parquet(compare_out / "report" / "results.parquet")
    for _, r in table.iterrows():
        ev = pd.read_parquet(Path(r["run_dir"]) / "events.parquet")
        meas = ev[ev["arrival_s"] >= r["warmup_s"]]
        ok = meas[meas["status"] == "ok"]
        assert r["accuracy"] == pytest.approx(ok["score"].mean(), rel=1e-6)
        assert r["latency_mean_s"] == pytest.approx(ok["latency_s"].mean(), rel=1e-9)
        assert r["latency_p95_s"] == pytest.approx(np.percentile(ok["latency_s"], 95), rel=1e-9)
        assert r["uplink_bytes_per_request"] == pytest.approx(meas["uplink_bytes"].mean(), rel=1e-9)
        assert r["retransmission_rate"] == pytest.approx((ok["stages"] == 2).mean(), abs=1e-12) \
            or r["policy"] in ("progressive", "full_cloud")
        assert r["flops_per_request"] == pytest.approx(ok["flops"].mean(), rel=1e-9)


def test_report_rebuilds_from_runs_without_resimulating(compare_out, tmp_path):
    from edgevlm.analysis.report import build_report

    runs = sorted((compare_out / "runs").iterdir())[:3]
    rep = build_report(runs, tmp_path / "rep", tradeoff=False)
    assert len(rep.table) == 3 and rep.html_path.read_text().count("<img") == len(rep.figures)
    a = pd.read_parquet(tmp_path / "rep" / "results.parquet").set_index("run_dir")
    b = pd.read_parquet(compare_out / "report" / "results.parquet").set_index("run_dir").loc[a.index]
    pd.testing.assert_series_equal(a["accuracy"], b["accuracy"])


def test_load_axis_draws_load_curves(tmp_path, synthetic_trace):
    import yaml

    from edgevlm.analysis.report import build_report
    from conftest import base_scenario
    from edgevlm.sim.compare import run_compare

    spec = {"name": "load", "base": base_scenario(synthetic_trace, stop={"requests": 800}),
            "variants": [{"name": "g", "policy": {"kind": "global_only"}},
                         {"name": "e", "policy": {"kind": "entropy_threshold", "threshold": 0.5}}],
            "load": {"scale": [0.5, 1.0, 3.0]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec))
    df = run_compare(tmp_path / "c.yaml", tmp_path / "out")
    df.to_parquet(tmp_path / "out" / "results.parquet")
    rep = build_report([tmp_path / "out"], tmp_path / "rep", tradeoff=False)
    assert {"load_latency", "goodput_vs_load"} <= set(rep.figures)
    assert rep.table.groupby("variant")["offered_load_per_s"].nunique().min() == 3


def test_report_renders_in_headless_chromium(compare_out):
    from tests.browser import IMAGE_WIDTHS, run_scripts

    widths, rows = run_scripts(compare_out / "report" / "report.html", IMAGE_WIDTHS,
                               "return document.querySelectorAll('#summary tbody tr').length")
    table = pd.read_parquet(compare_out / "report" / "results.parquet")
    assert len(widths) >= 6 and all(w > 0 for w in widths), widths
    assert rows == len(table)


def test_report_tables_stay_within_the_page(compare_out):
    """At the page's full width (1100 px) every table fits; in a narrow window a wide table scrolls in its
    own box and the page itself never scrolls sideways."""
    from tests.browser import TABLE_WIDTHS, run_scripts

    page = compare_out / "report" / "report.html"
    (body, _, _, tables), = run_scripts(page, TABLE_WIDTHS, window=(1280, 900))
    assert body == 1100 and {"summary", "summary_cost"} <= {name for name, _ in tables}
    assert all(w <= body for _, w in tables), tables
    (_, viewport, scroll, _), = run_scripts(page, TABLE_WIDTHS, window=(700, 900))
    assert scroll <= viewport, (scroll, viewport)


def test_trace_inspect_prints_provenance_and_accuracy(tmp_path, synthetic_trace):
    proc = subprocess.run([sys.executable, "-m", "edgevlm", "trace", "inspect", str(synthetic_trace), "--plot",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "source_kind: synthetic" in proc.stdout and "SYNTHETIC" in proc.stdout
    for qt in ("text", "color", "count", "yesno"):
        assert qt in proc.stdout
    assert (tmp_path / "trace_min_entropy.png").stat().st_size > 5000
