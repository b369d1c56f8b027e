"""Issue 22 items 5-10 and 12: what a new user met in the first hour, each fixed and pinned here."""

from __future__ import annotations

import io
import json
import re
import shutil
from contextlib import redirect_stderr, redirect_stdout

import pytest
import yaml

from edgevlm.sim import run
from edgevlm.cli import main
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.scenario import parse_scenario
from tests.test_cli import ROOT, edgevlm


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as exc:  # argparse --help
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


def error_lines(rc, err) -> list[str]:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert all(line.startswith("edgevlm: error: ") for line in lines), err
    return [line[len("edgevlm: error: "):] for line in lines]


# ---------------------------------------------------------------- 5: a partial run says so


def test_check_of_an_interrupted_run_says_partial(scenario_dict, tmp_path):
    out = tmp_path / "r"
    run(scenario_dict(stop={"requests": 200}), out)
    summary = json.loads((out / "summary.json").read_text())
    rc, text, _ = cli("check", str(out))
    assert rc == 0 and "PARTIAL" not in text
    from edgevlm.sim.check import check_run_dir

    rep = check_run_dir(out)
    rep.complete = False  # what check_run_dir sets from a summary with "complete": false
    assert "PARTIAL run" in rep.format() and '"complete": false' in rep.format()
    summary["complete"] = False  # the flag alone (the numbers are those of a finished run): reported
    (out / "summary.json").write_text(json.dumps(summary))
    text = cli("check", str(out))[1] + cli("check", str(out))[2]
    assert "PARTIAL run" in text


# ---------------------------------------------------------------- 6: not a run, not found, compare outputs


def test_check_of_a_folder_that_is_not_a_run_is_exit_2(tmp_path, scenario_dict):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    run(scenario_dict(stop={"requests": 100}), tmp_path / "runs" / "a")
    lines = error_lines(*cli("check", str(tmp_path / "runs"))[::2])
    assert len(lines) == 1 and "not a run directory" in lines[0]
    lines = error_lines(*cli("check", str(tmp_path / "nothere"))[::2])
    assert lines == [f"{tmp_path / 'nothere'}: not found"]
    lines = error_lines(*cli("report", str(tmp_path / "nothere"), "--out", str(tmp_path / "rep"))[::2])
    assert lines == [f"{tmp_path / 'nothere'}: not found"]


def test_check_of_a_compare_output_checks_each_run(tmp_path, scenario_dict):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(scenario_dict(stop={"requests": 120})))
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"name": "c", "base": "base.yaml", "variants": [
        {"name": "g", "policy": {"kind": "global_only", "jpeg_quality": 75}},
        {"name": "a", "policy": {"kind": "always_crop", "jpeg_quality": 75}}]}))
    out = tmp_path / "cmp"
    assert cli("compare", str(f), "--out", str(out), "--no-report", "-q")[0] == 0
    rc, text, err = cli("check", str(out))
    assert rc == 0, err
    assert text.count("OK, all checked invariants hold") == 2
    (out / "runs" / "a" / "summary.json").unlink()  # a broken run inside: exit 1, named
    rc, text, err = cli("check", str(out))
    assert rc == 1 and "summary.json is missing" in err and str(out / "runs" / "a") in err


# ---------------------------------------------------------------- 7, 8: every error, one style


def test_every_error_is_shown_one_per_line(scenario_dict):
    d = scenario_dict()
    d["policy"]["treshold"] = d["policy"].pop("threshold")
    d["clients"]["count"] = -1
    d["slo"]["deadline"] = 3
    with pytest.raises(ConfigError) as info:
        parse_scenario(d)
    lines = str(info.value).splitlines()
    assert len(lines) == 3, lines  # the typo once (not also as a missing 'threshold'), count, the slo key
    assert any(line.startswith("policy.treshold: unknown key (did you mean 'threshold'?)") for line in lines)
    assert any(line.startswith("clients.count: ") for line in lines)
    assert any(line.startswith("slo.deadline: unknown key (did you mean 'deadline_s'?)") for line in lines)
    assert [p for p, _ in info.value.errors] == [line.split(":")[0] for line in lines]
    assert "more error" not in str(info.value)


def test_compare_and_sweep_files_use_the_scenario_error_style(tmp_path, scenario_dict):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(scenario_dict(stop={"requests": 50})))
    sweep = tmp_path / "sw.yaml"
    sweep.write_text(yaml.safe_dump({"base": "base.yaml", "set": {"seed": 2}, "grid": {"seed": [1]}}))
    lines = error_lines(*cli("sweep", str(sweep), "--out", str(tmp_path / "o"))[::2])
    assert lines[0].startswith("set: unknown key; allowed keys: ") and "Extra inputs" not in lines[0]
    cmp = tmp_path / "c.yaml"
    cmp.write_text(yaml.safe_dump({"base": "base.yaml", "variant": [{"name": "x", "policy": {"kind": "global_only"}}]}))
    lines = error_lines(*cli("compare", str(cmp), "--out", str(tmp_path / "o"))[::2])
    assert lines == ["variant: unknown key (did you mean 'variants'?); allowed keys: name, base, set, variants, load"]
    cmp.write_text(yaml.safe_dump({"base": "base.yaml", "variants": [
        {"name": "x", "policy": {"kind": "entropy_treshold", "threshold": 0.5}}]}))
    lines = error_lines(*cli("compare", str(cmp), "--out", str(tmp_path / "o"))[::2])
    assert len(lines) == 1 and "policy: unknown kind 'entropy_treshold' (did you mean 'entropy_threshold'?)" in lines[0]


# ---------------------------------------------------------------- 9: one path rule everywhere


@pytest.mark.parametrize("args", [("trace", "validate", "traces/tiny-scenetext-v2.parquet"),
                                  ("trace", "validate", "traces/tiny-scenetext-v1.parquet"),
                                  ("trace", "inspect", "traces/tiny-scenetext-v1.parquet"),
                                  ("tradeoff", "traces/tiny-scenetext-v1.parquet", "--out", "OUT")])
def test_shipped_traces_are_found_outside_the_repo(tmp_path, args):
    args = [str(tmp_path / "t") if a == "OUT" else a for a in args]
    proc = edgevlm(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_a_scenario_without_trace_uses_the_shipped_default_and_says_so(tmp_path, scenario_dict):
    d = scenario_dict(stop={"requests": 60}, policy={"kind": "global_only", "jpeg_quality": 75})
    del d["trace"]
    (tmp_path / "sc.yaml").write_text(yaml.safe_dump(d))
    rc, out, err = cli("run", str(tmp_path / "sc.yaml"), "--out", str(tmp_path / "r"), "--no-progress")
    assert rc == 0, err
    assert "names no trace; using the shipped default traces/tiny-scenetext-v2.parquet" in err
    assert "tiny-scenetext-v2.parquet" in out


# ---------------------------------------------------------------- 10: check --help


def test_check_help_prints_single_percent_signs():
    rc, out, _ = cli("check", "--help")
    assert rc == 0 and "100%" in out and "%%" not in out


# ---------------------------------------------------------------- 12: time-based progress bar


def test_time_based_progress_bar_ends_at_the_real_count(scenario_dict, capsys):
    sc = scenario_dict(stop={"time_s": 300.0}, policy={"kind": "global_only", "jpeg_quality": 75})
    res = run(sc, progress=True)
    err = capsys.readouterr().err
    final = re.findall(r"(\d+)/(\d+)", err.replace("\r", "\n"))[-1]
    n = res.summary["counts"]["arrived"]
    assert final == (str(n), str(n)), err[-300:]
