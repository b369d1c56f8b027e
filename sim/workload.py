"""The trace as numpy arrays the engine indexes by sample row: sizes, token counts, scores, entropies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgevlm.sim.errors import ConfigError
from edgevlm.traces import read_trace
from edgevlm.traces.protocol import TEXT_BYTES_PER_TOKEN


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
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str | Path) -> "Workload":
        table, prov = read_trace(path)
        return cls.from_table(table, prov, Path(path))

    @classmethod
    def from_table(cls, table: pa.Table, prov: dict[str, Any], path: Path | None = None) -> "Workload":
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
        )

    @property
    def n(self) -> int:
        return len(self.sample_id)

    @property
    def synthetic(self) -> bool:
        return self.provenance.get("source_kind") == "synthetic"

    def quality_index(self, quality: int, path: str = "policy.jpeg_quality") -> int:
        if quality not in self.qualities:
            raise ConfigError(path, f"{quality} is not in the trace's jpeg_qualities; allowed: "
                              + ", ".join(map(str, self.qualities)))
        return self.qualities.index(quality)

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
