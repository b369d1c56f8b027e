"""Benchmarks: simulator speed as ratios against a bare-SimPy floor run in the same process.

Machines are noisy, so every figure is the median of `--repeats` runs, and the headline is a
ratio against the floor measured in the same process: a bare SimPy pipeline of two FIFO
Resources with the same request count. It prints JSON and appends one line per run to
bench/results.jsonl together with machine info.

    python bench/run.py                 # every case
    python bench/run.py --case two_stage --requests 20000 --repeats 1   # a quick look
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

from sim import run  # noqa: E402
from sim.workload import Workload  # noqa: E402
from traces.synthetic import write_synthetic  # noqa: E402
from traces.version import git_commit  # noqa: E402


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
    """The fixed two-stage pipeline: entropy gate, PS links (the default), FIFO GPU at ρ ≈ 0.7."""
    return {
        "name": "bench-two-stage", "seed": 1, "trace": str(trace),
        "stop": {"requests": n_requests},
        "clients": {"count": clients, "arrival": {"kind": "poisson", "rate_per_s": 2.5 / clients},
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


def case_two_stage(trace: Path, workload: Workload, n: int, repeats: int, tmp: Path) -> dict:
    sims, floors = [], []
    for k in range(repeats):
        floors.append(bare_simpy_two_fifo(n, seed=k))
        sims.append(sim_rate(two_stage_scenario(trace, n), workload, tmp / f"two_stage_{k}"))
    sim, floor = statistics.median(sims), statistics.median(floors)
    return {"case": "two_stage", "requests": n, "clients": 100, "sim_req_per_s": round(sim),
            "floor_req_per_s": round(floor), "ratio": round(sim / floor, 3),
            "ratio_per_repeat": [round(a / b, 3) for a, b in zip(sims, floors)], "target_ratio": 0.3}


def case_two_stage_fifo(trace: Path, workload: Workload, n: int, repeats: int, tmp: Path) -> dict:
    """two_stage with FIFO links (the pre-PS default), beside two_stage (PS links) for comparison."""
    sims, floors = [], []
    for k in range(repeats):
        floors.append(bare_simpy_two_fifo(n, seed=k))
        sc = two_stage_scenario(trace, n)
        sc["network"]["uplink"]["discipline"] = sc["network"]["downlink"]["discipline"] = "fifo"
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


def case_ps_many_clients(trace: Path, workload: Workload, n: int, repeats: int, tmp: Path) -> dict:
    """10,000 clients vs 100 clients, same load, PS uplink: req/s as a ratio to the bare-SimPy floor.

    Also the light reference: the two_stage scenario (100 clients, a few transfers in flight) with a
    PS uplink, keyed 0 below."""
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
    from sim.network import LinkConfig, PsLink

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


def case_ps_event_cost(trace: Path, workload: Workload, n: int, repeats: int, tmp: Path) -> dict:
    """Cost per PS link event (arrival, finish or timer wake-up, SimPy included) at 10..10k active."""
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


CASES = {"two_stage": case_two_stage, "two_stage_fifo": case_two_stage_fifo, "ps_many_clients": case_ps_many_clients,
         "ps_event_cost": case_ps_event_cost}


def machine_info() -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.uname().machine, "simpy": simpy.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=sorted(CASES), action="append", help="run only these cases")
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results.jsonl")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        trace = write_synthetic(tmp / "bench.parquet", 2000, seed=0)
        workload = Workload.load(trace)
        results = [CASES[c](trace, workload, args.requests, args.repeats, tmp) for c in (args.case or CASES)]
    record = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": git_commit(),
              "machine": machine_info(), "results": results}
    print(json.dumps(record, indent=2))
    with open(args.results, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
