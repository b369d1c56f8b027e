"""Trace format v1 (schema, read/write/validate) and the shipped trace files."""

from edgevlm.traces.io import TraceError, atomic_write, conform, read_provenance, read_trace, validate, write_trace
from edgevlm.traces.schema import FORMAT_VERSION, SOURCE_KINDS, TRACE_SCHEMA

__all__ = [
    "FORMAT_VERSION", "SOURCE_KINDS", "TRACE_SCHEMA", "TraceError", "atomic_write", "conform",
    "read_provenance", "read_trace", "validate", "write_trace",
]
