"""Server speed models: a factor on every GPU pass's time, for servers whose speed is not constant.

Real servers do not run a pass in the same time twice: a shared host, co-tenants, clocks and
thermals add per-pass jitter and slow drifts lasting seconds. At high load, queueing amplifies both
(a slow spell builds a queue that a fast one does not drain as quickly), so a simulator fed the
typical pass time under-predicts latency. A registry keyed by `kind` (`server.speed` in the YAML):

- `constant` (default): factor 1; passes take exactly what the latency model says.
- `lognormal`: factor exp(J + X(t) - (jitter_sigma^2 + drift_sigma^2) / 2), mean 1 (the latency
  model's times stay the mean, so utilisation is unchanged). J ~ N(0, jitter_sigma^2) is drawn
  afresh for every pass; X(t) is an Ornstein-Uhlenbeck process with stationary standard deviation
  `drift_sigma` and correlation exp(-lag / drift_tau_s), shared by all passes of the server: two
  passes a short time apart run at nearly the same speed. A pass's factor is read at its start.
  `stream: k` draws another speed path with the run's arrivals, samples and all else unchanged, for
  replications: with a drift slower than the run, one run is one draw of the speed, not its average.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field, PositiveFloat

from edgevlm.sim.registry import Registry, Strict
from edgevlm.sim.rng import Batched

speed_models: Registry = Registry("server.speed")


class ConstantSpeed(Strict):
    kind: Literal["constant"] = "constant"


class LognormalSpeed(Strict):
    kind: Literal["lognormal"] = "lognormal"
    jitter_sigma: float = Field(0.0, ge=0, le=2, description="std of the per-pass log factor")
    drift_sigma: float = Field(0.0, ge=0, le=2, description="stationary std of the shared log-speed drift")
    drift_tau_s: PositiveFloat = Field(1.0, description="correlation time of the drift, seconds")
    stream: int = Field(0, ge=0, description="another speed path (independent random numbers) with every "
                                             "other draw of the run unchanged: replications of one workload")


class DriftingSpeed:
    """`factor(t)`: the lognormal model's factor for a pass starting at t. Times should come in
    non-decreasing order (one FCFS queue, or the simulation clock); an earlier time reuses the drift's
    latest value."""

    def __init__(self, cfg: LognormalSpeed, rng: np.random.Generator):
        self.jitter_sigma, self.drift_sigma, self.tau_s = cfg.jitter_sigma, cfg.drift_sigma, cfg.drift_tau_s
        self._shift = -(cfg.jitter_sigma ** 2 + cfg.drift_sigma ** 2) / 2
        self._z = Batched(lambda n: rng.standard_normal(n))
        self._t = 0.0
        self._x = cfg.drift_sigma * self._z()  # stationary start

    def __call__(self, t: float) -> float:
        e = self._shift
        if self.drift_sigma > 0:
            if t > self._t:  # exact OU transition over the gap
                a = math.exp((self._t - t) / self.tau_s)
                self._x = a * self._x + self.drift_sigma * math.sqrt(1.0 - a * a) * self._z()
                self._t = t
            e += self._x
        if self.jitter_sigma > 0:
            e += self.jitter_sigma * self._z()
        return math.exp(e)


@speed_models.register(ConstantSpeed)
def _constant(cfg: ConstantSpeed, rng: np.random.Generator):
    return None  # servers skip the factor altogether


@speed_models.register(LognormalSpeed)
def _lognormal(cfg: LognormalSpeed, rng: np.random.Generator):
    if cfg.stream:
        rng = np.random.Generator(rng.bit_generator.jumped(cfg.stream))
    return DriftingSpeed(cfg, rng) if cfg.jitter_sigma > 0 or cfg.drift_sigma > 0 else None


def build_speed(cfg, rng: np.random.Generator):
    """The factor function `factor(t_start_s) -> float` of a speed config, or None for factor 1."""
    return speed_models.build(cfg, rng)
