"""Benchmarks: simulator speed as ratios against a bare-SimPy floor run in the same process.

Machines are noisy, so every figure is the median of `--repeats` runs, and the headline is a
ratio against the floor measured in the same process: a bare SimPy pipeline of two FIFO
Resources with the same request count. It prints JSON and appends one line per run to
bench/results.jsonl together with machine info.

    python bench/run.py                 # every case
    python bench/run.py --case two_stage --scale 0.1 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import simpy  # noqa: E402

from edgevlm.sim import run  # noqa: E402
from edgevlm.sim.workload import Workload  # noqa: E402
from edgevlm.traces.synthetic import write_synthetic  # noqa: E402
from edgevlm.traces.version import git_commit  # noqa: E402


def bare_simpy_two_fifo(n_requests: int, seed: int = 0) -> float:
    """The floor: Poisson arrivals through two FIFO simpy.Resources, exponential service (ρ 0.7)."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0, n_requests).tolist()
    s1 = rng.exponential(0.7, n_requests).tolist()
    s2 = rng.exponential(0.5, n_requests).tolist()
    env = simpy.Environment()
    first, second = simpy.Resource(env, 1), simpy.Resource(env, 1)
    done = []

    def request(i):
        with first.request() as r:
            yield r
            yield env.timeout(s1[i])
        with second.request() as r:
            yield r
            yield env.timeout(s2[i])
        done.append(env.now)

    def source():
        for i in range(n_requests):
            yield env.timeout(gaps[i])
            env.process(request(i))

    env.process(source())
    t0 = time.perf_counter()
    env.run()
    wall = time.perf_counter() - t0
    assert len(done) == n_requests
    return n_requests / wall


def two_stage_scenario(trace: Path, n_requests: int, clients: int = 100) -> dict:
    """The fixed two-stage pipeline: entropy gate, default (PS) links, FIFO GPU (roofline, A100) at ρ ≈ 0.7."""
    return {
        "name": "bench-two-stage", "seed": 1, "trace": str(trace),
        "stop": {"requests": n_requests},
        "clients": {"count": clients, "arrival": {"kind": "poisson", "rate_per_s": 4.5 / clients},
                    "link_classes": [{"share": 0.7, "uplink_mbps": 10}, {"share": 0.3, "uplink_mbps": 2}]},
        "network": {"uplink": {"capacity_mbps": 20, "propagation_ms": 20},
                    "downlink": {"capacity_mbps": 100, "propagation_ms": 20}},
        "server": {"scheduler": {"kind": "fifo"}},
        "policy": {"kind": "entropy_threshold", "metric": "min_entropy", "threshold": 0.6, "tokens": 5},
    }


def sim_rate(scenario: dict, workload: Workload, out: Path | None) -> float:
    t0 = time.perf_counter()
    run(scenario, out, workload=workload)
    return scenario["stop"]["requests"] / (time.perf_counter() - t0)


class Ctx:
    """What every case gets: the trace, its loaded workload, a temp dir, repeats and a size scale."""

    def __init__(self, trace: Path, workload: Workload, tmp: Path, repeats: int, scale: float):
        self.trace, self.workload, self.tmp, self.repeats, self.scale = trace, workload, tmp, repeats, scale

    def n(self, requests: int) -> int:
        return max(1000, int(requests * self.scale))


def case_two_stage(ctx: Ctx) -> dict:
    """Case 1: the two-stage pipeline, 100 clients, against the bare-SimPy two-FIFO floor."""
    n = ctx.n(200_000)
    sims, floors = [], []
    for k in range(ctx.repeats):
        floors.append(bare_simpy_two_fifo(n, seed=k))
        sims.append(sim_rate(two_stage_scenario(ctx.trace, n), ctx.workload, ctx.tmp / f"two_stage_{k}"))
    sim, floor = statistics.median(sims), statistics.median(floors)
    return {"case": "two_stage", "requests": n, "clients": 100, "sim_req_per_s": round(sim),
            "floor_req_per_s": round(floor), "ratio": round(sim / floor, 3),
            "ratio_per_repeat": [round(a / b, 3) for a, b in zip(sims, floors)], "target_ratio": 0.7}


