"""Policy base classes. A policy owns one request's protocol as a SimPy process (`life`).

`TwoStagePolicy` is the request life of DESIGN.md §4: send the global image, run stage 1, then,
if `wants_crop`, run the attention pass, fetch the crop, run stage 2, and answer. Subclasses only
decide `wants_crop`. The decision reads the trace row and the live system state (`sim`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgevlm.sim.interfaces import Policy as PolicyInterface
from edgevlm.sim.registry import Registry
from edgevlm.sim.workload import Workload
from edgevlm.sim.simpy_adapter import timeout
from edgevlm.traces.protocol import ATTENTION_REQUEST_BYTES, BBOX_REQUEST_BYTES, TEXT_BYTES_PER_TOKEN

if TYPE_CHECKING:
    from edgevlm.sim.engine import Request, Simulation
    from edgevlm.sim.latency import Job

policies: Registry = Registry("policy")


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImagePolicyConfig(PolicyConfig):
    """Every image-sending policy takes a JPEG quality; the trace gives the bytes per quality."""

    jpeg_quality: int = Field(75, ge=1, le=100)


class TwoStageConfig(ImagePolicyConfig):
    """Two-stage gates: where the crop decision runs, and what that costs on the wire."""

    gate: Literal["server", "edge"] = Field(
        "server", description="server: decide right after stage 1 (DESIGN.md §4); edge: the stage-1 "
        "answer and its per-token uncertainty go down first, the edge decides and asks for the box, "
        "as a real edge client does (testbed/): one more message each way on the crop path")
    gate_values_bytes_per_token: int = Field(
        12, ge=0, description="edge gate: uncertainty bytes per stage-1 token in the stage-1 reply "
        "(default 3 float32 values: min-entropy, Shannon, margin)")


class Policy(PolicyInterface):
    """The built-in policies' base: the Policy interface (sim/interfaces.py) plus the first protocol
    step that most of them share."""

    def __init__(self, cfg: PolicyConfig, workload: Workload, rng: np.random.Generator):
        workload.require_view(cfg)  # a v2 trace: built on the view at the policy's quality
        super().__init__(cfg, workload, rng)

    def send_global_and_infer(self, sim: "Simulation", req: "Request", up_bytes: int,
                              job: "Job | None" = None, flops: float = 0.0):
        """Process: edge prep, the image up, stage 1 on the server (DESIGN.md §4 steps 2-4).

        Stage 1 is the trace's own pass, or `job` (costing `flops`) where the policy sends
        something else (full_cloud's HD original). Returns True once it has run, or False if
        admission control dropped the request (its terminal record is then written).
        """
        env = sim.env
        yield timeout(env, sim.edge.prep_s)  # env.timeout(d), cheaper (sim/simpy_adapter.py)
        req.edge_done_s = env._now
        yield from sim.send_up(req, up_bytes)
        req.up1_end_s = env._now
        if job is None:
            span = yield from sim.infer(req, 1, admit=True)
        else:
            span = yield from sim.infer_job(req, job, flops, admit=True)
        if span is None:
            sim.drop(req)
            return False
        req.s1_start_s, req.s1_end_s = span
        return True


def scores_at_quality(workload: Workload, column: str, q: int) -> np.ndarray:
    """A score column at JPEG quality index q, from the workload view at that quality.

    A v2 trace's view (`Workload.at_quality`) holds the scores measured at its quality; a v1 trace
    has one score per stage, so there the score does not change with `jpeg_quality`.
    """
    if workload.per_quality and workload.qualities.index(workload.quality) != q:
        raise ValueError(f"workload view is at jpeg_quality {workload.quality}, not {workload.qualities[q]}")
    return np.asarray(getattr(workload, column) if hasattr(workload, column) else workload.optional(column),
                      dtype=np.float64)


class TwoStagePolicy(Policy):
    """Global image first; a crop of the full-resolution original on demand (DESIGN.md §4)."""

    def __init__(self, cfg: TwoStageConfig, workload: Workload, rng: np.random.Generator):
        super().__init__(cfg, workload, rng)
        q = workload.quality_index(cfg.jpeg_quality)
        # Plain Python lists: the hot path indexes them once per request.
        self.up1_bytes = (workload.global_bytes[:, q] + workload.question_bytes).tolist()
        self.up2_bytes = workload.local_bytes[:, q].tolist()
        self.answer1_bytes = (workload.s1_tokens * TEXT_BYTES_PER_TOKEN).tolist()
        self.answer2_bytes = (workload.s2_tokens * TEXT_BYTES_PER_TOKEN).tolist()
        self.score1 = scores_at_quality(workload, "s1_score", q).tolist()
        self.score2 = scores_at_quality(workload, "s2_score", q).tolist()
        self.gate_at_edge = cfg.gate == "edge"
        per_token = TEXT_BYTES_PER_TOKEN + cfg.gate_values_bytes_per_token
        self.reply1_edge_bytes = (workload.s1_tokens * per_token).tolist()

    def wants_crop(self, sample: int, sim: "Simulation") -> bool:
        raise NotImplementedError

    def decide(self, req: "Request", sim: "Simulation") -> bool:
        """The crop decision after stage 1; policies that need the request itself override this."""
        return self.wants_crop(req.sample, sim)

    def decide_live(self, token_values: dict[str, "list[float]"]) -> bool:
        """The same gate from live stage-1 values (a real edge client, testbed/): `token_values`
        maps trace column names (s1_min_entropy, s1_shannon, s1_margin) to per-token lists."""
        raise NotImplementedError(f"policy {self.name!r} cannot decide from live values")

    def life(self, sim: "Simulation", req: "Request"):
        env, i = sim.env, req.sample
        if not (yield from self.send_global_and_infer(sim, req, self.up1_bytes[i])):
            return
        req.score = self.score1[i]
        answer_bytes = self.answer1_bytes[i]
        if self.gate_at_edge:
            # The stage-1 reply (answer + per-token uncertainty) goes down and the edge decides; a
            # crop costs one more message up (the box request) before the attention pass.
            yield from sim.send_down(req, self.reply1_edge_bytes[i])
            if not self.decide(req, sim):
                sim.finish(req)
                return
            yield from sim.send_up(req, ATTENTION_REQUEST_BYTES)
            crop = True
        else:
            crop = self.decide(req, sim)
        if crop:
            yield from sim.infer(req, 0)
            yield from sim.send_down(req, BBOX_REQUEST_BYTES)
            req.crop_req_end_s = env._now
            yield timeout(env, sim.edge.crop_s)
            yield from sim.send_up(req, self.up2_bytes[i])
            req.up2_end_s = env._now
            req.s2_start_s, req.s2_end_s = yield from sim.infer(req, 2)
            req.score = self.score2[i]
            answer_bytes = self.answer2_bytes[i]
        yield from sim.send_down(req, answer_bytes)
        sim.finish(req)
