"""Benchmark: the simulator against the real testbed (issue 11). Needs root (network namespaces).

3 loads (rho 0.3 / 0.6 / 0.85 of the measured server capacity) x 2 policies (global_only,
entropy_threshold with eta at the trace's median stage-1 uncertainty, so about half the requests crop),
over a 4 Mbit/s uplink / 20 Mbit/s downlink (tbf; add propagation_ms where the kernel has netem).
Targets: |error| <= 10% on mean and p95 latency, <= 2% on bytes and retransmission rate.

  python bench/testbed_validate.py --model DIR --manifest M.jsonl --out runs/bench-testbed
      [--requests 150 --min-point-s 20 --rounds 3 --replays 1 --server-passes idle]

--replays 2 runs every point's arrivals twice on the testbed: the second run against the first is the
testbed's own repeatability on this host, the floor under any simulator-vs-testbed error (report.md).

Without --model, uses models/weights/tiny-scenetext-v1 if present, else builds a tiny RANDOM-INIT
LLaVA (labelled as such in the output). Without --manifest, generates test images. Writes
OUT/comparison.json, per-point folders with CDF plots, and OUT/report.md with every point.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGETS = {"latency_mean_s": 0.10, "latency_p95_s": 0.10, "uplink_bytes_per_request": 0.02,
           "retransmission_rate": 0.02}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--manifest")
    ap.add_argument("--out", default="runs/bench-testbed")
    ap.add_argument("--requests", type=int, default=150, help="requests per point and round (default 150)")
    ap.add_argument("--min-point-s", type=float, default=20.0,
                    help="each point lasts at least this many seconds of arrivals (default 20)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs of every point, interleaved, each after a fresh calibration; pooled (default 3)")
    ap.add_argument("--replays", type=int, default=1,
                    help="testbed runs of each point's arrivals; the extra ones measure the testbed's repeatability")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--loads", default="0.3,0.6,0.85")
    ap.add_argument("--uplink-mbps", type=float, default=4.0)
    ap.add_argument("--propagation-ms", type=float, default=0.0)
    ap.add_argument("--access-mbps", type=float,
                    help="per-client access links in front of the shared uplink (network.uplink.access_mbps)")
    ap.add_argument("--uplink-trace", help="a Mahimahi uplink trace instead of --uplink-mbps (read in place)")
    ap.add_argument("--uplink-discipline", choices=("ps", "fifo"), default="ps",
                    help="the simulator's uplink discipline (network.uplink.discipline)")
    ap.add_argument("--engine", choices=("model", "timed"), default="model",
                    help="server.engine: the model's passes, or passes held for the simulator's times (timed)")
    ap.add_argument("--server-passes", choices=("idle", "busy"), default="idle",
                    help="where the profile's pass times come from (TESTBED.yaml calibration.server_passes)")
    a = ap.parse_args(argv)

    import torch
    import yaml

    from edgevlm.models.backend import load_backend
    from edgevlm.models.extract import ExtractOptions, extract
    from edgevlm.models.manifest import read_manifest
    from edgevlm.sim.workload import Workload
    from edgevlm.testbed.config import DEFAULT_MODEL, load_testbed
    from edgevlm.testbed.validate import run

    torch.set_num_threads(1)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    label = "given"
    model = a.model
    if model is None and DEFAULT_MODEL.is_dir():
        model, label = str(DEFAULT_MODEL.resolve()), "tiny trained (models/weights/tiny-scenetext-v1)"
    if model is None:
        from tests.models_fixtures import build_tiny_llava
        model = str(build_tiny_llava(out / "random-init-llava", settings={"max_new_tokens": 6,
                                                                        "source_kind": "synthetic"}))
        label = "tiny RANDOM-INIT LLaVA (no trained weights available)"
    manifest = a.manifest
    if manifest is None:
        from tests.models_fixtures import make_images, write_manifest
        manifest = str(write_manifest(out / "data" / "vqa.jsonl", make_images(out / "data", 8)))
    trace = out / "trace.parquet"
    if not trace.exists():
        be = load_backend(model)
        extract(be, read_manifest(manifest), trace, ExtractOptions(
            dataset_id=Path(manifest).stem, source_kind=be.settings.source_kind or "tiny-local",
            notes="bench/testbed_validate.py", infer_jpeg_quality=75), manifest=manifest)
    w = Workload.load(trace)
    import numpy as np
    eta = float(np.median(w.first_k_mean("s1_min_entropy", 5)))
    cfg = {"name": "bench", "model": model, "manifest": str(Path(manifest).resolve()), "trace": str(trace),
           "clients": a.clients, "requests": a.requests, "min_point_s": a.min_point_s,
           "rounds": a.rounds, "replays": a.replays, "loads": [float(x) for x in a.loads.split(",")],
           "warmup_requests": max(1, a.requests // 10),
           "policies": [{"kind": "global_only", "jpeg_quality": 75},
                        {"kind": "entropy_threshold", "metric": "min_entropy", "threshold": eta, "tokens": 5,
                         "jpeg_quality": 75}],
           "server": {"engine": a.engine},
           "network": {"uplink": {**({"bandwidth_trace": str(Path(a.uplink_trace).resolve())} if a.uplink_trace
                                     else {"capacity_mbps": a.uplink_mbps}), "propagation_ms": a.propagation_ms,
                                  "discipline": a.uplink_discipline,
                                  **({"access_mbps": a.access_mbps} if a.access_mbps else {})},
                       "downlink": {"capacity_mbps": 20.0, "propagation_ms": a.propagation_ms}},
           "calibration": {"repeats": 3, "server_passes": a.server_passes}, "time_limit_s": 300}
    (out / "TESTBED.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    tb, _ = load_testbed(out / "TESTBED.yaml")
    result = run(tb, out)
    lines = [f"# sim vs testbed\n\nmodel: {label} ({model}); trace source_kind "
             f"{result['trace_source_kind']}; {a.requests} requests/point (at least {a.min_point_s:g} s of arrivals) x {a.rounds} rounds, {a.clients} clients; uplink "
             f"{a.uplink_trace or f'{a.uplink_mbps} Mbit/s'}, propagation {a.propagation_ms:g} ms each way; "
             f"server engine {a.engine}\n\ncalibration: " + json.dumps(result["calibration"]) + "\n",
             "| point | metric | sim | testbed | error | target | met | diagnostic: sim with in-situ pass times |",
             "|---|---|---|---|---|---|---|---|"]
    for p in result["points"]:
        diag = p.get("diagnostic_in_situ_service", {}).get("metrics", {})
        for k, m in p["metrics"].items():
            d = diag.get(k, {}).get("rel_error")
            t = TARGETS.get(k)
            e = m["rel_error"]
            met = "" if t is None or e is None else ("yes" if abs(e) <= t else "NO")
            lines.append(f"| {p['point']} | {k} | {m['sim']:.4g} | {m['testbed']:.4g} | "
                         f"{'-' if e is None else f'{100 * e:+.1f}%'} | {'' if t is None else f'{100 * t:.0f}%'} | {met} | "
                         f"{'-' if d is None else f'{100 * d:+.1f}%'} |")
    if a.replays > 1:
        lines += ["", "Testbed repeatability: the same arrivals replayed on the testbed, against its first run "
                  "(latency mean / p95, each replay of each round):", "", "| point | replay vs first |", "|---|---|"]
        for p in result["points"]:
            lines.append(f"| {p['point']} | " + "; ".join(
                f"{100 * c['latency_mean_s']['rel_error']:+.1f} / {100 * c['latency_p95_s']['rel_error']:+.1f} %"
                for rnd in p["testbed_replays_vs_first"] for c in rnd) + " |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
