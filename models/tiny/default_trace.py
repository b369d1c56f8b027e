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

With --format 2 (tiny-scenetext-v2) the trace is format v2: models.tiny.quality_trace runs the
whole pipeline (stage 1, relative attention, box, crop, stage 2, oracle crop and the HD pass) at
every JPEG quality on 1024-px held-out scenes (models.scenes.V2), and edge_score is stage 1 on the
uncompressed global view. Worker parts are checkpointed and resumed by sample id.

CLI: python -m edgevlm.models.tiny.default_trace --model models/weights/tiny-scenetext-v1 --n 2100
     python -m edgevlm.models.tiny.default_trace --format 2 --model models/weights/tiny-scenetext-v2 --n 2100
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import pyarrow as pa

from edgevlm.models.backend import load_backend
from edgevlm.models.codec import load_codec
from edgevlm.models.manifest import read_manifest
from edgevlm.models.progressive import edge_metadata, progressive_row
from edgevlm.models.backend import BackendSettings, read_settings_file
from edgevlm.models.boxsearch import DEFAULT_RATIOS
from edgevlm.traces.io import read_trace, write_trace
from edgevlm.traces.schema import PROG_COLUMNS, TRACE_SCHEMA_V2
from edgevlm.traces.version import generator_string, git_commit

DEFAULT_OUT = "traces/tiny-scenetext-v1.parquet"
DEFAULT_OUT_V2 = "traces/tiny-scenetext-v2.parquet"
DATA_SEED = 1000


def _worker_v2(args):
    """Trace-v2 rows for held-out samples k, k+W, k+2W, ... < n (rendered here, as models.scenes writes them),
    checkpointed to part_out every 10 samples and resumed by sample id; stops at stop_at (time.time())."""
    model, part_out, k, W, n, prov, stop_at, codec_dir = args
    import torch  # defers torch
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)

    from PIL import Image  # defers PIL

    from edgevlm.models import scenes as S  # defers torch, PIL (the [models] extra)
    from edgevlm.models.tiny.quality_trace import TinyLlavaRunner, sample_row  # defers torch, PIL (the [models] extra)
    from edgevlm.models.tiny.quality_trace import RESAMPLE  # defers PIL (the [models] extra)
    run = TinyLlavaRunner(model)
    # progressive (seed 2): the edge encodes the uncompressed global view's vision tokens into levels
    backend = load_backend(model) if codec_dir else None
    codec = load_codec(codec_dir) if codec_dir else None
    rows, metas = [], []
    meta_out = Path(part_out).with_suffix(".meta.jsonl")
    if Path(part_out).exists() and meta_out.exists():
        t, old = read_trace(part_out)
        if all(old.get(key) == prov.get(key) for key in ("commit", "jpeg_qualities", "model_id", "hd_grid",
                                                          "progressive")):
            rows = t.to_pylist()
            metas = [json.loads(line) for line in meta_out.read_text().splitlines()][:len(rows)]
    done = {r["sample_id"] for r in rows}
    schema = pa.schema([f for f in TRACE_SCHEMA_V2 if f.name in COLUMNS_V2])

    def flush():
        write_trace(pa.Table.from_pylist(rows, schema=schema), part_out, {**prov, "n_samples": len(rows)})
        meta_out.write_text("".join(json.dumps(m) + "\n" for m in metas))
    t0 = time.perf_counter()
    new = 0
    for i in range(k, n, W):
        if stop_at and time.time() > stop_at:
            break
        sid = f"scenes{DATA_SEED}-{i:06d}"
        if sid in done:
            continue
        scene, q = S.make_sample(DATA_SEED, i, S.V2)
        buf = io.BytesIO()
        scene.image.save(buf, format="JPEG", quality=95)       # the dataset's stored original
        with Image.open(io.BytesIO(buf.getvalue())) as im:
            original = im.convert("RGB")
        row = sample_row(run, original, sid, q.question, q.answers, q.question_type, q.target.box,
                         prov["jpeg_qualities"], prov["hd_grid"])
        if codec is not None:
            row.update(progressive_row(backend, codec, original.resize((run.px, run.px), RESAMPLE),
                                       q.question, q.answers, prov["scoring"]))
        rows.append(row)
        metas.append({"sample_id": sid, "index": i, "question_type": q.question_type, "char_px": q.target.char_px,
                      "readable_global": q.target.readable_global if q.question_type == "text" else None})
        new += 1
        if new % 10 == 0:
            flush()
            print(f"part {k}: {len(rows)} rows, {new / (time.perf_counter() - t0):.3f} samples/s", flush=True)
    flush()
    return {"new_rows": new, "rows": len(rows), "wall_s": time.perf_counter() - t0}


