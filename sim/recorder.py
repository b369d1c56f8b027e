"""The event log (DESIGN.md §5; schema in traces/eventlog.py): one row per request, streamed to Parquet in row groups.

Rows are buffered in one flat list (one `extend` per request) and turned into a RecordBatch every
`row_group_rows` through one 2-D object array, so memory stays flat however long the run and no
per-row Python objects are made at flush; sample ids and the policy name are taken from Arrow
arrays built once. Writer settings are fixed, so the same run gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from edgevlm.traces.eventlog import EVENT_SCHEMA, STATUS_OK, WRITER_OPTIONS

#: Values buffered per request (the order `__call__` writes them; `flush` reads columns by position).
ROW_WIDTH = 26


class EventLog:
    """Collects terminal requests; flushes row groups to a Parquet writer or keeps them in memory."""

    def __init__(self, sample_ids: np.ndarray, policy_name: str, deadline_s: float,
                 path: Path | None = None, metadata: dict[bytes, bytes] | None = None,
                 row_group_rows: int = 65536, on_flush: Callable[[int], None] | None = None):
        self._sample_ids = pa.array(np.asarray(sample_ids, dtype=object), pa.string())
        self._policy = pa.array([policy_name] * row_group_rows, pa.string())  # sliced per row group
        self._deadline_s = deadline_s
        self._rows: list = []  # ROW_WIDTH values per request, flat
        self._flush_at = row_group_rows * ROW_WIDTH
        self._batches: list[pa.RecordBatch] = []
        self._on_flush = on_flush
        self.schema = EVENT_SCHEMA.with_metadata(metadata or {})
        self._writer = pq.ParquetWriter(str(path), self.schema, **WRITER_OPTIONS) if path else None
        self.rows_written = 0

    def __call__(self, req: Any) -> None:
        rows = self._rows
        rows.extend((req.request_id, req.client_id, req.sample, req.arrival_s, req.edge_done_s,
                     req.up1_end_s, req.s1_start_s, req.s1_end_s, req.crop_req_end_s, req.up2_end_s,
                     req.s2_start_s, req.s2_end_s, req.done_s, req.uplink_bytes, req.downlink_bytes,
                     req.stages, req.score, req.flops, req.status, req.prog_levels, req.prog_last_start_s,
                     req.prog_last_end_s, req.prog_down_s, req.prog_up_s, req.prog_queue_s,
                     req.prog_infer_s))
        if len(rows) >= self._flush_at:
            self.flush()

    @property
    def rows_pending(self) -> int:
        """Rows logged and not yet flushed."""
        return len(self._rows) // ROW_WIDTH

    def flush(self) -> None:
        if not self._rows:
            return
        rows = np.array(self._rows, dtype=object).reshape(-1, ROW_WIDTH)
        self._rows = []
        n = len(rows)
        ints = rows[:, [0, 1, 2, 13, 14, 15, 19]].astype(np.int64)
        times = rows[:, 3:13].astype(np.float64)
        prog = rows[:, 20:26].astype(np.float64)
        status = rows[:, 18]
        ok = status == STATUS_OK
        latency = np.where(ok, times[:, 9] - times[:, 0], np.nan)
        arrays = [
            pa.array(ints[:, 0], pa.int64()), pa.array(ints[:, 1], pa.int32()),
            self._sample_ids.take(pa.array(ints[:, 2])),
            self._policy if n == len(self._policy) else self._policy.slice(0, n),
            *(pa.array(times[:, k], pa.float64(), from_pandas=True) for k in range(10)),
            pa.array(latency, pa.float64(), from_pandas=True),
            pa.array(ints[:, 3], pa.int64()), pa.array(ints[:, 4], pa.int64()), pa.array(ints[:, 5], pa.int8()),
            pa.array(rows[:, 16].astype(np.float32), pa.float32(), from_pandas=True),
            pa.array(rows[:, 17].astype(np.float64), pa.float64()),
            pa.array(ok & (latency <= self._deadline_s)),
            pa.array(status, pa.string()),
            pa.array(ints[:, 6], pa.int8()),
            *(pa.array(prog[:, k], pa.float64(), from_pandas=True) for k in range(6)),
        ]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        if self._writer is not None:
            self._writer.write_batch(batch)
        else:
            self._batches.append(batch)
        self.rows_written += n
        if self._on_flush:
            self._on_flush(n)

    def close(self) -> pa.Table | None:
        """Flush and close; returns the in-memory table when no path was given."""
        self.flush()
        if self._writer is not None:
            self._writer.close()
            return None
        return pa.Table.from_batches(self._batches, schema=self.schema)
