"""The event-log contract (events.parquet, DESIGN.md §5): one row per request, written by the
simulator (sim/recorder.py) and the testbed's edge client, read by `edgevlm check` and analysis/.

Its Arrow schema, the protocol-step time columns in the order a request passes them, the terminal
statuses, and the fixed Parquet writer settings that make identical runs byte-identical.
"""

from __future__ import annotations

import pyarrow as pa

#: Protocol-step timestamps (seconds of simulated time), in the order the two-stage protocol sets
#: them; a policy that skips a step leaves its column null.
TIME_COLUMNS = ("arrival_s", "edge_done_s", "up1_end_s", "s1_start_s", "s1_end_s", "crop_req_end_s",
                "up2_end_s", "s2_start_s", "s2_end_s", "done_s")

#: Terminal statuses: answered; refused by admission control; past its deadline before an answer.
STATUS_OK, STATUS_DROPPED, STATUS_EXPIRED = "ok", "dropped", "expired"
STATUSES = (STATUS_OK, STATUS_DROPPED, STATUS_EXPIRED)

#: The progressive protocol's own columns (sim/policies/progressive.py), null / 0 for other protocols:
#:   prog_levels        codec levels the answer used (0: not progressive);
#:   prog_last_start_s / prog_last_end_s   the last refinement pass on the server (null: level 1 only);
#:   prog_down_s, prog_up_s, prog_queue_s, prog_infer_s   summed over every refinement round: level
#:     requests on the downlink, increments on the uplink, GPU wait, GPU pass.
#: s1_end_s + the four sums = prog_last_end_s (`edgevlm check` verifies it).
PROG_SUM_COLUMNS = ("prog_down_s", "prog_up_s", "prog_queue_s", "prog_infer_s")
PROG_EVENT_COLUMNS = ("prog_levels", "prog_last_start_s", "prog_last_end_s") + PROG_SUM_COLUMNS

EVENT_SCHEMA = pa.schema(
    [pa.field("request_id", pa.int64(), nullable=False), pa.field("client_id", pa.int32(), nullable=False),
     pa.field("sample_id", pa.string(), nullable=False), pa.field("policy", pa.string(), nullable=False)]
    + [pa.field(c, pa.float64()) for c in TIME_COLUMNS]
    + [pa.field("latency_s", pa.float64()), pa.field("uplink_bytes", pa.int64(), nullable=False),
       pa.field("downlink_bytes", pa.int64(), nullable=False), pa.field("stages", pa.int8(), nullable=False),
       pa.field("score", pa.float32()), pa.field("flops", pa.float64(), nullable=False),
       pa.field("deadline_met", pa.bool_(), nullable=False), pa.field("status", pa.string(), nullable=False)]
    + [pa.field("prog_levels", pa.int8(), nullable=False)]
    + [pa.field(c, pa.float64()) for c in PROG_EVENT_COLUMNS[1:]]
)

#: Fixed Parquet writer settings (event and audit logs): byte-identical files for identical runs.
WRITER_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True,
                      data_page_version="2.0", version="2.6")
