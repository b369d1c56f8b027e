"""Per-token uncertainty from next-token logits: min-entropy, Shannon entropy (bits) and top-2 margin.

All three come from one log-softmax of the same logits (temperature 1), computed in float64 with the
max subtracted, so large or -inf logits neither overflow nor produce NaN. Masked (-inf) entries
contribute zero probability.
"""

from __future__ import annotations

import math

import numpy as np

_LN2 = math.log(2.0)


def token_uncertainty(logits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (min_entropy_bits, shannon_bits, margin) arrays, one value per row of `logits` (T, V).

    min-entropy = -log2 max_i p_i; Shannon = -sum_i p_i log2 p_i; margin = p_(1) - p_(2).
    A 1-D input is treated as a single step.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"logits must have shape (steps, vocab) with vocab >= 2, got {x.shape}")
    if np.isnan(x).any() or np.isposinf(x).any():
        raise ValueError("logits contain NaN or +inf")
    top = x.max(axis=1, keepdims=True)
    if not np.isfinite(top).all():
        raise ValueError("a step has every logit at -inf; no distribution to measure")
    z = x - top                                   # <= 0, max is exactly 0
    with np.errstate(under="ignore"):
        e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)              # in [1, V]
    logp = z - np.log(s)                          # natural-log probabilities, -inf where masked
    p = e / s
    plogp = np.where(p > 0, p * np.where(np.isfinite(logp), logp, 0.0), 0.0)
    shannon = np.maximum(-plogp.sum(axis=1) / _LN2, 0.0)
    min_ent = np.log(s[:, 0]) / _LN2              # -log2(p_max) = log2(sum exp(z)) since z_max = 0
    top2 = np.partition(p, -2, axis=1)[:, -2:]
    margin = np.clip(top2[:, 1] - top2[:, 0], 0.0, 1.0)
    return min_ent, shannon, margin