def case_client_scaling(ctx: Ctx) -> dict:
    """Case 2: 10 -> 10k clients at a fixed total rate; the cost per request must stay flat."""
    n = ctx.n(50_000)
    cost_us = {}
    for clients in (10, 100, 1_000, 10_000):
        rates = [sim_rate(two_stage_scenario(ctx.trace, n, clients), ctx.workload, None) for _ in range(ctx.repeats)]
        cost_us[clients] = round(1e6 / statistics.median(rates), 2)
    return {"case": "client_scaling", "requests": n, "us_per_request": cost_us,
            "ratio_10k_vs_100": round(cost_us[10_000] / cost_us[100], 3), "target_ratio_max": 1.3}


def case_overload(ctx: Ctx) -> dict:
    """Case 3: simulation speed at rho 1.2 (admission limit 50 waiting) against rho 0.7."""
    n = ctx.n(100_000)
    speeds = {}
    for rho in (0.7, 1.2):
        sc = two_stage_scenario(ctx.trace, n)
        sc["policy"] = {"kind": "global_only"}
        sc["server"] = {"scheduler": {"kind": "fifo"}, "max_queue": 50,
                        "latency": {"kind": "exponential", "mean_s": 0.1}}
        sc["clients"]["arrival"]["rate_per_s"] = rho / 0.1 / sc["clients"]["count"]
        speeds[rho] = statistics.median(sim_rate(sc, ctx.workload, None) for _ in range(ctx.repeats))
    return {"case": "overload", "requests": n, "req_per_s_rho_0.7": round(speeds[0.7]),
            "req_per_s_rho_1.2": round(speeds[1.2]), "ratio": round(speeds[1.2] / speeds[0.7], 3),
            "target_ratio": 0.8}


def case_million(ctx: Ctx) -> dict:
    """Case 4: one run of 1M requests, writing its event log; wall time and peak RSS of a fresh process."""
    import subprocess

    n = ctx.n(1_000_000)
    code = (f"import sys,time,resource,json; sys.path.insert(0,{str(ROOT)!r}); sys.path.insert(0,{str(ROOT / 'bench')!r})\n"
            "from run import two_stage_scenario\nfrom edgevlm.sim import run\n"
            f"t=time.perf_counter(); run(two_stage_scenario({str(ctx.trace)!r}, {n}), {str(ctx.tmp / 'million')!r})\n"
            "print(json.dumps({'wall_s': time.perf_counter()-t, "
            "'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return {"case": "million", "requests": n, "wall_s": round(res["wall_s"], 1),
            "peak_rss_mb": round(res["peak_rss_mb"]), "target_wall_s": 60, "target_rss_mb": 1024}


def case_sweep(ctx: Ctx) -> dict:
    """Case 5: sweep throughput, runs per minute on a process pool of 2 workers."""
    import yaml

    from edgevlm.sim.sweep import run_sweep

    base = two_stage_scenario(ctx.trace, ctx.n(20_000))
    spec = {"base": base, "grid": {"policy.threshold": [0.3, 0.6, 0.9, 1.2]}, "seeds": [1, 2]}
    path = ctx.tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    t0 = time.perf_counter()
    df = run_sweep(path, ctx.tmp / "sweep_out", workers=2)
    wall = time.perf_counter() - t0
    return {"case": "sweep", "runs": len(df), "requests_per_run": base["stop"]["requests"], "workers": 2,
            "wall_s": round(wall, 1), "runs_per_min": round(60 * len(df) / wall, 1)}


