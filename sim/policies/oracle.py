"""`oracle`: crops exactly the samples whose stage-2 score beats stage 1 (s2_score > s1_score).

It reads the answer's correctness, which no deployable gate can, so it is an upper BOUND on any
gate at its comm cost, not a policy: summary.json carries `"policy_is_bound": true` and the
compare table flags it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from edgevlm.sim.policies.base import TwoStageConfig, TwoStagePolicy, policies
from edgevlm.sim.workload import Workload


class Oracle(TwoStageConfig):
    kind: Literal["oracle"]


class OraclePolicy(TwoStagePolicy):
    name = "oracle"
    is_bound = True

    def __init__(self, cfg: Oracle, workload: Workload, rng: np.random.Generator):
        super().__init__(cfg, workload, rng)
        self.crop = [b > a for a, b in zip(self.score1, self.score2)]

    def wants_crop(self, sample, sim) -> bool:
        return self.crop[sample]


policies.register(Oracle)(OraclePolicy)
