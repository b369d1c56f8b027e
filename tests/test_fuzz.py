"""Fuzzing: generated scenarios and traces, valid and invalid, through the real entry points.

Property: a valid input runs to completion and `edgevlm check` finds every invariant holding; an
invalid one gives one clean `edgevlm: error:` line naming the field or file, exit code 2, no traceback.
Runs are tiny (<= 40 requests) so the >= 1000 examples fit in CI. Hypothesis is derandomized with no
example database, so CI sees the same examples every time.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from edgevlm.sim import run
from edgevlm.sim.check import check_run_dir
from edgevlm.sim.cli import main
from edgevlm.traces.schema import METADATA_KEY, REQUIRED_COLUMNS
from edgevlm.traces.synthetic import write_synthetic

QUALITIES = [10, 25, 50, 75, 95]  # the synthetic generator's
#: Examples per property (1010 in all); EDGEVLM_FUZZ_SCALE=0.1 gives a quick local pass.
_SCALE = float(os.environ.get("EDGEVLM_FUZZ_SCALE", "1"))
N_VALID, N_MUTATED, N_TRACES = (max(1, round(n * _SCALE)) for n in (250, 500, 260))


def fuzz_settings(n: int):
    # No shrink phase: a failure is reported at once with its example, so CI time stays bounded.
    return settings(max_examples=n, deadline=None, derandomize=True, database=None, print_blob=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("fuzz") / "syn.parquet", n_samples=60, seed=11)


def fl(lo: float, hi: float):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


# ---------------------------------------------------------------- scenario strategies


@st.composite
def link_classes(draw):
    k = draw(st.integers(1, 3))
    weights = draw(st.lists(st.integers(1, 10), min_size=k, max_size=k))
    return [{"share": w / sum(weights), "uplink_mbps": draw(fl(0.1, 100))} for w in weights]


def policies(qualities=QUALITIES):
    q = st.sampled_from(qualities)
    entropy = st.fixed_dictionaries({
        "kind": st.just("entropy_threshold"), "metric": st.sampled_from(["min_entropy", "shannon"]),
        "threshold": fl(0, 8), "tokens": st.one_of(st.integers(1, 8), st.just("all")), "jpeg_quality": q})
    margin = st.fixed_dictionaries({
        "kind": st.just("entropy_threshold"), "metric": st.just("margin"), "threshold": fl(0, 1),
        "tokens": st.one_of(st.integers(1, 8), st.just("all")), "jpeg_quality": q})
    plain = st.fixed_dictionaries({"kind": st.sampled_from(["global_only", "always_crop"]), "jpeg_quality": q})
    return st.one_of(entropy, margin, plain)


latencies = st.one_of(
    st.fixed_dictionaries({"kind": st.just("parametric"), "vision_s_per_image": fl(0, 0.1),
                           "prefill_tokens_per_s": fl(100, 50000), "decode_s_per_token": fl(0, 0.05)}),
    st.fixed_dictionaries({"kind": st.just("exponential"), "mean_s": fl(0.001, 2)}),
    st.fixed_dictionaries({"kind": st.just("deterministic"), "service_s": fl(0.001, 2)}),
)


def link(lo_mbps: float):
    return st.fixed_dictionaries({"capacity_mbps": fl(lo_mbps, 200)},
                                 optional={"propagation_ms": fl(0, 100), "overhead_bytes": st.integers(0, 2000)})


@st.composite
def valid_scenarios(draw, trace_path: str, qualities=QUALITIES):
    count = draw(st.integers(1, 20))
    periodic = draw(st.booleans())
    rate = draw(fl(0.01, 2.0))
    arrival = {"kind": "periodic", "fps": rate} if periodic else {"kind": "poisson", "rate_per_s": rate}
    if draw(st.booleans()):
        stop = {"requests": draw(st.integers(1, 40))}
        if draw(st.booleans()):
            stop["warmup_s"] = draw(fl(0, 5))
    else:  # about <= 40 arrivals in expectation
        time_s = max(draw(fl(0.01, 1.0)) * 40.0 / (count * rate), 1e-3)
        stop = {"time_s": time_s, "warmup_s": draw(fl(0, 0.9)) * time_s}
    server = {"replicas": draw(st.integers(1, 3)), "model": draw(st.sampled_from(["llava-1.5-7b", "llava-1.5-13b"])),
              "scheduler": {"kind": "fifo"}, "latency": draw(latencies)}
    if draw(st.booleans()):
        server["max_queue"] = draw(st.integers(0, 5))
    return {
        "name": draw(st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True)),
        "seed": draw(st.integers(0, 2 ** 63)),
        "trace": trace_path,
        "stop": stop,
        "clients": {"count": count, "arrival": arrival, "edge": {"device": draw(st.sampled_from(["imx95", "ideal"]))},
                    "link_classes": draw(link_classes())},
        "network": {"uplink": draw(link(0.05)), "downlink": draw(link(0.05))},
        "server": server,
        "policy": draw(policies(qualities)),
        "slo": {"deadline_s": draw(fl(0.01, 10))},
    }


def run_and_check(sc: dict) -> dict:
    with tempfile.TemporaryDirectory() as d:
        summary = run(sc, Path(d) / "run", audit=True).summary
        rep = check_run_dir(Path(d) / "run")
        assert rep.ok, rep.format()
        assert rep.skipped == [], rep.skipped
    assert summary["complete"] is True
    if "requests" in sc["stop"]:
        assert summary["counts"]["arrived"] == sc["stop"]["requests"]
    return summary


def test_valid_scenarios_run_and_every_invariant_holds(trace):
    @fuzz_settings(N_VALID)
    @given(valid_scenarios(str(trace)))
    def prop(sc):
        run_and_check(sc)

    prop()


# ---------------------------------------------------------------- invalid scenarios (mutations)

BAD_VALUES = [None, "text", "5", True, False, [], [1], {}, {"x": 1}, -1, -1e9, 0, 0.5, math.nan, math.inf,
              -math.inf, 10 ** 30, ""]


def leaf_paths(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from leaf_paths(v, prefix + (k,))
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, dict):
                    yield from leaf_paths(item, prefix + (k, i))
            yield prefix + (k,)
        else:
            yield prefix + (k,)


def mapping_paths(d, prefix=()):
    yield prefix
    for k, v in d.items():
        if isinstance(v, dict):
            yield from mapping_paths(v, prefix + (k,))


def at(d, path):
    for k in path:
        d = d[k]
    return d


@st.composite
def mutated_scenarios(draw, trace_path: str):
    """A valid scenario with one random corruption; returns (dict, top-level key it touched)."""
    sc = draw(valid_scenarios(trace_path))
    op = draw(st.sampled_from(["set", "set", "set", "delete", "unknown_key", "unknown_kind", "shares"]))
    if op == "set":
        path = draw(st.sampled_from(sorted(leaf_paths(sc), key=str)))
        at(sc, path[:-1])[path[-1]] = draw(st.sampled_from(BAD_VALUES))
    elif op == "delete":
        path = draw(st.sampled_from(sorted(leaf_paths(sc), key=str)))
        del at(sc, path[:-1])[path[-1]]
    elif op == "unknown_key":
        path = draw(st.sampled_from(sorted(mapping_paths(sc), key=str)))
        key = draw(st.sampled_from(["colour", "rate", "kinds", "x_y"]))
        at(sc, path)[key] = 1
        path = path + (key,)
    elif op == "unknown_kind":
        block = draw(st.sampled_from([("policy",), ("clients", "arrival"), ("server", "latency"),
                                      ("server", "scheduler")]))
        at(sc, block)["kind"] = draw(st.sampled_from(["magic", "Poisson", "", "fifo ", "global-only"]))
        path = block
    else:
        sc["clients"]["link_classes"][0]["share"] *= draw(st.sampled_from([0.5, 1.5, 2.0]))
        path = ("clients",)
    return sc, op, str(path[0]) if path else ""


def cli(*argv) -> tuple[int, list[str]]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(list(argv))
    return rc, [ln for ln in err.getvalue().splitlines() if not ln.startswith("note:")]


def test_mutated_scenarios_give_one_clean_error_or_a_checked_run(trace):
    seen = {"error": 0, "ok": 0}

    @fuzz_settings(N_MUTATED)
    @given(mutated_scenarios(str(trace)))
    def prop(case):
        sc, op, top = case
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "sc.yaml"
            p.write_text(yaml.safe_dump(sc))
            out = Path(d) / "out"
            rc, err = cli("run", str(p), "--out", str(out), "--no-progress", "-q")
            if rc == 0:  # the mutation happened to be valid (e.g. max_queue: 0): then it must check out
                seen["ok"] += 1
                rep = check_run_dir(out)
                assert rep.ok, rep.format()
                return
            seen["error"] += 1
            assert rc == 2, err
            assert len(err) == 1 and err[0].startswith("edgevlm: error: "), err
            assert top in err[0], (top, err[0])
            assert not (out / "summary.json").exists()
            if op in ("unknown_key", "unknown_kind", "shares"):
                assert rc == 2

    prop()
    assert seen["error"] > 0.6 * N_MUTATED, seen  # most mutations are invalid, as they should be


# ---------------------------------------------------------------- traces


@st.composite
def trace_tables(draw):
    """A small valid v1 trace: structure drawn by hypothesis, values by a drawn numpy seed."""
    n = draw(st.integers(1, 6))
    qualities = sorted(draw(st.sets(st.integers(1, 100), min_size=1, max_size=5)))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    edge = draw(st.booleans())  # boundary values: zero entropies, margins 0/1, one-byte images
    nq = len(qualities)
    tokens = rng.integers(1, 7, n)
    w, h = rng.integers(16, 3000, n), rng.integers(16, 3000, n)
    x0, y0 = (rng.random(n) * (w - 1)).astype(int), (rng.random(n) * (h - 1)).astype(int)
    x1 = x0 + 1 + (rng.random(n) * (w - x0 - 1)).astype(int)
    y1 = y0 + 1 + (rng.random(n) * (h - y0 - 1)).astype(int)

    def sizes():
        lo = 1 if edge else 200
        return [sorted(rng.integers(lo, 300_000, nq).tolist()) for _ in range(n)]

    def ent(scale, cap=None):
        out = []
        for t in tokens:
            v = rng.random(t) * scale
            if edge:
                v[0] = 0.0 if cap is None else rng.choice([0.0, cap])
            out.append(v.astype(np.float32).tolist())
        return out

    i32, f32 = pa.int32(), pa.float32()
    cols = {
        "sample_id": pa.array([f"s{i}" for i in range(n)]),
        "image_w": pa.array(w, i32), "image_h": pa.array(h, i32),
        "global_jpeg_bytes": pa.array(sizes(), pa.list_(i32)),
        "original_jpeg_bytes": pa.array(sizes(), pa.list_(i32)),
        "local_jpeg_bytes": pa.array(sizes(), pa.list_(i32)),
        "prompt_tokens": pa.array(rng.integers(1, 200, n), i32),
        "s1_answer": pa.array(["a"] * n), "s1_score": pa.array(rng.random(n), f32),
        "s1_min_entropy": pa.array(ent(8.0), pa.list_(f32)), "s1_shannon": pa.array(ent(12.0), pa.list_(f32)),
        "s1_margin": pa.array(ent(1.0, cap=1.0), pa.list_(f32)),
        "bbox_x0": pa.array(x0, i32), "bbox_y0": pa.array(y0, i32),
        "bbox_x1": pa.array(x1, i32), "bbox_y1": pa.array(y1, i32),
        "s2_answer": pa.array(["b"] * n), "s2_score": pa.array(rng.random(n), f32),
        "s2_tokens": pa.array(rng.integers(1, 30, n), pa.int16()),
    }
    if draw(st.booleans()):
        cols["question_type"] = pa.array([draw(st.sampled_from(["text", "count", None])) for _ in range(n)],
                                         pa.string())
    prov = {"format_version": 1, "source_kind": "synthetic", "model_id": "fuzz", "dataset_id": "fuzz",
            "created_utc": "2026-01-01T00:00:00Z", "generator": "tests/test_fuzz.py", "vision_input_px": 336,
            "visual_tokens_per_image": 576, "jpeg_qualities": qualities}
    return pa.table(cols), prov


def write_raw(table: pa.Table, prov: dict, path: Path) -> Path:
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(prov).encode()}), path)
    return path


def _set(t, name, values):
    arr = pa.array(values, t.schema.field(name).type)
    return t.set_column(t.column_names.index(name), pa.field(name, arr.type), arr)


def _list_edit(t, name, fn):
    vals = t.column(name).to_pylist()
    fn(vals)
    return _set(t, name, vals)


TRACE_MUTATIONS = {
    "drop required column": lambda t, p, r: (t.drop_columns([REQUIRED_COLUMNS[r % len(REQUIRED_COLUMNS)]]), p),
    "extra column": lambda t, p, r: (t.append_column("extra", pa.array([1] * t.num_rows)), p),
    "null in required": lambda t, p, r: (_set(t, "s2_answer", [None] * t.num_rows), p),
    "null list element": lambda t, p, r: (_list_edit(t, "original_jpeg_bytes", lambda v: v[0].__setitem__(0, None)), p),
    "NaN entropy": lambda t, p, r: (_list_edit(t, "s1_shannon", lambda v: v[-1].__setitem__(0, float("nan"))), p),
    "negative entropy": lambda t, p, r: (_list_edit(t, "s1_min_entropy", lambda v: v[0].__setitem__(0, -0.5)), p),
    "margin above 1": lambda t, p, r: (_list_edit(t, "s1_margin", lambda v: v[0].__setitem__(0, 1.5)), p),
    "quality list too short": lambda t, p, r: (_list_edit(t, "local_jpeg_bytes", lambda v: v[0].pop()), p),
    "entropy lengths differ": lambda t, p, r: (_list_edit(t, "s1_margin", lambda v: v[0].append(0.5)), p),
    "zero bytes": lambda t, p, r: (_list_edit(t, "global_jpeg_bytes", lambda v: v[0].__setitem__(0, 0)), p),
    "duplicate ids": lambda t, p, r: (_set(t, "sample_id", ["same"] * t.num_rows), p) if t.num_rows > 1
    else (t.slice(0, 0), p),
    "score above 1": lambda t, p, r: (_set(t, "s1_score", [1.5] * t.num_rows), p),
    "bbox outside image": lambda t, p, r: (_set(t, "bbox_x1", [10 ** 6] * t.num_rows), p),
    "zero rows": lambda t, p, r: (t.slice(0, 0), p),
    "format_version 3": lambda t, p, r: (t, {**p, "format_version": 3}),
    "missing provenance key": lambda t, p, r: (t, {k: v for k, v in p.items() if k != "model_id"}),
    "bad jpeg_qualities": lambda t, p, r: (t, {**p, "jpeg_qualities": p["jpeg_qualities"][::-1] + [0]}),
}
FILE_MUTATIONS = ("empty file", "truncated", "not parquet")


#: Input classes in turn (valid 4 times as often), so every class gets about N_TRACES / 24 examples.
TRACE_KINDS = ["valid"] * 4 + sorted(TRACE_MUTATIONS) + list(FILE_MUTATIONS)


@st.composite
def trace_cases(draw):
    table, prov = draw(trace_tables())
    return table, prov, draw(st.integers(0, 100)), draw(policies(prov["jpeg_qualities"]))


def test_generated_traces_validate_or_fail_cleanly(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-traces")
    seen: dict[str, int] = {}

    @fuzz_settings(N_TRACES)
    @given(trace_cases())
    def prop(case):
        table, prov, r, policy = case
        kind = TRACE_KINDS[sum(seen.values()) % len(TRACE_KINDS)]  # deterministic round robin
        seen[kind] = seen.get(kind, 0) + 1
        path = root / "t.parquet"
        if kind in TRACE_MUTATIONS:
            table, prov = TRACE_MUTATIONS[kind](table, prov, r)
        write_raw(table, prov, path)
        if kind == "empty file":
            path.write_bytes(b"")
        elif kind == "truncated":
            raw = path.read_bytes()
            path.write_bytes(raw[: max(1, len(raw) * r // 101)])
        elif kind == "not parquet":
            path.write_text("sample_id,image_w\ns0,10\n")
        rc, err = cli("trace", "validate", str(path))
        if kind == "valid":
            assert rc == 0, err
            sc = {"name": "fz", "seed": r, "trace": str(path), "stop": {"requests": 15},
                  "clients": {"count": 3, "arrival": {"kind": "poisson", "rate_per_s": 1.0}},
                  "server": {"max_queue": 2}, "policy": policy}
            run_and_check(sc)
            return
        assert rc == 2, (kind, err)
        assert len(err) == 1 and err[0].startswith("edgevlm: error: ") and "t.parquet" in err[0], err

    prop()
    if N_TRACES >= len(TRACE_KINDS):  # every class was tried
        assert set(seen) == set(TRACE_KINDS), seen