QUICKSTART_RUN = """\
import json, resource, sys, time
import yaml
from edgevlm.sim import run
from edgevlm.sim.scenario import load_scenario
sc, base = load_scenario(sys.argv[1])
d = yaml.safe_load(sc.to_yaml())
d["stop"]["requests"] = int(sys.argv[2])
t = time.perf_counter()
run(d, sys.argv[3], base_dir=base)
print(json.dumps({"wall_s": time.perf_counter() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def case_ten_million(ctx: Ctx) -> dict:
    """Issue 26: the quickstart at 10M requests (and 1/5, 1/2 of it) in fresh processes, writing
    events.parquet and summary.json; peak RSS must stay under 1 GB and flat in N. One run per size."""
    import subprocess

    sizes = [ctx.n(n) for n in (2_000_000, 5_000_000, 10_000_000)]
    per_size = {}
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", QUICKSTART_RUN, str(ROOT / "scenarios" / "quickstart.yaml"),
                              str(n), str(ctx.tmp / f"quickstart_{n}")], capture_output=True, text=True,
                             check=True, env=env, cwd=ROOT).stdout
        res = json.loads(out.strip().splitlines()[-1])
        per_size[n] = {"wall_s": round(res["wall_s"], 1), "peak_rss_mb": round(res["peak_rss_mb"]),
                       "us_per_request": round(1e6 * res["wall_s"] / n, 1)}
    rss = [v["peak_rss_mb"] for v in per_size.values()]
    return {"case": "ten_million", "scenario": "quickstart", "sizes": per_size,
            "rss_ratio_largest_vs_smallest": round(rss[-1] / rss[0], 3), "target_rss_mb": 1024}


def case_million_clients(ctx: Ctx) -> dict:
    """Issue 26: cost per request (run time less setup) at 1M clients against 100, same total rate; setup time."""
    from edgevlm.sim.engine import Simulation
    from edgevlm.sim.scenario import parse_scenario

    n = ctx.n(50_000)
    costs: dict[int, list[float]] = {100: [], 1_000_000: []}
    cpu_costs: dict[int, list[float]] = {100: [], 1_000_000: []}  # CPU time: robust to other load
    setups: dict[int, list[float]] = {100: [], 1_000_000: []}
    for k in range(ctx.repeats):  # interleaved, in alternating order, so drift hits both alike
        for clients in (100, 1_000_000) if k % 2 == 0 else (1_000_000, 100):
            sc = two_stage_scenario(ctx.trace, n, clients)
            t0, c0 = time.perf_counter(), time.process_time()
            Simulation(parse_scenario(sc), ctx.workload, lambda req: None)
            setup, setup_cpu = time.perf_counter() - t0, time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()
            run(sc, workload=ctx.workload)
            costs[clients].append((time.perf_counter() - t0 - setup) / n * 1e6)
            cpu_costs[clients].append((time.process_time() - c0 - setup_cpu) / n * 1e6)
            setups[clients].append(setup)
    ratios = [b / a for a, b in zip(costs[100], costs[1_000_000])]
    cpu_ratios = [b / a for a, b in zip(cpu_costs[100], cpu_costs[1_000_000])]
    return {"case": "million_clients", "requests": n,
            "us_per_request": {k: round(statistics.median(v), 2) for k, v in costs.items()},
            "setup_s": {k: round(statistics.median(v), 3) for k, v in setups.items()},
            "ratio_1M_vs_100": round(statistics.median(ratios), 3),
            "ratio_per_repeat": [round(r, 3) for r in ratios],
            "cpu_us_per_request": {k: round(statistics.median(v), 2) for k, v in cpu_costs.items()},
            "cpu_ratio_1M_vs_100": round(statistics.median(cpu_ratios), 3),
            "cpu_ratio_per_repeat": [round(r, 3) for r in cpu_ratios], "target_ratio_max": 1.05}


def case_sweep_scaling(ctx: Ctx) -> dict:
    """Issue 26: sweep runs per minute on 2 workers against 1, for the process pool and a Dask
    LocalCluster of worker processes (target >= 1.8x; needs two free cores). 16 runs, so that the
    pool's start (timed: it is part of every sweep) is amortised as in a real sweep; the host's
    load average is recorded, since other processes on a 2-core host cap the attainable ratio.
    `dask_round_trip_ms`: one empty task's submit-to-result time, against `run_s` per run."""
    import yaml
    from distributed import Client, LocalCluster  # defers distributed

    from edgevlm.sim.sweep import run_sweep

    base = two_stage_scenario(ctx.trace, ctx.n(100_000))
    spec = {"base": base, "grid": {"policy.threshold": [0.3, 0.6, 0.9, 1.2]}, "seeds": [1, 2, 3, 4]}
    path = ctx.tmp / "sweep_scaling.yaml"
    path.write_text(yaml.safe_dump(spec))
    rpm: dict[str, dict[int, list[float]]] = {"pool": {1: [], 2: []}, "dask": {1: [], 2: []}}
    round_trips_ms, loads = [], [os.getloadavg()[0]]
    for k in range(ctx.repeats):
        for workers in (1, 2):
            out = ctx.tmp / f"sweep_pool_{workers}_{k}"
            t0 = time.perf_counter()
            df = run_sweep(path, out, workers=workers)
            rpm["pool"][workers].append(60 * len(df) / (time.perf_counter() - t0))
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                client.wait_for_workers(workers)
                t0 = time.perf_counter()
                df = run_sweep(path, ctx.tmp / f"sweep_dask_{workers}_{k}", client=client)
                rpm["dask"][workers].append(60 * len(df) / (time.perf_counter() - t0))
                for _ in range(5):
                    t0 = time.perf_counter()
                    client.submit(int, k, pure=False).result()
                    round_trips_ms.append(1e3 * (time.perf_counter() - t0))
            loads.append(os.getloadavg()[0])
    med = {kind: {w: statistics.median(v) for w, v in by.items()} for kind, by in rpm.items()}
    return {"case": "sweep_scaling", "runs": len(df), "requests_per_run": base["stop"]["requests"],
            "runs_per_min": {kind: {w: round(v, 1) for w, v in by.items()} for kind, by in med.items()},
            "ratio_2_vs_1": {kind: round(by[2] / by[1], 3) for kind, by in med.items()},
            "ratio_per_repeat": {kind: [round(b / a, 3) for a, b in zip(by[1], by[2])] for kind, by in rpm.items()},
            "run_s_1_worker": round(60 / med["pool"][1], 2),
            "dask_round_trip_ms": round(statistics.median(round_trips_ms), 1),
            "load_avg_1min": [round(x, 2) for x in loads],
            "target_ratio": 1.8, "host_cpus": os.cpu_count()}


