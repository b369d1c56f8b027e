"""`progressive`: progressive semantic communication of visual tokens (seed 2; issue 20).

Protocol (costs in sim/progressive_cost.py):
1. the edge resizes the frame (`prep_s`), runs the simulated model's vision tower and the codec
   encoder on its own accelerator (FCFS per device) -> edge_done_s;
2. the uplink carries the first message: level 1 (entropy-driven) or levels 1..`levels` (fixed),
   plus the question -> up1_end_s;
3. the server runs a token pass: codec decoder, projector, LLM prefill and decode; no vision
   encode -> s1_start_s / s1_end_s;
4. entropy-driven only: while the answer's mean min-entropy at the current level l
   (prog_min_entropy[l]) is >= thresholds[l] and a level remains (l < max_levels), the server asks
   for the next level (a small request down), the edge sends the increment
   prog_bytes[l] - prog_bytes[l-1] up, and the server runs a new token pass that recomputes the whole
   prefill (every visual token changes with a new level, so no KV reuse; see progressive_cost.py);
5. the answer of the last level used (prog_score) goes down.

Event log: the protocol's own columns (traces/eventlog.py PROG_EVENT_COLUMNS): prog_levels, the last
refinement pass (prog_last_start_s / prog_last_end_s), and per-round sums of the level requests
(prog_down_s), increments (prog_up_s), GPU waits (prog_queue_s) and passes (prog_infer_s). The crop
columns (crop_req_end_s, up2_end_s, s2_*) stay null. stages = server passes (1 + refinements);
flops = server FLOPs of every token pass (no vision tower; the edge's FLOPs are in summary "edge").

The level bytes are the trace's own (models/progressive.py): the real encoded lengths of the codec
levels for the traced model's vision tower, whatever `server.model` is (see the scenario comments).
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from pydantic import Field, PositiveInt, field_validator, model_validator

from edgevlm.sim.errors import ConfigError
from edgevlm.sim.policies.base import Policy, PolicyConfig, policies
from edgevlm.sim.progressive_cost import ProgressiveCost
from edgevlm.sim.workload import Workload
from edgevlm.sim.simpy_adapter import timeout
from edgevlm.traces.protocol import LEVEL_REQUEST_BYTES, TEXT_BYTES_PER_TOKEN
from edgevlm.traces.schema import PROG_COLUMNS


class Progressive(PolicyConfig):
    kind: Literal["progressive"]
    thresholds: Optional[list[float] | float] = Field(
        None, description="entropy-driven: min-entropy threshold per level (bits), one per level; a single "
                          "number applies to all")
    levels: Optional[PositiveInt] = Field(
        None, description="fixed: send levels 1..levels in the first message and answer from them "
                          "(no refinement round trips); give this or thresholds")
    max_levels: Optional[PositiveInt] = Field(None, description="entropy-driven: never go past this level "
                                                                "(default: all L)")
    reference_jpeg_quality: int = Field(75, ge=1, le=100,
                                        description="global-only at this quality is the comm-cost baseline")

    @field_validator("thresholds")
    @classmethod
    def _finite(cls, v):
        if v is None:
            return v
        vals = v if isinstance(v, list) else [v]
        if not vals:
            raise ValueError("needs one threshold per level")
        if any(np.isnan(x) for x in vals):
            raise ValueError("must be numbers, not NaN")
        return v

    @model_validator(mode="after")
    def _one_mode(self):
        if (self.thresholds is None) == (self.levels is None):
            raise ValueError("give exactly one of 'thresholds' (entropy-driven levels) or 'levels' (a fixed count)")
        if self.levels is not None and self.max_levels is not None:
            raise ValueError("'max_levels' applies to the entropy-driven mode only; with 'levels' leave it out")
        return self


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


def levels_used(entropy: np.ndarray, thresholds: np.ndarray, cap: int) -> np.ndarray:
    """Levels each sample uses: go on from level l while entropy[:, l-1] >= thresholds[l-1], up to cap."""
    more = entropy >= thresholds[None, :]
    used = np.ones(entropy.shape[0], dtype=np.int64)
    going = np.ones(entropy.shape[0], dtype=bool)
    for lvl in range(1, cap):
        going &= more[:, lvl - 1]
        used += going
    return used


class ProgressivePolicy(Policy):
    name = "progressive"
    step_order = ("arrival_s", "edge_done_s", "up1_end_s", "s1_start_s", "s1_end_s", "prog_last_start_s",
                  "prog_last_end_s", "done_s")
    server_stages = (1,)  # plus the prog_last_* span (sim/check.py reads it)

    def __init__(self, cfg: Progressive, workload: Workload, rng: np.random.Generator):
        super().__init__(cfg, workload, rng)
        workload.quality_index(cfg.reference_jpeg_quality, "policy.reference_jpeg_quality")
        cum, score, ent = prog_levels(workload)
        n_levels = cum.shape[1]
        if cfg.levels is not None:
            if cfg.levels > n_levels:
                raise ConfigError("policy.levels", f"the trace has {n_levels} levels; got {cfg.levels}")
            first = np.full(workload.n, cfg.levels, dtype=np.int64)
            used = first
        else:
            thr = cfg.thresholds if isinstance(cfg.thresholds, list) else [cfg.thresholds] * n_levels
            if len(thr) != n_levels:
                raise ConfigError("policy.thresholds", f"needs {n_levels} values, one per level of the trace "
                                  f"(L = {n_levels}); got {len(thr)}")
            if cfg.max_levels is not None and cfg.max_levels > n_levels:
                raise ConfigError("policy.max_levels", f"the trace has {n_levels} levels; got {cfg.max_levels}")
            first = np.ones(workload.n, dtype=np.int64)
            used = levels_used(ent, np.asarray(thr, dtype=np.float64), cfg.max_levels or n_levels)
        rows = np.arange(workload.n)
        self.first = first.tolist()
        self.levels = used.tolist()
        self.up1_bytes = (cum[rows, first - 1] + workload.question_bytes).tolist()
        self.increments = np.diff(cum, axis=1).tolist()
        self.score = score[rows, used - 1].tolist()
        self.answer_bytes = (workload.s1_tokens * TEXT_BYTES_PER_TOKEN).tolist()
        self._prompt = workload.table.column("prompt_tokens").to_numpy().tolist()
        self._cost: ProgressiveCost | None = None

    def _bind(self, sim) -> None:
        """Costs that need the simulation's model and edge device (built on the first request)."""
        self._cost = cost = ProgressiveCost(sim.model, sim.edge)
        self._encode_s = cost.edge_encode_s
        self._edge_flops = cost.tower_flops + cost.codec_encode_flops
        self._pass_flops = cost.token_pass_flops()
        self._jobs = [cost.token_job(p, t) for p, t in zip(self._prompt, self.workload.s1_tokens.tolist())]

    def life(self, sim, req):
        if self._cost is None:
            self._bind(sim)
        env, i = sim.env, req.sample
        yield timeout(env, sim.edge.prep_s)  # resize to the vision input
        yield from sim.edge_devices.run_for(req.client_id, self._encode_s, self._edge_flops)
        req.edge_done_s = env._now
        yield from sim.send_up(req, self.up1_bytes[i])
        req.up1_end_s = env._now
        job, flops = self._jobs[i], self._pass_flops
        span = yield from sim.infer_job(req, job, flops, admit=True)
        if span is None:
            return sim.drop(req)
        req.s1_start_s, req.s1_end_s = span
        level, last = self.first[i], self.levels[i]
        if level < last:
            req.prog_down_s = req.prog_up_s = req.prog_queue_s = req.prog_infer_s = 0.0
        while level < last:
            t0 = env._now
            yield from sim.send_down(req, LEVEL_REQUEST_BYTES)
            t1 = env._now
            yield from sim.send_up(req, self.increments[i][level - 1])
            t2 = env._now
            start, end = yield from sim.infer_job(req, job, flops)
            req.prog_down_s += t1 - t0
            req.prog_up_s += t2 - t1
            req.prog_queue_s += start - t2
            req.prog_infer_s += end - start
            req.prog_last_start_s, req.prog_last_end_s = start, end
            level += 1
        req.stages = 1 + last - self.first[i]
        req.prog_levels = last
        req.score = self.score[i]
        yield from sim.send_down(req, self.answer_bytes[i])
        sim.finish(req)


policies.register(Progressive)(ProgressivePolicy)