#: The columns a v2 row from models.tiny.quality_trace fills.
COLUMNS_V2 = ("sample_id", "question_type", "image_w", "image_h", "prompt_tokens", "global_jpeg_bytes",
              "original_jpeg_bytes", "local_jpeg_bytes", "s1_answer_q", "s1_score_q", "s1_min_entropy_q",
              "s1_shannon_q", "s1_margin_q", "bbox_x0_q", "bbox_y0_q", "bbox_x1_q", "bbox_y1_q", "s2_answer_q",
              "s2_score_q", "s2_tokens_q", "s2_oracle_score_q", "gt_x0", "gt_y0", "gt_x1", "gt_y1",
              "hd_answer_q", "hd_score_q", "hd_visual_tokens", "hd_tiles", "edge_score", *PROG_COLUMNS)


def hd_trained(model: str) -> bool:
    """Whether the checkpoint's training log says it saw HD rows (global + tiles in one prompt)."""
    log = Path(model) / "training_log.json"
    return log.exists() and bool(json.loads(log.read_text()).get("hd_rows"))


def provenance_v2(model: str, dataset_id: str, manifest: Path, qualities, hd_grid: int) -> dict:
    import torch  # defers torch
    import transformers  # defers transformers

    from edgevlm.models.jpeg import JPEG_SETTINGS  # defers torch, PIL (the [models] extra)
    st = BackendSettings().merged(read_settings_file(model), where=model)
    cfg = json.loads((Path(model) / "config.json").read_text())["vision_config"]
    grid = cfg["image_size"] // cfg["patch_size"]
    return {
        "source_kind": "tiny-local", "model_id": st.model_id, "dataset_id": dataset_id,
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generator": generator_string("models.tiny.default_trace (format 2, models.tiny.quality_trace)"),
        "commit": git_commit(), "model_commit": git_commit(),
        "vision_input_px": int(cfg["image_size"]), "visual_tokens_per_image": grid * grid,
        "visual_grid": [grid, grid], "patch_px": int(cfg["patch_size"]),
        "jpeg_qualities": [int(q) for q in qualities], "jpeg_settings": JPEG_SETTINGS,
        "box_ratios": list(DEFAULT_RATIOS), "box_pad_px": st.box_pad_px, "box_pad_frac": st.box_pad_frac,
        "box_grow": st.box_grow, "box_grow_min_cells": st.box_grow_min_cells,
        "attention_layer": st.attention_layer, "prompt_template": st.prompt_template,
        "generic_prompt": st.generic_prompt, "max_new_tokens": st.max_new_tokens, "scoring": "auto",
        "infer_jpeg_quality": "each: every pass at quality q sees the images decoded from q-JPEGs",
        "hd_grid": hd_grid,
        "hd": (f"LLaVA-1.5-HD style: the original sent as a q-JPEG; the server resizes it to the input "
               f"(thumbnail) and cuts a {hd_grid}x{hd_grid} grid of tiles, each resized to the input, all "
               f"{1 + hd_grid * hd_grid} images in one prompt (thumbnail first); "
               + ("the model was trained on this layout (models.tiny.train --hd-rows)" if hd_trained(model) else
                  "the model was NOT trained on this layout (see its model card): an untrained input layout")),
        "edge_model": "the same tiny model on the device's uncompressed global view, single pass: edge_score",
        "manifest": str(manifest),
        "hardware": f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} logical cores",
        "torch_version": torch.__version__, "transformers_version": transformers.__version__,
    }


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
    ap.add_argument("--format", type=int, choices=(1, 2), default=1,
                    help="trace format: 1 (v1 model, one quality) or 2 (every quality, HD; default 1)")
    ap.add_argument("--hd-grid", type=int, default=2, help="format 2: HD tiles per side (default 2; 0: no HD)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="format 2: stop extracting after this many minutes and write the samples done")
    a = ap.parse_args(argv)
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "33554432")
    from edgevlm.models import scenes as S  # defers PIL

    if a.format == 2:
        return main_v2(a)
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
    summaries, wall = _run(_worker, jobs)
    join(a, jobs, summaries, wall, dataset_id)
    return 0


