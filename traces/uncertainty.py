"""The uncertainty-metric contract: which trace column holds each gate metric, and which way it points.

Entropies (min-entropy, Shannon) are high when the model is unsure; the margin p1 - p2 is low then.
Every gate (sim/policies), the trade-off analysis (analysis/tradeoff.py) and the tiny model's
evaluation read the direction from here, so they cannot disagree.
"""

from __future__ import annotations

#: Gate metric name -> the per-token trace column it averages (traces/schema.py ENTROPY_COLUMNS).
METRIC_COLUMNS = {"min_entropy": "s1_min_entropy", "shannon": "s1_shannon", "margin": "s1_margin"}


def higher_is_uncertain(metric: str) -> bool:
    """True when a larger value of `metric` means a less certain answer (entropies); False for margin."""
    if metric not in METRIC_COLUMNS:
        raise KeyError(f"unknown uncertainty metric {metric!r}; known: {', '.join(METRIC_COLUMNS)}")
    return metric != "margin"


def uncertain(values, metric: str, threshold: float):
    """The gate: values at least as uncertain as `threshold` (>= for entropies, <= for margin).
    Works on a scalar or a numpy array."""
    return values >= threshold if higher_is_uncertain(metric) else values <= threshold
