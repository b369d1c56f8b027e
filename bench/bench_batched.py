"""Benchmark: batched vs one-at-a-time trace extraction on the tiny model (same process, same samples).

A fixed sample set (held-out scenes, models.scenes seed 1000, the first N) is extracted one sample at a
time and in batches of B, interleaved (single, batched, single, batched, ...) `--reps` times so that
drift of a shared host hits both alike; medians are reported with the ratio, and the two results are
checked to be equal (answers, boxes; uncertainties to 1e-5).

    python bench/bench_batched.py [--samples 32] [--batch-size 16] [--reps 3] [--threads 1] [--device cpu]
                                  [--results bench/results.jsonl]

With --results the medians, per-run times and ratios are appended to that file as one JSON line
(case "batched_extraction", in bench/run.py's record shape).
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/weights/tiny-scenetext-v1")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16 (default: the checkpoint's setting)")
    ap.add_argument("--results", type=Path, default=None, help="append the result as a JSON line to this file")
    args = ap.parse_args()

    import numpy as np
    import torch

    from edgevlm.models import scenes
    from edgevlm.models.backend import load_backend
    from edgevlm.models.batched import process_batch
    from edgevlm.models.extract import ExtractOptions, process_sample
    from edgevlm.models.manifest import read_manifest
    from edgevlm.traces.version import git_commit

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        samples = read_manifest(scenes.write_dataset(Path(tmp) / "scenes", args.samples, 1000, progress=False))
        backend = load_backend(args.model, device=args.device,
                               overrides={"dtype": args.dtype} if args.dtype else None)
        opts = ExtractOptions(dataset_id="bench", progress=False)

        def single():
            rows = []
            for s in samples:
                rows.append(process_sample(backend, s, opts))
                backend.clear_cache()
            return rows

        def batched():
            rows = []
            for k in range(0, len(samples), args.batch_size):
                done, err = process_batch(backend, samples[k:k + args.batch_size], opts, process_sample)
                backend.clear_cache()
                if err is not None:
                    raise err
                rows += done
            return rows

        single(), batched()                               # warm-up (allocator, first-call set-up)
        times = {"single": [], "batched": []}
        cpu = {"single": [], "batched": []}
        for _ in range(args.reps):
            for name, fn in (("single", single), ("batched", batched)):
                t0, c0 = time.perf_counter(), time.process_time()
                rows = fn()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
                if name == "single":
                    ref = rows
                else:
                    for a, b in zip(ref, rows):
                        same = all(a[k] == b[k] for k in a if not k.startswith(("t_", "s1_min", "s1_sh", "s1_ma")))
                        close = all(np.allclose(a[k], b[k], atol=1e-5) for k in ("s1_min_entropy", "s1_shannon",
                                                                                  "s1_margin"))
                        if not (same and close):
                            print(f"MISMATCH in {a['sample_id']}", file=sys.stderr)
                            return 1
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    n = len(samples)
    print(f"{args.model} on {args.device} ({args.dtype or 'checkpoint dtype'}), {n} samples, batch {args.batch_size}, "
          f"{args.threads} thread(s), {args.reps} interleaved reps")
    for k in ("single", "batched"):
        print(f"  {k:8s} median {med[k]:.2f} s  ({n / med[k]:.1f} samples/s)  runs: "
              + ", ".join(f"{t:.2f}" for t in times[k]) + f"; CPU time median {med_cpu[k]:.2f} s  runs: "
              + ", ".join(f"{t:.2f}" for t in cpu[k]))
    pairs = [a / b for a, b in zip(cpu["single"], cpu["batched"])]
    print("  CPU-time ratio of each rep (single / the batched run after it): "
          + ", ".join(f"{r:.2f}" for r in pairs) + f"; median {statistics.median(pairs):.2f}x")
    print(f"  speed-up (median single / median batched): {med['single'] / med['batched']:.2f}x wall, "
          f"{med_cpu['single'] / med_cpu['batched']:.2f}x CPU time; "
          f"results equal (answers, boxes, uncertainties to 1e-5)")
    if args.results is not None:
        record = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": git_commit(),
                  "machine": {"python": platform.python_version(), "machine": platform.machine(),
                              "cpus": os.cpu_count(), "torch": torch.__version__,
                              "load_average": [round(v, 2) for v in os.getloadavg()]},
                  "results": [{"case": "batched_extraction", "model": args.model, "device": args.device,
                               "dtype": args.dtype, "samples": n, "batch_size": args.batch_size,
                               "threads": args.threads, "reps": args.reps,
                               "wall_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
                               "cpu_s": {k: [round(t, 3) for t in v] for k, v in cpu.items()},
                               "speedup_wall": round(med["single"] / med["batched"], 3),
                               "speedup_cpu": round(med_cpu["single"] / med_cpu["batched"], 3),
                               "speedup_cpu_per_rep": [round(r, 3) for r in pairs],
                               "target_speedup": 2.0, "results_equal": True}]}
        with open(args.results, "a") as fh:
            fh.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
