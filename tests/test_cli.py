"""The CLI as a user meets it: exit codes, one-line errors, the default quickstart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def edgevlm(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edgevlm", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def write(tmp_path, data) -> Path:
    p = tmp_path / "sc.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def assert_clean_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_typo_key_exits_2_naming_the_field(scenario_dict, tmp_path):
    d = scenario_dict()
    d["policy"]["treshold"] = d["policy"].pop("threshold")
    assert_clean_error(edgevlm("run", str(write(tmp_path, d))), "policy.treshold", "unknown key", "threshold")


def test_negative_rate_exits_2_naming_the_field(scenario_dict, tmp_path):
    d = scenario_dict(clients={"count": 5, "arrival": {"kind": "poisson", "rate_per_s": -2}})
    assert_clean_error(edgevlm("run", str(write(tmp_path, d))), "clients.arrival.rate_per_s", "greater than 0")


def test_missing_trace_exits_2_naming_the_field(scenario_dict, tmp_path):
    d = scenario_dict()
    d["trace"] = "traces/nope.parquet"
    assert_clean_error(edgevlm("run", str(write(tmp_path, d))), "trace", "not found", "nope.parquet")


def test_missing_scenario_file(tmp_path):
    assert_clean_error(edgevlm("run", str(tmp_path / "none.yaml")), "scenario file not found")


def test_run_writes_outputs_and_prints_a_summary(scenario_dict, tmp_path):
    out = tmp_path / "run"
    proc = edgevlm("run", str(write(tmp_path, scenario_dict())), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "latency p50/p95/p99" in proc.stdout
    assert "SYNTHETIC" in proc.stdout  # synthetic traces are labelled wherever they appear
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["arrived"] == 2000 and summary["trace"]["source_kind"] == "synthetic"
    import pyarrow.parquet as pq

    meta = pq.read_schema(out / "events.parquet").metadata
    assert meta[b"edgevlm_scenario_hash"].decode() == summary["scenario_hash"]
    assert yaml.safe_load(meta[b"edgevlm_scenario"])["policy"]["kind"] == "entropy_threshold"
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*tmp"))


def test_default_run_uses_the_quickstart_on_the_shipped_trace(tmp_path):
    proc = edgevlm("run", "--out", str(tmp_path / "q"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert summary["scenario"] == "quickstart" and summary["counts"]["ok"] > 0


def test_help_explains_the_commands():
    proc = edgevlm("--help")
    assert proc.returncode == 0 and "run" in proc.stdout and "trace" in proc.stdout
    assert "quickstart" in edgevlm("run", "--help").stdout


def test_trace_validate_reports_bad_files(tmp_path, synthetic_trace):
    ok = edgevlm("trace", "validate", str(synthetic_trace))
    assert ok.returncode == 0 and "valid v1 trace" in ok.stdout and "synthetic" in ok.stdout
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    assert_clean_error(edgevlm("trace", "validate", str(junk)), "junk.parquet", "not a readable Parquet file")
