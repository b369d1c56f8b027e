"""`random_retransmit`: the seed paper's baseline gate. After stage 1 it asks for the crop (the
trace's attention bbox) with probability p, whatever the uncertainty.

The coin of request r is the r-th draw of the per-run `policy` random stream, so the same seed
gives the same crops, and runs with different p see the same uniform per request (common random
numbers: raising p only adds crops).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from edgevlm.sim.policies.base import TwoStageConfig, TwoStagePolicy, policies
from edgevlm.sim.workload import Workload


class RandomRetransmit(TwoStageConfig):
    kind: Literal["random_retransmit"]
    p: float = Field(ge=0.0, le=1.0, description="probability of asking for the crop after stage 1")


class RandomRetransmitPolicy(TwoStagePolicy):
    name = "random_retransmit"

    def __init__(self, cfg: RandomRetransmit, workload: Workload, rng: np.random.Generator):
        super().__init__(cfg, workload, rng)
        self.p = cfg.p
        self._u: list[float] = []  # uniform of request r at index r, drawn in blocks

    def decide(self, req, sim) -> bool:
        r, u = req.request_id, self._u
        while r >= len(u):
            u.extend(self.rng.random(4096).tolist())
        return u[r] < self.p


policies.register(RandomRetransmit)(RandomRetransmitPolicy)