OVERLOAD_CLIENTS = 10_000
OVERLOAD_MAX_QUEUE = 512


def continuous_scenario(trace: Path, rate_per_s: float, time_s: float, seed: int = 1) -> dict:
    """10k clients, entropy gate, `continuous` batching (max_batch 32) with an admission limit."""
    return {
        "name": "bench-continuous", "seed": seed, "trace": str(trace),
        "stop": {"time_s": time_s},
        "clients": {"count": OVERLOAD_CLIENTS,
                    "arrival": {"kind": "poisson", "rate_per_s": rate_per_s / OVERLOAD_CLIENTS},
                    "link_classes": [{"share": 0.7, "uplink_mbps": 10}, {"share": 0.3, "uplink_mbps": 2}]},
        "network": {"uplink": {"capacity_mbps": 50, "propagation_ms": 20},
                    "downlink": {"capacity_mbps": 100, "propagation_ms": 20}},
        "server": {"scheduler": {"kind": "continuous", "max_batch": 32}, "max_queue": OVERLOAD_MAX_QUEUE},
        "policy": {"kind": "entropy_threshold", "metric": "min_entropy", "threshold": 0.6, "tokens": 5},
    }


def case_two_stage_fifo(ctx: Ctx) -> dict:
    """two_stage with FIFO links (the pre-PS default), beside two_stage (PS links) for comparison."""
    trace, workload, repeats, n = ctx.trace, ctx.workload, ctx.repeats, ctx.n(200_000)
    sims, floors = [], []
    for k in range(repeats):
        floors.append(bare_simpy_two_fifo(n, seed=k))
        sc = two_stage_scenario(trace, n)
        sc["network"]["uplink"]["discipline"] = sc["network"]["downlink"]["discipline"] = "fifo"
        # a FIFO uplink whose access caps bind is rejected (issue 20): caps at the capacity
        for c in sc["clients"]["link_classes"]:
            c["uplink_mbps"] = max(c["uplink_mbps"], sc["network"]["uplink"]["capacity_mbps"])
        sims.append(sim_rate(sc, workload, None))
    sim, floor = statistics.median(sims), statistics.median(floors)
    return {"case": "two_stage_fifo", "requests": n, "clients": 100, "sim_req_per_s": round(sim),
            "floor_req_per_s": round(floor), "ratio": round(sim / floor, 3),
            "ratio_per_repeat": [round(a / b, 3) for a, b in zip(sims, floors)]}


def many_clients_ps_scenario(trace: Path, n_requests: int, clients: int) -> dict:
    """A cell-like PS uplink with access caps, loaded so that ~2,000 transfers are active at once.

    3,000 req/s in total over a 1.4 Gbit/s PS uplink; clients are capped at 0.5 or 0.2 Mbit/s, so
    a transfer lasts ~0.5-2 s. The GPU is a fast deterministic stand-in (0.2 ms,
    4 replicas) so that the network, not the server, is what is measured.
    """
    return {
        "name": "bench-ps-many", "seed": 1, "trace": str(trace),
        "stop": {"requests": n_requests},
        "clients": {"count": clients, "arrival": {"kind": "poisson", "rate_per_s": 3000.0 / clients},
                    "edge": {"device": "ideal"},
                    "link_classes": [{"share": 0.7, "uplink_mbps": 0.5}, {"share": 0.3, "uplink_mbps": 0.2}]},
        "network": {"uplink": {"capacity_mbps": 1400, "discipline": "ps", "propagation_ms": 20},
                    "downlink": {"capacity_mbps": 5000, "discipline": "ps", "propagation_ms": 20}},
        "server": {"replicas": 4, "scheduler": {"kind": "fifo"},
                   "latency": {"kind": "deterministic", "service_s": 0.0002}},
        "policy": {"kind": "entropy_threshold", "metric": "min_entropy", "threshold": 0.6, "tokens": 5},
    }


