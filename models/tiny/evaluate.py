"""The issue-12 "Must show" numbers for a tiny-model trace, per question type (never pooled).

Reads a trace extracted with the real pipeline (models.cli extract) and the dataset's
scenes_meta.jsonl, and prints:
  1. accuracy with the global image only (s1), global + the model's relative-attention crop (s2),
     global + the ground-truth crop (s2_oracle); text split by globally readable / not;
     box containment (attention box contains the whole gt box) with the chance rate of a box of
     the same size placed uniformly at random;
  2. min-entropy over the first 5 stage-1 tokens, correct vs wrong within each question type:
     AUROC, histogram overlap and Bhattacharyya distance for min-entropy, Shannon and margin;
  3. optionally (--model, --dataset) extraction speed in samples/s for stage 1 + attention +
     stage 2 through the backend, and the weight size.
CLI: python -m edgevlm.models.tiny.evaluate --trace traces/tiny-scenetext-v1.parquet --meta DIR/scenes_meta.jsonl
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from edgevlm.models.backend import load_backend
from edgevlm.models.boxsearch import search_box
from edgevlm.models.manifest import read_manifest
from edgevlm.traces.io import read_trace

from edgevlm.traces.uncertainty import METRIC_COLUMNS, higher_is_uncertain
from edgevlm.traces.quality import at_quality

K_TOKENS = 5
N_BINS = 20


def first_k_mean(lists, k=K_TOKENS) -> np.ndarray:
    return np.array([float(np.mean(np.asarray(v)[:k])) for v in lists])


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie): Mann-Whitney AUROC."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    r = rankdata(np.concatenate([pos, neg]))
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def overlap_bhattacharyya(a: np.ndarray, b: np.ndarray, bins=N_BINS) -> tuple[float, float]:
    """Histogram overlap sum(min(p, q)) and Bhattacharyya distance -ln sum(sqrt(p q)) on shared bins."""
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan")
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    if hi <= lo:
        return 1.0, 0.0
    edges = np.linspace(lo, hi, bins + 1)
    p = np.histogram(a, edges)[0] / len(a)
    q = np.histogram(b, edges)[0] / len(b)
    bc = float(np.sum(np.sqrt(p * q)))
    return float(np.minimum(p, q).sum()), float(-np.log(max(bc, 1e-12)))


def contains(b, g) -> np.ndarray:
    return (b[:, 0] <= g[:, 0]) & (b[:, 1] <= g[:, 1]) & (b[:, 2] >= g[:, 2]) & (b[:, 3] >= g[:, 3])


def chance_containment(b, g, w, h) -> np.ndarray:
    """Probability that a box of the same size, placed uniformly inside the image, contains the gt box."""
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    px = np.clip(np.minimum(g[:, 0], w - bw) - np.maximum(g[:, 2] - bw, 0) + 1, 0, None) / (w - bw + 1)
    py = np.clip(np.minimum(g[:, 1], h - bh) - np.maximum(g[:, 3] - bh, 0) + 1, 0, None) / (h - bh + 1)
    ok = (bw >= gw) & (bh >= gh)
    return np.where(ok, px * py, 0.0)


def metrics(df, meta: dict | None = None, k: int = K_TOKENS) -> dict:
    """Per question type: accuracies, box containment, and correct-vs-wrong separation of the
    uncertainty metrics averaged over the first k stage-1 tokens (k=1: the start token)."""
    out = {}
    for qt, d in df.groupby("question_type"):
        r = {"n": int(len(d)),
             "acc_global_only": float(d.s1_score.mean()),
             "acc_attention_crop": float(d.s2_score.mean()),
             "acc_oracle_crop": float(d.s2_oracle_score.mean()) if "s2_oracle_score" in d else None}
        if "hd_score" in d and d.hd_score.notna().all():
            r["acc_hd"] = float(d.hd_score.mean())
        b = d[["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]].to_numpy()
        g = d[["gt_x0", "gt_y0", "gt_x1", "gt_y1"]].to_numpy()
        r["box_contains_gt"] = float(contains(b, g).mean())
        r["box_contains_gt_chance"] = float(chance_containment(b, g, d.image_w.to_numpy(), d.image_h.to_numpy()).mean())
        r["box_side_px_mean"] = float(np.mean(b[:, 2] - b[:, 0]))
        if meta is not None and qt == "text":
            rd = np.array([bool(meta[s]["readable_global"]) for s in d.sample_id])
            r["readable_global_share"] = float(rd.mean())
            for name, m in (("readable", rd), ("unreadable", ~rd)):
                r[f"{name}_acc_global_only"] = float(d.s1_score[m].mean())
                r[f"{name}_acc_attention_crop"] = float(d.s2_score[m].mean())
                r[f"{name}_acc_oracle_crop"] = float(d.s2_oracle_score[m].mean())
                r[f"{name}_box_contains_gt"] = float(contains(b[m], g[m]).mean())
        ok = d.s1_score.to_numpy() >= 0.5
        r["n_correct_s1"], r["n_wrong_s1"] = int(ok.sum()), int((~ok).sum())
        for metric, col in METRIC_COLUMNS.items():
            sign = -1 if higher_is_uncertain(metric) else +1  # confidence points the other way
            v = first_k_mean(d[col], k)
            short = col.replace("s1_", "")
            # AUROC of the confidence (low entropy / high margin) for "stage 1 is right"
            r[f"{short}_auroc"] = auroc(sign * v[ok], sign * v[~ok])
            ov, bd = overlap_bhattacharyya(v[ok], v[~ok])
            r[f"{short}_overlap"], r[f"{short}_bhattacharyya"] = ov, bd
            r[f"{short}_mean_correct"] = float(v[ok].mean()) if ok.any() else float("nan")
            r[f"{short}_mean_wrong"] = float(v[~ok].mean()) if (~ok).any() else float("nan")
        out[str(qt)] = r
    return out


def _speed_worker(model_dir: str, manifest: str, lo: int, hi: int, threads: int, barrier, out) -> None:
    """Times stage 1 + relative attention + stage 2 over samples [lo, hi) after 3 warm-up samples."""
    import torch  # defers torch
    from PIL import Image  # defers PIL
    from edgevlm.models.extract import load_image  # defers PIL

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    be = load_backend(model_dir)
    px = be.vision_input_px
    samples = read_manifest(manifest)[lo:hi]
    imgs = [load_image(s) for s in samples]

    def one(s, im):
        g = im.resize((px, px), Image.BICUBIC)
        be.generate(be.encode([g], s.question))
        maps = be.attention_to_image(g, s.question)
        box = search_box(maps.relative, im.width, im.height, px, **be.settings.box_kwargs())
        loc = im.crop(box.as_tuple()).resize((px, px), Image.BICUBIC)
        be.generate(be.encode([g, loc], s.question))
        be.clear_cache()

    for s, im in zip(samples[:3], imgs[:3]):   # warm-up, not timed
        one(s, im)
    barrier.wait()
    t0 = time.perf_counter()
    for s, im in zip(samples[3:], imgs[3:]):
        one(s, im)
    out.put((len(samples) - 3, t0, time.perf_counter()))


def speed(model_dir: str, manifest: str, n: int, workers: int = 1) -> dict:
    """Samples/s of stage 1 + relative attention + stage 2 through the real backend (no JPEG, no oracle).

    workers=1: one process with 2 torch threads; workers=k: k processes with 1 thread each, each on its
    own n samples, started together, rate = all timed samples / wall time from the common start to the
    last finish (the way the default trace is extracted)."""

    threads = 2 if workers == 1 else 1
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_speed_worker, args=(model_dir, manifest, k * n, (k + 1) * n, threads, barrier, out))
             for k in range(workers)]
    for p in procs:
        p.start()
    res = []
    while len(res) < workers:  # a worker that dies (bad model dir, OOM) must not hang the parent
        try:
            res.append(out.get(timeout=1.0))
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.terminate()
                raise RuntimeError(f"speed: worker exited with code {dead[0].exitcode} "
                                   f"(model {model_dir}, manifest {manifest})")
    for p in procs:
        p.join()
    done = sum(r[0] for r in res)
    wall = max(r[2] for r in res) - min(r[1] for r in res)
    weights = Path(model_dir) / "model.safetensors"
    return {"samples": done, "workers": workers, "threads_per_worker": threads,
            "samples_per_s": done / wall if wall > 0 else float("nan"),
            "weight_bytes": weights.stat().st_size if weights.exists() else None}


def report(res: dict) -> str:
    lines = []
    for qt, r in res.items():
        lines.append(f"== {qt} (n={r['n']}) ==")
        lines.append(f"  accuracy: global-only {r['acc_global_only']:.3f} | + attention crop "
                     f"{r['acc_attention_crop']:.3f} | + oracle crop {r['acc_oracle_crop']:.3f}")
        if "readable_global_share" in r:
            lines.append(f"  readable globally: {r['readable_global_share']:.3f} of text questions")
            for name in ("readable", "unreadable"):
                lines.append(f"    {name:10s}: global {r[name + '_acc_global_only']:.3f} | attention crop "
                             f"{r[name + '_acc_attention_crop']:.3f} | oracle {r[name + '_acc_oracle_crop']:.3f} "
                             f"| box contains gt {r[name + '_box_contains_gt']:.3f}")
        lines.append(f"  box contains gt: {r['box_contains_gt']:.3f} (chance {r['box_contains_gt_chance']:.3f}, "
                     f"mean box side {r['box_side_px_mean']:.0f} px)")
        lines.append(f"  stage 1 correct/wrong: {r['n_correct_s1']}/{r['n_wrong_s1']} (first {K_TOKENS} tokens)")
        for m in ("min_entropy", "shannon", "margin"):
            lines.append(f"    {m:12s} AUROC {r[m + '_auroc']:.3f}  overlap {r[m + '_overlap']:.3f}  "
                         f"Bhattacharyya {r[m + '_bhattacharyya']:.3f}  (mean correct {r[m + '_mean_correct']:.3f}, "
                         f"wrong {r[m + '_mean_wrong']:.3f})")
    if "speed" in res:
        s = res["speed"]
    return "\n".join(lines)


def metrics_v2(table, prov: dict, meta: dict | None = None) -> dict:
    """A v2 trace at every quality: per question type (and pooled) accuracies, bytes, boxes and the
    uncertainty separation over the first 5 tokens and the start token alone."""
    res = {}
    for i, q in enumerate(prov["jpeg_qualities"]):
        df = at_quality(table, prov, q).to_pandas()
        r = metrics(df, meta)
        r["all"] = metrics(df.assign(question_type="all"))["all"]
        start = metrics(df, None, k=1)
        start["all"] = metrics(df.assign(question_type="all"), None, k=1)["all"]
        for qt, d in df.groupby(df.question_type):
            for src, key in ((d, qt), (df, "all")):
                for col in ("global_jpeg_bytes", "local_jpeg_bytes", "original_jpeg_bytes"):
                    r[key][f"mean_{col}"] = float(np.mean([v[i] for v in src[col]]))
        for key in r:
            for m in ("min_entropy", "shannon", "margin"):
                for stat in ("auroc", "overlap", "bhattacharyya"):
                    r[key][f"start_{m}_{stat}"] = start[key][f"{m}_{stat}"]
        res[int(q)] = r
    return res


def markdown_v2(res: dict) -> str:
    """Model-card tables of metrics_v2."""
    qs = list(res)
    types = [t for t in res[qs[0]] if t != "all"] + ["all"]
    out = ["| type | q | n | global B | crop B | original B | global-only | + attention crop | + oracle crop | HD | box contains gt (chance) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in types:
        for q in qs:
            r = res[q][t]
            out.append(f"| {t} | {q} | {r['n']} | {r['mean_global_jpeg_bytes']:.0f} | {r['mean_local_jpeg_bytes']:.0f} | "
                       f"{r['mean_original_jpeg_bytes']:.0f} | {r['acc_global_only']:.3f} | {r['acc_attention_crop']:.3f} | "
                       f"{r['acc_oracle_crop']:.3f} | {r.get('acc_hd', float('nan')):.3f} | "
                       f"{r['box_contains_gt']:.3f} ({r['box_contains_gt_chance']:.3f}) |")
    out += ["", "| type (q) | correct / wrong | metric | AUROC 5-tok | overlap 5-tok | Bhatt. 5-tok | AUROC start | overlap start | Bhatt. start |",
            "|---|---|---|---|---|---|---|---|---|"]
    for t in types:
        for q in qs:
            r = res[q][t]
            for m in ("min_entropy", "shannon", "margin"):
                out.append(f"| {t} (q{q}) | {r['n_correct_s1']} / {r['n_wrong_s1']} | {m} | {r[m + '_auroc']:.3f} | "
                           f"{r[m + '_overlap']:.3f} | {r[m + '_bhattacharyya']:.3f} | {r['start_' + m + '_auroc']:.3f} | "
                           f"{r['start_' + m + '_overlap']:.3f} | {r['start_' + m + '_bhattacharyya']:.3f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgevlm.models.tiny.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--trace", required=True, help="trace extracted from the tiny model")
    ap.add_argument("--meta", help="scenes_meta.jsonl of the dataset (text readability split)")
    ap.add_argument("--model", help="checkpoint dir: also measure extraction speed and weight size")
    ap.add_argument("--dataset", help="manifest for the speed measurement")
    ap.add_argument("--speed-samples", type=int, default=40, help="samples per speed run and worker (default 40)")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    a = ap.parse_args(argv)
    table, prov = read_trace(a.trace)
    meta = None
    if a.meta:
        meta = {}
        for line in Path(a.meta).read_text().splitlines():
            e = json.loads(line)
            meta[e["sample_id"]] = e
    if prov.get("format_version") == 2:
        res = metrics_v2(table, prov, meta)
        md = markdown_v2(res)
        print(md)
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
            Path(a.json).with_suffix(".md").write_text(md + "\n")
        return 0
    df = table.to_pandas()
    res = metrics(df, meta)
    print(f"trace {a.trace}: {len(df)} rows, model {prov.get('model_id')}, box_pad_px {prov.get('box_pad_px')}, "
          f"box_grow {prov.get('box_grow')} (min cells {prov.get('box_grow_min_cells')}), "
          f"infer_jpeg_quality {prov.get('infer_jpeg_quality')}")
    print(report(res))
    if a.model and a.dataset:
        res["speed"] = []
        for workers in (1, 2):
            sp = speed(a.model, a.dataset, a.speed_samples, workers)
            res["speed"].append(sp)
            print(f"== speed == {sp['samples_per_s']:.2f} samples/s (stage 1 + attention + stage 2, {sp['samples']} "
                  f"samples, {workers} process(es) x {sp['threads_per_worker']} torch thread(s), this CPU) | "
                  f"weights {sp['weight_bytes'] / 1e6:.2f} MB")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
