"""The progressive visual-token codec interface, the level payload format, and save/load.

A codec works on the vision-encoder output before the projector: a float array of shape
(n_tokens, d_vision). `fit(calibration_tokens)` learns its parameters offline; `encode(tokens)`
returns L byte strings, level 1 first; `decode(levels[:l])` rebuilds tokens from the first l of
them (l >= 1). Each level refines the previous ones, so the server can answer from what has
arrived and ask for the next increment.

Level payload (every byte of it is counted in the trace's prog_bytes):
    header  '<BBHHf'  level index (0-based), number of levels L, n_tokens, width k, scale
    body    zlib(int8 coefficients, component-major (k, n_tokens)), zlib level 9
The coefficients c of a level are quantised as q = clip(round(c / scale), -127, 127) with
scale = max|c| / 127, so |c - scale * q| <= scale / 2 for every coefficient.

A fitted codec is a directory holding codec.json (kind, config, shapes, fit facts) and codec.npz
(arrays). `load_codec(dir)` (models/codec/__init__.py) picks the class from codec.json's `kind` (registry CODECS).
"""

from __future__ import annotations

import json
import struct
import zlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgevlm.traces.io import atomic_write

HEADER = struct.Struct("<BBHHf")
QMAX = 127
ZLIB_LEVEL = 9
JSON_NAME = "codec.json"
NPZ_NAME = "codec.npz"
CODEC_FORMAT = 1


class CodecError(ValueError):
    """Bad codec input, config or file; the message names the argument/key and the allowed values."""


