"""Read, write and validate trace files (format v1 and v2); provenance lives in the Parquet metadata.

A v2 file is checked column by column for its per-quality shape, then at every quality as the
v1 table `traces.quality.at_quality` makes of it, so both formats obey the same row invariants;
every error names the file, the column (the v2 name) and, for v2, the quality.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edgevlm.traces.schema import (
    ENTROPY_COLUMNS,
    METADATA_KEY,
    PER_QUALITY_COLUMNS,
    PROG_COLUMNS,
    READ_VERSIONS,
    REQUIRED_BY_VERSION,
    REQUIRED_COLUMNS,
    REQUIRED_PROVENANCE,
    SCHEMAS,
    SCORE_COLUMNS,
    SOURCE_KINDS,
    V2_ONLY_COLUMNS,
    V2_PER_QUALITY_COLUMNS,
)


_UMASK = os.umask(0)
os.umask(_UMASK)


class TraceError(ValueError):
    """A trace file is missing, unreadable or breaks its format's contract; the message names file and column."""


def atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Call write_fn(tmp_path) and rename the result onto path, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result should be an ordinary file
    try:
        write_fn(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The `edgevlm` metadata dict of a trace file, without reading its rows."""
    path = Path(path)
    try:
        meta = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise TraceError(f"{path}: trace file not found") from None
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    if METADATA_KEY not in meta:
        raise TraceError(f"{path}: no '{METADATA_KEY.decode()}' provenance metadata; not an edgevlm trace")
    try:
        prov = json.loads(meta[METADATA_KEY])
    except ValueError:
        raise TraceError(f"{path}: '{METADATA_KEY.decode()}' metadata is not valid JSON") from None
    if not isinstance(prov, dict):
        raise TraceError(f"{path}: '{METADATA_KEY.decode()}' metadata must be a JSON object")
    return prov


def read_trace(path: str | os.PathLike, *, validate_rows: bool = True) -> tuple[pa.Table, dict[str, Any]]:
    """Read and validate a trace; returns (table conformed to its version's schema, provenance).

    `provenance["format_version"]` says which: 1 (scalar per-stage columns) or 2 (per-quality lists).
    """
    path = Path(path)
    prov = read_provenance(path)
    version = _version(prov, str(path))
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    table = conform(table, where=str(path), version=version)
    validate(table, prov, where=str(path), check_rows=validate_rows)
    return table, prov


def table_version(table: pa.Table) -> int:
    """2 if the table has any v2-only column (s1_score_q, ...), else 1."""
    return 2 if set(V2_ONLY_COLUMNS) & set(table.column_names) else 1


def write_trace(table: pa.Table, path: str | os.PathLike, provenance: Mapping[str, Any]) -> Path:
    """Validate and write a trace atomically with its provenance; returns the path.

    The format version is provenance's `format_version` if given, else 2 for a table with v2
    columns and 1 otherwise.
    """
    path = Path(path)
    prov = {"format_version": table_version(table), **dict(provenance)}
    version = _version(prov, str(path))
    table = conform(table, where=str(path), version=version)
    validate(table, prov, where=str(path))
    meta = {METADATA_KEY: json.dumps(prov, sort_keys=True).encode()}
    table = table.replace_schema_metadata(meta)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    return path


def conform(table: pa.Table, *, where: str = "<table>", version: int = 1) -> pa.Table:
    """Cast a table to the schema of format `version`, in schema order; names the first missing,
    extra or mistyped column."""
    schema = SCHEMAS[version]
    names = set(table.column_names)
    missing = [c for c in REQUIRED_BY_VERSION[version] if c not in names]
    if missing:
        raise TraceError(f"{where}: missing required column '{missing[0]}'"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = sorted(names - set(schema.names))
    if extra:
        raise TraceError(f"{where}: unknown column '{extra[0]}'; v{version} columns are: {', '.join(schema.names)}")
    arrays, fields = [], []
    for field in schema:
        if field.name not in names:
            continue
        col = table.column(field.name)
        if col.type != field.type:
            try:
                col = col.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                why = f" ({_first_line(exc)})" if "range" in str(exc) else ""
                raise TraceError(
                    f"{where}: column '{field.name}' has type {col.type}, expected {field.type}{why}"
                ) from None
        arrays.append(col)
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def validate(table: pa.Table, provenance: Mapping[str, Any], *, where: str = "<table>",
             check_rows: bool = True) -> None:
    """Check provenance and row-level invariants of a conformed table; raise TraceError on the first breach."""
    _validate_provenance(provenance, where)
    if table.num_rows == 0:
        raise TraceError(f"{where}: trace has no rows")
    if not check_rows:
        return
    if provenance["format_version"] == 2:
        _validate_v2(table, provenance, where)
    else:
        _validate_rows(table, provenance, where)


def _validate_v2(table: pa.Table, provenance: Mapping[str, Any], where: str) -> None:
    """v2: required columns non-null, one element per quality, then every quality as a v1 table."""
    from edgevlm.traces.quality import V1_NAME, at_quality

    for name in REQUIRED_BY_VERSION[2]:
        nulls = table.column(name).null_count
        if nulls:
            raise TraceError(f"{where}: column '{name}' has {nulls} null value(s); it is required")
    qualities = provenance["jpeg_qualities"]
    n_q = len(qualities)
    for name in V2_PER_QUALITY_COLUMNS:
        if name not in table.column_names:
            continue
        col = table.column(name)
        lens = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(valid & (lens != n_q))
        if bad.size:
            raise TraceError(f"{where}: column '{name}' row {bad[0]} has {lens[bad[0]]} values, "
                             f"expected {n_q} (one per jpeg_qualities entry {qualities})")
        flat = pc.list_flatten(col.combine_chunks())
        if flat.null_count:
            i = pc.list_parent_indices(col.combine_chunks()).filter(flat.is_null())[0].as_py()
            raise TraceError(f"{where}: column '{name}' row {i} has a null element; a per-quality list "
                             "holds a value for every quality (make the whole row null if not measured)")
    for name in [c for c in V2_PER_QUALITY_COLUMNS if c.endswith("_jpeg_bytes")]:
        if name in table.column_names:
            flat = pc.list_flatten(table.column(name)).to_numpy(zero_copy_only=False)
            if (flat <= 0).any():
                raise TraceError(f"{where}: column '{name}' has non-positive byte sizes")
    v2_name = {v1: v2 for v2, v1 in V1_NAME.items() if v1 is not None}
    for q in qualities:
        def label(c, q=q):
            return f"'{v2_name.get(c, c)}' (jpeg_quality {q})" if v2_name.get(c, c) in V2_PER_QUALITY_COLUMNS \
                else f"'{c}'"
        _validate_rows(at_quality(table, provenance, q), provenance, where, label=label, per_quality_lists=False)


def _validate_rows(table: pa.Table, provenance: Mapping[str, Any], where: str, *, label=None,
                   per_quality_lists: bool = True) -> None:
    """Row invariants of a v1-shaped table; `label(column)` names a column in messages."""
    L = label or (lambda c: f"'{c}'")
    for name in REQUIRED_COLUMNS:
        nulls = table.column(name).null_count
        if nulls:
            raise TraceError(f"{where}: column {L(name)} has {nulls} null value(s); it is required")
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_list(col.type):
            col = col.combine_chunks()
            flat = pc.list_flatten(col)
            if flat.null_count:
                row = pc.list_parent_indices(col).filter(flat.is_null())[0].as_py()
                raise TraceError(f"{where}: column {L(name)} row {row} has a null element; "
                                 "list values must all be present")
    for name in SCORE_COLUMNS:
        if name in REQUIRED_COLUMNS:
            nan = np.flatnonzero(np.isnan(table.column(name).to_numpy(zero_copy_only=False)))
            if nan.size:
                raise TraceError(f"{where}: column {L(name)} row {nan[0]} is NaN; a required score must be "
                                 "a number in [0, 1]")
    ids = table.column("sample_id")
    if pc.count_distinct(ids).as_py() != table.num_rows:
        raise TraceError(f"{where}: column 'sample_id' has duplicate values; ids must be unique")
    n_q = len(provenance["jpeg_qualities"])
    for name in PER_QUALITY_COLUMNS if per_quality_lists else ():
        lens = pc.list_value_length(table.column(name)).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(lens != n_q)
        if bad.size:
            raise TraceError(f"{where}: column {L(name)} row {bad[0]} has {lens[bad[0]]} values, "
                             f"expected {n_q} (one per jpeg_qualities entry)")
        flat = pc.list_flatten(table.column(name)).to_numpy(zero_copy_only=False)
        if (flat <= 0).any():
            raise TraceError(f"{where}: column {L(name)} has non-positive byte sizes")
    lens0 = pc.list_value_length(table.column(ENTROPY_COLUMNS[0])).to_numpy(zero_copy_only=False)
    if (lens0 == 0).any():
        raise TraceError(f"{where}: column {L(ENTROPY_COLUMNS[0])} row {int(np.argmax(lens0 == 0))} "
                         "is empty; every stage-1 answer has at least one token")
    for name in ENTROPY_COLUMNS:
        lens = pc.list_value_length(table.column(name)).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(lens != lens0)
        if bad.size:
            raise TraceError(f"{where}: column {L(name)} row {bad[0]} has {lens[bad[0]]} tokens but "
                             f"{L(ENTROPY_COLUMNS[0])} has {lens0[bad[0]]}; lengths must match")
        flat = pc.list_flatten(table.column(name)).to_numpy(zero_copy_only=False)
        if not np.isfinite(flat).all():
            row = int(np.searchsorted(np.cumsum(lens), np.flatnonzero(~np.isfinite(flat))[0], side="right"))
            raise TraceError(f"{where}: column {L(name)} has NaN or infinite values (row {row})")
        if (flat < 0).any() or (name == "s1_margin" and (flat > 1).any()):
            allowed = "[0, 1]" if name == "s1_margin" else ">= 0 bits"
            raise TraceError(f"{where}: column {L(name)} has values outside {allowed}")
    for name in SCORE_COLUMNS:
        if name in table.column_names:
            vals = table.column(name).to_numpy(zero_copy_only=False)
            vals = vals[~np.isnan(vals)] if vals.dtype.kind == "f" else vals
            if ((vals < 0) | (vals > 1)).any():
                raise TraceError(f"{where}: column {L(name)} has scores outside [0, 1]")
    w = table.column("image_w").to_numpy()
    h = table.column("image_h").to_numpy()
    if (w <= 0).any() or (h <= 0).any():
        raise TraceError(f"{where}: columns 'image_w'/'image_h' must be positive")
    x0, y0, x1, y1 = (table.column(c).to_numpy() for c in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"))
    bad = np.flatnonzero((x0 < 0) | (y0 < 0) | (x1 > w) | (y1 > h) | (x1 <= x0) | (y1 <= y0))
    if bad.size:
        raise TraceError(f"{where}: bbox (columns {L('bbox_x0')} .. {L('bbox_y1')}) of row {bad[0]} ({x0[bad[0]]},{y0[bad[0]]},{x1[bad[0]]},{y1[bad[0]]}) "
                         f"is empty or outside the {w[bad[0]]}x{h[bad[0]]} image")
    if (table.column("prompt_tokens").to_numpy() <= 0).any():
        raise TraceError(f"{where}: column 'prompt_tokens' must be positive")
    if (table.column("s2_tokens").to_numpy() <= 0).any():
        raise TraceError(f"{where}: column {L('s2_tokens')} must be positive")
    _validate_progressive(table, where)


def _validate_progressive(table: pa.Table, where: str) -> None:
    present = [c for c in PROG_COLUMNS if c in table.column_names]
    if not present:
        return
    if len(present) != len(PROG_COLUMNS):
        missing = sorted(set(PROG_COLUMNS) - set(present))
        raise TraceError(f"{where}: progressive columns come together; missing '{missing[0]}'")
    valid = table.column("prog_bytes").is_valid()
    sub = table.filter(valid)
    if sub.num_rows == 0:
        return
    lens = pc.list_value_length(sub.column("prog_bytes")).to_numpy(zero_copy_only=False)
    for name in PROG_COLUMNS[1:]:
        other = pc.list_value_length(sub.column(name)).to_numpy(zero_copy_only=False)
        if (other != lens).any():
            raise TraceError(f"{where}: column '{name}' has a different number of levels than 'prog_bytes'")
    for row in sub.column("prog_bytes").to_pylist():
        if any(b <= a for a, b in zip(row, row[1:])) or (row and row[0] <= 0):
            raise TraceError(f"{where}: column 'prog_bytes' must be positive and strictly increasing "
                             f"(cumulative bytes per level), got {row}")


def _validate_provenance(prov: Mapping[str, Any], where: str) -> None:
    missing = [k for k in REQUIRED_PROVENANCE if k not in prov]
    if missing:
        raise TraceError(f"{where}: provenance is missing '{missing[0]}'; "
                         f"required keys: {', '.join(REQUIRED_PROVENANCE)}")
    _version(prov, where)
    if prov["source_kind"] not in SOURCE_KINDS:
        raise TraceError(f"{where}: source_kind {prov['source_kind']!r} must be one of {', '.join(SOURCE_KINDS)}")
    q = prov["jpeg_qualities"]
    if (not isinstance(q, list) or not q or not all(isinstance(x, int) and 1 <= x <= 100 for x in q)
            or sorted(set(q)) != q):
        raise TraceError(f"{where}: jpeg_qualities must be a non-empty increasing list of integers in 1..100")
    for key in ("vision_input_px", "visual_tokens_per_image"):
        v = prov[key]
        if not isinstance(v, int) or v <= 0:
            raise TraceError(f"{where}: provenance '{key}' must be a positive integer")


def _version(prov: Mapping[str, Any], where: str) -> int:
    v = prov.get("format_version")
    if v not in READ_VERSIONS or isinstance(v, bool):
        raise TraceError(f"{where}: format_version {v!r} is not supported; "
                         f"this build reads versions {', '.join(map(str, READ_VERSIONS))}")
    return v


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
