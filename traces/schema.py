"""Trace format v1: the pyarrow schema of one row per (image, question) sample (DESIGN.md §2).

Required columns must be present and non-null; optional ones may be absent or null.
"""

from __future__ import annotations

import pyarrow as pa

FORMAT_VERSION = 1
METADATA_KEY = b"edgevlm"
SOURCE_KINDS = ("real", "tiny-local", "synthetic")

#: Provenance keys every trace file carries in its `edgevlm` metadata.
REQUIRED_PROVENANCE = (
    "format_version",
    "source_kind",
    "model_id",
    "dataset_id",
    "created_utc",
    "generator",
    "vision_input_px",
    "visual_tokens_per_image",
    "jpeg_qualities",
)

_f32_list = pa.list_(pa.float32())
_i32_list = pa.list_(pa.int32())

REQUIRED_FIELDS = [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("image_w", pa.int32(), nullable=False),
    pa.field("image_h", pa.int32(), nullable=False),
    pa.field("global_jpeg_bytes", _i32_list, nullable=False),
    pa.field("original_jpeg_bytes", _i32_list, nullable=False),
    pa.field("local_jpeg_bytes", _i32_list, nullable=False),
    pa.field("prompt_tokens", pa.int32(), nullable=False),
    pa.field("s1_answer", pa.string(), nullable=False),
    pa.field("s1_score", pa.float32(), nullable=False),
    pa.field("s1_min_entropy", _f32_list, nullable=False),
    pa.field("s1_shannon", _f32_list, nullable=False),
    pa.field("s1_margin", _f32_list, nullable=False),
    pa.field("bbox_x0", pa.int32(), nullable=False),
    pa.field("bbox_y0", pa.int32(), nullable=False),
    pa.field("bbox_x1", pa.int32(), nullable=False),
    pa.field("bbox_y1", pa.int32(), nullable=False),
    pa.field("s2_answer", pa.string(), nullable=False),
    pa.field("s2_score", pa.float32(), nullable=False),
    pa.field("s2_tokens", pa.int16(), nullable=False),
]

OPTIONAL_FIELDS = [
    pa.field("question_type", pa.string()),
    pa.field("s2_oracle_score", pa.float32()),
    pa.field("gt_x0", pa.int32()),
    pa.field("gt_y0", pa.int32()),
    pa.field("gt_x1", pa.int32()),
    pa.field("gt_y1", pa.int32()),
    pa.field("hd_score", pa.float32()),
    pa.field("hd_visual_tokens", pa.int32()),
    pa.field("edge_score", pa.float32()),
    pa.field("prog_bytes", _i32_list),
    pa.field("prog_score", _f32_list),
    pa.field("prog_min_entropy", _f32_list),
    pa.field("t_vision_s", pa.float32()),
    pa.field("t_prefill_s", pa.float32()),
    pa.field("t_decode_token_s", pa.float32()),
]

TRACE_SCHEMA = pa.schema(REQUIRED_FIELDS + OPTIONAL_FIELDS)
REQUIRED_COLUMNS = tuple(f.name for f in REQUIRED_FIELDS)
OPTIONAL_COLUMNS = tuple(f.name for f in OPTIONAL_FIELDS)
ALL_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
FIELD_BY_NAME = {f.name: f for f in TRACE_SCHEMA}

#: Columns holding one value per JPEG quality in metadata `jpeg_qualities`.
PER_QUALITY_COLUMNS = ("global_jpeg_bytes", "original_jpeg_bytes", "local_jpeg_bytes")
#: Per-token uncertainty columns; all three have the same length (the stage-1 token count).
ENTROPY_COLUMNS = ("s1_min_entropy", "s1_shannon", "s1_margin")
#: Progressive-level columns; all have the same length L when present.
PROG_COLUMNS = ("prog_bytes", "prog_score", "prog_min_entropy")
SCORE_COLUMNS = ("s1_score", "s2_score", "s2_oracle_score", "hd_score", "edge_score")
