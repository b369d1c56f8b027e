"""Does processor sharing describe TCP here? Many clients upload the trace's global and crop JPEG sizes
over HTTP through one shared uplink (the delay line: rate + propagation), against the simulator's `ps`
link with and without the `tcp` transport model, on the same arrivals (testbed/uploads.py).

    sudo python bench/testbed_tcp.py [--clients 4 32 128] [--rtt-ms 20 60] [--load 0.5] \
        [--capacity-mbps 8] [--transfers 400] [--out runs/bench-tcp]

Needs root (namespaces, TUN). Writes OUT/results.json and prints the markdown table
(completion time = the sink's receipt of the last byte - the client's send, per transfer).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgevlm.sim.workload import Workload
from edgevlm.testbed.netns import Netns, Shape
from edgevlm.testbed.uploads import bucket_stats, make_schedule, run_uploads, simulate_uploads

TRACE = Path(__file__).resolve().parent.parent / "traces" / "tiny-scenetext-v2.parquet"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[4, 32, 128])
    ap.add_argument("--cc", nargs="+", default=["cubic", "bbr"],
                    help="TCP congestion control per socket (this host's default is bbr)")
    ap.add_argument("--rtt-ms", type=float, nargs="+", default=[20.0, 60.0])
    ap.add_argument("--load", type=float, default=0.5, help="uplink load (HTTP bytes / capacity)")
    ap.add_argument("--capacity-mbps", type=float, default=8.0)
    ap.add_argument("--transfers", type=int, default=400)
    ap.add_argument("--quality", type=int, default=75)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench-tcp")
    a = ap.parse_args(argv)
    w = Workload.load(TRACE).at_quality(a.quality)
    qi = w.quality_index(a.quality)
    sizes = np.concatenate([w.global_bytes[:, qi], w.local_bytes[:, qi]])
    kinds = np.array(["global"] * w.n + ["crop"] * w.n)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for cc, n, rtt in [(cc, n, rtt) for cc in a.cc for n in a.clients for rtt in a.rtt_ms]:
        name = f"{cc}-N{n}-rtt{rtt:g}"
        sched = make_schedule(sizes, kinds, clients=n, load=a.load, capacity_mbps=a.capacity_mbps,
                              transfers=a.transfers, seed=a.seed + n, congestion_control=cc)
        one_way = rtt / 2
        t = time.time()
        with Netns(Shape(a.capacity_mbps, one_way), Shape(100.0, one_way)) as ns:
            real = run_uploads(ns, sched, out / name)
        line = ns.delay_line_stats()
        link = {"capacity_mbps": a.capacity_mbps, "propagation_ms": one_way}
        # cubic restarts from the initial window after an idle RTO (Linux: about RTT + 200 ms); bbr keeps
        # its window: only a connection's first message starts cold
        restart_ms = rtt + 200.0 if cc != "bbr" else 1e9
        sims = {"ps": simulate_uploads(sched, ns.server_ip, link),
                "ps+tcp": simulate_uploads(sched, ns.server_ip, {**link, "transport": {"kind": "tcp"}}),
                "ps+tcp flows": simulate_uploads(sched, ns.server_ip, {**link, "transport": {
                    "kind": "tcp", "idle_restart_ms": restart_ms}})}
        row = {"point": name, "cc": cc, "clients": n, "rtt_ms": rtt, "load": a.load, "wall_s": time.time() - t,
               "rate_per_s": sched["rate_per_s"], "delay_line": line,
               "testbed": bucket_stats(real, sched["kinds"]),
               **{k: bucket_stats(v, sched["kinds"]) for k, v in sims.items()}}
        results.append(row)
        print(f"{name}: done in {row['wall_s']:.0f} s; drops {line['up']['drops']}", file=sys.stderr, flush=True)
    (out / "results.json").write_text(json.dumps({"args": vars(a), "trace": str(TRACE), "points": results}, indent=1))
    print(table(results))
    return 0


def table(results) -> str:
    def err(s, r):
        return f"{100 * (s - r) / r:+.0f}%"

    lines = ["| TCP | N | RTT ms | bucket (n) | testbed mean / p95 ms | ps mean / p95 ms (error) | "
             "ps+tcp, every message cold (error) | ps+tcp, per-client flows (error) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for b in ("global", "crop", "all"):
            tb, ps, tcp, flows = r["testbed"][b], r["ps"][b], r["ps+tcp"][b], r["ps+tcp flows"][b]
            cell = lambda s: (f"{1e3 * s['mean_s']:.0f} / {1e3 * s['p95_s']:.0f} "  # noqa: E731
                              f"({err(s['mean_s'], tb['mean_s'])} / {err(s['p95_s'], tb['p95_s'])})")
            lines.append(f"| {r['cc']} | {r['clients']} | {r['rtt_ms']:g} | {b} ({tb['n']}) | {1e3 * tb['mean_s']:.0f} / "
                         f"{1e3 * tb['p95_s']:.0f} | {cell(ps)} | {cell(tcp)} | {cell(flows)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
