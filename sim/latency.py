"""Latency models: how long one GPU pass (a `Job`) takes. A registry keyed by `kind`.

`parametric` is the simple default: vision encode per image + prefill tokens at a rate + decode
per token. Its defaults are the llama.cpp figures for LLaVA-1.5-7B on an A100 (DESIGN.md §7):
prefill about 6k tokens/s and decode about 13.5 ms/token. `exponential` and `deterministic`
ignore the job's shape and exist for checks against queueing theory and for what-if studies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from sim.registry import Registry
from sim.rng import Batched

latency_models: Registry = Registry("server.latency")


@dataclass(slots=True)
class Job:
    """One GPU pass: `stage` 1, 2, or 0 for the relative-attention pass."""

    stage: int
    images: int
    visual_tokens: int
    prompt_tokens: int
    out_tokens: int


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParametricLatency(_Strict):
    kind: Literal["parametric"] = "parametric"
    vision_s_per_image: float = Field(0.02, ge=0)
    prefill_tokens_per_s: PositiveFloat = 6000.0
    decode_s_per_token: float = Field(0.0135, ge=0)


class ExponentialLatency(_Strict):
    kind: Literal["exponential"]
    mean_s: PositiveFloat


class DeterministicLatency(_Strict):
    kind: Literal["deterministic"]
    service_s: PositiveFloat


@latency_models.register(ParametricLatency)
def _parametric(cfg: ParametricLatency, rng: np.random.Generator):
    vision, per_tok, decode = cfg.vision_s_per_image, 1.0 / cfg.prefill_tokens_per_s, cfg.decode_s_per_token

    def service_s(job: Job) -> float:
        vis = vision * job.images if job.stage else 0.0  # the attention pass reuses encoded features
        return vis + (job.visual_tokens + job.prompt_tokens) * per_tok + job.out_tokens * decode

    return service_s


@latency_models.register(ExponentialLatency)
def _exponential(cfg: ExponentialLatency, rng: np.random.Generator):
    draw = Batched(lambda n: rng.exponential(cfg.mean_s, n))
    return lambda job: draw()


@latency_models.register(DeterministicLatency)
def _deterministic(cfg: DeterministicLatency, rng: np.random.Generator):
    s = cfg.service_s
    return lambda job: s
