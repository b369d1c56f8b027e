"""The seed paper's gates: global_only (η → ∞), always_crop (η = 0) and entropy_threshold.

entropy_threshold averages a per-token uncertainty over the first k answer tokens and crops
when the value is at or above η (min_entropy, shannon), or at or below η for margin, where a
small p1 − p2 means uncertain.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from edgevlm.sim.policies.base import TwoStageConfig, TwoStagePolicy, policies
from edgevlm.sim.workload import Workload
from edgevlm.traces.uncertainty import METRIC_COLUMNS, uncertain



class GlobalOnly(TwoStageConfig):
    kind: Literal["global_only"]


class AlwaysCrop(TwoStageConfig):
    kind: Literal["always_crop"]


class EntropyThreshold(TwoStageConfig):
    kind: Literal["entropy_threshold"]
    metric: Literal["min_entropy", "shannon", "margin"] = "min_entropy"
    threshold: float = Field(description="η: bits for the entropies, p1−p2 in [0, 1] for margin")
    tokens: int | Literal["all"] = Field(5, description="aggregate over the first k answer tokens, or all")

    @field_validator("threshold")
    @classmethod
    def _finite(cls, v: float) -> float:
        if math.isnan(v):
            raise ValueError("must be a number, not NaN")
        return v

    @field_validator("tokens")
    @classmethod
    def _positive(cls, v):
        if v != "all" and v < 1:
            raise ValueError("must be a positive integer or 'all'")
        return v

    @model_validator(mode="after")
    def _threshold_in_metric_range(self):
        """η must be a value the metric can take: margin p1 - p2 lies in [0, 1], entropies are >= 0 bits."""
        if self.metric == "margin" and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold:g} is outside [0, 1], the range of metric 'margin' (p1 - p2)")
        if self.metric != "margin" and self.threshold < 0:
            raise ValueError(f"threshold {self.threshold:g} is negative; metric '{self.metric}' is in bits, >= 0")
        return self


class GlobalOnlyPolicy(TwoStagePolicy):
    name = "global_only"

    def wants_crop(self, sample, sim) -> bool:
        return False

    def decide_live(self, token_values) -> bool:
        return False


class AlwaysCropPolicy(TwoStagePolicy):
    name = "always_crop"

    def wants_crop(self, sample, sim) -> bool:
        return True

    def decide_live(self, token_values) -> bool:
        return True


class EntropyThresholdPolicy(TwoStagePolicy):
    name = "entropy_threshold"

    def __init__(self, cfg: EntropyThreshold, workload: Workload, rng: np.random.Generator):
        super().__init__(cfg, workload, rng)
        self.values = uncertainty(workload, cfg.metric, cfg.tokens)
        self.crop = self.gate(self.values).tolist()

    def gate(self, values):
        """Crop where the aggregated uncertainty crosses η (scalar or array)."""
        return uncertain(values, self.cfg.metric, self.cfg.threshold)

    def wants_crop(self, sample, sim) -> bool:
        return self.crop[sample]

    def decide_live(self, token_values) -> bool:
        """As `wants_crop`, from the live per-token values of one stage-1 answer."""
        cfg = self.cfg
        v = np.asarray(token_values[METRIC_COLUMNS[cfg.metric]], dtype=np.float64)
        k = None if cfg.tokens == "all" else int(cfg.tokens)
        return bool(self.gate(float(v[:k].mean() if k else v.mean())))


def uncertainty(workload: Workload, metric: str, tokens: int | str) -> np.ndarray:
    """Per-sample mean of `metric` over the first k stage-1 tokens (all when tokens == 'all')."""
    return workload.first_k_mean(METRIC_COLUMNS[metric], None if tokens == "all" else int(tokens))


policies.register(GlobalOnly)(GlobalOnlyPolicy)
policies.register(AlwaysCrop)(AlwaysCropPolicy)
policies.register(EntropyThreshold)(EntropyThresholdPolicy)
