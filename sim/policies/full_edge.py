"""`full_edge`: the whole VLM runs on the client's edge device and only the answer goes up.

No image crosses the network and the server does no work (the event log's `flops` counts server
FLOPs, so 0; the edge's FLOPs are in summary.json under "edge"). The pass is timed by the edge
latency model (`clients.edge.latency`, on `clients.edge.device`'s accelerator, with
`clients.edge.model`), FCFS per device. The score is the trace's `edge_score`. The trace has no edge
answer length, so the stage-1 answer's token count stands in for it. The image goes straight to the
model: no JPEG encode, so no `prep_s`. Event times: `s1_start_s`/`s1_end_s` are the edge pass,
`edge_done_s` its end, `up1_end_s` the answer's arrival upstream; no downlink message.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from edgevlm.sim.errors import ConfigError
from edgevlm.sim.policies.base import Policy, PolicyConfig, policies
from edgevlm.sim.workload import Workload
from edgevlm.traces.protocol import TEXT_BYTES_PER_TOKEN


class FullEdge(PolicyConfig):
    kind: Literal["full_edge"]


class FullEdgePolicy(Policy):
    name = "full_edge"
    # Inference runs on the device (s1_*) before the answer goes up; edge_done_s marks its end.
    step_order = ("arrival_s", "s1_start_s", "s1_end_s", "edge_done_s", "up1_end_s", "done_s")
    server_stages = ()  # its s1 span is on the device, not the server

    def __init__(self, cfg: FullEdge, workload: Workload, rng: np.random.Generator):
        super().__init__(cfg, workload, rng)
        score = workload.optional("edge_score")
        if score is None:
            raise ConfigError("policy.kind", f"full_edge needs the trace column 'edge_score' (the full-edge model's "
                              f"score), and {workload.path.name} has none; pick another policy or a trace with it")
        self.score = score.tolist()
        self.prompt = workload.table.column("prompt_tokens").to_numpy().tolist()
        self.out_tokens = workload.s1_tokens.tolist()
        self.answer_bytes = (workload.s1_tokens * TEXT_BYTES_PER_TOKEN).tolist()
        self._jobs = []

    def bind(self, sim) -> None:
        """Each sample's pass of the edge model on the client's device."""
        dev = sim.edge_devices
        self._jobs = [dev.job(p, t) for p, t in zip(self.prompt, self.out_tokens)]

    def life(self, sim, req):
        env, i = sim.env, req.sample
        req.s1_start_s, req.s1_end_s = yield from sim.infer_edge(req, self._jobs[i])
        req.edge_done_s = env.now
        req.stages = 1
        req.score = self.score[i]
        yield from sim.send_up(req, self.answer_bytes[i])
        req.up1_end_s = env.now
        sim.finish(req)


policies.register(FullEdge)(FullEdgePolicy)
