"""Issue 22 items 4 and 13-16: the report as a reader meets it: what it shows, unstable runs marked,
readable axes and legends, server-only compute said, deadline-missing variants off the Pareto front."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
import yaml

from edgevlm.analysis import plots
from edgevlm.cli import main
from edgevlm.sim.stability import UNSTABLE_NOTE


@pytest.fixture(scope="module")
def overloaded_compare(tmp_path_factory, synthetic_trace):
    """global_only and always_crop at loads x1 and x12: always_crop's GPU queue grows at x12."""
    from tests.conftest import base_scenario

    d = tmp_path_factory.mktemp("cmp")
    (d / "base.yaml").write_text(yaml.safe_dump(base_scenario(synthetic_trace, stop={"requests": 3000, "warmup_s": 20})))
    (d / "c.yaml").write_text(yaml.safe_dump({"name": "ov", "base": "base.yaml", "load": {"scale": [1, 12]}, "variants": [
        {"name": "global_only", "policy": {"kind": "global_only", "jpeg_quality": 75}},
        {"name": "always_crop", "policy": {"kind": "always_crop", "jpeg_quality": 75}}]}))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["compare", str(d / "c.yaml"), "--out", str(d / "out"), "--no-progress"])
    assert rc == 0, err.getvalue()
    return d / "out", out.getvalue()


def test_unstable_run_is_marked_in_compare_table_and_report(overloaded_compare):
    out, printed = overloaded_compare
    res = pd.read_parquet(out / "results.parquet")
    bad = res[res["stable"].eq(False)]
    assert list(zip(bad["variant"], bad["load_scale"])) == [("always_crop", 12.0)]
    assert (bad["served_per_s"] < 0.98 * bad["offered_per_s"]).all()
    assert "always_crop UNSTABLE*" in printed and UNSTABLE_NOTE in printed
    html = (out / "report" / "report.html").read_text()
    md = (out / "report" / "report.md").read_text()
    assert UNSTABLE_NOTE in html and UNSTABLE_NOTE in md and "except rows marked UNSTABLE*" in md
    row = next(line for line in md.splitlines() if "always_crop UNSTABLE*" in line)
    cells = row.split("|")
    assert "±" in cells[3]  # accuracy keeps its CI
    assert not any("±" in c for c in cells[4:8])  # latency mean/p50/p95/p99: no steady-state CI


def test_report_says_what_it_shows(overloaded_compare):
    md = (overloaded_compare[0] / "report" / "report.md").read_text()
    ctx = md.split("## What this report shows")[1].split("## Summary")[0]
    for needle in ("| scenario | ov: 2 variant(s), 4 run(s)", "syn.parquet [synthetic", "| requests | 3000 requests per run; "
                   "warm-up 20 s", "| seed | 3 ", "| deadline | 2 s", "llava-1.5-7b on 1 x", "fifo scheduler",
                   "| single-load figures |", "load × 1 of the base scenario"):
        assert needle in ctx, (needle, ctx)


def test_phase_table_has_one_format_and_no_all_zero_column(overloaded_compare):
    md = (overloaded_compare[0] / "report" / "report.md").read_text()
    table = md.split("## Mean latency by phase (s)")[1].split("## Figures")[0].strip().splitlines()
    head = [c.strip() for c in table[0].strip("|").split("|")]
    cells = [c.strip() for line in table[2:] for c in line.strip("|").split("|")[1:]]
    assert cells and all(len(c.split(".")[-1]) == 3 for c in cells), cells
    for col in range(1, len(head)):
        assert any(float(line.strip("|").split("|")[col]) != 0 for line in table[2:]), head[col]


class Capture:
    """plots.save replaced: keep the figure open for inspection."""

    def __init__(self):
        self.figs = []

    def __call__(self, fig, path):
        self.figs.append(fig)
        return path


@pytest.fixture
def captured(monkeypatch):
    cap = Capture()
    monkeypatch.setattr(plots, "save", cap)
    return cap


