"""`full_cloud`: the HD baseline. The edge sends the full-resolution original once (the trace's
`original_jpeg_bytes` at `jpeg_quality`, or a v2 trace's `hd_jpeg_bytes`); the server runs one pass at the HD visual-token count
(`hd_visual_tokens`, e.g. LLaVA-1.5-HD tiles) and answers with `hd_score`. No second stage.

Event log: edge_done_s, up1_end_s (the original arrived), s1_start_s/s1_end_s (the HD pass),
done_s; stages = 1; flops = FLOPs(hd_visual_tokens). The pass is a Job with
ceil(hd_visual_tokens / visual tokens per image) images, so per-image vision cost scales with tiles.

`resolution: native` (for traces without hd_* columns, e.g. the tiny-model trace): the same original
goes up, the server resizes it to the model's vision input and runs one ordinary pass (one image,
the native visual tokens). The trace has no answer on that server-side resize, so the score is the
stage-1 answer on the global image (s1_score): the same pixels at the vision input, except that the
global image was JPEG-encoded after the resize, the original before it.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

import numpy as np

from edgevlm.sim.errors import ConfigError
from edgevlm.sim.latency import Job
from edgevlm.sim.policies.base import ImagePolicyConfig, Policy, policies, scores_at_quality
from edgevlm.sim.workload import Workload
from edgevlm.traces.protocol import TEXT_BYTES_PER_TOKEN

HD_COLUMNS = ("hd_score", "hd_visual_tokens")


class FullCloud(ImagePolicyConfig):
    kind: Literal["full_cloud"]
    resolution: Literal["hd", "native"] = Field(
        "hd", description="hd: the server runs the model's HD mode (trace columns hd_score, hd_visual_tokens); "
                          "native: it resizes the original to the vision input (score: s1_score)")


def require_columns(workload: Workload, columns: tuple[str, ...], kind: str) -> dict[str, np.ndarray]:
    """The optional trace columns a policy needs, or a ConfigError naming every missing one."""
    got, missing = {}, []
    for c in columns:
        arr = workload.optional(c)
        if arr is None:
            missing.append(f"{c} (absent)")
        elif np.isnan(arr).any():
            missing.append(f"{c} ({int(np.isnan(arr).sum())} null rows)")
        else:
            got[c] = arr
    if missing:
        raise ConfigError("policy.kind", f"{kind} needs the trace columns {', '.join(columns)}; "
                          f"trace {workload.path.name} lacks: {', '.join(missing)}")
    return got


def hd_tokens_for_model(hd_tokens: list[int], trace_tokens_per_image: int | None, model_tokens: int) -> list[int]:
    """The HD pass in the simulated model's tokens: the trace's HD token count measured in images of
    the trace model (e.g. the tiny model's 64-token thumbnail + 4 tiles = 320 = 5 images), times the
    served model's visual tokens per image (LLaVA-1.5: 5 x 576). A trace that does not record its
    tokens per image is taken to be in the served model's units already."""
    if not trace_tokens_per_image or int(trace_tokens_per_image) == model_tokens:
        return list(hd_tokens)
    per = int(trace_tokens_per_image)
    return [max(1, round(h * model_tokens / per)) for h in hd_tokens]


class FullCloudPolicy(Policy):
    name = "full_cloud"

    def __init__(self, cfg: FullCloud, workload: Workload, rng: np.random.Generator):
        super().__init__(cfg, workload, rng)
        q = workload.quality_index(cfg.jpeg_quality)
        self.up_bytes = (workload.hd_upload_bytes[:, q] + workload.question_bytes).tolist()
        self.answer_bytes = (workload.s1_tokens * TEXT_BYTES_PER_TOKEN).tolist()
        if cfg.resolution == "native":
            self.score = scores_at_quality(workload, "s1_score", q).tolist()
            self.hd_tokens = None  # the model's own visual tokens, known once the simulation binds
        else:
            cols = require_columns(workload, HD_COLUMNS, "full_cloud")
            self.score = scores_at_quality(workload, "hd_score", q).tolist()
            self.hd_tokens = cols["hd_visual_tokens"].astype(np.int64).tolist()
        self._jobs: list[Job] = []
        self._flops: list[float] = []

    def bind(self, sim) -> None:
        """The pass of each sample (HD tokens, or the model's own), in images of the model's visual-token count."""
        w, n_v = self.workload, sim.model.visual_tokens
        prompt = w.table.column("prompt_tokens").to_numpy().tolist()
        hd = hd_tokens_for_model(self.hd_tokens, w.provenance.get("visual_tokens_per_image"), n_v) \
            if self.hd_tokens is not None else [n_v] * w.n
        self._jobs = [Job(1, max(1, math.ceil(h / n_v)), h, p, t)
                      for h, p, t in zip(hd, prompt, w.s1_tokens.tolist())]
        flops = {h: sim.model.flops(h) for h in set(hd)}
        self._flops = [flops[h] for h in hd]

    def life(self, sim, req):
        i = req.sample
        if not (yield from self.send_global_and_infer(sim, req, self.up_bytes[i], self._jobs[i], self._flops[i])):
            return
        req.stages = 1
        req.score = self.score[i]
        yield from sim.send_down(req, self.answer_bytes[i])
        sim.finish(req)


policies.register(FullCloud)(FullCloudPolicy)
