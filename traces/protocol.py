"""Sizes of the protocol's small messages (DESIGN.md §4), shared by the simulator's policies, the
testbed's byte accounting and the tests. Image payloads come from the trace's JPEG columns."""

from __future__ import annotations

#: Bytes of UTF-8 text per LM token, used to size questions and answers on the wire.
TEXT_BYTES_PER_TOKEN = 4
#: Bytes of a bounding-box request (four int32 coordinates) on the downlink.
BBOX_REQUEST_BYTES = 16
#: Bytes of the edge's "send me the box" message (a request id) when the gate runs on the edge.
ATTENTION_REQUEST_BYTES = 8
#: Bytes of a progressive next-level request on the downlink (a level index and the image id).
LEVEL_REQUEST_BYTES = 8
