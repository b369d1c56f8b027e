"""Issue 26 item 4: a sweep on a real Dask cluster (a scheduler and two workers started as separate
processes on loopback) gives the process pool's results, and everything shuts down in bounded time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from edgevlm.sim.sweep import run_sweep

distributed = pytest.importorskip("distributed")

START_TIMEOUT_S = 90


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process we started, then SIGKILL any that outlive 20 s."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def test_sweep_on_a_separately_started_dask_cluster_matches_the_pool(tmp_path, scenario_dict):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": scenario_dict(stop={"requests": 300}),
                                     "grid": {"policy.threshold": [0.2, 0.8]}, "seeds": [1, 2]}))
    env = os.environ | {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    sched_file = tmp_path / "scheduler.json"
    procs: list[subprocess.Popen] = []
    logs = [open(tmp_path / f"{name}.log", "w") for name in ("scheduler", "worker1", "worker2")]
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(sched_file)], env=env, stdout=logs[0], stderr=subprocess.STDOUT))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not sched_file.exists() or not sched_file.read_text().strip():
            assert time.monotonic() < deadline and procs[0].poll() is None, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for log in logs[1:]:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                 "--nworkers", "1", "--no-dashboard", "--memory-limit", "0", "--death-timeout", "60"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path))
        with distributed.Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT_S)
            assert len(client.scheduler_info()["workers"]) == 2
        cli = subprocess.run([sys.executable, "-m", "edgevlm", "sweep", str(sweep), "--out", str(tmp_path / "dask"),
                              "--dask", address, "--no-progress"], env=os.environ, capture_output=True, text=True,
                             timeout=300)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        with distributed.Client(address, timeout="30s") as client:  # the workers ran the 4 runs
            executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
            assert len(executed) == 2 and sum(executed.values()) >= 4, executed
    finally:
        t0 = time.monotonic()
        _stop(procs[1:])
        _stop(procs[:1])
        for log in logs:
            log.close()
    assert all(p.returncode is not None for p in procs) and time.monotonic() - t0 < 60
    pool = run_sweep(str(sweep), tmp_path / "pool", workers=2)
    dask = pd.read_parquet(tmp_path / "dask" / "results.parquet")
    assert len(pool) == 4 and (pool["status"] == "ok").all() and dask["check_ok"].all()
    pd.testing.assert_frame_equal(dask, pd.read_parquet(tmp_path / "pool" / "results.parquet"))
