"""Trace formats v1 and v2 (schema, read/write/validate) and the shipped trace files.

v2 stores every quality-dependent value per JPEG quality (lists aligned with the metadata
`jpeg_qualities`); `quality.at_quality` reads one quality as v1 columns. docs/TRACE_FORMAT.md
is the reference.
"""

from edgevlm.traces.io import TraceError, atomic_write, conform, read_provenance, read_trace, validate, write_trace
from edgevlm.traces.schema import FORMAT_VERSION, SOURCE_KINDS, TRACE_SCHEMA

__all__ = [
    "FORMAT_VERSION", "SOURCE_KINDS", "TRACE_SCHEMA", "TraceError", "atomic_write", "conform",
    "read_provenance", "read_trace", "validate", "write_trace",
]
