"""Scenario files in scenarios/ load, and `compare` runs every policy variant on one workload."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from edgevlm.cli import main
from edgevlm.sim.compare import load_compare, run_compare
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.policies import policies
from edgevlm.sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
SHORT = {"stop": {"requests": 300, "warmup_s": 0}}


def scenario_files():
    """Scenario files; compare files (`variants`) and sweep files (`base` + axes) are not scenarios."""
    return sorted(p for p in SCENARIOS.glob("*.yaml") if "base" not in yaml.safe_load(p.read_text()))


def compare_files():
    return sorted(p for p in SCENARIOS.glob("*.yaml") if "variants" in yaml.safe_load(p.read_text()))


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.name)
def test_every_scenario_file_loads(path):
    sc, _ = load_scenario(path)
    assert sc.name == path.stem


def test_there_is_a_scenario_per_policy():
    kinds = {load_scenario(p)[0].policy.kind for p in scenario_files()}
    assert set(policies.kinds()) <= kinds


def test_compare_policies_runs_every_policy_on_one_workload(tmp_path, capsys):
    path = SCENARIOS / "compare_policies.yaml"
    spec, _ = load_compare(path)
    kinds = {v.policy["kind"] for v in spec.variants}
    # every policy, on the default trace (v2: per-quality scores, HD answers and progressive levels)
    assert set(policies.kinds()) <= kinds
    assert spec.base == "quickstart.yaml"
    assert "trace: traces/tiny-scenetext-v2.parquet" in (SCENARIOS / "quickstart.yaml").read_text()
    out = tmp_path / "cmp"
    assert main(["compare", str(path), "--out", str(out), "--requests", "300", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "oracle (bound)" in printed and "SYNTHETIC" not in printed
    df = pd.read_parquet(out / "results.parquet")
    assert list(df["variant"]) == [v.name for v in spec.variants for _ in spec.load.scale]
    assert df[df["variant"] == "oracle"]["policy_is_bound"].all()
    assert not df.drop(df.index[df["variant"] == "oracle"])["policy_is_bound"].any()
    assert (df["requests_arrived"] == 300).all() and (df["requests_measured"] > 0).all()
    for name, scale in zip(df["variant"], df["load_scale"]):
        assert (out / "runs" / f"{name}-load{scale:g}" / "summary.json").is_file()


def test_variants_share_arrivals_and_samples(tmp_path):
    """Common random numbers: every variant sees the same arrival times, clients and samples."""
    spec = {"name": "crn", "base": str(SCENARIOS / "quickstart.yaml"), "set": SHORT,
            "variants": [{"name": "a", "policy": {"kind": "global_only"}},
                         {"name": "b", "policy": {"kind": "always_crop"}},
                         {"name": "c", "policy": {"kind": "random_retransmit", "p": 0.5}}]}
    run_compare(spec, tmp_path)
    evs = [pd.read_parquet(tmp_path / "runs" / v / "events.parquet").sort_values("request_id") for v in "abc"]
    for e in evs[1:]:
        for col in ("arrival_s", "client_id", "sample_id"):
            assert e[col].tolist() == evs[0][col].tolist()


def test_every_compare_file_runs_short(tmp_path):
    for path in compare_files():
        df = run_compare(path, overrides=SHORT)
        spec = load_compare(path)[0]
        assert len(df) == len(spec.variants) * (len(spec.load.scale) if spec.load else 1), path.name
        assert df["accuracy"].notna().all(), path.name


def test_load_axis_scales_the_arrival_rate():
    spec = {"name": "ld", "base": str(SCENARIOS / "quickstart.yaml"), "set": {"stop": {"time_s": 120, "requests": None, "warmup_s": 0}},
            "variants": [{"name": "g", "policy": {"kind": "global_only"}}], "load": {"scale": [0.5, 2.0]}}
    df = run_compare(spec)
    lo, hi = df["throughput_per_s"]
    assert list(df["load_scale"]) == [0.5, 2.0] and hi > 3 * lo


@pytest.mark.parametrize("bad, msg", [
    ({"base": "quickstart.yaml", "variants": []}, r"variants: List should have at least 1 item"),
    ({"base": "quickstart.yaml", "variants": [{"name": "a", "policy": {"kind": "global_only"}}] * 2},
     r"used twice"),
    ({"base": "quickstart.yaml", "variant": []}, r"variant: unknown key \(did you mean 'variants'\?\); allowed keys: name, base, set, variants"),
    ({"base": "quickstart.yaml", "variants": [{"name": "a", "policy": {"kind": "entropy_threshold",
                                                                       "treshold": 1}}]},
     r"variants\[0\] \(a\): policy\.treshold: unknown key \(did you mean 'threshold'\?\)"),
    ({"base": "missing.yaml", "variants": [{"name": "a", "policy": {"kind": "global_only"}}]},
     r"base: scenario file not found"),
])
def test_bad_compare_files_name_the_field(tmp_path, bad, msg):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(bad))
    (tmp_path / "quickstart.yaml").write_text((SCENARIOS / "quickstart.yaml").read_text())
    with pytest.raises(ConfigError, match=msg):
        run_compare(p, overrides=SHORT)