def case_ps_many_clients(ctx: Ctx) -> dict:
    """10,000 clients vs 100 clients, same load, PS uplink: req/s as a ratio to the bare-SimPy floor.

    Also the light reference: the two_stage scenario (100 clients, a few transfers in flight) with a
    PS uplink, keyed 0 below."""
    trace, workload, repeats, n = ctx.trace, ctx.workload, ctx.repeats, ctx.n(100_000)
    out: dict = {"case": "ps_many_clients", "requests": n}
    ratios: dict[int, list[float]] = {0: [], 100: [], 10_000: []}
    rates: dict[int, list[float]] = {0: [], 100: [], 10_000: []}
    active: dict[int, float] = {}
    for k in range(repeats):
        floor = bare_simpy_two_fifo(n, seed=k)
        for clients in (0, 100, 10_000):
            if clients:
                sc = many_clients_ps_scenario(trace, n, clients)
            else:
                sc = two_stage_scenario(trace, n)
                sc["network"]["uplink"]["discipline"] = "ps"
            t0 = time.perf_counter()
            res = run(sc, workload=workload)
            rate = n / (time.perf_counter() - t0)
            rates[clients].append(rate)
            ratios[clients].append(rate / floor)
            active[clients] = res.summary["uplink"]["mean_active_transfers"]
    for clients in (0, 100, 10_000):
        out[f"clients_{clients}" if clients else "two_stage_ps_100_clients_light"] = {"sim_req_per_s": round(statistics.median(rates[clients])),
                                     "ratio_to_floor": round(statistics.median(ratios[clients]), 3),
                                     "ratio_per_repeat": [round(r, 3) for r in ratios[clients]],
                                     "uplink_mean_active_transfers": round(active[clients], 1)}
    per_repeat = [a / b for a, b in zip(ratios[10_000], ratios[100])]
    out["ratio_10k_over_100"] = round(statistics.median(per_repeat), 3)
    out["ratio_10k_over_light_100"] = round(statistics.median([a / b for a, b in zip(ratios[10_000], ratios[0])]), 3)
    out["target_ratio_10k_over_100"] = out["target_ratio_10k_over_light_100"] = 0.5
    return out


def link_event_cost(active: int, events: int, capped: bool, seed: int = 0) -> tuple[float, float]:
    """Seconds per link event with `active` transfers kept in flight (closed loop), and the mean
    number active. capped: three access-cap classes (0.5x, 1x, 4x the fair share), else uncapped."""
    from edgevlm.sim.network import LinkConfig, PsLink

    rng = np.random.default_rng(seed)
    capacity_bps = 1e9
    fair = capacity_bps / active
    caps = [None] if not capped else [0.5 * fair, 1.0 * fair, 4.0 * fair]
    sizes = (rng.exponential(1.0, 2 * events + 10 * active) * fair / 8 * 0.05).tolist()  # ~50 ms each at the fair share
    env = simpy.Environment()
    link = PsLink(env, LinkConfig(capacity_mbps=capacity_bps / 1e6, overhead_bytes=0))
    it = iter(sizes)
    running = [True]
    marks: dict = {}

    def client(i):
        cap = caps[i % len(caps)]
        while running[0]:
            yield from link.transfer(next(it), cap)

    for i in range(active):
        env.process(client(i))

    def meter():
        """Warm up (every client has started and finished a few), then time `events` link events."""
        warm = 4 * active
        while link.events < warm:
            yield env.timeout(0.002)
        marks["t0"], marks["e0"] = time.perf_counter(), link.events
        samples = []
        while link.events < warm + events:
            samples.append(link.n)  # polled at equal sim-time steps: a time average
            yield env.timeout(0.002)
        marks["active"] = sum(samples) / len(samples)
        marks["t1"], marks["e1"] = time.perf_counter(), link.events
        running[0] = False

    env.process(meter())
    env.run()
    per_event = (marks["t1"] - marks["t0"]) / (marks["e1"] - marks["e0"])
    return per_event, marks["active"]


