"""Build the shipped default trace traces/tiny-scenetext-v1.parquet from the tiny model.

Steps: render the held-out scene dataset (seed 1000, never trained on; training uses seed 1),
run the real extraction pipeline (models.extract: stage 1, entropies, relative-attention box with
the checkpoint's box_pad_px, crop of the original, stage 2, oracle crop, JPEG sizes) in worker
processes over slices of the manifest, then join the slices into one v1 trace with full provenance.

edge_score: the edge would run this same tiny model (7.7 MB) on its own 64-px global view, single
pass, no crop round-trip; so edge_score = s1_score. Documented in the provenance (edge_model).
HD/tiling (hd_score, hd_visual_tokens) is left out: the tiny model was trained on at most two
images (global + one crop) and on crops of the box-search size only, so tiling would measure an
untrained input layout, not an HD baseline.

CLI: python -m edgevlm.models.tiny.default_trace --model models/weights/tiny-scenetext-v1 --n 2100
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import pyarrow as pa

from edgevlm.models.backend import load_backend
from edgevlm.models.codec import load_codec
from edgevlm.models.manifest import read_manifest
from edgevlm.traces.io import read_trace, write_trace

DEFAULT_OUT = "traces/tiny-scenetext-v1.parquet"
DATA_SEED = 1000


def _worker(args):
    model, manifest, part_out, lo, hi, dataset_id, codec_dir, infer_q = args
    import torch  # defers torch
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    from edgevlm.models.extract import ExtractOptions, extract  # defers PIL
    samples = read_manifest(manifest)[lo:hi]
    be = load_backend(model)
    codec = None
    if codec_dir:
        codec = load_codec(codec_dir)
    opts = ExtractOptions(dataset_id=dataset_id, source_kind="tiny-local", checkpoint_every=50,
                          progress=(lo == 0), codec=codec, codec_path=codec_dir, infer_jpeg_quality=infer_q)
    t0 = time.perf_counter()
    summ = extract(be, samples, part_out, opts, manifest=manifest)
    summ["wall_s"] = time.perf_counter() - t0
    return summ


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgevlm.models.tiny.default_trace", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/weights/tiny-scenetext-v1")
    ap.add_argument("--data", default="runs/scenes-heldout", help="dataset directory (rendered if missing)")
    ap.add_argument("--n", type=int, default=2100, help="held-out samples (default 2100)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--workers", type=int, default=2, help="extraction processes, 1 thread each (default 2)")
    ap.add_argument("--codec", help="fitted progressive codec for the prog_* columns (default: "
                    "<model>/codec/pca_levels when it exists)")
    ap.add_argument("--infer-jpeg-quality", type=int, default=75,
                    help="the model sees global and local images after a JPEG round trip at this quality, as the "
                         "server receives them from an edge at the policies' default jpeg_quality (default 75)")
    ap.add_argument("--no-progressive", action="store_true", help="leave the prog_* columns out")
    a = ap.parse_args(argv)
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "33554432")
    from edgevlm.models import scenes as S  # defers PIL
    data = Path(a.data)
    manifest = data / "manifest.jsonl"
    if not manifest.exists() or len(manifest.read_text().splitlines()) != a.n:
        S.write_dataset(data, a.n, DATA_SEED)
    dataset_id = f"scenes-v1 (models.scenes, seed {DATA_SEED}, n {a.n}, {S.SCENE_PX}px)"
    parts_dir = data / "parts"
    parts_dir.mkdir(exist_ok=True)
    bounds = [round(k * a.n / a.workers) for k in range(a.workers + 1)]
    codec_dir = None if a.no_progressive else (a.codec or str(Path(a.model) / "codec" / "pca_levels"))
    if codec_dir and not (Path(codec_dir) / "codec.json").is_file():
        if a.codec:
            ap.error(f"--codec {a.codec}: no codec.json there")
        codec_dir = None
    jobs = [(a.model, str(manifest), str(parts_dir / f"part{k}.parquet"), bounds[k], bounds[k + 1], dataset_id,
             codec_dir, a.infer_jpeg_quality)
            for k in range(a.workers)]
    t0 = time.perf_counter()
    if a.workers == 1:
        summaries = [_worker(jobs[0])]
    else:
        with mp.get_context("spawn").Pool(a.workers) as pool:
            summaries = pool.map(_worker, jobs)
    wall = time.perf_counter() - t0
    join(a, jobs, summaries, wall, dataset_id)
    return 0


def join(a, jobs, summaries, wall_s, dataset_id):
    tables, provs = [], []
    for job in jobs:
        t, p = read_trace(job[2])
        tables.append(t)
        provs.append(p)
    table = pa.concat_tables(tables)
    s1 = table.column("s1_score")
    table = table.append_column(pa.field("edge_score", pa.float32()), s1)
    prov = dict(provs[0])
    prov.pop("n_samples", None)
    train_log = Path(a.model) / "training_log.json"
    prov.update({
        "source_kind": "tiny-local",
        "dataset_id": dataset_id,
        "n_samples": table.num_rows,
        "model_dir": str(a.model),
        "edge_model": "the same tiny model on the edge's 64-px global view, single pass: edge_score = s1_score",
        "hd": "absent: the tiny model was never trained on tilings, an HD variant is not meaningful",
        "extraction_wall_s": round(wall_s, 1),
        "extraction_workers": len(jobs),
        "extraction_samples_per_s_all_passes": round(table.num_rows / wall_s, 2),
        "training": {k: v for k, v in json.loads(train_log.read_text()).items()
                     if k in ("seed", "steps_a", "steps_b", "steps_c", "init_from", "text_share_c", "batch",
                              "pool_scenes", "pool_scenes_b", "wall_s")}
        if train_log.exists() else None,
        "notes": ("Tiny LLaVA-architecture VLM (CLIP 64px/patch 8 + 4-layer Llama, char tokenizer) trained "
                  "here on procedural scene-text VQA (models.scenes, train seed 1); this held-out set is seed "
                  f"{DATA_SEED}. Real model outputs extracted with models.extract; progressive columns "
                  + ("from the codec in 'progressive'." if "progressive" in prov else "absent.")),
    })
    write_trace(table, a.out, prov)
    print(f"wrote {a.out}: {table.num_rows} rows in {wall_s:.0f} s ({table.num_rows / wall_s:.2f} samples/s, "
          f"all passes incl. oracle and JPEG, {len(jobs)} workers)")


if __name__ == "__main__":
    sys.exit(main())
