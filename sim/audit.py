"""The opt-in audit log (`audit.parquet`): one row per link transfer and per GPU pass.

events.parquet has one row per request, which is not enough to re-verify the resources: a request's
uplink bytes are the sum of two messages, and the attention pass leaves no timestamps. With
`run(..., audit=True)` (CLI `edgevlm run --audit`) the engine also records, for every message a
link delivered, when it was handed to the link (`start_s`) and when it arrived (`end_s`, after
propagation), and for every GPU pass its start and end. `edgevlm check` uses these rows for the
link-capacity window check, per-request byte conservation and GPU occupancy.

Recording costs one tuple per transfer and per pass, so it is off by default (the hot path then
pays one `is None` test per message). Rows are streamed in row groups with the event log's fixed
writer settings, so the file is byte-identical for identical runs.

A run whose server has a KV-cache model (batching with a finite KV capacity, sim/server/kvcache.py)
also writes `server_steps.parquet` with the audit (`StepLog`): per iteration (continuous) or batch
(static) of each replica, the KV tokens in use, the capacity, the sequences running and the
admissions and preemptions of that step, so `edgevlm check` can verify the capacity on every step.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from edgevlm.traces.eventlog import WRITER_OPTIONS

#: `resource` values; links carry bytes, the GPU runs passes (`stage` 1, 2, or 0 = attention pass).
LINKS = ("uplink", "downlink")
GPU = "gpu"

AUDIT_SCHEMA = pa.schema([
    pa.field("resource", pa.string(), nullable=False),
    pa.field("request_id", pa.int64(), nullable=False),
    pa.field("stage", pa.int8()),  # null for link rows
    pa.field("bytes", pa.int64(), nullable=False),  # 0 for GPU rows
    pa.field("start_s", pa.float64(), nullable=False),
    pa.field("end_s", pa.float64(), nullable=False),
])


class RowLog:
    """Rows buffered as tuples and streamed to `path` in row groups of `schema` (in memory without a path)."""

    schema: pa.Schema

    def __init__(self, path: Path | None, row_group_rows: int = 65536):
        self._rows: list[tuple] = []
        self._row_group_rows = row_group_rows
        self._batches: list[pa.RecordBatch] = []
        self._writer = pq.ParquetWriter(str(path), self.schema, **WRITER_OPTIONS) if path else None

    def _add(self, row: tuple) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._row_group_rows:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        cols = list(zip(*self._rows))
        self._rows = []
        batch = pa.RecordBatch.from_arrays([pa.array(c, f.type) for c, f in zip(cols, self.schema)],
                                           schema=self.schema)
        if self._writer is not None:
            self._writer.write_batch(batch)
        else:
            self._batches.append(batch)

    def close(self) -> pa.Table | None:
        """Flush and close; returns the in-memory table when no path was given."""
        self.flush()
        if self._writer is not None:
            self._writer.close()
            return None
        return pa.Table.from_batches(self._batches, schema=self.schema)


class AuditLog(RowLog):
    """Collects transfer and GPU-pass rows."""

    schema = AUDIT_SCHEMA

    def transfer(self, env, gen, link: str, request_id: int, nbytes: int):
        """Process: wait for the link's transfer `gen` (what `Link.transfer` returned) and record its
        hand-over and delivery times."""
        start = env.now
        result = yield from gen
        self._add((link, request_id, None, nbytes, start, env.now))
        return result

    def gpu(self, request_id: int, stage: int, start_s: float, end_s: float) -> None:
        self._add((GPU, request_id, stage, 0, start_s, end_s))


#: server_steps.parquet: one row per scheduler iteration (continuous) or batch (static) of a replica.
STEPS_SCHEMA = pa.schema([
    pa.field("replica", pa.int32(), nullable=False),
    pa.field("end_s", pa.float64(), nullable=False),  # when the step ended (its KV use is largest then)
    pa.field("sequences", pa.int32(), nullable=False),  # sequences holding KV during the step
    pa.field("admitted", pa.int32(), nullable=False),  # sequences admitted (prefilled) in the step
    pa.field("preempted", pa.int32(), nullable=False),  # sequences preempted just before the step
    pa.field("kv_tokens", pa.int64(), nullable=False),  # KV tokens in use at the step's end
    pa.field("capacity_tokens", pa.int64(), nullable=False),  # the replica's KV capacity
])


class StepLog(RowLog):
    """Collects one row per server step with its KV use (attach `recorder(i)` to replica i's KvUse)."""

    schema = STEPS_SCHEMA

    def recorder(self, replica: int, capacity_tokens: float):
        """The callable a KvUse calls after each step: (end_s, tokens, sequences, admitted, preempted)."""
        cap = int(capacity_tokens)
        add = self._add

        def record(end_s: float, tokens: float, seqs: int, admitted: int, preempted: int) -> None:
            add((replica, end_s, seqs, admitted, preempted, int(tokens), cap))

        return record
