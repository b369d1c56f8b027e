"""`pca_levels`: principal axes fitted offline, components split by variance into L levels.

Level l carries the coefficients of principal components in group l (largest variance first),
quantised to int8 with one scale per level. The decoder adds mean + sum over received groups of
coefficients x axes; missing groups are zero. With all components in the groups, decoding every
level reproduces the tokens up to the quantisation bound: per token, the L2 error is at most
sqrt(sum_l k_l (scale_l / 2)^2) (the axes are orthonormal). Adding a level never increases a
token's error: rounding a coefficient moves it no further from its true value than zero does.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgevlm.models.codec.base import Codec, CodecError, check_group_sizes, doubling_sizes


class PcaLevels(Codec):
    kind = "pca_levels"

    def __init__(self, group_sizes: Sequence[int] | None = None, n_levels: int = 4,
                 max_components: int | None = None):
        super().__init__(group_sizes, n_levels)
        self.max_components = max_components
        self.mean: np.ndarray | None = None
        self.axes: np.ndarray | None = None          # (K, d), rows orthonormal, by decreasing variance
        self.variance: np.ndarray | None = None

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "max_components": self.max_components}

    def _fit(self, x: np.ndarray) -> None:
        n, d = x.shape
        width = min(d, self.max_components or d)
        if self.max_components is not None and not 1 <= self.max_components <= d:
            raise CodecError(f"max_components must be in 1..{d}, got {self.max_components}")
        self.group_sizes = (check_group_sizes(self.config_group_sizes, width) if self.config_group_sizes
                            else doubling_sizes(width, self.config_n_levels))
        k = sum(self.group_sizes)
        self.mean = x.mean(axis=0)
        xc = x - self.mean
        cov = xc.T @ xc / max(n - 1, 1)
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1][:k]
        axes = evecs[:, order].T
        # Deterministic sign: the largest-magnitude entry of each axis is positive.
        signs = np.sign(axes[np.arange(k), np.abs(axes).argmax(axis=1)])
        self.axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
        self.variance = np.clip(evals[order], 0.0, None)
        total = float(np.clip(evals, 0, None).sum()) or 1.0
        cum = np.cumsum(self.variance)[np.cumsum(self.group_sizes) - 1] / total
        self.fit_info = {"explained_variance_per_level": [float(v) for v in cum]}

    def _analyse(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) @ self.axes.T

    def _synthesise(self, z: np.ndarray) -> np.ndarray:
        return self.mean + z @ self.axes

    def encode_flops(self, n_tokens: int) -> int:
        return int(2 * n_tokens * self.d * sum(self.group_sizes))

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.astype(np.float32), "axes": self.axes.astype(np.float32),
                "variance": self.variance.astype(np.float32)}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.mean = arrays["mean"].astype(np.float64)
        self.axes = arrays["axes"].astype(np.float64)
        self.variance = arrays["variance"].astype(np.float64)
