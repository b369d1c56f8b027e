"""One JPEG quality out of a trace: a v2 table's per-quality lists taken at quality q, in v1 columns.

This is the only place that maps v2 column names to their v1 meaning, so validation, the
simulator's workload and analysis all read a quality the same way. A v1 table has one value
per stage for every quality, so it is returned unchanged.
"""

from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from edgevlm.traces.schema import (
    TRACE_SCHEMA,
    V2_OPTIONAL_PER_QUALITY,
    V2_REQUIRED_PER_QUALITY,
)

#: v2 per-quality column -> the v1 column it becomes at one quality (None: no v1 counterpart).
V1_NAME: dict[str, str | None] = {
    **{c: v1 for c, (v1, _) in V2_REQUIRED_PER_QUALITY.items()},
    **{c: v1 for c, (v1, _) in V2_OPTIONAL_PER_QUALITY.items()},
}
#: Byte columns stay whole lists in the v1 shape (v1 stores bytes per quality too).
_BYTE_LISTS = ("global_jpeg_bytes", "original_jpeg_bytes", "local_jpeg_bytes")


class QualityError(ValueError):
    """A quality that the trace was not measured at."""


def quality_position(provenance: Mapping[str, Any], quality: int) -> int:
    """Index of `quality` in the trace's jpeg_qualities, or QualityError listing the ones there are."""
    qualities = list(provenance["jpeg_qualities"])
    if quality not in qualities:
        raise QualityError(f"{quality} is not in the trace's jpeg_qualities; available: "
                           + ", ".join(map(str, qualities)))
    return qualities.index(quality)


def is_per_quality(provenance: Mapping[str, Any]) -> bool:
    """True for a v2 trace (accuracy, uncertainties and boxes measured at every quality)."""
    return provenance.get("format_version") == 2


def at_quality(table: pa.Table, provenance: Mapping[str, Any], quality: int) -> pa.Table:
    """The table at JPEG quality `quality` in v1 columns (v1 schema order); v1 tables unchanged.

    In the result the byte columns remain per-quality lists; for v2 `local_jpeg_bytes[k]` is the
    crop at the box found at quality jpeg_qualities[k], so read it at the position of `quality`.
    """
    k = quality_position(provenance, quality)
    if not is_per_quality(provenance):
        return table
    names = set(table.column_names)
    from_v2 = {v1: c for c, v1 in V1_NAME.items() if v1 is not None and c in names}
    arrays, fields = [], []
    for field in TRACE_SCHEMA:
        name = field.name
        if name in _BYTE_LISTS:
            col = table.column(name)
        elif name in from_v2:
            col = pc.list_element(table.column(from_v2[name]), k)
        elif name in names:
            col = table.column(name)
        else:
            continue
        if col.type != field.type:
            col = col.cast(field.type)
        arrays.append(col)
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

