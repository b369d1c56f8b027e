"""The trace as numpy arrays the engine indexes by sample row: sizes, token counts, scores, entropies.

This is the one place where the simulator picks a JPEG quality out of a trace. A v2 trace holds
every quality-dependent value per quality; `Workload.at_quality(q)` (or `for_policy(cfg)`) is the
view whose scores, per-token uncertainties, boxes, token counts and `table` are those measured
at q (`traces.quality.at_quality`). Byte matrices keep every quality and are indexed with
`quality_index(q)`. A v1 trace has one value per stage for all qualities, so its view is itself
and `per_quality` is False ("accuracy does not depend on JPEG quality (v1 trace)").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgevlm.traces import read_trace
from edgevlm.traces.quality import QualityError, at_quality, is_per_quality, quality_position

#: Said wherever a v1 trace is used: summary.json, the CLI summary table and reports.
V1_QUALITY_NOTE = "accuracy does not depend on JPEG quality (v1 trace)"

#: Bytes of UTF-8 text per LM token, used to size questions and answers on the wire.
TEXT_BYTES_PER_TOKEN = 4
#: Bytes of a bounding-box request (four int32 coordinates) on the downlink.
BBOX_REQUEST_BYTES = 16
#: Bytes of the edge's "send me the box" message (a request id) when the gate runs on the edge.
ATTENTION_REQUEST_BYTES = 8


@dataclass
class Workload:
    """Per-sample arrays of one trace, plus its provenance."""

    path: Path
    provenance: dict[str, Any]
    table: pa.Table
    sample_id: np.ndarray
    qualities: list[int]
    global_bytes: np.ndarray  # (n, n_qualities) int64
    local_bytes: np.ndarray
    original_bytes: np.ndarray
    question_bytes: np.ndarray  # (n,)
    s1_tokens: np.ndarray
    s2_tokens: np.ndarray
    s1_score: np.ndarray
    s2_score: np.ndarray
    #: The JPEG quality the per-quality values were measured at (v2), or None for a v1 trace.
    quality: int | None = None
    #: Bytes a full_cloud (HD) request sends per quality: `hd_jpeg_bytes` if the trace has it, else the original.
    hd_bytes: np.ndarray | None = None
    #: The whole v2 table (every quality); None for v1.
    source: pa.Table | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)
    #: Views by quality, shared by every view of one trace.
    _views: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str | Path) -> "Workload":
        table, prov = read_trace(path)
        return cls.from_table(table, prov, Path(path))

    @classmethod
    def from_table(cls, table: pa.Table, prov: dict[str, Any], path: Path | None = None,
                   quality: int | None = None) -> "Workload":
        """A workload of a conformed trace table. For v2 the view is at `quality` (default: the
        trace's highest quality, the seed's q100 reference where present)."""
        if is_per_quality(prov):
            q = max(prov["jpeg_qualities"]) if quality is None else quality
            root = cls._from_v1_shaped(at_quality(table, prov, q), prov, path, quality=q, source=table)
            root._views[q] = root
            return root
        return cls._from_v1_shaped(table, prov, path)

    @classmethod
    def _from_v1_shaped(cls, table: pa.Table, prov: dict[str, Any], path: Path | None, *,
                        quality: int | None = None, source: pa.Table | None = None,
                        views: dict | None = None) -> "Workload":
        def col(name, dtype):
            return table.column(name).to_numpy(zero_copy_only=False).astype(dtype)

        def matrix(name):
            return np.array(table.column(name).to_pylist(), dtype=np.int64)

        return cls(
            path=Path(path) if path else Path("<memory>"),
            provenance=prov,
            table=table,
            sample_id=table.column("sample_id").to_numpy(zero_copy_only=False),
            qualities=list(prov["jpeg_qualities"]),
            global_bytes=matrix("global_jpeg_bytes"),
            local_bytes=matrix("local_jpeg_bytes"),
            original_bytes=matrix("original_jpeg_bytes"),
            question_bytes=col("prompt_tokens", np.int64) * TEXT_BYTES_PER_TOKEN,
            s1_tokens=pc.list_value_length(table.column("s1_min_entropy")).to_numpy().astype(np.int64),
            s2_tokens=col("s2_tokens", np.int64),
            s1_score=col("s1_score", np.float64),
            s2_score=col("s2_score", np.float64),
            quality=quality,
            hd_bytes=(np.array(source.column("hd_jpeg_bytes").to_pylist(), dtype=np.int64)
                      if source is not None and "hd_jpeg_bytes" in source.column_names
                      and source.column("hd_jpeg_bytes").null_count == 0 else None),
            source=source,
            **({"_views": views} if views is not None else {}),
        )

    @property
    def per_quality(self) -> bool:
        """True for a v2 trace: scores, uncertainties and boxes were measured at every quality."""
        return self.source is not None

    def at_quality(self, quality: int, path: str = "policy.jpeg_quality") -> "Workload":
        """The view measured at JPEG quality `quality`; ConfigError naming `path` if the trace lacks it."""
        self.quality_index(quality, path)
        if not self.per_quality or quality == self.quality:
            return self
        if quality not in self._views:
            self._views[quality] = self._from_v1_shaped(
                at_quality(self.source, self.provenance, quality), self.provenance, self.path,
                quality=quality, source=self.source, views=self._views)
        return self._views[quality]

    def for_policy(self, cfg) -> "Workload":
        """The view a policy config reads: at its `jpeg_quality` (progressive: `reference_jpeg_quality`);
        a policy that sends no image (full_edge) reads the trace's highest quality."""
        q, path = policy_quality(cfg)
        return self.at_quality(q if q is not None else max(self.qualities), path)

    def require_view(self, cfg) -> None:
        """Raise if a v2 view is not at the quality `cfg` sends at (a policy built on the wrong view)."""
        q, _ = policy_quality(cfg)
        if self.per_quality and q is not None and q != self.quality:
            raise ValueError(f"policy at jpeg_quality {q} was given the trace view at {self.quality}; "
                             "build it on workload.for_policy(cfg)")

    @property
    def hd_upload_bytes(self) -> np.ndarray:
        """(n, n_qualities) bytes of a full_cloud request's image: hd_jpeg_bytes, else the original."""
        return self.hd_bytes if self.hd_bytes is not None else self.original_bytes

    @property
    def n(self) -> int:
        return len(self.sample_id)

    @property
    def synthetic(self) -> bool:
        return self.provenance.get("source_kind") == "synthetic"

    def quality_index(self, quality: int, path: str = "policy.jpeg_quality") -> int:
        from edgevlm.sim.errors import ConfigError

        try:
            return quality_position(self.provenance, quality)
        except QualityError as exc:
            raise ConfigError(path, f"{exc} (trace {self.path.name})") from None

    def token_values(self, column: str) -> list[np.ndarray]:
        """Per-sample arrays of a list<float> column (cached)."""
        key = ("tokens", column)
        if key not in self._cache:
            arr = self.table.column(column).combine_chunks()
            flat = arr.values.to_numpy(zero_copy_only=False).astype(np.float64)
            offs = arr.offsets.to_numpy()
            self._cache[key] = [flat[offs[i]:offs[i + 1]] for i in range(len(offs) - 1)]
        return self._cache[key]

    def first_k_mean(self, column: str, k: int | None) -> np.ndarray:
        """Mean of the first min(k, T) values per sample (all T when k is None), DESIGN.md §2."""
        key = ("firstk", column, k)
        if key not in self._cache:
            self._cache[key] = np.array([v[:k].mean() if k else v.mean() for v in self.token_values(column)])
        return self._cache[key]

    def optional(self, column: str, dtype=np.float64) -> np.ndarray | None:
        """A numeric optional column as an array (NaN for nulls), or None if absent or all-null."""
        if column not in self.table.column_names or self.table.column(column).null_count == self.n:
            return None
        return self.table.column(column).to_numpy(zero_copy_only=False).astype(dtype)


def policy_quality(cfg) -> tuple[int | None, str]:
    """(JPEG quality, config path) a policy config sends at; (None, ...) for one that sends no image."""
    for name in ("jpeg_quality", "reference_jpeg_quality"):
        q = getattr(cfg, name, None)
        if q is not None:
            return int(q), f"policy.{name}"
    return None, "policy.jpeg_quality"
