"""What the reproduce items read from a trace, and the column names they need.

Per-quality values (trace format v2) are found as `<name>_q` or `<name>_by_quality`: one list per row
aligned with the metadata `jpeg_qualities`. In a v1 trace the scores were measured at one JPEG
quality (`infer_jpeg_quality`), so accuracy does not depend on the quality there.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from edgevlm.analysis.reproduce.items import MissingColumn

PER_QUALITY_SUFFIXES = ("_q", "_by_quality")


class TraceView:
    """A Workload plus the lookups the seed items need; every miss raises MissingColumn."""

    def __init__(self, workload):
        self.prov = workload.provenance
        self.q_ref = self._reference_quality(workload.qualities)
        if getattr(workload, "per_quality", False) is True and getattr(workload, "quality", self.q_ref) != self.q_ref:
            workload = workload.at_quality(self.q_ref)  # a v2 workload: its view at the reference quality
        self.w = workload
        # v2 keeps the whole per-quality table in `source`; its `table` is the view at one quality.
        src = getattr(workload, "source", None)
        self.full = src if isinstance(src, pa.Table) else workload.table
        self.names = set(self.full.column_names) | set(workload.table.column_names)
        self.qi = workload.qualities.index(self.q_ref)

    def _reference_quality(self, qs: list[int]) -> int:
        """The quality the v1 scores were measured at (infer_jpeg_quality), else 75, else the highest."""
        for q in (self.prov.get("infer_jpeg_quality"), 75):
            if q in qs:
                return int(q)
        return int(max(qs))

    @property
    def source_kind(self) -> str:
        return str(self.prov.get("source_kind"))

    # ------------------------------------------------------------ scalars per row

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Stage-1 (global image) and stage-2 (global + crop) scores at the reference quality."""
        s1, s2 = self.per_quality("s1_score", required=False), self.per_quality("s2_score", required=False)
        a = s1[:, self.qi] if s1 is not None else self.w.s1_score
        b = s2[:, self.qi] if s2 is not None else self.w.s2_score
        return np.asarray(a, np.float64), np.asarray(b, np.float64)

    def global_bytes(self, qi: int | None = None) -> np.ndarray:
        return self.w.global_bytes[:, self.qi if qi is None else qi].astype(np.float64)

    def local_bytes(self, qi: int | None = None) -> np.ndarray:
        return self.w.local_bytes[:, self.qi if qi is None else qi].astype(np.float64)

    def first_k_mean(self, column: str, k: int | None) -> np.ndarray:
        return self.w.first_k_mean(column, k)

    def token_values(self, column: str) -> list[np.ndarray]:
        return self.w.token_values(column)

    # ------------------------------------------------------------ optional columns

    def column(self, name: str) -> np.ndarray:
        """A numeric optional column with no nulls, or MissingColumn."""
        arr = self.w.optional(name)
        if arr is None:
            raise MissingColumn([f"column {name}"])
        if np.isnan(arr).any():
            raise MissingColumn([f"column {name} ({int(np.isnan(arr).sum())} null rows)"])
        return arr

    def per_quality(self, name: str, required: bool = True) -> np.ndarray | None:
        """(rows, qualities) array of `<name>_q` / `<name>_by_quality`, or None / MissingColumn."""
        for suffix in PER_QUALITY_SUFFIXES:
            col = name + suffix
            if col in self.full.column_names:
                vals = self.full.column(col).to_pylist()
                if any(v is None or len(v) != len(self.w.qualities) for v in vals):
                    raise MissingColumn([f"column {col} with one value per jpeg_qualities entry in every row"])
                return np.array(vals, dtype=np.float64)
        if required:
            raise MissingColumn([f"column {name}_q (per-quality {name}, one per jpeg_qualities)"])
        return None

    def hd(self) -> dict[str, np.ndarray | str]:
        """The HD baseline at the reference quality: score, visual tokens, uplink bytes (and which column)."""
        missing = []
        score_q = self.per_quality("hd_score", required=False)
        score = score_q[:, self.qi] if score_q is not None else self.w.optional("hd_score")
        if score is None:
            missing.append("column hd_score (or hd_score_q): the HD model's score")
        tokens = self.w.optional("hd_visual_tokens")
        if tokens is None:
            missing.append("column hd_visual_tokens")
        if missing:
            raise MissingColumn(missing)
        for arr, name in ((score, "hd_score"), (tokens, "hd_visual_tokens")):
            if np.isnan(arr).any():
                raise MissingColumn([f"column {name} without nulls"])
        hd_bytes = self.per_quality("hd_jpeg_bytes", required=False)
        if hd_bytes is None and "hd_jpeg_bytes" in self.full.column_names:
            hd_bytes = np.array(self.full.column("hd_jpeg_bytes").to_pylist(), dtype=np.float64)
        if hd_bytes is not None:
            per_row = hd_bytes[:, self.qi] if hd_bytes.ndim == 2 else hd_bytes
            return {"score": score, "tokens": tokens, "bytes": per_row, "bytes_column": "hd_jpeg_bytes"}
        return {"score": score, "tokens": tokens, "bytes": self.w.original_bytes[:, self.qi].astype(np.float64),
                "bytes_column": "original_jpeg_bytes (as the full_cloud policy sends)"}
