"""Bad input through the CLI: one line on stderr naming the field, file or line, exit code 2, no traceback.

Runs `sim.cli.main` in-process (an escaping exception would fail the test just as a traceback would);
tests/test_cli.py covers the same path in subprocesses.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from edgevlm.sim.cli import main
from tests.conftest import base_scenario
from edgevlm.traces.synthetic import write_synthetic


def cli_error(capsys, *argv) -> str:
    rc = main(list(argv))
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note:")]
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("edgevlm: error: "), err
    return err[0]


def mutate(path: str, value):
    def fn(d):
        keys = path.split(".")
        cur = d
        for k in keys[:-1]:
            cur = cur.setdefault(k, {})
        if value is _DELETE:
            del cur[keys[-1]]
        else:
            cur[keys[-1]] = value
    return fn


_DELETE = object()

SCENARIO_CASES = [
    # (label, mutation, substrings the error line must contain)
    ("bool for int", mutate("clients.count", True), ["clients.count", "boolean true"]),
    ("text for int", mutate("clients.count", "5"), ["clients.count", "text '5'"]),
    ("fraction for int", mutate("stop.requests", 2.5), ["stop.requests", "integer"]),
    ("list for float", mutate("clients.arrival.rate_per_s", [1]), ["clients.arrival.rate_per_s", "valid number"]),
    ("negative rate", mutate("clients.arrival.rate_per_s", -1.0), ["clients.arrival.rate_per_s", "greater than 0"]),
    ("NaN rate", mutate("clients.arrival.rate_per_s", float("nan")), ["clients.arrival.rate_per_s", "nan"]),
    ("infinite rate", mutate("clients.arrival.rate_per_s", float("inf")), ["clients.arrival.rate_per_s", "finite"]),
    ("infinite time limit", mutate("stop", {"time_s": float("inf")}), ["stop.time_s", "finite"]),
    ("infinite capacity", mutate("network.uplink.capacity_mbps", float("inf")),
     ["network.uplink.capacity_mbps", "finite"]),
    ("negative propagation", mutate("network.downlink.propagation_ms", -5), ["network.downlink.propagation_ms"]),
    ("margin threshold > 1", mutate("policy", {"kind": "entropy_threshold", "metric": "margin", "threshold": 1.5}),
     ["policy", "threshold 1.5", "[0, 1]", "margin"]),
    ("negative entropy threshold", mutate("policy", {"kind": "entropy_threshold", "metric": "shannon",
                                                     "threshold": -0.2}), ["policy", "threshold -0.2", ">= 0"]),
    ("NaN threshold", mutate("policy.threshold", float("nan")), ["policy.threshold", "NaN"]),
    ("shares sum 0.9", mutate("clients.link_classes", [{"share": 0.5, "uplink_mbps": 1},
                                                       {"share": 0.4, "uplink_mbps": 1}]),
     ["clients", "shares must sum to 1", "0.9"]),
    ("unknown policy kind", mutate("policy.kind", "magic"), ["policy", "unknown kind 'magic'", "global_only"]),
    ("unknown arrival kind", mutate("clients.arrival.kind", "bursty"), ["clients.arrival", "poisson, periodic"]),
    ("missing kind", mutate("policy", {"threshold": 1.0}), ["policy", "needs a 'kind'"]),
    ("unknown model", mutate("server.model", "gpt-5"), ["server.model", "llava-1.5-7b"]),
    ("typo key", mutate("slo.deadlin_s", 2), ["slo.deadlin_s", "did you mean 'deadline_s'"]),
    ("missing required", mutate("network.uplink", {}), ["network.uplink:", "capacity_mbps", "bandwidth_trace"]),
    ("union member not in path", mutate("policy.tokens", "some"), ["policy.tokens:", "integer"]),
    ("huge client count", mutate("clients.count", 10 ** 11), ["clients.count", "less than or equal to 1000000"]),
    ("quality not in trace", mutate("policy.jpeg_quality", 80), ["policy.jpeg_quality", "10, 25, 50, 75, 95"]),
    ("too many requests", mutate("stop", {"requests": 10 ** 10}), ["stop.requests", "at most 1e+09"]),
    ("endless time limit", mutate("stop", {"time_s": 1e12}), ["stop.time_s", "arrivals", "at most 1e+09"]),
    ("int64-overflowing overhead", mutate("network.uplink.overhead_bytes", 10 ** 13),
     ["network.uplink.overhead_bytes", "at most 1e+12"]),
]


@pytest.mark.parametrize("label,fn,needles", SCENARIO_CASES, ids=[c[0] for c in SCENARIO_CASES])
def test_bad_scenario_values(capsys, tmp_path, synthetic_trace, label, fn, needles):
    d = base_scenario(synthetic_trace, stop={"requests": 20})
    fn(d)
    p = tmp_path / "sc.yaml"
    p.write_text(yaml.safe_dump(d))
    line = cli_error(capsys, "run", str(p), "--out", str(tmp_path / "out"), "--no-progress", "-q")
    for n in needles:
        assert n in line, line
    assert not (tmp_path / "out" / "summary.json").exists()


def _bomb(levels: int = 9) -> str:
    text = 'x0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(levels):
        text += f"x{i + 1}: &a{i + 1} [" + ",".join([f"*a{i}"] * 9) + "]\n"
    return text


def _valid_text(trace) -> str:
    return yaml.safe_dump(base_scenario(trace, stop={"requests": 20}))


TEXT_CASES = [
    ("billion laughs", lambda t: _bomb().encode(), ["sc.yaml", "line", "expands to more than 100000 nodes"]),
    ("recursive anchor", lambda t: b"a: &a [*a]\n", ["sc.yaml", "line 1", "recursive anchor"]),
    ("deep nesting", lambda t: ("a: " + "[" * 3000 + "]" * 3000).encode(), ["sc.yaml", "nested too deeply"]),
    ("duplicate key", lambda t: (_valid_text(t) + "seed: 5\n").encode(), ["sc.yaml", "duplicate key 'seed'"]),
    ("exponent read as text", lambda t: _valid_text(t).replace("capacity_mbps: 20", "capacity_mbps: 2e1").encode(),
     ["network.uplink.capacity_mbps", "2.0e1"]),
    ("not UTF-8", lambda t: b"name: \xff\xfe\n", ["sc.yaml", "not UTF-8", "byte 6"]),
    ("UTF-16", lambda t: "name: x\n".encode("utf-16"), ["sc.yaml", "not UTF-8"]),
    ("empty file", lambda t: b"", ["sc.yaml", "empty"]),
    ("scalar document", lambda t: b"42\n", ["sc.yaml", "must be a YAML mapping"]),
    ("syntax error", lambda t: b"a: [1, 2\n", ["sc.yaml", "line 2"]),
    ("python tag", lambda t: b"!!python/object/apply:os.system ['echo hi']\n", ["sc.yaml", "constructor", "line 1"]),
    ("two documents", lambda t: b"a: 1\n---\nb: 2\n", ["sc.yaml", "another document", "line 2"]),
    ("over 1 MB", lambda t: b"# " + b"x" * 1_100_000, ["sc.yaml", "larger than 1000000 bytes"]),
]


@pytest.mark.parametrize("label,make,needles", TEXT_CASES, ids=[c[0] for c in TEXT_CASES])
def test_bad_scenario_files(capsys, tmp_path, synthetic_trace, label, make, needles):
    p = tmp_path / "sc.yaml"
    p.write_bytes(make(synthetic_trace))
    line = cli_error(capsys, "run", str(p), "--out", str(tmp_path / "out"), "--no-progress", "-q")
    for n in needles:
        assert n in line, line


def test_anchors_within_bounds_still_work(tmp_path, synthetic_trace, capsys):
    text = _valid_text(synthetic_trace).replace("downlink:\n", "downlink: &dl\n", 1)
    d = yaml.safe_load(text)
    assert d["network"]["downlink"]["capacity_mbps"] == 100
    p = tmp_path / "sc.yaml"
    p.write_text(text + "x_unused: *dl\n")  # an alias that is fine to load; the unknown key is the error
    line = cli_error(capsys, "run", str(p), "--out", str(tmp_path / "out"), "-q")
    assert "x_unused: unknown key" in line


# ---------------------------------------------------------------- traces


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = write_synthetic(tmp_path_factory.mktemp("t") / "tiny.parquet", n_samples=20, seed=1)
    return pq.read_table(path), path


def _set(t: pa.Table, name: str, values, typ=None) -> pa.Table:
    arr = pa.array(values, typ or t.schema.field(name).type)
    return t.set_column(t.column_names.index(name), pa.field(name, arr.type), arr)


def _lists(t, name, fn):
    vals = t.column(name).to_pylist()
    fn(vals)
    return _set(t, name, vals)


def _meta(t, **changes):
    prov = json.loads(t.schema.metadata[b"edgevlm"])
    return t.replace_schema_metadata({b"edgevlm": json.dumps({**prov, **changes}).encode()})


TRACE_CASES = [
    ("schema version 3", lambda t: _meta(t, format_version=3), ["format_version 3 is not supported"]),
    ("no provenance", lambda t: t.replace_schema_metadata({}), ["no 'edgevlm' provenance"]),
    ("missing column", lambda t: t.drop_columns(["s2_score"]), ["missing required column 's2_score'"]),
    ("extra column", lambda t: t.append_column("mystery", pa.array(range(t.num_rows))), ["unknown column 'mystery'"]),
    ("wrong type", lambda t: _set(t, "prompt_tokens", ["x"] * t.num_rows, pa.string()),
     ["'prompt_tokens' has type string, expected int32"]),
    ("int16 overflow", lambda t: _set(t, "s2_tokens", [70000] * t.num_rows, pa.int32()), ["'s2_tokens'", "70000"]),
    ("null in required column", lambda t: _set(t, "s1_answer", [None] + ["a"] * (t.num_rows - 1)),
     ["'s1_answer' has 1 null"]),
    ("null list element", lambda t: _lists(t, "global_jpeg_bytes", lambda v: v[1].__setitem__(2, None)),
     ["'global_jpeg_bytes' row 1 has a null element"]),
    ("list length vs qualities", lambda t: _lists(t, "local_jpeg_bytes", lambda v: v[3].pop()),
     ["'local_jpeg_bytes' row 3 has 4 values, expected 5"]),
    ("entropy list lengths differ", lambda t: _lists(t, "s1_shannon", lambda v: v[2].append(0.1)),
     ["'s1_shannon' row 2", "lengths must match"]),
    ("NaN entropy", lambda t: _lists(t, "s1_min_entropy", lambda v: v[4].__setitem__(0, float("nan"))),
     ["'s1_min_entropy' has NaN", "row 4"]),
    ("NaN required score", lambda t: _set(t, "s1_score", np.r_[np.nan, t.column("s1_score").to_numpy()[1:]]),
     ["'s1_score' row 0 is NaN"]),
    ("zero rows", lambda t: t.slice(0, 0), ["no rows"]),
]


@pytest.mark.parametrize("label,corrupt,needles", TRACE_CASES, ids=[c[0] for c in TRACE_CASES])
def test_bad_trace_tables(capsys, tmp_path, tiny, label, corrupt, needles):
    table, _ = tiny
    bad = corrupt(table)
    path = tmp_path / "bad.parquet"
    pq.write_table(bad.replace_schema_metadata(bad.schema.metadata if bad.schema.metadata is not None
                                               else table.schema.metadata), path)
    for argv in (["trace", "validate", str(path)],):
        line = cli_error(capsys, *argv)
        assert "bad.parquet" in line
        for n in needles:
            assert n in line, line
    sc = tmp_path / "sc.yaml"
    sc.write_text(yaml.safe_dump(base_scenario(path, stop={"requests": 20})))
    line = cli_error(capsys, "run", str(sc), "--out", str(tmp_path / "out"), "-q")
    assert line.startswith("edgevlm: error: trace: ") and needles[0] in line


FILE_CASES = [
    ("empty file", lambda raw: b"", ["Parquet file size is 0 bytes"]),
    ("truncated to half", lambda raw: raw[: len(raw) // 2], ["not a readable Parquet file"]),
    ("footer cut", lambda raw: raw[:-10], ["not a readable Parquet file"]),
    ("text file", lambda raw: b"hello", ["not a readable Parquet file"]),
    ("corrupted pages", lambda raw: bytes(b ^ 0xFF if 200 <= i < 1200 and i % 7 == 0 else b
                                         for i, b in enumerate(raw)), ["not a readable Parquet file"]),
]


@pytest.mark.parametrize("label,corrupt,needles", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_trace_files(capsys, tmp_path, tiny, label, corrupt, needles):
    _, src = tiny
    path = tmp_path / "bad.parquet"
    path.write_bytes(corrupt(src.read_bytes()))
    line = cli_error(capsys, "trace", "validate", str(path))
    assert "bad.parquet" in line and all(n in line for n in needles), line
