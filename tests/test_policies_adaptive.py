"""adaptive_threshold: the controller's map, its state readers, and goodput against fixed eta.

The shipped overload scenario (scenarios/overload.yaml, SYNTHETIC trace) is run with common random
numbers; the objective is score goodput (VQA score delivered within the deadline per second).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgevlm.sim import run
from edgevlm.sim.compare import run_compare
from edgevlm.sim.engine import Simulation
from edgevlm.sim.policies.adaptive import AdaptiveThreshold, AdaptiveThresholdPolicy
from edgevlm.sim.scenario import parse_scenario
from edgevlm.sim.workload import Workload

ROOT = Path(__file__).resolve().parent.parent
FIXED = [0.3, 0.6, 1.0, 1.2, 1.4, 1.6, 1.8, 2.2]  # and global_only: the best fixed eta is searched wide


def overload_compare(seed: int, requests: int, scale: float = 1.0) -> dict:
    variants = [{"name": f"eta_{e}", "policy": {"kind": "entropy_threshold", "threshold": e}} for e in FIXED]
    variants += [{"name": "global_only", "policy": {"kind": "global_only"}},
                 {"name": "adaptive", "policy": {"kind": "adaptive_threshold"}}]
    spec = {"name": "t", "base": str(ROOT / "scenarios" / "overload.yaml"), "variants": variants,
            "set": {"seed": seed, "stop": {"requests": requests, "warmup_s": 30}}}
    if scale != 1.0:
        spec["load"] = {"scale": [scale]}
    return spec


@pytest.mark.parametrize("seed", [1, 2])
def test_adaptive_beats_the_best_fixed_eta_on_score_goodput_in_overload(seed):
    df = run_compare(overload_compare(seed, 6000)).set_index("variant")
    fixed = df.drop(index="adaptive")
    best = fixed["score_goodput_per_s"].max()
    ad = df.loc["adaptive"]
    assert ad["score_goodput_per_s"] > 1.02 * best, df[["score_goodput_per_s", "goodput_per_s", "accuracy"]]
    # It keeps plain goodput near the fixed gates that answer in time (within 3% of the best),
    # while answering more accurately than any fixed eta with comparable goodput.
    assert ad["goodput_per_s"] > 0.97 * fixed["goodput_per_s"].max()
    comparable = fixed[fixed["goodput_per_s"] >= 0.97 * fixed["goodput_per_s"].max()]
    assert ad["accuracy"] > comparable["accuracy"].max()


def test_adaptive_matches_the_best_fixed_eta_when_unloaded():
    """At an eighth of the overload rate (1 req/s, GPU lightly loaded) it behaves like the fixed gate at its base eta."""
    spec = overload_compare(1, 6000, scale=0.125)
    spec["variants"] = [{"name": f"eta_{e}", "policy": {"kind": "entropy_threshold", "threshold": e}}
                        for e in (0.2, 0.3, 0.4, 0.6)] + [{"name": "adaptive",
                                                           "policy": {"kind": "adaptive_threshold"}}]
    df = run_compare(spec).set_index("variant")
    fixed = df.drop(index="adaptive")
    best = fixed.loc[fixed["score_goodput_per_s"].idxmax()]
    ad = df.loc["adaptive"]
    noise = 2 * best["accuracy_ci_half"] * best["goodput_per_s"]
    assert abs(ad["score_goodput_per_s"] - best["score_goodput_per_s"]) <= noise, df
    assert abs(ad["retransmission_rate"] - df.loc["eta_0.3", "retransmission_rate"]) < 0.03


def test_controller_map_is_monotone_and_capped(synthetic_trace):
    w = Workload.load(synthetic_trace)
    cfg = AdaptiveThreshold(kind="adaptive_threshold", threshold=0.3, gain=2.0, dead_zone=0.5, threshold_max=1.5)
    pol = AdaptiveThresholdPolicy(cfg, w, np.random.default_rng(0))
    assert pol.eta(0.0) == pol.eta(0.5) == 0.3          # inside the dead zone: the base eta
    assert pol.eta(1.0) == pytest.approx(1.3)            # 0.3 + 2 × (1.0 − 0.5)
    assert pol.eta(10.0) == 1.5                          # capped
    m = AdaptiveThresholdPolicy(AdaptiveThreshold(kind="adaptive_threshold", metric="margin", threshold=0.4,
                                                  gain=0.2), w, np.random.default_rng(0))
    assert m.eta(1.0) == pytest.approx(0.2)              # margin: lower eta crops less


def test_unloaded_adaptive_without_pressure_is_the_fixed_gate(scenario_dict):
    """With a huge reference queue/backlog and no guard, pressure never leaves the dead zone."""
    calm = {"kind": "adaptive_threshold", "threshold": 0.5, "gpu_queue_ref": 1e9, "uplink_backlog_ref_s": 1e9,
            "latency_target": 0.99, "dead_zone": 1.0, "deadline_guard": False}
    cols = ["request_id", "uplink_bytes", "stages", "score", "done_s"]
    a = run(scenario_dict(policy=calm)).events.sort_values("request_id")[cols].reset_index(drop=True)
    b = run(scenario_dict(policy={"kind": "entropy_threshold", "threshold": 0.5})).events.sort_values(
        "request_id")[cols].reset_index(drop=True)
    assert a.equals(b)


def test_load_state_readers_work_whatever_the_link(scenario_dict):
    sim = Simulation(parse_scenario(scenario_dict()), Workload.load(scenario_dict()["trace"]), lambda r: None)
    assert sim.uplink_backlog_s() == 0.0 and sim.gpu_queue_length() == 0

    class PsLike:  # a link that only reports bytes left (as a processor-sharing link may)
        def backlog_bytes(self):
            return 2_500_000

    sim.uplink = PsLike()
    assert sim.uplink_backlog_s() == pytest.approx(2_500_000 * 8 / 20e6)
    sim.uplink = object()
    sim.uplink_bytes_in_flight = 500_000
    assert sim.uplink_backlog_s() == pytest.approx(500_000 * 8 / 20e6)
    sim.gpu_in_system = 5  # one replica: one in service, four waiting
    assert sim.gpu_queue_length() == 4


def test_gpu_queue_length_counts_waiting_passes_during_a_run(scenario_dict):
    """Sampled at every crop decision, the engine's count equals the FIFO server's own queue."""
    from edgevlm.sim.workload import Workload as W

    sc = parse_scenario(scenario_dict(server={"replicas": 1, "model": "llava-1.5-7b", "max_queue": 10**6},
                                      policy={"kind": "entropy_threshold", "threshold": 0.3}))
    sim = Simulation(sc, W.load(sc.trace), lambda r: None)
    seen = []
    decide = sim.policy.decide

    def spy(req, s):
        seen.append((s.gpu_queue_length(), s.server.queue_length()))
        return decide(req, s)

    sim.policy.decide = spy
    sim.run()
    assert max(a for a, _ in seen) >= 2
    assert all(a == b for a, b in seen)


def test_summary_reports_the_controller(scenario_dict):
    s = run(scenario_dict(policy={"kind": "adaptive_threshold"})).summary
    st = s["policy_stats"]
    assert st["decisions"] == s["counts"]["ok"] and st["mean_threshold"] >= 0.3


def test_same_seed_gives_identical_adaptive_runs(scenario_dict):
    sc = scenario_dict(policy={"kind": "adaptive_threshold"}, clients={
        "count": 20, "arrival": {"kind": "poisson", "rate_per_s": 0.2}})
    a, b = run(sc), run(sc)
    assert a.events.equals(b.events)
    assert a.summary["policy_stats"] == b.summary["policy_stats"] and a.summary["policy_stats"]["guard_skips"] >= 0


def test_uplink_bytes_are_counted_in_flight_on_a_link_without_backlog(scenario_dict, monkeypatch):
    """A link with no backlog method (as a PS link may be): the engine counts bytes sent, not delivered."""
    import edgevlm.sim.engine as engine
    from edgevlm.sim.network import FifoLink, build_link

    class NoBacklog(FifoLink):
        backlog_s = backlog_bytes = None  # hides the FIFO's own readings

    def build(env, cfg, *a, **kw):
        link = build_link(env, cfg, *a, **kw)
        return NoBacklog(env, cfg) if type(link) is FifoLink else link

    pol = {"kind": "entropy_threshold", "threshold": 0.5}
    net = {"uplink": {"capacity_mbps": 20, "discipline": "fifo", "propagation_ms": 20},
           "downlink": {"capacity_mbps": 100, "discipline": "fifo", "propagation_ms": 20}}
    # access caps at the capacity: a FIFO uplink whose caps bind is rejected (issue 20)
    cli = {"count": 20, "arrival": {"kind": "poisson", "rate_per_s": 0.05},
           "link_classes": [{"share": 1.0, "uplink_mbps": 20}]}
    plain = run(scenario_dict(policy=pol, network=net, clients=cli)).events
    monkeypatch.setattr(engine, "build_link", build)
    sc = parse_scenario(scenario_dict(policy=pol, network=net, clients=cli))
    sim = Simulation(sc, Workload.load(sc.trace), lambda r: None)
    assert sim._count_uplink
    seen = []
    decide = sim.policy.decide
    sim.policy.decide = lambda req, s: seen.append(s.uplink_backlog_s()) or decide(req, s)
    sim.run()
    assert sim.uplink_bytes_in_flight == 0 and max(seen) > 0
    # counting changes nothing in the run itself
    counted = run(scenario_dict(policy=pol, network=net, clients=cli)).events
    assert counted.equals(plain)
