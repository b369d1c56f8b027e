"""The engine's contracts: every built link, server and policy implements its interface
(sim/interfaces.py), the shared rules live once (Lindley, gate direction), and the SimPy internals
the PS link relies on hold on the installed SimPy (sim/simpy_adapter.py)."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from edgevlm.sim.engine import Simulation
from edgevlm.sim.interfaces import Link, Policy, Server
from edgevlm.sim.latency import Job
from edgevlm.sim.lindley import lindley_start
from edgevlm.sim.network import FifoLink, LinkConfig, PsLink
from edgevlm.sim.policies import policies
from edgevlm.sim.scenario import parse_scenario
from edgevlm.sim.server import schedulers
from edgevlm.sim.server.fifo import FifoServer
from edgevlm.sim.simpy_adapter import check_assumptions, run as run_events, start
from edgevlm.sim.workload import Workload
from edgevlm.traces.uncertainty import METRIC_COLUMNS, higher_is_uncertain, uncertain


def test_installed_simpy_meets_the_adapters_assumptions():
    """Fails loudly if a SimPy upgrade changes what `succeed_after` writes (sim/simpy_adapter.py)."""
    check_assumptions()


def _ticking_model(env, log, spawn):
    """Processes that tie in time, wait on shared, already-processed and failed events, and start
    others mid-step: the order they log in is SimPy's event order."""
    shared = env.event()
    failed = env.event()

    def worker(i):
        log.append((env.now, i, "start"))
        yield env.timeout(1.0)  # every worker wakes at t=1 + start time: ties broken by event id
        log.append((env.now, i, "tick"))
        if i == 0:
            shared.succeed("go")
            failed.fail(ValueError("boom"))
        value = yield shared
        log.append((env.now, i, value))
        value = yield shared  # already processed: continues at once with its value
        log.append((env.now, i, "again", value))
        try:
            yield failed
        except ValueError as exc:
            log.append((env.now, i, "caught", str(exc)))
        yield env.timeout(0.5 * (i % 2))

    def source():  # as the engine's arrival processes do, a spawn ends the step
        for i in range(4):
            log.append((env.now, "spawn", i))
            spawn(worker(i))
            yield env.timeout(0.0 if i == 1 else 0.25)
        spawn(worker(9))  # starts after the others have ticked

    env.process(source())


def test_start_and_run_keep_simpys_event_order():
    """`start` / `run` (sim/simpy_adapter.py) give the event order of `env.process` / `env.run`."""
    env_a, log_a = simpy.Environment(), []
    _ticking_model(env_a, log_a, env_a.process)
    env_a.run()
    env_b, log_b = simpy.Environment(), []
    _ticking_model(env_b, log_b, start)
    run_events(env_b)
    assert log_b == log_a and len(log_a) > 20 and env_b.now == env_a.now


def test_start_reports_a_bad_yield_and_run_raises_a_process_error():
    env = simpy.Environment()

    def bad():
        yield 42

    with pytest.raises(RuntimeError, match="invalid yield value 42"):
        start(bad())

    def broken():
        yield env.timeout(1.0)
        raise KeyError("in a protocol")

    start(broken())
    with pytest.raises(KeyError, match="in a protocol"):
        run_events(env)


@pytest.mark.parametrize("discipline", ["ps", "fifo"])
@pytest.mark.parametrize("scheduler", sorted(schedulers.kinds()))
def test_every_built_component_implements_its_interface(scenario_dict, discipline, scheduler):
    net = {"uplink": {"capacity_mbps": 2, "discipline": discipline},  # at or below every access cap
           "downlink": {"capacity_mbps": 100, "discipline": discipline}}
    sc = parse_scenario(scenario_dict(network=net, server={"scheduler": {"kind": scheduler}}))
    sim = Simulation(sc, Workload.load(sc.trace), lambda r: None)
    assert isinstance(sim.uplink, Link) and isinstance(sim.downlink, Link)
    assert isinstance(sim.server, Server) and isinstance(sim.policy, Policy)
    assert sim.server.books_on_arrival == (scheduler == "fifo")


def test_every_registered_policy_is_a_policy():
    for kind in policies.kinds():
        assert issubclass(policies.builder(kind), Policy), kind


def test_bind_sees_the_built_simulation_once_before_any_request(scenario_dict, monkeypatch):
    sc = parse_scenario(scenario_dict(stop={"requests": 50}))
    pol_cls = policies.builder(sc.policy.kind)
    original, seen = pol_cls.bind, []

    def spy(self, sim):
        seen.append((sim.arrived, isinstance(sim.uplink, Link), isinstance(sim.server, Server)))
        return original(self, sim)

    monkeypatch.setattr(pol_cls, "bind", spy)
    sim = Simulation(sc, Workload.load(sc.trace), lambda r: None)
    sim.run()
    assert seen == [(0, True, True)] and sim.arrived == 50


def test_fifo_queue_length_counts_waiting_jobs_without_max_queue():
    """Three 1 s jobs at t=0 on one GPU: 2 waiting, then 1 at t=1.5, none at t=2.5 (no max_queue set)."""
    env = simpy.Environment()
    srv = FifoServer(env, 1, lambda job: 1.0, max_queue=None)
    seen = []

    def probe():
        for _ in range(3):
            env.process(srv.submit(Job(1, 1, 576, 10, 5)))
        yield env.timeout(0)
        seen.append(srv.queue_length())
        for t in (1.5, 2.5):
            yield env.timeout(t - env.now)
            seen.append(srv.queue_length())

    env.process(probe())
    env.run()
    assert seen == [2, 1, 0]


def test_lindley_start_waits_for_a_busy_server_only():
    assert lindley_start(5.0, 3.0) == 5.0
    assert lindley_start(2.0, 3.0) == 3.0


def test_gate_direction_is_one_rule_for_every_metric():
    values = np.array([0.1, 0.5, 0.9])
    assert set(METRIC_COLUMNS) == {"min_entropy", "shannon", "margin"}
    assert uncertain(values, "min_entropy", 0.5).tolist() == [False, True, True]
    assert uncertain(values, "shannon", 0.5).tolist() == [False, True, True]
    assert uncertain(values, "margin", 0.5).tolist() == [True, True, False]  # small p1 - p2: unsure
    assert not higher_is_uncertain("margin") and higher_is_uncertain("min_entropy")
    with pytest.raises(KeyError, match="marg"):
        higher_is_uncertain("marg")


def test_busy_fraction_until_leaves_out_work_booked_past_the_stop():
    """Three 1 s jobs at t=0 on one GPU, stopped at 1.5 s: 3 s booked, 1.5 s of it past the stop."""
    env = simpy.Environment()
    srv = FifoServer(env, 1, lambda job: 1.0, max_queue=None)
    for _ in range(3):
        env.process(srv.submit(Job(1, 1, 576, 10, 5)))
    env.run(until=0.5)
    assert srv.busy_fraction_until(0.5) == pytest.approx(1.0)
    assert srv.busy_fraction_until(6.0) == pytest.approx(0.5)
    fifo = FifoLink(env, LinkConfig(capacity_mbps=8, discipline="fifo", overhead_bytes=0))
    def carry():
        yield from fifo.transfer(2_000_000)

    env.process(carry())  # 2 s of transmission from t=0.5
    env.run(until=1.0)
    assert fifo.busy_fraction_until(1.0) == pytest.approx(0.5)
    assert PsLink(env, LinkConfig(capacity_mbps=8)).busy_fraction_until(1.0) is None
