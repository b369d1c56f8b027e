"""Trace formats v1 and v2: the pyarrow schemas of one row per (image, question) sample.

Required columns must be present and non-null; optional ones may be absent or null. Both
formats keep the sample's provenance in the Parquet metadata key `edgevlm` (REQUIRED_PROVENANCE),
whose `format_version` says which schema the rows follow. docs/TRACE_FORMAT.md is the reference.

v1 (format_version 1): one score, answer, box and token list per stage, measured at a single
  JPEG quality; only the byte columns are per quality. Accuracy therefore does not depend on
  the JPEG quality a policy sends at.
v2 (format_version 2): every quality-dependent value is a list aligned with the metadata list
  `jpeg_qualities` (element k was measured at jpeg_qualities[k]). Per-quality columns end in `_q`,
  except the byte columns, which keep their v1 names (`*_jpeg_bytes`, already per quality in v1).
  v1's scalar per-stage columns (s1_score, bbox_x0, ...) are NOT stored in v2: there is no
  reference quality, each value exists once, at the quality it was measured at.
  `traces.quality.at_quality(table, provenance, q)` turns a v2 table into the v1 columns at q.
"""

from __future__ import annotations

import pyarrow as pa

#: The version `write_trace` writes when the table has v2 columns; the reader accepts READ_VERSIONS.
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
METADATA_KEY = b"edgevlm"
SOURCE_KINDS = ("real", "tiny-local", "synthetic")

#: Provenance keys every trace file carries in its `edgevlm` metadata (both versions).
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
_i16_list = pa.list_(pa.int16())
_str_list = pa.list_(pa.string())
_f32_list_list = pa.list_(pa.list_(pa.float32()))

# ----------------------------------------------------------------------------------------- v1

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

# ----------------------------------------------------------------------------------------- v2

#: v2 columns that do not depend on the JPEG quality (same meaning and type as in v1).
V2_REQUIRED_SHARED = ("sample_id", "image_w", "image_h", "prompt_tokens")

#: v2 per-quality columns: the v1 column each becomes at one quality (`at_quality`), and its type.
#: Byte columns keep the v1 name (already per quality in v1); local_jpeg_bytes[k] is the crop at
#: the box found at jpeg_qualities[k], encoded at that quality.
V2_REQUIRED_PER_QUALITY = {
    "global_jpeg_bytes": ("global_jpeg_bytes", pa.int32()),
    "original_jpeg_bytes": ("original_jpeg_bytes", pa.int32()),
    "local_jpeg_bytes": ("local_jpeg_bytes", pa.int32()),
    "s1_answer_q": ("s1_answer", pa.string()),
    "s1_score_q": ("s1_score", pa.float32()),
    "s1_min_entropy_q": ("s1_min_entropy", _f32_list),
    "s1_shannon_q": ("s1_shannon", _f32_list),
    "s1_margin_q": ("s1_margin", _f32_list),
    "bbox_x0_q": ("bbox_x0", pa.int32()),
    "bbox_y0_q": ("bbox_y0", pa.int32()),
    "bbox_x1_q": ("bbox_x1", pa.int32()),
    "bbox_y1_q": ("bbox_y1", pa.int32()),
    "s2_answer_q": ("s2_answer", pa.string()),
    "s2_score_q": ("s2_score", pa.float32()),
    "s2_tokens_q": ("s2_tokens", pa.int16()),
}

#: Optional per-quality columns (v1 name at one quality, element type). A column with no v1
#: counterpart maps to None and is dropped by `at_quality` (kept for analysis).
V2_OPTIONAL_PER_QUALITY = {
    "s2_oracle_score_q": ("s2_oracle_score", pa.float32()),  # stage 2 with the ground-truth box crop
    "hd_score_q": ("hd_score", pa.float32()),                # HD/tiling pass on the original sent at q
    "hd_answer_q": (None, pa.string()),
    # Bytes the HD (full_cloud) request sends at q; absent = original_jpeg_bytes (the original at q).
    "hd_jpeg_bytes": ("hd_jpeg_bytes", pa.int32()),
}

#: Optional v2 columns that do not depend on the JPEG quality.
V2_OPTIONAL_SHARED_FIELDS = [
    pa.field("question_type", pa.string()),
    pa.field("gt_x0", pa.int32()),
    pa.field("gt_y0", pa.int32()),
    pa.field("gt_x1", pa.int32()),
    pa.field("gt_y1", pa.int32()),
    pa.field("hd_visual_tokens", pa.int32()),  # visual tokens of the HD pass (all tiles + thumbnail)
    pa.field("hd_tiles", pa.int32()),          # input-size images in the HD pass (grid tiles + thumbnail)
    pa.field("edge_score", pa.float32()),      # the edge's own model on its uncompressed view
    pa.field("prog_bytes", _i32_list),
    pa.field("prog_score", _f32_list),
    pa.field("prog_min_entropy", _f32_list),
    pa.field("t_vision_s", pa.float32()),
    pa.field("t_prefill_s", pa.float32()),
    pa.field("t_decode_token_s", pa.float32()),
]


def _per_q_field(name: str, elem: pa.DataType, nullable: bool) -> pa.Field:
    return pa.field(name, pa.list_(elem), nullable=nullable)


V2_REQUIRED_FIELDS = (
    [FIELD_BY_NAME[c] for c in V2_REQUIRED_SHARED]
    + [_per_q_field(c, t, False) for c, (_, t) in V2_REQUIRED_PER_QUALITY.items()]
)
V2_OPTIONAL_FIELDS = (
    V2_OPTIONAL_SHARED_FIELDS
    + [_per_q_field(c, t, True) for c, (_, t) in V2_OPTIONAL_PER_QUALITY.items()]
)
TRACE_SCHEMA_V2 = pa.schema(V2_REQUIRED_FIELDS + V2_OPTIONAL_FIELDS)
V2_REQUIRED_COLUMNS = tuple(f.name for f in V2_REQUIRED_FIELDS)
V2_OPTIONAL_COLUMNS = tuple(f.name for f in V2_OPTIONAL_FIELDS)
V2_FIELD_BY_NAME = {f.name: f for f in TRACE_SCHEMA_V2}
#: Every v2 column with one element per jpeg_qualities entry.
V2_PER_QUALITY_COLUMNS = tuple(V2_REQUIRED_PER_QUALITY) + tuple(V2_OPTIONAL_PER_QUALITY)
#: Per-quality per-token uncertainty columns (list per quality of list per generated token).
V2_ENTROPY_COLUMNS = ("s1_min_entropy_q", "s1_shannon_q", "s1_margin_q")
#: Per-quality score columns, values in [0, 1].
V2_SCORE_COLUMNS = ("s1_score_q", "s2_score_q", "s2_oracle_score_q", "hd_score_q")
#: v2-only column names: a table with any of them is a v2 table.
V2_ONLY_COLUMNS = tuple(c for c in V2_FIELD_BY_NAME if c not in FIELD_BY_NAME)

SCHEMAS = {1: TRACE_SCHEMA, 2: TRACE_SCHEMA_V2}
REQUIRED_BY_VERSION = {1: REQUIRED_COLUMNS, 2: V2_REQUIRED_COLUMNS}
