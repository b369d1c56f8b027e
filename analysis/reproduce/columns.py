"""What the reproduce items read from a trace, and the column names they need.

Per-quality values come from a v2 trace (docs/TRACE_FORMAT.md): each quality's view of it,
`Workload.at_quality(q)` (traces.quality.at_quality, the one v2 -> v1 column mapping), so `s1_score` at
quality q is the v2 `s1_score_q` at q's position. In a v1 trace the scores were measured at one JPEG
quality (`infer_jpeg_quality`), so accuracy does not depend on the quality there.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from edgevlm.analysis.reproduce.items import MissingColumn
from edgevlm.traces.quality import V1_NAME


class TraceView:
    """A Workload plus the lookups the seed items need; every miss raises MissingColumn."""

    def __init__(self, workload):
        self.prov = workload.provenance
        self.q_ref = self._reference_quality(workload.qualities)
        workload = workload.at_quality(self.q_ref)  # v2: its view at the reference quality (v1: itself)
        self.w = workload
        # v2 keeps the whole per-quality table in `source`; its `table` is the view at one quality.
        src = getattr(workload, "source", None)
        self.full = src if isinstance(src, pa.Table) else workload.table
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
        """(rows, qualities) array of the v1 column `name` in each quality's view of a v2 trace (its `<name>_q`),
        or None / MissingColumn when the trace has no per-quality `name`."""
        v2 = {v1: c for c, v1 in V1_NAME.items() if v1 is not None}.get(name, name + "_q")
        if not self.w.per_quality or v2 not in self.full.column_names:
            if required:
                raise MissingColumn([f"column {v2} (per-quality {name}, one per jpeg_qualities: trace format v2)"])
            return None
        cols = []
        for q in self.w.qualities:
            col = self.w.at_quality(q).table.column(name)
            if col.null_count:
                raise MissingColumn([f"column {v2} without nulls"])
            cols.append(col.to_numpy(zero_copy_only=False).astype(np.float64))
        return np.stack(cols, axis=1)

    def gate_values_at(self, qi: int, column: str = "s1_min_entropy") -> np.ndarray | None:
        """Mean per-token values of `column` measured at quality index qi (v2), else None."""
        if not self.w.per_quality:
            return None
        return self.w.at_quality(self.w.qualities[qi]).first_k_mean(column, None)

    def hd(self) -> dict[str, np.ndarray | str]:
        """The HD baseline at the reference quality: score, visual tokens, uplink bytes (and which column)."""
        missing = []
        score = self.w.optional("hd_score")  # v2: hd_score_q at the reference quality
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
        # what the full_cloud policy sends: hd_jpeg_bytes (v2), else the original
        column = "hd_jpeg_bytes" if self.w.hd_bytes is not None else "original_jpeg_bytes (as the full_cloud policy sends)"
        hd_note = str(self.prov.get("hd") or "")
        return {"score": score, "tokens": tokens, "bytes": self.w.hd_upload_bytes[:, self.qi].astype(np.float64),
                "bytes_column": column, "tokens_per_image": self.prov.get("visual_tokens_per_image"),
                "untrained": "NOT trained" in hd_note}
