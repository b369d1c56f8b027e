"""Issue 22 items 1 and 11: an invalid run never touches earlier results; run, compare and sweep alike."""

from __future__ import annotations

import pytest
import yaml

from edgevlm.cli import main
from tests.test_cli import ROOT

SHIPPED_TRACE = ROOT / "traces" / "tiny-scenetext-v1.parquet"  # real tiny-local trace: no hd_* columns


def snapshot(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def cli(capsys, *args):
    rc = main([*args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error(rc, err, *needles):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("edgevlm: error: ") for line in lines), err
    for n in needles:
        assert n in err, err


def small(scenario_dict, **kw):
    return scenario_dict(stop={"requests": 150}, **kw)


@pytest.mark.parametrize("bad_policy,trace,field", [
    ({"kind": "global_only", "jpeg_quality": 60}, None, "policy.jpeg_quality"),
    ({"kind": "full_cloud"}, SHIPPED_TRACE, "policy.kind"),
])
def test_invalid_rerun_keeps_the_previous_good_run(scenario_dict, tmp_path, capsys, bad_policy, trace, field):
    good = small(scenario_dict, policy={"kind": "global_only", "jpeg_quality": 75})
    if trace is not None:
        good["trace"] = str(trace)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(good))
    out = tmp_path / "runs" / "mine"
    assert cli(capsys, "run", str(path), "--out", str(out), "-q")[0] == 0
    before = snapshot(out)
    assert {"summary.json", "events.parquet", "scenario.yaml"} <= set(before)
    path.write_text(yaml.safe_dump(dict(good, policy=bad_policy)))
    rc, _, err = cli(capsys, "run", str(path), "--out", str(out), "-q")
    one_error(rc, err, field)
    assert snapshot(out) == before  # nothing removed, nothing rewritten


def test_invalid_compare_variant_keeps_the_previous_compare(scenario_dict, tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(small(scenario_dict)))
    spec = {"name": "c", "base": "base.yaml",
            "variants": [{"name": "g", "policy": {"kind": "global_only", "jpeg_quality": 75}},
                         {"name": "a", "policy": {"kind": "always_crop", "jpeg_quality": 75}}]}
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(spec))
    out = tmp_path / "cmp"
    assert cli(capsys, "compare", str(f), "--out", str(out), "--no-report", "-q")[0] == 0
    before = snapshot(out)
    spec["variants"][1]["policy"]["jpeg_quality"] = 60  # the SECOND variant fails only against the trace
    f.write_text(yaml.safe_dump(spec))
    rc, _, err = cli(capsys, "compare", str(f), "--out", str(out), "--no-report", "-q")
    one_error(rc, err, "variant a", "policy.jpeg_quality")
    assert snapshot(out) == before


def test_sweep_with_an_invalid_run_exits_2_before_writing(scenario_dict, tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(small(scenario_dict, policy={"kind": "global_only", "jpeg_quality": 75})))
    f = tmp_path / "sw.yaml"
    f.write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"policy.jpeg_quality": [75, 60, 61]}}))
    out = tmp_path / "sw"
    rc, _, err = cli(capsys, "sweep", str(f), "--out", str(out), "--workers", "1", "--no-progress")
    one_error(rc, err, "run 1 (policy.jpeg_quality=60", "run 2 (policy.jpeg_quality=61")
    assert len(err.strip().splitlines()) == 2  # every invalid run, each on its own line
    assert not out.exists()


def test_sweep_prints_a_table_and_defaults_its_out_like_compare(scenario_dict, tmp_path, capsys, monkeypatch):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(small(scenario_dict, policy={"kind": "global_only", "jpeg_quality": 75})))
    f = tmp_path / "sw.yaml"
    f.write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"policy.jpeg_quality": [50, 75]}}))
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli(capsys, "sweep", str(f), "--workers", "1", "--no-progress")
    assert rc == 0, err
    assert (tmp_path / "runs" / "sw" / "results.parquet").is_file()
    header = next(line for line in out.splitlines() if "policy.jpeg_quality" in line)
    assert "acc" in header and "status" in header
    assert sum(line.split()[1] in ("50", "75") for line in out.splitlines() if line.split()) == 2
