"""The optional vision-encoder pool (issue 27): images encoded apart, the LLM workers receive tokens."""

from __future__ import annotations

import numpy as np
import pytest

from edgevlm.sim import run
from edgevlm.sim.latency import Job, Roofline
from edgevlm.sim.profiles import HARDWARE, MODELS
from edgevlm.sim.scenario import Scenario
from edgevlm.sim.workload import Workload


def test_llm_passes_lose_the_vision_encoder_and_wait_for_the_pool(scenario_dict):
    sc = scenario_dict(stop={"requests": 600}, server={"encoder": {"replicas": 1, "hardware": "l4"}})
    res = run(sc)
    ev = res.events.sort_values("request_id")
    llava, l4 = MODELS["llava-1.5-7b"], HARDWARE["l4"]
    per_image_s = llava.vision_tflops * 1e12 / (l4.peak_tflops * 1e12 * l4.mfu)  # 8.4 ms
    assert per_image_s == pytest.approx(0.00838, rel=0.01)
    roof = Roofline(llava, HARDWARE["a100-80gb"])
    # fifo: a stage-1 pass lasts exactly its token-only roofline time (no vision encoder on the LLM)
    w = Workload.load(sc["trace"]).for_policy(Scenario.model_validate(sc).policy)
    p = w.table.column("prompt_tokens").to_numpy()
    t1 = w.s1_tokens
    # the sample of each request is not in the event log; check the set of durations instead
    got = (ev["s1_end_s"] - ev["s1_start_s"]).to_numpy()

    def nearest(images: int) -> np.ndarray:
        want = np.array(sorted({roof.service_s(Job(1, images, 576, int(a), int(b))) for a, b in zip(p, t1)}))
        return np.abs(got[:, None] - want[None, :]).min(axis=1)

    assert nearest(0).max() < 1e-9  # token-only passes...
    assert nearest(1).min() > 1e-4  # ...never the pass that includes the 3.2 ms vision encoder
    # every stage-1 and stage-2 pass went through the pool first
    enc = res.summary["encoder"]
    assert res.summary["counts"]["dropped"] == 0 and enc["jobs"] == len(ev) + int((ev["stages"] == 2).sum())
    assert ((ev["s1_start_s"] - ev["up1_end_s"]).to_numpy() >= per_image_s - 1e-9).all()


def test_without_the_block_the_run_is_unchanged(scenario_dict):
    a = run(scenario_dict(stop={"requests": 300}))
    sc = Scenario.model_validate(scenario_dict(stop={"requests": 300}))
    assert "encoder" not in sc.model_dump(mode="json")["server"] and "encoder" not in a.summary
    with pytest.raises(Exception, match="server.encoder.replicas"):
        run(scenario_dict(server={"encoder": {"replicas": 0}}))
