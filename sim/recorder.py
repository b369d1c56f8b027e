"""The event log (DESIGN.md §5; schema in traces/eventlog.py): one row per request, streamed to Parquet in row groups.

Rows are buffered as tuples (one append per request) and turned into a RecordBatch every
`row_group_rows`, so memory stays flat however long the run. Writer settings are fixed, so the
same run gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from edgevlm.traces.eventlog import EVENT_SCHEMA, STATUS_OK, WRITER_OPTIONS

class EventLog:
    """Collects terminal requests; flushes row groups to a Parquet writer or keeps them in memory."""

    def __init__(self, sample_ids: np.ndarray, policy_name: str, deadline_s: float,
                 path: Path | None = None, metadata: dict[bytes, bytes] | None = None,
                 row_group_rows: int = 65536, on_flush: Callable[[int], None] | None = None):
        self._sample_ids = sample_ids
        self._policy = policy_name
        self._deadline_s = deadline_s
        self._rows: list[tuple] = []
        self._row_group_rows = row_group_rows
        self._batches: list[pa.RecordBatch] = []
        self._on_flush = on_flush
        self.schema = EVENT_SCHEMA.with_metadata(metadata or {})
        self._writer = pq.ParquetWriter(str(path), self.schema, **WRITER_OPTIONS) if path else None
        self.rows_written = 0

    def __call__(self, req: Any) -> None:
        self._rows.append((req.request_id, req.client_id, req.sample, req.arrival_s, req.edge_done_s,
                           req.up1_end_s, req.s1_start_s, req.s1_end_s, req.crop_req_end_s, req.up2_end_s,
                           req.s2_start_s, req.s2_end_s, req.done_s, req.uplink_bytes, req.downlink_bytes,
                           req.stages, req.score, req.flops, req.status, req.prog_levels, req.prog_last_start_s,
                           req.prog_last_end_s, req.prog_down_s, req.prog_up_s, req.prog_queue_s,
                           req.prog_infer_s))
        if len(self._rows) >= self._row_group_rows:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        cols = list(zip(*self._rows))
        n = len(self._rows)
        self._rows = []
        status = np.array(cols[18], dtype=object)
        ok = status == STATUS_OK
        arrival, done = np.array(cols[3]), np.array(cols[12])
        latency = np.where(ok, done - arrival, np.nan)
        arrays = [
            pa.array(cols[0], pa.int64()), pa.array(cols[1], pa.int32()),
            pa.array(self._sample_ids[np.array(cols[2], dtype=np.int64)], pa.string()),
            pa.array([self._policy] * n, pa.string()),
            *(pa.array(np.array(c, dtype=np.float64), pa.float64(), from_pandas=True) for c in cols[3:13]),
            pa.array(latency, pa.float64(), from_pandas=True),
            pa.array(cols[13], pa.int64()), pa.array(cols[14], pa.int64()), pa.array(cols[15], pa.int8()),
            pa.array(np.array(cols[16], dtype=np.float32), pa.float32(), from_pandas=True),
            pa.array(cols[17], pa.float64()),
            pa.array(ok & (latency <= self._deadline_s)),
            pa.array(status, pa.string()),
            pa.array(cols[19], pa.int8()),
            *(pa.array(np.array(c, dtype=np.float64), pa.float64(), from_pandas=True) for c in cols[20:26]),
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
