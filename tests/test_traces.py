"""Trace format v1: round trip, provenance, and errors that name the file and column."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgevlm.traces import TraceError, read_provenance, read_trace, write_trace
from edgevlm.traces.schema import REQUIRED_COLUMNS
from edgevlm.traces.synthetic import generate_table, provenance


@pytest.fixture
def small():
    return generate_table(30, seed=1), provenance(30, 1)


def test_round_trip_keeps_rows_and_provenance(tmp_path, small):
    table, prov = small
    p = write_trace(table, tmp_path / "t.parquet", prov)
    back, meta = read_trace(p)
    assert back.num_rows == 30 and meta["source_kind"] == "synthetic" and meta["format_version"] == 1
    assert back.column("sample_id").to_pylist() == table.column("sample_id").to_pylist()
    assert read_provenance(p)["jpeg_qualities"] == [10, 25, 50, 75, 95]


def test_synthetic_is_deterministic_and_labelled(small):
    assert generate_table(30, seed=1).equals(small[0])
    assert not generate_table(30, seed=2).equals(small[0])
    assert small[1]["source_kind"] == "synthetic" and "SYNTHETIC" in small[1]["notes"]


def test_synthetic_stage2_gain_is_correlated_with_entropy():
    import numpy as np

    t = generate_table(3000, seed=0).to_pandas()
    h = t["s1_min_entropy"].map(lambda v: np.mean(v[:5]))
    gain = t["s2_score"] - t["s1_score"]
    high = h >= h.median()
    assert gain[high].mean() > gain[~high].mean() + 0.1
    assert (t["s1_score"][~high].mean() > t["s1_score"][high].mean())


def test_missing_column_is_named(tmp_path, small):
    table, prov = small
    with pytest.raises(TraceError, match="missing required column 's1_score'"):
        write_trace(table.drop(["s1_score"]), tmp_path / "t.parquet", prov)


def test_mistyped_column_is_named(tmp_path, small):
    table, prov = small
    bad = table.set_column(table.column_names.index("s1_answer"), "s1_answer",
                           pa.array([[1]] * table.num_rows))
    with pytest.raises(TraceError, match="column 's1_answer' has type list<item: int64>, expected string"):
        write_trace(bad, tmp_path / "t.parquet", prov)


def test_unknown_column_is_named(tmp_path, small):
    table, prov = small
    with pytest.raises(TraceError, match="unknown column 'extra'"):
        write_trace(table.append_column("extra", pa.array([1] * table.num_rows)), tmp_path / "t.parquet", prov)


def test_row_errors_name_the_column(tmp_path, small):
    table, prov = small
    lens = table.column("s1_shannon").to_pylist()
    lens[3] = lens[3] + [1.0]
    bad = table.set_column(table.column_names.index("s1_shannon"), "s1_shannon", pa.array(lens, pa.list_(pa.float32())))
    with pytest.raises(TraceError, match="column 's1_shannon' row 3 has"):
        write_trace(bad, tmp_path / "t.parquet", prov)
    sizes = table.column("global_jpeg_bytes").to_pylist()
    sizes[0] = sizes[0][:2]
    bad = table.set_column(table.column_names.index("global_jpeg_bytes"), "global_jpeg_bytes",
                           pa.array(sizes, pa.list_(pa.int32())))
    with pytest.raises(TraceError, match="'global_jpeg_bytes' row 0 has 2 values, expected 5"):
        write_trace(bad, tmp_path / "t.parquet", prov)


def test_nan_entropy_and_duplicate_ids_are_rejected(tmp_path, small):
    table, prov = small
    ents = table.column("s1_min_entropy").to_pylist()
    ents[0][0] = float("nan")
    bad = table.set_column(table.column_names.index("s1_min_entropy"), "s1_min_entropy",
                           pa.array(ents, pa.list_(pa.float32())))
    with pytest.raises(TraceError, match="'s1_min_entropy' has NaN"):
        write_trace(bad, tmp_path / "t.parquet", prov)
    ids = table.column("sample_id").to_pylist()
    ids[1] = ids[0]
    bad = table.set_column(0, "sample_id", pa.array(ids))
    with pytest.raises(TraceError, match="duplicate"):
        write_trace(bad, tmp_path / "t.parquet", prov)


def test_provenance_is_checked(tmp_path, small):
    table, prov = small
    for key, value, pattern in [("source_kind", "made-up", "source_kind 'made-up' must be one of"),
                                ("format_version", 3, "format_version 3 is not supported")]:
        with pytest.raises(TraceError, match=pattern):
            write_trace(table, tmp_path / "t.parquet", {**prov, key: value})
    p = tmp_path / "nometa.parquet"
    pq.write_table(table, p)
    with pytest.raises(TraceError, match="nometa.parquet: no 'edgevlm' provenance"):
        read_trace(p)
    p2 = tmp_path / "v2.parquet"
    pq.write_table(table.replace_schema_metadata({b"edgevlm": json.dumps({**prov, "format_version": 3}).encode()}), p2)
    with pytest.raises(TraceError, match="format_version 3 is not supported"):
        read_trace(p2)


def test_missing_and_truncated_files(tmp_path, small):
    with pytest.raises(TraceError, match="trace file not found"):
        read_trace(tmp_path / "none.parquet")
    p = write_trace(*small[:1], tmp_path / "t.parquet", small[1])
    data = p.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match="cut.parquet: not a readable Parquet file"):
        read_trace(cut)


def test_every_required_column_is_in_the_synthetic_trace(small):
    assert set(REQUIRED_COLUMNS) <= set(small[0].column_names)


def test_shipped_default_trace_is_valid_and_labelled():
    from pathlib import Path

    from edgevlm import traces

    shipped = sorted(Path(traces.__file__).parent.glob("*.parquet"))
    assert shipped, "no trace shipped in traces/"
    for p in shipped:
        table, prov = read_trace(p)
        if prov.get("extraction_stopped_by_time"):
            # tiny-scenetext-v2's trace: asked for >= 2000, stopped by its time limit (a miss its model card reports)
            assert prov["n_requested"] >= 2000 and table.num_rows >= 1000
        else:
            assert table.num_rows >= 2000
        if prov["source_kind"] == "synthetic":
            assert "SYNTHETIC" in prov["notes"]
