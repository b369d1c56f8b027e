"""Benchmark: trace extraction throughput on tiny random-init VLMs, as a ratio to a stage-1-only baseline.

The baseline (same process, same samples, same model) is what any VQA run pays: resize + one greedy
answer. Full extraction adds two attention passes, stage 2 (two images), an oracle stage 2 where a
gt_box exists, and JPEG encodes. The ratio is the extraction overhead; samples/s are absolute figures
for this machine only.

    python bench/bench_extract.py [--samples 12] [--threads 1] [--max-new-tokens 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=32, help="LLaVA width (128 with 4+4 layers ~ the issue-12 tiny model)")
    args = ap.parse_args()

    import torch
    from PIL import Image

    from edgevlm.models.backend import load_backend
    from edgevlm.models.extract import RESAMPLE, ExtractOptions, extract
    from edgevlm.models.manifest import read_manifest
    from tests.models_fixtures import build_tiny_llava, build_tiny_qwen, make_images, write_manifest

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        man = write_manifest(d / "data" / "m.jsonl", make_images(d / "data", args.samples))
        samples = read_manifest(man)
        builds = (("llava", lambda p, **kw: build_tiny_llava(p, hidden=args.hidden, **kw)), ("qwen2_5_vl", build_tiny_qwen))
        for kind, build in builds:
            b = load_backend(str(build(d / kind, settings={"max_new_tokens": args.max_new_tokens})))
            b.generate(b.encode([Image.new("RGB", (b.vision_input_px,) * 2)], "warm up"))
            t0 = time.perf_counter()
            for s in samples:
                img = Image.open(s.image_path).convert("RGB").resize((b.vision_input_px,) * 2, RESAMPLE)
                b.generate(b.encode([img], s.question))
            base_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            extract(b, samples, d / f"{kind}.parquet", ExtractOptions(dataset_id="bench", progress=False))
            full_s = time.perf_counter() - t0
            n = len(samples)
            print(f"{kind:11s} tokens/img={b.visual_tokens_per_image:3d}  stage-1 only {n / base_s:6.2f} samples/s  "
                  f"full extraction {n / full_s:6.2f} samples/s  ratio full/stage-1 time {full_s / base_s:5.2f}"
                  f"  ({args.threads} thread(s), max_new_tokens={args.max_new_tokens})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
