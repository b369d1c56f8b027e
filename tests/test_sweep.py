"""Sweeps: axis expansion, process pool vs Dask give identical results, resume, failures recorded."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from edgevlm.sim.errors import ConfigError, UserError
from edgevlm.sim import sweep
from edgevlm.sim.sweep import SweepSpec, expand, parse_path, run_sweep, set_path, start_pool


def write_sweep(tmp_path, scenario_dict, **spec) -> str:
    base = scenario_dict(stop={"requests": 300})
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump({"base": base, **spec}))
    return str(p)


def test_paths_parse_and_set():
    assert parse_path("clients.link_classes[1].uplink_mbps") == ["clients", "link_classes", 1, "uplink_mbps"]
    d = {"clients": {"link_classes": [{"share": 1}]}}
    set_path(d, "clients.link_classes[0].uplink_mbps", 5)
    set_path(d, "server.max_queue", 3)
    assert d == {"clients": {"link_classes": [{"share": 1, "uplink_mbps": 5}]}, "server": {"max_queue": 3}}
    with pytest.raises(ConfigError, match=r"index \[2\] is out of range"):
        set_path(d, "clients.link_classes[2].share", 1)
    with pytest.raises(ValueError, match="not a YAML path"):
        parse_path("policy..threshold")


@pytest.mark.skipif("forkserver" not in __import__("multiprocessing").get_all_start_methods(),
                    reason="no forkserver on this platform (the pool spawns workers that import on their own)")
def test_pool_workers_start_at_once_with_the_simulator_already_imported():
    """Issue 26: N workers must not each pay the simulator's import; the forkserver imported it once."""
    pool = start_pool(2)
    try:
        assert len(pool._processes) == 2  # started before any run was submitted
        # a builtin, so unpickling the task imports nothing: only the forkserver's preload put it there
        loaded = pool.submit(eval, "'edgevlm.sim.runner' in __import__('sys').modules").result(timeout=120)
        assert loaded is True
    finally:
        pool.shutdown()


def test_grid_zip_and_seeds_expand_in_order():
    spec = SweepSpec(base={}, grid={"policy.threshold": [0.1, 0.2], "clients.count": [1, 2, 3]},
                     zip={"a.x": [1, 2], "a.y": [3, 4]}, seeds=[7, 8])
    runs = expand(spec, {"seed": 0})
    assert len(runs) == 2 * 3 * 2 * 2
    axes, sc = runs[0]
    assert axes == {"policy.threshold": 0.1, "clients.count": 1, "a.x": 1, "a.y": 3, "seed": 7}
    assert sc == {"seed": 7, "policy": {"threshold": 0.1}, "clients": {"count": 1}, "a": {"x": 1, "y": 3}}
    assert {(a["a.x"], a["a.y"]) for a, _ in runs} == {(1, 3), (2, 4)}
    assert [a["seed"] for a, _ in expand(SweepSpec(base={}, replications=3), {"seed": 5})] == [5, 6, 7]
    with pytest.raises(ValueError, match="equal lengths"):
        SweepSpec(base={}, zip={"a": [1], "b": [1, 2]})


def test_pool_and_dask_give_identical_results_and_resume(tmp_path, scenario_dict):
    distributed = pytest.importorskip("distributed")
    path = write_sweep(tmp_path, scenario_dict, grid={"policy.threshold": [0.2, 0.8]}, seeds=[1, 2])
    pool = run_sweep(path, tmp_path / "pool", workers=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        dask = run_sweep(path, tmp_path / "dask", client=client)
    assert len(pool) == 4 and (pool["status"] == "ok").all()
    pd.testing.assert_frame_equal(pool, dask)
    assert pool["retransmission_rate"].iloc[0] > pool["retransmission_rate"].iloc[2]  # eta 0.2 crops more
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "pool" / "results.parquet"), pool)
    again = run_sweep(path, tmp_path / "pool", workers=1)
    assert again["resumed"].all()
    pd.testing.assert_frame_equal(again.drop(columns="resumed"), pool.drop(columns="resumed"))


def test_invalid_runs_stop_the_sweep_before_any_output_listing_each(tmp_path, scenario_dict):
    """Issue 22 items 1, 7, 11: like compare, an invalid run (schema or against the trace) is an error
    naming every bad run and field, raised before anything is written."""
    path = write_sweep(tmp_path, scenario_dict, grid={"policy.jpeg_quality": [75, 60],
                                                      "clients.arrival.rate_per_s": [0.05, -1]})
    with pytest.raises(UserError) as info:
        run_sweep(path, tmp_path / "out", workers=1)
    lines = str(info.value).splitlines()
    assert len(lines) == 3, lines  # (75, -1), (60, 0.05) and (60, -1)
    assert any("policy.jpeg_quality" in line and "60" in line for line in lines)
    assert any("clients.arrival.rate_per_s" in line for line in lines)
    assert not (tmp_path / "out").exists()


def test_runs_failing_at_run_time_are_recorded_without_stopping(tmp_path, scenario_dict, monkeypatch):
    from edgevlm.sim import sweep

    real = sweep.run

    def flaky(scenario, out_dir=None, **kw):
        if scenario["policy"]["jpeg_quality"] == 50:
            raise RuntimeError("disk on fire")
        return real(scenario, out_dir, **kw)

    monkeypatch.setattr(sweep, "run", flaky)  # sim/sweep.py imports run at module level
    path = write_sweep(tmp_path, scenario_dict, grid={"policy.jpeg_quality": [75, 50]})
    df = run_sweep(path, tmp_path / "out", workers=1)
    by = {r["policy.jpeg_quality"]: r for _, r in df.iterrows()}
    assert by[75]["status"] == "ok"
    assert by[50]["status"] == "failed" and "disk on fire" in by[50]["error"]


def test_sweep_and_compare_files_use_the_bounded_yaml_loader(tmp_path):
    """Alias bombs and duplicate keys are refused in sweep and compare files, as in scenarios."""
    from edgevlm.sim.compare import load_compare
    from edgevlm.sim.sweep import load_sweep

    bomb = tmp_path / "bomb.yaml"
    rows = ["a: &a [1,1,1,1,1,1,1,1,1,1]"] + [
        f"{k}: &{k} [{', '.join([f'*{p}'] * 10)}]" for p, k in zip("abcde", "bcdef")]
    bomb.write_text("\n".join(rows) + "\n")
    dup = tmp_path / "dup.yaml"
    dup.write_text("base: a.yaml\nbase: b.yaml\n")
    for load in (load_sweep, load_compare):
        with pytest.raises(ConfigError, match="expands to more than"):
            load(bomb)
        with pytest.raises(ConfigError, match="base"):
            load(dup)
