"""Reproducibility: byte-identical outputs, a recorded environment, and `edgevlm run --replay` diffs."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgevlm.sim import parse_scenario, run
from edgevlm.cli import main
from edgevlm.traces.eventlog import EVENT_SCHEMA
from edgevlm.sim.rundir import LIBRARIES, file_sha256


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, synthetic_trace):
    from tests.conftest import base_scenario

    sc = base_scenario(synthetic_trace, stop={"time_s": 300.0, "warmup_s": 10.0},
                       clients={"count": 30, "arrival": {"kind": "periodic", "fps": 0.1}})
    root = tmp_path_factory.mktemp("repro")
    run(sc, root / "a", audit=True)
    run(sc, root / "b", audit=True)
    return sc, root / "a", root / "b"


def test_same_scenario_and_seed_give_byte_identical_files(recorded):
    _, a, b = recorded
    names = sorted(p.name for p in a.iterdir())
    assert names == ["audit.parquet", "events.parquet", "scenario.yaml", "summary.json"]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_run_directory_records_versions_scenario_hash_and_trace(recorded, synthetic_trace):
    sc, a, _ = recorded
    s = json.loads((a / "summary.json").read_text())
    env = s["environment"]
    assert env["edgevlm_sim"] and env["python"].count(".") == 2 and env["platform"]
    assert all(env[lib] for lib in LIBRARIES), env
    assert env["git_commit"] is None or len(env["git_commit"].split("-")[0]) == 40
    h = parse_scenario(sc).hash()
    assert s["scenario_hash"] == h
    assert pq.read_schema(a / "events.parquet").metadata[b"edgevlm_scenario_hash"].decode() == h
    assert s["trace"]["sha256"] == file_sha256(synthetic_trace)


def replay(capsys, run_dir, *extra):
    rc = main(["run", "--replay", str(run_dir), *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_replay_of_an_untouched_run_is_identical(recorded, capsys):
    _, a, _ = recorded
    rc, out, _ = replay(capsys, a)
    assert rc == 0 and "identical" in out


@pytest.fixture
def copy_of(recorded, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(recorded[1], dst)
    return dst


def test_replay_names_the_column_and_request_that_differ(copy_of, capsys):
    t = pq.read_table(copy_of / "events.parquet")
    df = t.to_pandas()
    df.loc[df.request_id == 17, "done_s"] += 1.0
    pq.write_table(pa.Table.from_pandas(df, schema=EVENT_SCHEMA.with_metadata(t.schema.metadata),
                                        preserve_index=False), copy_of / "events.parquet")
    rc, out, _ = replay(capsys, copy_of)
    assert rc == 1
    assert "column 'done_s' differs in 1 row(s)" in out and "(request 17)" in out


def test_replay_names_the_summary_value_that_differs(copy_of, capsys):
    p = copy_of / "summary.json"
    s = json.loads(p.read_text())
    s["accuracy"]["value"] += 0.01
    s["environment"]["numpy"] = "0.0-old"  # environment changes are notes, not differences
    p.write_text(json.dumps(s, indent=2))
    rc, out, _ = replay(capsys, copy_of)
    assert rc == 1 and "summary.json: accuracy.value" in out and "1 difference(s)" in out
    assert "note: environment.numpy: 0.0-old ->" in out


def test_replay_reports_a_changed_trace(recorded, tmp_path, capsys, synthetic_trace):
    from edgevlm.traces.synthetic import write_synthetic

    _, a, _ = recorded
    dst = tmp_path / "run"
    shutil.copytree(a, dst)
    other = write_synthetic(tmp_path / "other.parquet", n_samples=400, seed=8)
    s = json.loads((dst / "summary.json").read_text())
    s["trace"]["path"] = str(other)  # as if the trace file had been regenerated in place
    (dst / "summary.json").write_text(json.dumps(s))
    rc, out, _ = replay(capsys, dst)
    assert rc == 1 and "changed since the run" in out and "column 'sample_id' differs" in out


def test_replay_refuses_interrupted_runs_and_mixed_arguments(copy_of, capsys):
    p = copy_of / "summary.json"
    s = json.loads(p.read_text())
    s["complete"] = False
    p.write_text(json.dumps(s))
    rc, _, err = replay(capsys, copy_of)
    assert rc == 2 and "was interrupted" in err
    rc = main(["run", "scenarios/quickstart.yaml", "--replay", str(copy_of)])
    assert rc == 2 and "not both" in capsys.readouterr().err
