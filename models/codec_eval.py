"""Measure progressive codecs on a LLaVA checkpoint: accuracy, bytes and token error per level.

For each sample: the global image's vision tokens are encoded by every codec given; the LLM answers
from the uncompressed tokens (the reference) and from the tokens decoded at each level. Reports per
codec and level: mean cumulative bytes, mean score, mean min-entropy, relative token MSE
(||x^ - x||^2 / ||x - mean||^2), the share of answers identical to the uncompressed one, the top level's accuracy minus the uncompressed accuracy, and the
first level whose accuracy reaches 95% of the top level's. A "no payload" accuracy (the first codec's
output for an all-zero latent, i.e. the mean token for PCA) shows how much the answers depend on the image.

    python -m edgevlm.models.codec_eval --model DIR --dataset MANIFEST --codec DIR [--codec DIR ...] \
        [--limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from edgevlm.models.backend import BackendError, load_backend
from edgevlm.models.codec import CodecError, load_codec
from edgevlm.models.manifest import ManifestError, read_manifest
from edgevlm.models.progressive import generate_from_tokens, vision_tokens
from edgevlm.models.scoring import score_answer
from edgevlm.models.uncertainty import token_uncertainty
from edgevlm.traces.io import atomic_write


def evaluate(backend, codecs: dict[str, Any], samples: Sequence[Any], scoring: str = "auto",
             progress: bool = True) -> dict[str, Any]:

    from edgevlm.models.extract import RESAMPLE, load_image  # defers PIL

    px = backend.vision_input_px
    ref_scores, blind_scores = [], []
    first = next(iter(codecs.values()))
    per = {name: {"bytes": [], "score": [], "ent": [], "rel_mse": [], "same": []} for name in codecs}
    t0 = time.perf_counter()
    for s in tqdm(samples, desc="codec eval", unit="sample", disable=not progress):
        img = load_image(s).resize((px, px), RESAMPLE)
        tokens = vision_tokens(backend, [img])[0]
        backend.clear_cache()
        gen = backend.generate(backend.encode([img], s.question))
        ref_scores.append(score_answer(gen.text, s.answers, scoring))
        denom = float(((tokens - tokens.mean(0)) ** 2).sum()) or 1.0
        # "level 0": no payload at all, the first codec's output for an all-zero latent (PCA: the mean token)
        blind = first._synthesise(np.zeros((tokens.shape[0], sum(first.group_sizes)))).astype(np.float32)
        blind_scores.append(score_answer(generate_from_tokens(backend, blind, img, s.question).text,
                                         s.answers, scoring))
        for name, codec in codecs.items():
            levels = codec.encode(tokens)
            row = {"bytes": [], "score": [], "ent": [], "rel_mse": [], "same": []}
            cum = 0
            for lvl in range(1, len(levels) + 1):
                cum += len(levels[lvl - 1])
                dec = codec.decode(levels[:lvl])
                g = generate_from_tokens(backend, dec, img, s.question)
                row["bytes"].append(cum)
                row["score"].append(score_answer(g.text, s.answers, scoring))
                row["ent"].append(float(np.mean(token_uncertainty(g.logits)[0])))
                row["rel_mse"].append(float(((dec - tokens) ** 2).sum()) / denom)
                row["same"].append(float(g.text == gen.text))
            for k, v in row.items():
                per[name][k].append(v)
    out: dict[str, Any] = {"n_samples": len(samples), "uncompressed_accuracy": float(np.mean(ref_scores)),
                           "no_payload_accuracy": float(np.mean(blind_scores)),
                           "raw_float16_bytes": int(tokens.size * 2), "wall_s": round(time.perf_counter() - t0, 1),
                           "codecs": {}}
    for name, codec in codecs.items():
        acc = np.mean(per[name]["score"], axis=0)
        top = float(acc[-1])
        reach = next((i + 1 for i, a in enumerate(acc) if a >= 0.95 * top), None)
        out["codecs"][name] = {
            "kind": codec.kind, "group_sizes": list(codec.group_sizes),
            "mean_cum_bytes": [float(b) for b in np.mean(per[name]["bytes"], axis=0)],
            "accuracy": [float(a) for a in acc],
            "mean_min_entropy": [float(e) for e in np.mean(per[name]["ent"], axis=0)],
            "rel_mse": [float(m) for m in np.mean(per[name]["rel_mse"], axis=0)],
            "same_answer_as_uncompressed": [float(m) for m in np.mean(per[name]["same"], axis=0)],
            "top_minus_uncompressed_points": 100.0 * (top - out["uncompressed_accuracy"]),
            "level_reaching_95pct_of_top": reach,
        }
    return out


def format_report(res: dict[str, Any]) -> str:
    lines = [f"samples {res['n_samples']}; uncompressed accuracy {res['uncompressed_accuracy']:.3f}; "
             f"no-payload (mean tokens) accuracy {res['no_payload_accuracy']:.3f}; "
             f"raw float16 tokens {res['raw_float16_bytes']} B"]
    for name, r in res["codecs"].items():
        lines.append(f"{name} ({r['kind']}, group sizes {r['group_sizes']}):")
        lines.append("  level  cum_bytes  accuracy  same_answer  min_entropy  rel_mse")
        for i, (b, a, sa, e, m) in enumerate(zip(r["mean_cum_bytes"], r["accuracy"], r["same_answer_as_uncompressed"],
                                                 r["mean_min_entropy"], r["rel_mse"])):
            lines.append(f"  {i + 1:5d}  {b:9.0f}  {a:8.3f}  {sa:11.3f}  {e:11.3f}  {m:7.4f}")
        lines.append(f"  top level vs uncompressed: {r['top_minus_uncompressed_points']:+.1f} points; "
                     f"95% of top reached at level {r['level_reaching_95pct_of_top']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgevlm.models.codec_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True, metavar="MANIFEST")
    ap.add_argument("--codec", action="append", required=True, help="fitted codec directory (repeatable)")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--offset", type=int, default=0, help="skip the first N samples")
    ap.add_argument("--scoring", default="auto", choices=("auto", "vqa", "exact"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    import torch  # defers torch

    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    try:
        samples = read_manifest(a.dataset)[a.offset:]
        samples = samples[: a.limit] if a.limit else samples
        codecs = {}
        for d in a.codec:
            c = load_codec(d)
            codecs[c.kind if c.kind not in codecs else d] = c
        backend = load_backend(a.model)
        res = evaluate(backend, codecs, samples, a.scoring)
    except (BackendError, CodecError, ManifestError) as exc:
        print(f"edgevlm: error: {exc}", file=sys.stderr)
        return 2
    res["model"] = a.model
    res["dataset"] = a.dataset
    print(format_report(res))
    if a.json:
        atomic_write(a.json, lambda tmp: Path(tmp).write_text(json.dumps(res, indent=2)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
