"""The event log (sim/recorder.py): its vectorised row-group flush equals a row-by-row reference."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgevlm.sim.recorder import EventLog
from edgevlm.traces.eventlog import EVENT_SCHEMA, PROG_EVENT_COLUMNS, STATUS_OK, STATUSES, TIME_COLUMNS


def _requests(n: int, seed: int) -> list[SimpleNamespace]:
    """Terminal requests with every kind of value the engine writes: NaN steps, big ints, all statuses."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = np.cumsum(rng.exponential(0.3, len(TIME_COLUMNS))).tolist()
        req = SimpleNamespace(**dict(zip(TIME_COLUMNS, t)))
        for c in TIME_COLUMNS[1:-1]:
            if rng.random() < 0.3:
                setattr(req, c, math.nan)
        req.request_id, req.client_id, req.sample = i, int(rng.integers(0, 2**31 - 1)), int(rng.integers(0, 5))
        req.uplink_bytes, req.downlink_bytes = int(rng.integers(0, 2**40)), int(rng.integers(0, 10**6))
        req.stages, req.prog_levels = int(rng.integers(0, 3)), int(rng.integers(0, 4))
        req.score = math.nan if rng.random() < 0.2 else float(rng.random())
        req.flops = float(rng.random() * 1e15)
        req.status = STATUSES[int(rng.integers(0, len(STATUSES)))]
        for c in PROG_EVENT_COLUMNS[1:]:
            setattr(req, c, math.nan if rng.random() < 0.5 else float(rng.random()))
        out.append(req)
    return out


def _reference(reqs, sample_ids, policy: str, deadline_s: float) -> pa.Table:
    """One dict per row, as the schema reads it: NaN steps and scores are nulls; latency only when ok."""
    def num(x):
        return None if isinstance(x, float) and math.isnan(x) else x

    rows = []
    for r in reqs:
        ok = r.status == STATUS_OK
        latency = r.done_s - r.arrival_s if ok else None
        row = {"request_id": r.request_id, "client_id": r.client_id, "sample_id": sample_ids[r.sample],
               "policy": policy, **{c: num(getattr(r, c)) for c in TIME_COLUMNS}, "latency_s": latency,
               "uplink_bytes": r.uplink_bytes, "downlink_bytes": r.downlink_bytes, "stages": r.stages,
               "score": num(r.score), "flops": r.flops, "deadline_met": ok and latency <= deadline_s,
               "status": r.status, "prog_levels": r.prog_levels,
               **{c: num(getattr(r, c)) for c in PROG_EVENT_COLUMNS[1:]}}
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)


@pytest.mark.parametrize("rows_per_group", [1, 7, 64])
def test_flushed_row_groups_equal_a_row_by_row_table(tmp_path, rows_per_group):
    sample_ids = np.array([f"img-{k}" for k in range(5)], dtype=object)
    reqs = _requests(50, seed=rows_per_group)
    path = tmp_path / "events.parquet"
    log = EventLog(sample_ids, "entropy_threshold", 1.5, path=path, row_group_rows=rows_per_group)
    for r in reqs:
        log(r)
    log.close()
    got = pq.read_table(path)
    expected = _reference(reqs, sample_ids, "entropy_threshold", 1.5)
    assert got.schema.remove_metadata().equals(EVENT_SCHEMA)
    assert got.equals(expected), "the event log differs from the row-by-row reference"
    assert pq.ParquetFile(path).num_row_groups == math.ceil(len(reqs) / rows_per_group)
    mem = EventLog(sample_ids, "entropy_threshold", 1.5, row_group_rows=rows_per_group)
    for r in reqs:
        mem(r)
    assert mem.close().equals(expected)
