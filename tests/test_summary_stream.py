"""Issue 26 item 1: the bounded-pass summary (row group by row group) equals the whole-log summary exactly."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from edgevlm.sim import run
from edgevlm.sim.commcost import comm_meter
from edgevlm.sim.recorder import EventLog
from edgevlm.sim.summary import SummaryPass, summarize, summarize_file
from edgevlm.sim.workload import Workload
from edgevlm.traces.eventlog import WRITER_OPTIONS

from summary_reference import comm_bytes, summarize as reference_summarize

POLICIES = {
    "two_stage": {"kind": "entropy_threshold", "metric": "min_entropy", "threshold": 0.6, "tokens": 5,
                  "jpeg_quality": 75},
    "full_cloud": {"kind": "full_cloud", "jpeg_quality": 75},
    "progressive": {"kind": "progressive", "thresholds": 0.6, "reference_jpeg_quality": 75},
}


def _json(d: dict) -> str:
    return json.dumps(d, sort_keys=True, default=float)


def _reference(sc, workload, table: pa.Table) -> dict:
    comm = comm_bytes(sc.policy, workload, table)
    return reference_summarize(table, warmup_s=sc.stop.warmup_s, comm=comm, components={})


def _shuffled_row_groups(table: pa.Table, path, rows_per_group: int, seed: int) -> pa.Table:
    """The table in a random row order, written with small row groups (the pass must not rely on order)."""
    perm = np.random.default_rng(seed).permutation(table.num_rows)
    shuffled = table.take(pa.array(perm))
    pq.write_table(shuffled, path, row_group_size=rows_per_group, **WRITER_OPTIONS)
    return shuffled


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("rate", [0.05, 0.4])  # stable, and overloaded with a growing backlog
def test_bounded_pass_equals_whole_log(scenario_dict, synthetic_trace, tmp_path, policy, rate):
    d = scenario_dict(seed=5, stop={"requests": 3000, "warmup_s": 20.0}, policy=POLICIES[policy],
                      clients={"count": 20, "arrival": {"kind": "poisson", "rate_per_s": rate},
                               "link_classes": [{"share": 0.5, "uplink_mbps": 10}, {"share": 0.5, "uplink_mbps": 2}]})
    res = run(d, tmp_path / "run")
    workload = Workload.load(synthetic_trace)
    table = pq.read_table(tmp_path / "run" / "events.parquet")
    want = _reference(res.scenario, workload, table)
    comm = lambda: comm_meter(res.scenario.policy, workload)  # noqa: E731
    got_table = summarize(table, warmup_s=res.scenario.stop.warmup_s, comm=comm(), components={})
    got_file = summarize_file(tmp_path / "run" / "events.parquet", warmup_s=res.scenario.stop.warmup_s,
                              comm=comm(), components={})
    assert _json(got_table) == _json(want)
    assert _json(got_file) == _json(want)
    if rate > 0.1:
        assert want["stable"] is False
    assert want["additional_comm_cost"] is not None or policy == "full_cloud"
    # row order and row-group size do not matter
    shuffled = _shuffled_row_groups(table, tmp_path / "shuffled.parquet", 257, seed=1)
    got_shuffled = summarize_file(tmp_path / "shuffled.parquet", warmup_s=res.scenario.stop.warmup_s,
                                  comm=comm(), components={})
    assert _json(got_shuffled) == _json(_reference(res.scenario, workload, shuffled))
    assert _json(got_shuffled) == _json(want)
    # the run's own summary.json went through the file pass
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["latency_s"] == json.loads(_json(want))["latency_s"]


def test_testbed_latency_and_odd_ids_fall_back_exactly(scenario_dict):
    """A log whose latency is not done - arrival (a testbed's), with gaps and repeats in request ids."""
    table = run(scenario_dict(seed=2, stop={"requests": 1500})).events_table
    i = table.schema.get_field_index("latency_s")
    # scale only the second half's latencies: the mismatch starts mid-log
    lat = table["latency_s"].to_numpy().copy()
    lat[lat.size // 2:] *= 1.25
    tb = table.set_column(i, "latency_s", pa.array(lat))
    ids = table["request_id"].to_numpy() * 3  # gaps
    ids[10] = ids[11]  # a repeat: the stable order keeps file order
    tb = tb.set_column(0, "request_id", pa.array(ids))
    for t in (tb, tb.slice(0, 700)):
        want = reference_summarize(t, warmup_s=5.0, comm=None, components={})
        got = summarize(t, warmup_s=5.0, comm=None, components={})
        assert _json(got) == _json(want)
    assert summarize(tb, warmup_s=5.0, comm=None, components={})["latency_s"]["mean"]["value"] != \
        summarize(table, warmup_s=5.0, comm=None, components={})["latency_s"]["mean"]["value"]


def test_flops_that_are_not_float32_exact_keep_float64(scenario_dict):
    table = run(scenario_dict(seed=4, stop={"requests": 800})).events_table
    j = table.schema.get_field_index("flops")
    flops = pc.add(pc.multiply(table["flops"], 1.0 + 1e-9), 0.25)  # not representable in float32
    t = table.set_column(j, "flops", flops)
    want = reference_summarize(t, warmup_s=0.0, comm=None, components={})
    got = summarize(t, warmup_s=0.0, comm=None, components={})
    assert got["flops_per_request"] == want["flops_per_request"]
    assert got["flops_per_request"] != summarize(table, warmup_s=0.0, comm=None, components={})["flops_per_request"]


def test_empty_log_and_oversized_batch():
    empty = EventLog(np.array(["a"]), "p", 1.0).close()
    assert _json(summarize(empty, warmup_s=0.0, comm=None, components={})) == \
        _json(reference_summarize(empty, warmup_s=0.0, comm=None, components={}))
    acc = SummaryPass(0, warmup_s=0.0, comm=None)
    with pytest.raises(ValueError, match="sized for"):
        acc.add(pa.table({c: [1] for c in ("request_id",)}))


def test_file_pass_reads_row_groups_and_needed_columns_only(scenario_dict, tmp_path, monkeypatch):
    res = run(scenario_dict(seed=6, stop={"requests": 1200}), tmp_path / "run")
    path = tmp_path / "run" / "events.parquet"
    table = pq.read_table(path)
    pq.write_table(table, tmp_path / "small_groups.parquet", row_group_size=100, **WRITER_OPTIONS)
    calls = []
    real = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kw):
        calls.append((i, tuple(columns)))
        return real(self, i, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    got = summarize_file(tmp_path / "small_groups.parquet", warmup_s=0.0, comm=None, components={})
    assert [i for i, _ in calls] == list(range(12))
    assert all("sample_id" not in cols and "client_id" not in cols and "s1_start_s" not in cols for _, cols in calls)
    assert _json(got) == _json(reference_summarize(table, warmup_s=0.0, comm=None, components={}))
    assert res.summary["counts"]["arrived"] == 1200


def test_per_request_storage_is_compact():
    acc = SummaryPass(1_000_000, warmup_s=0.0, comm=None)
    per_row = sum(a.nbytes for a in (acc._rid, acc._arrival, acc._done, acc._score, acc._flops, acc._status,
                                     acc._met)) / 1_000_000
    assert per_row == 30 and acc._latency is None