def case_ps_event_cost(ctx: Ctx) -> dict:
    """Cost per PS link event (arrival, finish or timer wake-up, SimPy included) at 10..10k active."""
    trace, workload, repeats, n = ctx.trace, ctx.workload, ctx.repeats, ctx.n(100_000)
    out: dict = {"case": "ps_event_cost", "events_timed": max(20_000, n // 2)}
    for capped in (False, True):
        rows = {}
        for active in (10, 100, 1_000, 10_000):
            costs, mean_active = [], 0.0
            for k in range(repeats):
                c, mean_active = link_event_cost(active, out["events_timed"], capped, seed=k)
                costs.append(c)
            rows[str(active)] = {"us_per_event": round(statistics.median(costs) * 1e6, 2),
                                 "mean_active": round(mean_active, 1)}
        base = rows["10"]["us_per_event"]
        for r in rows.values():
            r["ratio_to_10"] = round(r["us_per_event"] / base, 2)
        out["capped_3_classes" if capped else "uncapped"] = rows
    return out


def case_continuous_overload(ctx: Ctx) -> dict:
    """Case 6: continuous batching at 10k clients, speed at ρ = 1.2 (admission limit) against ρ = 0.7.

    ρ is the offered load over the server's capacity, measured first: the completion rate of a run
    offered about 4× what it can serve. Each timed run lasts n/λ simulated seconds, so about n requests
    arrive. Speed is arrivals simulated per wall-clock second, event log written.
    """
    n = ctx.n(100_000)
    capacity = run(continuous_scenario(ctx.trace, 30.0, 2000.0), workload=ctx.workload).summary["throughput_per_s"]
    figures = {}
    for rho in (0.7, 1.2):
        lam = rho * capacity
        speeds, drops, batches, utils = [], [], [], []
        for k in range(ctx.repeats):
            t0 = time.perf_counter()
            res = run(continuous_scenario(ctx.trace, lam, n / lam, seed=1 + k), ctx.tmp / f"continuous_{rho}_{k}",
                      workload=ctx.workload)
            wall = time.perf_counter() - t0
            speeds.append(res.summary["counts"]["arrived"] / wall)
            drops.append(res.summary["drop_rate"])
            batches.append(res.summary["gpu"]["mean_batch"])
            utils.append(res.summary["gpu"]["utilisation"])
        figures[rho] = {"sim_req_per_s": round(statistics.median(speeds)), "speeds": [round(v) for v in speeds],
                        "drop_rate": round(statistics.median(drops), 4),
                        "gpu_utilisation": round(statistics.median(utils), 4),
                        "mean_batch": round(statistics.median(batches), 2)}
    ratios = [o / u for o, u in zip(figures[1.2]["speeds"], figures[0.7]["speeds"])]
    return {"case": "continuous_overload", "requests": n, "clients": OVERLOAD_CLIENTS,
            "capacity_req_per_s": round(capacity, 3), "max_queue": OVERLOAD_MAX_QUEUE,
            "rho_0.7": figures[0.7], "rho_1.2": figures[1.2],
            "ratio": round(figures[1.2]["sim_req_per_s"] / figures[0.7]["sim_req_per_s"], 3),
            "ratio_per_repeat": [round(r, 3) for r in ratios], "target_ratio": 0.8}


CASES = {"two_stage": case_two_stage, "client_scaling": case_client_scaling, "overload": case_overload,
         "million": case_million, "sweep": case_sweep, "continuous_overload": case_continuous_overload,
         "two_stage_fifo": case_two_stage_fifo, "ps_many_clients": case_ps_many_clients,
         "ps_event_cost": case_ps_event_cost, "ten_million": case_ten_million,
         "million_clients": case_million_clients, "sweep_scaling": case_sweep_scaling}


def machine_info() -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.uname().machine, "simpy": simpy.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=sorted(CASES), action="append", help="run only these cases")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every case's request count (e.g. 0.1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results.jsonl")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        trace = write_synthetic(tmp / "bench.parquet", 2000, seed=0)
        workload = Workload.load(trace)
        ctx = Ctx(trace, workload, tmp, args.repeats, args.scale)
        results = []
        for name in args.case or CASES:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            results.append(CASES[name](ctx))
    record = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": git_commit(),
              "machine": machine_info(), "results": results}
    print(json.dumps(record, indent=2))
    with open(args.results, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
