"""`progressive`: progressive image refinement over the trace's levels 1..L (`prog_*` columns).

Protocol: the edge sends level 1 (prog_bytes[0] plus the question); the server runs a full GPU
pass on it. While the mean min-entropy at the current level l (prog_min_entropy[l]) is at or
above thresholds[l] and a level remains (and l < max_levels), the server asks the edge for the
next increment: the downlink carries a small level request, and the uplink carries
prog_bytes[l] - prog_bytes[l-1] (the increment between cumulative sizes). Every level gets its
own GPU pass (vision encode, prefill and decode of the stage-1 answer tokens) at the native
visual-token count. The answer is the final level's (prog_score).

Event log (DESIGN.md §5 columns, reused):
  up1_end_s          level 1 arrived at the server;
  s1_start_s/s1_end_s  the level-1 pass;
  crop_req_end_s     the LAST next-level request reached the edge (null if only level 1);
  up2_end_s          the LAST increment arrived at the server;
  s2_start_s         start of the final level's pass;  s2_end_s  end of the final level's pass;
  stages             the number of levels used, 1..L (so stages >= 2 means a retransmission);
  uplink_bytes       the cumulative prog_bytes of the last level used plus the question.

The levels are the trace's own encodings, so this policy has no `jpeg_quality`;
`reference_jpeg_quality` only picks the global-only bytes that the additional comm cost is
measured against.
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from pydantic import Field, PositiveInt, field_validator

from edgevlm.sim.errors import ConfigError
from edgevlm.sim.policies.base import Policy, PolicyConfig, policies
from edgevlm.sim.workload import Workload
from edgevlm.traces.protocol import LEVEL_REQUEST_BYTES, TEXT_BYTES_PER_TOKEN
from edgevlm.traces.schema import PROG_COLUMNS


class Progressive(PolicyConfig):
    kind: Literal["progressive"]
    thresholds: list[float] | float = Field(
        description="min-entropy threshold per level (bits), one per level; a single number applies to all")
    max_levels: Optional[PositiveInt] = Field(None, description="never go past this level (default: all L)")
    reference_jpeg_quality: int = Field(75, ge=1, le=100,
                                        description="global-only at this quality is the comm-cost baseline")

    @field_validator("thresholds")
    @classmethod
    def _finite(cls, v):
        vals = v if isinstance(v, list) else [v]
        if not vals:
            raise ValueError("needs one threshold per level")
        if any(np.isnan(x) for x in vals):
            raise ValueError("must be numbers, not NaN")
        return v


def prog_levels(workload: Workload) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cumulative bytes, score, min-entropy) as (n, L) arrays; ConfigError if the trace has no levels."""
    t = workload.table
    missing = [c for c in PROG_COLUMNS if c not in t.column_names or t.column(c).null_count > 0]
    if missing:
        raise ConfigError("policy.kind", f"progressive needs the trace columns {', '.join(PROG_COLUMNS)} "
                          f"on every row; trace {workload.path.name} lacks: {', '.join(missing)}")
    arrays = [t.column(c).to_pylist() for c in PROG_COLUMNS]
    lengths = {len(row) for col in arrays for row in col}
    if len(lengths) != 1 or 0 in lengths:
        raise ConfigError("trace", f"progressive: prog_* lists must all have the same length L >= 1; "
                          f"got lengths {sorted(lengths)}")
    return (np.array(arrays[0], dtype=np.int64), np.array(arrays[1], dtype=np.float64),
            np.array(arrays[2], dtype=np.float64))


class ProgressivePolicy(Policy):
    name = "progressive"

    def __init__(self, cfg: Progressive, workload: Workload, rng: np.random.Generator):
        super().__init__(cfg, workload, rng)
        workload.quality_index(cfg.reference_jpeg_quality, "policy.reference_jpeg_quality")
        cum, score, ent = prog_levels(workload)
        n_levels = cum.shape[1]
        thr = cfg.thresholds if isinstance(cfg.thresholds, list) else [cfg.thresholds] * n_levels
        if len(thr) != n_levels:
            raise ConfigError("policy.thresholds", f"needs {n_levels} values, one per level of the trace "
                              f"(L = {n_levels}); got {len(thr)}")
        if cfg.max_levels is not None and cfg.max_levels > n_levels:
            raise ConfigError("policy.max_levels", f"the trace has {n_levels} levels; got {cfg.max_levels}")
        cap = cfg.max_levels or n_levels
        # Levels used per sample: go on while the entropy at the current level is >= its threshold.
        more = ent >= np.asarray(thr, dtype=np.float64)[None, :]
        used = np.ones(workload.n, dtype=np.int64)
        going = np.ones(workload.n, dtype=bool)
        for lvl in range(1, cap):
            going &= more[:, lvl - 1]
            used += going
        self.levels = used.tolist()
        self.up1_bytes = (cum[:, 0] + workload.question_bytes).tolist()
        inc = np.diff(cum, axis=1)
        self.increments = [row.tolist() for row in inc]
        self.score = score[np.arange(workload.n), used - 1].tolist()
        self.answer_bytes = (workload.s1_tokens * TEXT_BYTES_PER_TOKEN).tolist()

    def life(self, sim, req):
        env, i = sim.env, req.sample
        if not (yield from self.send_global_and_infer(sim, req, self.up1_bytes[i])):
            return
        levels = self.levels[i]
        for lvl in range(1, levels):
            yield from sim.send_down(req, LEVEL_REQUEST_BYTES)
            req.crop_req_end_s = env.now
            yield from sim.send_up(req, self.increments[i][lvl - 1])
            req.up2_end_s = env.now
            req.s2_start_s, req.s2_end_s = yield from sim.infer(req, 1)  # the last increment, as up2_end_s
        req.stages = levels
        req.score = self.score[i]
        yield from sim.send_down(req, self.answer_bytes[i])
        sim.finish(req)


policies.register(Progressive)(ProgressivePolicy)