def _run(worker, jobs) -> tuple[list, float]:
    """worker(job) for every job, in one spawned process each (inline for one job); + wall seconds."""
    t0 = time.perf_counter()
    if len(jobs) == 1:
        summaries = [worker(jobs[0])]
    else:
        with mp.get_context("spawn").Pool(len(jobs)) as pool:
            summaries = pool.map(worker, jobs)
    return summaries, time.perf_counter() - t0


def main_v2(a) -> int:
    from edgevlm.models import scenes as S  # defers torch, PIL (the [models] extra)
    from edgevlm.models.tiny.quality_trace import QUALITIES  # defers torch, PIL (the [models] extra)
    data = Path(a.data if a.data != "runs/scenes-heldout" else "runs/scenes-heldout-v2")
    out = a.out if a.out != DEFAULT_OUT else DEFAULT_OUT_V2
    data.mkdir(parents=True, exist_ok=True)
    dataset = (f"python -m edgevlm.models.scenes --spec v2 --seed {DATA_SEED} --n {a.n} writes the same samples "
               "(the workers render each one as that command stores it: JPEG q95)")
    dataset_id = f"{S.V2.name} (models.scenes, spec v2, seed {DATA_SEED}, {S.V2.scene_px}px)"
    prov = provenance_v2(a.model, dataset_id, dataset, QUALITIES, a.hd_grid)
    codec_dir = None if a.no_progressive else (a.codec or str(Path(a.model) / "codec" / "pca_levels"))
    if codec_dir is not None:
        if not (Path(codec_dir) / "codec.json").exists():
            print(f"error: --codec: no fitted codec at {codec_dir} (fit one with `edgevlm trace fit-codec`, "
                  "or pass --no-progressive)", file=sys.stderr)
            return 2
        prov.update(edge_metadata(load_backend(a.model), load_codec(codec_dir)))
        prov["progressive"]["path"] = codec_dir
        prov["progressive"]["input"] = "the uncompressed global view (the edge encodes before any JPEG)"
    parts = data / "parts-v2"
    parts.mkdir(exist_ok=True)
    stop_at = time.time() + 60 * a.max_minutes if a.max_minutes else None
    jobs = [(a.model, str(parts / f"part{k}.parquet"), k, a.workers, a.n, prov, stop_at, codec_dir)
            for k in range(a.workers)]
    summaries, wall = _run(_worker_v2, jobs)
    table = pa.concat_tables([read_trace(j[1])[0] for j in jobs])
    order = sorted(range(table.num_rows), key=lambda r: table.column("sample_id")[r].as_py())
    table = table.take(order)
    metas = [line for j in jobs for line in Path(j[1]).with_suffix(".meta.jsonl").read_text().splitlines()]
    (data / "scenes_meta.jsonl").write_text("".join(sorted(line + "\n" for line in metas)))
    train_log = Path(a.model) / "training_log.json"
    new = sum(s["new_rows"] for s in summaries)
    prov.update({
        "n_samples": table.num_rows, "n_requested": a.n, "model_dir": str(a.model), "extraction_workers": a.workers,
        "extraction_stopped_by_time": bool(table.num_rows < a.n),
        "extraction_wall_s": round(wall, 1), "extraction_new_rows": new,
        "extraction_samples_per_s_all_passes": round(new / wall, 3) if new else None,
        "training": {k: v for k, v in json.loads(train_log.read_text()).items()
                     if k in ("seed", "steps_c", "warm_from", "text_share_c", "batch", "hd_rows", "jpeg_aug",
                              "pool_scenes", "pool_scenes_b", "wall_s")} if train_log.exists() else None,
        "notes": ("Tiny LLaVA-architecture VLM (CLIP 336px/patch 42 = 8x8 tokens + 4-layer Llama, char tokenizer) "
                  "warm-started from tiny-scenetext-v1 (v1 was trained here on procedural 768-px scene-text VQA)"
                  + (" and fine-tuned here on 1024-px scenes (models.scenes V2)" if train_log.exists() else
                     ", NOT fine-tuned on 1024-px scenes (see the model card)")
                  + f"; this held-out set is models.scenes V2 seed {DATA_SEED}. Real model outputs at every quality."),
    })
    write_trace(table, out, prov)
    print(f"wrote {out}: {table.num_rows} rows; {new} extracted in {wall:.0f} s with {a.workers} workers")
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