def _table():
    return pd.DataFrame([
        dict(variant="global_only", policy_is_bound=False, uplink_bytes_per_request=2300, accuracy=0.47,
             relative_computation=1.0, deadline_met_rate=0.99, offered_load_per_s=2, latency_p95_s=0.3, stable=True),
        dict(variant="entropy", policy_is_bound=False, uplink_bytes_per_request=2800, accuracy=0.60,
             relative_computation=1.7, deadline_met_rate=0.97, offered_load_per_s=2, latency_p95_s=0.6, stable=True),
        dict(variant="full_edge", policy_is_bound=False, uplink_bytes_per_request=300, accuracy=0.47,
             relative_computation=0.0, deadline_met_rate=0.0, offered_load_per_s=2, latency_p95_s=7.0, stable=True),
        dict(variant="always_crop", policy_is_bound=False, uplink_bytes_per_request=4300, accuracy=0.64,
             relative_computation=4.0, deadline_met_rate=0.2, offered_load_per_s=4, latency_p95_s=300.0, stable=False),
        dict(variant="oracle", policy_is_bound=True, uplink_bytes_per_request=2700, accuracy=0.69,
             relative_computation=1.6, deadline_met_rate=0.98, offered_load_per_s=2, latency_p95_s=0.5, stable=True),
    ])


def test_pareto_front_skips_deadline_missing_variants_and_legend_explains_marks(captured, tmp_path):
    t = _table()
    colours = plots.palette(list(t["variant"]))
    plots.accuracy_vs_bytes(t, tmp_path / "a.png", colours)
    ax = captured.figs[-1].axes[0]
    front = next(line for line in ax.get_lines() if line.get_label().startswith("Pareto front"))
    assert list(front.get_xdata()) == [2.3, 2.8]  # full_edge (0.3 kB) misses the deadline: not the front's anchor
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("dashed: oracle" in x for x in labels) and any("black edge" in x for x in labels)
    assert any("within the deadline" in x for x in labels)


def test_compute_axis_says_server_work_only(captured, tmp_path):
    t = _table()
    plots.accuracy_vs_compute(t, tmp_path / "c.png", plots.palette(list(t["variant"])))
    ax = captured.figs[-1].axes[0]
    assert "server" in ax.get_xlabel() and "edge-device work not counted" in ax.get_xlabel()
    assert any("no server FLOPs" in x.get_text() for x in ax.texts)
    from edgevlm.analysis.report import DISPLAY

    assert ("flops_per_request", "server TFLOPs/req") in [(c, h) for c, h, *_ in DISPLAY]


def test_p95_vs_load_is_log_scale_with_deadline_and_unstable_marks(captured, tmp_path):
    t = _table()
    plots.load_curves(t, "latency_p95_s", "p95", "t", tmp_path / "l.png", plots.palette(list(t["variant"])),
                      log_y=True, deadline_s=2.0)
    ax = captured.figs[-1].axes[0]
    assert ax.get_yscale() == "log"
    labels = [x.get_text() for x in ax.get_legend().get_texts()]
    assert "deadline 2 s" in labels and any(x.startswith("UNSTABLE") for x in labels)
    # the legend sits outside the plotting area
    assert ax.get_legend().get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1


def test_throughput_over_time_is_small_multiples_with_distinct_colours(captured, tmp_path):
    names = ["global_only", "always_crop", "entropy_0.6", "random_0.33", "oracle", "full_edge", "progressive", "adaptive"]
    series = {n: pd.DataFrame({"t_s": np.arange(10.0), "completed_per_s": np.ones(10)}) for n in names}
    colours = plots.palette(names)
    plots.throughput_over_time(series, 2.0, tmp_path / "t.png", colours)
    axes = [a for a in captured.figs[-1].axes if a.get_visible()]
    assert len(axes) == len(names) and [a.get_title(loc="left") for a in axes] == names
    rgb = np.array([mcolors.to_rgb(colours[n]) for n in names])
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(names)) * 9
    assert dist.min() > 0.2, dist.min()
    assert np.linalg.norm(rgb[names.index("always_crop")] - rgb[names.index("full_edge")]) > 0.3


def test_figures_are_sharp_enough_for_a_laptop_screen():
    assert plots.DPI >= 140