def doubling_sizes(width: int, n_levels: int) -> list[int]:
    """Group sizes g, g, 2g, 4g, ... summing to `width` (g = width / 2^(L-1)); the rest goes to the last."""
    if n_levels < 1:
        raise CodecError(f"n_levels must be >= 1, got {n_levels}")
    g = max(1, width // 2 ** (n_levels - 1))
    sizes = [g] + [g * 2 ** i for i in range(n_levels - 1)]
    if sum(sizes) > width:
        raise CodecError(f"cannot split {width} components into {n_levels} doubling levels; use fewer levels")
    sizes[-1] += width - sum(sizes)
    return sizes


def check_group_sizes(sizes: Sequence[int], width: int, where: str = "group_sizes") -> list[int]:
    sizes = [int(s) for s in sizes]
    if not sizes or any(s < 1 for s in sizes):
        raise CodecError(f"{where} must be a non-empty list of positive integers, got {list(sizes)}")
    if len(sizes) > 255:
        raise CodecError(f"{where}: at most 255 levels, got {len(sizes)}")
    if sum(sizes) > width:
        raise CodecError(f"{where} {sizes} sum to {sum(sizes)}, more than the {width} available components")
    return sizes


def check_tokens(tokens: Any, d: int | None = None, where: str = "tokens") -> np.ndarray:
    x = np.asarray(tokens, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise CodecError(f"{where} must have shape (n_tokens, d_vision), got {x.shape}")
    if d is not None and x.shape[1] != d:
        raise CodecError(f"{where} have d_vision={x.shape[1]}, the codec was fitted for d_vision={d}")
    if x.shape[0] > 65535:
        raise CodecError(f"{where}: at most 65535 tokens per image, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise CodecError(f"{where} contain NaN or infinite values")
    return x


def quantise(coef: np.ndarray) -> tuple[np.ndarray, float]:
    """int8 codes and the per-level scale (max|c|/127; 1.0 for an all-zero level)."""
    peak = float(np.abs(coef).max()) if coef.size else 0.0
    scale = float(np.float32(peak / QMAX)) if peak > 0 else 1.0
    q = np.clip(np.rint(coef / scale), -QMAX, QMAX).astype(np.int8)
    return q, scale


def pack_level(index: int, n_levels: int, q: np.ndarray, scale: float) -> bytes:
    """One level's payload: header + zlib(int8 codes, component-major)."""
    n, k = q.shape
    body = zlib.compress(np.ascontiguousarray(q.T).tobytes(), ZLIB_LEVEL)
    return HEADER.pack(index, n_levels, n, k, scale) + body


def unpack_level(payload: bytes) -> tuple[int, int, np.ndarray]:
    """(level index, n_levels, dequantised coefficients (n_tokens, k)) of one payload."""
    if not isinstance(payload, (bytes, bytearray, memoryview)) or len(payload) < HEADER.size:
        raise CodecError(f"a level payload must be bytes of at least {HEADER.size} bytes")
    index, n_levels, n, k, scale = HEADER.unpack_from(payload)
    try:
        raw = zlib.decompress(bytes(payload[HEADER.size:]))
    except zlib.error as exc:
        raise CodecError(f"level {index + 1}: corrupt payload ({exc})") from None
    if len(raw) != n * k:
        raise CodecError(f"level {index + 1}: payload holds {len(raw)} codes, header says {n}x{k}")
    q = np.frombuffer(raw, dtype=np.int8).reshape(k, n).T
    return index, n_levels, q.astype(np.float64) * scale


class Codec(ABC):
    """A progressive codec over (n_tokens, d_vision) visual tokens; see the module docstring."""

    kind: str = "base"

    def __init__(self, group_sizes: Sequence[int] | None = None, n_levels: int = 4):
        self.config_group_sizes = list(group_sizes) if group_sizes is not None else None
        self.config_n_levels = int(n_levels)
        self.group_sizes: list[int] = []
        self.d: int | None = None
        self.fit_info: dict[str, Any] = {}

    # ----- subclass hooks ---------------------------------------------------------------------
    @abstractmethod
    def _fit(self, x: np.ndarray) -> None:
        """Learn parameters from calibration tokens (N, d); must set self.group_sizes."""

    @abstractmethod
    def _analyse(self, x: np.ndarray) -> np.ndarray:
        """Latent coefficients (n, sum(group_sizes)) of tokens x, ordered by level."""

    @abstractmethod
    def _synthesise(self, z: np.ndarray) -> np.ndarray:
        """Tokens (n, d) from latent coefficients (n, sum(group_sizes)); missing levels are zero."""

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None: ...

    def _config(self) -> dict[str, Any]:
        return {"group_sizes": self.config_group_sizes, "n_levels": self.config_n_levels}

    # ----- public API -------------------------------------------------------------------------
    @property
    def n_levels(self) -> int:
        self._require_fitted()
        return len(self.group_sizes)

    @property
    def fitted(self) -> bool:
        return self.d is not None

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise CodecError(f"{self.kind}: call fit(calibration_tokens) or load a fitted codec first")

    def fit(self, calibration_tokens: Any) -> "Codec":
        x = check_tokens(calibration_tokens, where="calibration_tokens") if np.ndim(calibration_tokens) == 2 \
            else None
        if x is None:
            raise CodecError(f"calibration_tokens must have shape (N, d_vision), got {np.shape(calibration_tokens)}")
        self.d = x.shape[1]
        self._fit(x)
        self._set_arrays(self._arrays())      # the float32 arrays that save() writes: same behaviour after load
        self.fit_info.setdefault("n_calibration_tokens", int(x.shape[0]))
        return self

    def encode(self, tokens: Any) -> list[bytes]:
        """L payloads for one image's tokens (n_tokens, d_vision), level 1 first."""
        self._require_fitted()
        x = check_tokens(tokens, self.d)
        z = self._analyse(x)
        out, start = [], 0
        for i, k in enumerate(self.group_sizes):
            q, scale = quantise(z[:, start:start + k])
            out.append(pack_level(i, len(self.group_sizes), q, scale))
            start += k
        return out

    def decode(self, levels: Sequence[bytes]) -> np.ndarray:
        """Tokens (n_tokens, d_vision) float32 from the first l level payloads (l >= 1), in order."""
        self._require_fitted()
        if len(levels) < 1:
            raise CodecError("decode needs at least level 1")
        z, n = None, None
        starts = np.concatenate([[0], np.cumsum(self.group_sizes)])
        for pos, payload in enumerate(levels):
            index, n_levels, coef = unpack_level(payload)
            if n_levels != self.n_levels or index != pos or coef.shape[1] != self.group_sizes[index]:
                raise CodecError(f"payload {pos + 1}: header says level {index + 1} of {n_levels} with "
                                 f"{coef.shape[1]} coefficients; this codec expects level {pos + 1} of "
                                 f"{self.n_levels} with {self.group_sizes[min(pos, self.n_levels - 1)]}")
            if z is None:
                n = coef.shape[0]
                z = np.zeros((n, int(starts[-1])), dtype=np.float64)
            elif coef.shape[0] != n:
                raise CodecError(f"payload {pos + 1}: {coef.shape[0]} tokens, level 1 had {n}")
            z[:, starts[index]:starts[index + 1]] = coef
        return self._synthesise(z).astype(np.float32)

    def level_bytes(self, tokens: Any) -> list[int]:
        return [len(p) for p in self.encode(tokens)]

    def describe(self) -> dict[str, Any]:
        """Facts for trace provenance."""
        self._require_fitted()
        return {"kind": self.kind, "d_vision": self.d, "n_levels": self.n_levels,
                "group_sizes": list(self.group_sizes), "config": self._config(), "fit": dict(self.fit_info)}

    def encode_flops(self, n_tokens: int) -> int:
        """Multiply-adds x 2 of `encode` for n_tokens tokens (the edge-side cost of the codec)."""
        return 0

    # ----- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write codec.json + codec.npz into `directory` (each written atomically)."""

        self._require_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"codec_format": CODEC_FORMAT, **self.describe()}
        arrays = self._arrays()

        def _npz(tmp):
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(d / NPZ_NAME, _npz)
        atomic_write(d / JSON_NAME, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, sort_keys=True)))
        return d

    @classmethod
    def _from_meta(cls, meta: dict[str, Any]) -> "Codec":
        return cls(**meta["config"])
