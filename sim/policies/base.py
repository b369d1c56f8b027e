"""Policy base classes. A policy owns one request's protocol as a SimPy process (`life`).

`TwoStagePolicy` is the request life of DESIGN.md §4: send the global image, run stage 1, then,
if `wants_crop`, run the attention pass, fetch the crop, run stage 2, and answer. Subclasses only
decide `wants_crop`. The decision reads the trace row and the live system state (`sim`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sim.registry import Registry
from sim.workload import BBOX_REQUEST_BYTES, TEXT_BYTES_PER_TOKEN, Workload

if TYPE_CHECKING:
    from sim.engine import Request, Simulation

policies: Registry = Registry("policy")


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImagePolicyConfig(PolicyConfig):
    """Every image-sending policy takes a JPEG quality; the trace gives the bytes per quality."""

    jpeg_quality: int = Field(75, ge=1, le=100)


class Policy:
    """A built policy: `life(sim, req)` is the request's SimPy process."""

    name = "policy"

    def __init__(self, cfg: PolicyConfig, workload: Workload, rng: np.random.Generator):
        self.cfg = cfg
        self.workload = workload
        self.rng = rng

    def life(self, sim: "Simulation", req: "Request"):
        raise NotImplementedError


class TwoStagePolicy(Policy):
    """Global image first; a crop of the full-resolution original on demand (DESIGN.md §4)."""

    def __init__(self, cfg: ImagePolicyConfig, workload: Workload, rng: np.random.Generator):
        super().__init__(cfg, workload, rng)
        q = workload.quality_index(cfg.jpeg_quality)
        # Plain Python lists: the hot path indexes them once per request.
        self.up1_bytes = (workload.global_bytes[:, q] + workload.question_bytes).tolist()
        self.up2_bytes = workload.local_bytes[:, q].tolist()
        self.answer1_bytes = (workload.s1_tokens * TEXT_BYTES_PER_TOKEN).tolist()
        self.answer2_bytes = (workload.s2_tokens * TEXT_BYTES_PER_TOKEN).tolist()
        self.score1 = workload.s1_score.tolist()
        self.score2 = workload.s2_score.tolist()

    def wants_crop(self, sample: int, sim: "Simulation") -> bool:
        raise NotImplementedError

    def decide_live(self, token_values: dict[str, "list[float]"]) -> bool:
        """The same gate from live stage-1 values (a real edge client, testbed/): `token_values`
        maps trace column names (s1_min_entropy, s1_shannon, s1_margin) to per-token lists."""
        raise NotImplementedError(f"policy {self.name!r} cannot decide from live values")

    def life(self, sim: "Simulation", req: "Request"):
        env, i = sim.env, req.sample
        yield env.timeout(sim.edge.prep_s)
        req.edge_done_s = env.now
        yield from sim.send_up(req, self.up1_bytes[i])
        req.up1_end_s = env.now
        span = yield from sim.infer(req, 1, admit=True)
        if span is None:
            return sim.drop(req)
        req.s1_start_s, req.s1_end_s = span
        req.score = self.score1[i]
        answer_bytes = self.answer1_bytes[i]
        if self.wants_crop(i, sim):
            yield from sim.infer(req, 0)
            yield from sim.send_down(req, BBOX_REQUEST_BYTES)
            req.crop_req_end_s = env.now
            yield env.timeout(sim.edge.crop_s)
            yield from sim.send_up(req, self.up2_bytes[i])
            req.up2_end_s = env.now
            req.s2_start_s, req.s2_end_s = yield from sim.infer(req, 2)
            req.score = self.score2[i]
            answer_bytes = self.answer2_bytes[i]
        yield from sim.send_down(req, answer_bytes)
        sim.finish(req)
