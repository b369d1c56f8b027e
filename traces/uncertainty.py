"""Per-token uncertainty of a next-token distribution, the trace's s1_min_entropy / s1_shannon /
s1_margin (DESIGN.md §2), in numpy so that extraction (models/) and analysis share one definition.

For a probability vector p (last axis; any leading shape):
  min-entropy  H_inf(p) = -log2 max_j p_j            (bits; 0 when one token has p = 1)
  Shannon      H(p)     = -sum_j p_j log2 p_j        (bits; 0 log 0 = 0)
  margin       p(1) - p(2), the top-two gap           (0 on a tie for the top; 1 when p(1) = 1)
Entropies are >= 0 and min-entropy <= Shannon. Inputs are used as given (not renormalised).
"""

from __future__ import annotations

import numpy as np


def _as_probs(p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 0 or p.shape[-1] == 0:
        raise ValueError("a distribution needs at least one probability")
    if np.any(p < 0) or not np.all(np.isfinite(p)):
        raise ValueError("probabilities must be finite and >= 0")
    if np.any(p.max(axis=-1) <= 0):
        raise ValueError("a distribution needs a positive probability")
    return p


def min_entropy(p) -> np.ndarray:
    """-log2 of the largest probability, in bits."""
    top = _as_probs(p).max(axis=-1)
    return np.where(top >= 1.0, 0.0, -np.log2(np.minimum(top, 1.0)))


def shannon_entropy(p) -> np.ndarray:
    """-sum p log2 p in bits, with 0 log 0 = 0."""
    p = _as_probs(p)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return np.maximum(terms.sum(axis=-1), 0.0)


def margin(p) -> np.ndarray:
    """Top-1 minus top-2 probability (a single-outcome distribution has margin p(1))."""
    p = _as_probs(p)
    if p.shape[-1] == 1:
        return p[..., 0]
    top2 = -np.partition(-p, 1, axis=-1)[..., :2]
    return top2[..., 0] - top2[..., 1]


def first_k_mean(values, k: int | None) -> float:
    """Mean of the first min(k, T) per-token values (all T when k is None), DESIGN.md §2."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no tokens")
    return float(v[:k].mean() if k else v.mean())
