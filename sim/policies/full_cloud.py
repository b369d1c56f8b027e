"""`full_cloud`: the HD baseline. The edge sends the full-resolution original once (the trace's
`original_jpeg_bytes` at `jpeg_quality`); the server runs one pass at the HD visual-token count
(`hd_visual_tokens`, e.g. LLaVA-1.5-HD tiles) and answers with `hd_score`. No second stage.

Event log: edge_done_s, up1_end_s (the original arrived), s1_start_s/s1_end_s (the HD pass),
done_s; stages = 1; flops = FLOPs(hd_visual_tokens). The pass is a Job with
ceil(hd_visual_tokens / visual tokens per image) images, so per-image vision cost scales with tiles.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from edgevlm.sim.errors import ConfigError
from edgevlm.sim.latency import Job
from edgevlm.sim.policies.base import ImagePolicyConfig, Policy, policies, scores_at_quality
from edgevlm.sim.workload import TEXT_BYTES_PER_TOKEN, Workload

HD_COLUMNS = ("hd_score", "hd_visual_tokens")


class FullCloud(ImagePolicyConfig):
    kind: Literal["full_cloud"]


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


class FullCloudPolicy(Policy):
    name = "full_cloud"

    def __init__(self, cfg: FullCloud, workload: Workload, rng: np.random.Generator):
        super().__init__(cfg, workload, rng)
        cols = require_columns(workload, HD_COLUMNS, "full_cloud")
        q = workload.quality_index(cfg.jpeg_quality)
        self.up_bytes = (workload.original_bytes[:, q] + workload.question_bytes).tolist()
        self.answer_bytes = (workload.s1_tokens * TEXT_BYTES_PER_TOKEN).tolist()
        self.score = scores_at_quality(workload, "hd_score", q).tolist()
        self.hd_tokens = cols["hd_visual_tokens"].astype(np.int64).tolist()
        self._jobs: list[Job] = []
        self._flops: list[float] = []

    def bind(self, sim) -> None:
        """The HD pass of each sample, in images of the server model's visual-token count."""
        w, n_v = self.workload, sim.model.visual_tokens
        prompt = w.table.column("prompt_tokens").to_numpy().tolist()
        self._jobs = [Job(1, max(1, math.ceil(h / n_v)), h, p, t)
                      for h, p, t in zip(self.hd_tokens, prompt, w.s1_tokens.tolist())]
        flops = {h: sim.model.flops(h) for h in set(self.hd_tokens)}
        self._flops = [flops[h] for h in self.hd_tokens]

    def life(self, sim, req):
        i = req.sample
        if not (yield from self.send_global_and_infer(sim, req, self.up_bytes[i], self._jobs[i], self._flops[i])):
            return
        req.stages = 1
        req.score = self.score[i]
        yield from sim.send_down(req, self.answer_bytes[i])
        sim.finish(req)


policies.register(FullCloud)(FullCloudPolicy)
