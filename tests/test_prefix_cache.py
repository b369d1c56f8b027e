"""Prefix reuse between the stages (issue 27): stage 2 prefills only what stage 1 did not cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgevlm.sim import run
from edgevlm.sim.latency import Job, Roofline
from edgevlm.sim.profiles import HARDWARE, MODELS
from edgevlm.sim.server.prefix import PrefixCache, PrefixCacheConfig

LLAVA = MODELS["llava-1.5-7b"]


def test_incremental_prefill_flops_by_hand_for_llava_7b():
    """FLOPs(n) = (24·n·d² + 4·n²·d)·L, d = 4096, L = 32, n_v = 576:
    FLOPs(576)  = (24·576·4096² + 4·576²·4096)·32  = 7,421,703,487,488 + 173,946,175,488 = 7,595,649,662,976
    FLOPs(1152) = (24·1152·4096² + 4·1152²·4096)·32 = 14,843,406,974,976 + 695,784,701,952 = 15,539,191,676,928
    Reusing the global image, stage 2 costs FLOPs(1152) - FLOPs(576) = 24·576·d²·L + 4·576·(2·576 + 576)·d·L
    = 7,421,703,487,488 + 521,838,526,464 = 7,943,542,013,952: 51.1% of the full stage 2."""
    assert LLAVA.flops(576) == 7_595_649_662_976
    assert LLAVA.flops(1152) == 15_539_191_676_928
    assert LLAVA.flops(1152) - LLAVA.flops(576) == 7_943_542_013_952 == 7_421_703_487_488 + 521_838_526_464
    # the roofline's incremental prefill is the same difference, here on the real stage-2 shape
    roof = Roofline(LLAVA, HARDWARE["a100-80gb"])
    full = Job(2, 2, 1152, 20, 1)
    hit = Job(2, 1, 1152, 20, 1, cached_tokens=576 + 20)
    compute = (LLAVA.flops(1172) - LLAVA.flops(596)) / roof.flop_per_s
    assert roof.iteration_s([hit], 0, 0.0) == pytest.approx(compute + roof.vision_s, rel=1e-12)
    assert roof.iteration_s([full], 0, 0.0) == pytest.approx(LLAVA.flops(1172) / roof.flop_per_s + 2 * roof.vision_s,
                                                             rel=1e-12)


def test_cache_hits_on_its_replica_misses_elsewhere_and_evicts_oldest():
    cache = PrefixCache(PrefixCacheConfig(enabled=True, capacity_tokens=1000), replicas=2)
    s1 = lambda k: Job(1, 1, 576, 20, 3, prefix_key=k)
    s2 = lambda k: Job(2, 2, 1152, 20, 3, prefix_key=k)
    for k in (1, 2):
        cache.route(0, s1(k))  # 596 tokens each: storing request 2 evicts request 1
    assert cache.evictions == 1
    assert cache.route(0, s2(1)).cached_tokens == 0  # evicted: full price
    assert cache.route(1, s2(2)).cached_tokens == 0  # another replica: full price
    cache.route(1, s1(3))
    job = cache.route(1, s2(3))
    assert (job.cached_tokens, job.images) == (596, 1) and cache.was_hit(3) and not cache.was_hit(3)
    assert cache.route(1, s2(3)).cached_tokens == 0  # read once: it became the sequence's own KV
    assert cache.stats() == {"hits": 1, "misses": 3, "evictions": 1, "reused_tokens": 596}


def _gate(scenario_dict, prefix: dict | None, server: dict | None = None):
    sc = scenario_dict(stop={"requests": 1500}, server={"scheduler": {"kind": "fifo"}, **(server or {}),
                                                        **({"prefix_cache": prefix} if prefix else {})})
    return run(sc)


@pytest.mark.parametrize("sched", [{"kind": "fifo"}, {"kind": "continuous", "max_batch": 16}])
def test_every_stage2_hit_books_only_the_new_tokens(scenario_dict, sched):
    base = _gate(scenario_dict, None, {"scheduler": sched})
    off = _gate(scenario_dict, {"enabled": False}, {"scheduler": sched})
    on = _gate(scenario_dict, {"enabled": True}, {"scheduler": sched})
    pd.testing.assert_frame_equal(base.events, off.events)  # disabled = today's, exactly
    b, o = (r.events.sort_values("request_id").reset_index(drop=True) for r in (base, on))
    two = (b["stages"].to_numpy() == 2) & (o["stages"].to_numpy() == 2)
    same = b["stages"].to_numpy() == o["stages"].to_numpy()
    assert two.sum() > 50 and same.mean() > 0.99  # a few requests may end differently as timing changes
    pc = on.summary["gpu"]["prefix_cache"]
    assert pc["hits"] == (on.events["stages"].to_numpy() == 2).sum() and pc["misses"] == 0
    saved = b["flops"].to_numpy() - o["flops"].to_numpy()
    np.testing.assert_allclose(saved[two], LLAVA.flops(576), rtol=1e-12)
    np.testing.assert_array_equal(saved[same & ~two], 0.0)
    # stage 2 runs faster on a hit (same requests, lower load)
    d = lambda e: (e["s2_end_s"] - e["s2_start_s"]).to_numpy()[two]
    assert d(o).mean() < 0.8 * d(b).mean()


def test_a_tiny_cache_misses_and_pays_full_price(scenario_dict):
    base = _gate(scenario_dict, None)
    tiny = _gate(scenario_dict, {"enabled": True, "capacity_tokens": 100})  # below one prefix: never stored
    pc = tiny.summary["gpu"]["prefix_cache"]
    assert pc["hits"] == 0 and pc["misses"] > 50
    pd.testing.assert_frame_equal(base.events, tiny.events)
