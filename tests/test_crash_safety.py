"""Crash safety: Ctrl-C keeps a consistent partial run, kill -9 leaves no half-written file, reruns overwrite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml

from edgevlm.sim import recorder as sim_recorder
from edgevlm.sim import run
from edgevlm.sim.check import check_run_dir
from edgevlm.sim.interrupt import RunInterrupted
from tests.test_cli import ROOT, edgevlm


def leftovers(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


def test_sigint_mid_run_writes_a_consistent_partial_run(scenario_dict, tmp_path, monkeypatch):
    """A real SIGINT, raised deterministically at the 300th terminal request."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    original = sim_recorder.EventLog.__call__

    def call(self, req):
        original(self, req)
        if self.rows_written + self.rows_pending == 300:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(sim_recorder.EventLog, "__call__", call)
    out = tmp_path / "run"
    overloaded = {"count": 20, "arrival": {"kind": "poisson", "rate_per_s": 0.5}}  # the GPU queue grows
    with pytest.raises(RunInterrupted) as info:
        run(scenario_dict(stop={"requests": 2000}, clients=overloaded), out, audit=True)
    summary = json.loads((out / "summary.json").read_text())
    events = pq.read_table(out / "events.parquet")
    assert summary["complete"] is False
    assert summary["sim_time_s"] == info.value.sim_time_s > 0
    assert 300 <= events.num_rows < 2000 and summary["counts"]["arrived"] == events.num_rows
    assert events.column("done_s").to_numpy().max() <= summary["sim_time_s"]
    # work queued past the stop is not counted as busy time: the saturated GPU is ~100%, not more
    assert 0.95 < summary["gpu"]["utilisation"] <= 1.0 and summary["utilisation"]["gpu"] <= 1.0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    rep = check_run_dir(out)
    assert rep.ok, rep.format()
    assert leftovers(out) == []


def _long_scenario(tmp_path, synthetic_trace):
    from tests.conftest import base_scenario

    d = base_scenario(synthetic_trace, stop={"requests": 50_000_000})
    p = tmp_path / "long.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _start(args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "edgevlm", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_running(out, proc, extra_s):
    """Wait until the run streams its events (the simulation has started), then `extra_s` more."""
    deadline = time.monotonic() + 120
    while not (out / ".events.parquet.tmp").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "run did not start"
        time.sleep(0.05)
    time.sleep(extra_s)


def test_ctrl_c_in_a_subprocess_then_rerun_overwrites(tmp_path, synthetic_trace):
    sc = _long_scenario(tmp_path, synthetic_trace)
    out = tmp_path / "run"
    cmd = ["run", str(sc), "--out", str(out), "--no-progress"]
    times = []
    for extra_s in (1.5, 3.0):  # the same command twice: the second run replaces the first
        proc = _start(cmd)
        _wait_running(out, proc, extra_s)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("edgevlm: interrupted at simulated time")
        summary = json.loads((out / "summary.json").read_text())
        assert summary["complete"] is False and summary["sim_time_s"] > 0
        assert summary["counts"]["arrived"] == pq.read_metadata(out / "events.parquet").num_rows > 0
        rep = check_run_dir(out)
        assert rep.ok, rep.format()
        assert leftovers(out) == []
        times.append(summary["sim_time_s"])
    assert times[1] != times[0]


def test_kill_9_leaves_no_summary_and_a_rerun_cleans_up(tmp_path, synthetic_trace, scenario_dict):
    out = tmp_path / "run"
    first = tmp_path / "first"
    run(scenario_dict(stop={"requests": 300}), first, audit=True)
    for f in first.iterdir():  # a previous finished run in the same directory
        (out / f.name).parent.mkdir(exist_ok=True)
        (out / f.name).write_bytes(f.read_bytes())
    proc = _start(["run", str(_long_scenario(tmp_path, synthetic_trace)), "--out", str(out), "--no-progress"])
    _wait_running(out, proc, 0.5)
    proc.kill()
    proc.communicate(timeout=60)
    # the old summary went first; the old run's files are gone; only the killed run's temp file is left
    assert sorted(p.name for p in out.iterdir()) == [".events.parquet.tmp"]
    assert check_run_dir(out).violations[0].message.startswith("summary.json is missing")
    # rerun (without --audit) into the same directory: complete, consistent, no leftovers
    sc = tmp_path / "short.yaml"
    sc.write_text(yaml.safe_dump(scenario_dict(stop={"requests": 300})))
    proc = edgevlm("run", str(sc), "--out", str(out), "--no-progress", "-q")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["events.parquet", "scenario.yaml", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["complete"] is True
    assert check_run_dir(out).ok


def test_out_that_is_a_file_is_a_clean_error(tmp_path, scenario_dict):
    sc = tmp_path / "sc.yaml"
    sc.write_text(yaml.safe_dump(scenario_dict(stop={"requests": 10})))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = edgevlm("run", str(sc), "--out", str(blocker), "--no-progress", "-q")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--out" in proc.stderr and "not a directory" in proc.stderr
