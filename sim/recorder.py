"""The event log (DESIGN.md §5; schema in traces/eventlog.py): one row per request, streamed to Parquet in row groups.

Each terminal request's values go straight into typed buffers (an `array('d')` of its floats, an
`array('q')` of its integers, a list of statuses), so no Python object outlives its request and a
flush reads the buffers as numpy arrays without converting value by value. Every `row_group_rows`
they become one RecordBatch, so memory stays flat however long the run; sample ids and the policy
name are taken from Arrow arrays built once. Writer settings are fixed: same run, same bytes.
"""

from __future__ import annotations

from array import array
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from edgevlm.traces.eventlog import EVENT_SCHEMA, STATUS_OK, WRITER_OPTIONS

#: Values buffered per request, in the order `__call__` writes them (`flush` reads them by position):
#: floats: the 10 step times, score, flops, the 6 progressive times; ints: request_id, client_id,
#: sample, uplink_bytes, downlink_bytes, stages, prog_levels.
N_FLOATS, N_INTS = 18, 7
#: One C call each: the request's floats and ints as tuples, in that order.
_FLOATS = attrgetter("arrival_s", "edge_done_s", "up1_end_s", "s1_start_s", "s1_end_s", "crop_req_end_s",
                     "up2_end_s", "s2_start_s", "s2_end_s", "done_s", "score", "flops", "prog_last_start_s",
                     "prog_last_end_s", "prog_down_s", "prog_up_s", "prog_queue_s", "prog_infer_s")
_INTS = attrgetter("request_id", "client_id", "sample", "uplink_bytes", "downlink_bytes", "stages", "prog_levels")


class EventLog:
    """Collects terminal requests; flushes row groups to a Parquet writer or keeps them in memory."""

    def __init__(self, sample_ids: np.ndarray, policy_name: str, deadline_s: float,
                 path: Path | None = None, metadata: dict[bytes, bytes] | None = None,
                 row_group_rows: int = 65536, on_flush: Callable[[int], None] | None = None):
        self._sample_ids = pa.array(np.asarray(sample_ids, dtype=object), pa.string())
        self._policy = pa.array([policy_name] * row_group_rows, pa.string())  # sliced per row group
        self._deadline_s = deadline_s
        self._floats = array("d")
        self._ints = array("q")
        self._status: list[str] = []
        self._row_group_rows = row_group_rows
        self._batches: list[pa.RecordBatch] = []
        self._on_flush = on_flush
        self.schema = EVENT_SCHEMA.with_metadata(metadata or {})
        self._writer = pq.ParquetWriter(str(path), self.schema, **WRITER_OPTIONS) if path else None
        self.rows_written = 0

    def __call__(self, req: Any) -> None:
        self._floats.extend(_FLOATS(req))
        self._ints.extend(_INTS(req))
        status = self._status
        status.append(req.status)
        if len(status) >= self._row_group_rows:
            self.flush()

    @property
    def rows_pending(self) -> int:
        """Rows logged and not yet flushed."""
        return len(self._status)

    def flush(self) -> None:
        n = len(self._status)
        if not n:
            return
        floats = np.frombuffer(self._floats, dtype=np.float64).reshape(n, N_FLOATS)
        ints = np.frombuffer(self._ints, dtype=np.int64).reshape(n, N_INTS)
        status = np.array(self._status, dtype=object)
        self._floats, self._ints, self._status = array("d"), array("q"), []
        ok = status == STATUS_OK
        latency = np.where(ok, floats[:, 9] - floats[:, 0], np.nan)
        arrays = [
            pa.array(ints[:, 0], pa.int64()), pa.array(ints[:, 1], pa.int32()),
            self._sample_ids.take(pa.array(ints[:, 2])),
            self._policy if n == len(self._policy) else self._policy.slice(0, n),
            *(pa.array(floats[:, k], pa.float64(), from_pandas=True) for k in range(10)),
            pa.array(latency, pa.float64(), from_pandas=True),
            pa.array(ints[:, 3], pa.int64()), pa.array(ints[:, 4], pa.int64()), pa.array(ints[:, 5], pa.int8()),
            pa.array(floats[:, 10].astype(np.float32), pa.float32(), from_pandas=True),
            pa.array(floats[:, 11], pa.float64()),
            pa.array(ok & (latency <= self._deadline_s)),
            pa.array(status, pa.string()),
            pa.array(ints[:, 6], pa.int8()),
            *(pa.array(floats[:, k], pa.float64(), from_pandas=True) for k in range(12, 18)),
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
