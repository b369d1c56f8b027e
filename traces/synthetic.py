"""Seeded generator of SYNTHETIC traces (format v1, or v2 with quality-dependent values), labelled
`source_kind: synthetic`: for tests only.

The numbers are invented, drawn from the simple distributions below, and they stand in for no
model. Real traces come from models/. The generative story, per sample:

* question_type ~ Categorical(text .35, color .25, count .2, yesno .2);
  difficulty z ~ N(0, 1).
* Stage 1 is right with probability sigmoid(a_type - 1.5 z), where a = text -0.5, color 1.5,
  count 0.3, yesno 1.2. The score is 1 if right; otherwise 0, or 1/3 with probability 0.2
  (partial VQA credit).
* Tokens T1 = 1 + Poisson(1.5). Per-token min-entropy (bits) ~ Gamma(2, scale) with
  scale 0.12 if right and 0.45 if wrong, times exp(0.3 z). Shannon = min-entropy + Gamma(1.5, 0.2).
  p1 = 2^-min-entropy; margin = p1 - u·min(p1, 1 - p1) with u ~ U(0, 1). So p2 <= p1 and p2 <= 1 - p1.
* Stage 2 (global + crop): it keeps a right answer with probability 0.95 and fixes a wrong one
  with probability 0.65 (text), 0.3 (color), 0.35 (count) or 0.25 (yesno). So the stage-2 gain
  is correlated with stage-1 entropy through correctness.
* Image W×H: W ~ U{640..2048} and H = W·3/4 or W·4/3. JPEG bytes of the 336-px global image at
  quality 75 ~ LogNormal(ln 28 kB, 0.35). Other qualities scale by the factors in
  `QUALITY_FACTORS`. The original scales by (W·H/336²)^0.85, and the local crop is the global
  size × LogNormal(0, 0.2).
* The crop box is a square of side r·336 px, r ~ U(1, 2), at a uniform position clamped inside
  the image. Text questions carry a ground-truth box inside the crop box with probability 0.7.
* Optional columns are filled: HD (5×576 tokens, score = the stage-2 score or 1/3 higher at
  random), edge (right with probability 0.6× stage 1's), and 3 progressive levels with cumulative
  bytes 6/14/30 kB × LogNormal(0, 0.15), each level's score moving toward stage 1's.

v2 (`generate_table_v2`, qualities `JPEG_QUALITIES_V2`): the same story at every quality q,
with the compression hurting. Stage 1 is right at q with probability
sigmoid(a_type - 1.5 z - 4·(1 - q/100)^2); one uniform per sample is compared with that
probability at every q, so a sample right at q is right at every higher q (partial credit is
drawn once per sample too, so every score is non-decreasing in q). Entropies, the box
(jittered by up to (1 - q/100)·100 px), the crop bytes and stage 2 (a fix probability scaled by
0.4 + 0.6·q/100, again one uniform per sample) are drawn per quality; HD is right at q with
probability 0.9 × that of stage 2 + 0.1.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pyarrow as pa

from edgevlm.traces.io import write_trace

JPEG_QUALITIES = [10, 25, 50, 75, 95]
QUALITY_FACTORS = np.array([0.28, 0.5, 0.75, 1.0, 2.1])
VISION_PX = 336
VISUAL_TOKENS = 576
QUESTION_TYPES = ("text", "color", "count", "yesno")
_TYPE_P = np.array([0.35, 0.25, 0.2, 0.2])
_TYPE_A = np.array([-0.5, 1.5, 0.3, 1.2])
_TYPE_FIX = np.array([0.65, 0.3, 0.35, 0.25])


def generate_table(n_samples: int = 2000, seed: int = 0) -> pa.Table:
    """A v1 trace table of n_samples synthetic rows, deterministic in seed."""
    if n_samples <= 0:
        raise ValueError("n_samples must be positive")
    rng = np.random.default_rng(seed)
    n = n_samples
    qtype = rng.choice(len(QUESTION_TYPES), size=n, p=_TYPE_P)
    z = rng.standard_normal(n)
    p1 = 1.0 / (1.0 + np.exp(-(_TYPE_A[qtype] - 1.5 * z)))
    s1_right = rng.random(n) < p1
    s1_score = np.where(s1_right, 1.0, np.where(rng.random(n) < 0.2, 1 / 3, 0.0))
    s2_right = np.where(s1_right, rng.random(n) < 0.95, rng.random(n) < _TYPE_FIX[qtype])
    s2_score = np.where(s2_right, 1.0, np.where(rng.random(n) < 0.2, 1 / 3, 0.0))

    t1 = 1 + rng.poisson(1.5, size=n)
    minent, shannon, margin = [], [], []
    for i in range(n):
        scale = (0.12 if s1_right[i] else 0.45) * np.exp(0.3 * z[i])
        h_min = rng.gamma(2.0, scale, size=t1[i])
        h_sh = h_min + rng.gamma(1.5, 0.2, size=t1[i])
        top = np.exp2(-h_min)
        m = top - rng.random(t1[i]) * np.minimum(top, 1.0 - top)
        minent.append(h_min.astype(np.float32))
        shannon.append(h_sh.astype(np.float32))
        margin.append(np.clip(m, 0.0, 1.0).astype(np.float32))

    w = rng.integers(640, 2049, size=n)
    h = np.where(rng.random(n) < 0.5, w * 3 // 4, w * 4 // 3)
    g75 = np.exp(rng.normal(np.log(28_000), 0.35, size=n))
    glob = np.maximum(1, np.outer(g75, QUALITY_FACTORS)).astype(np.int32)
    orig = np.maximum(1, np.outer(g75 * (w * h / VISION_PX**2) ** 0.85, QUALITY_FACTORS)).astype(np.int32)
    local = np.maximum(1, np.outer(g75 * np.exp(rng.normal(0, 0.2, size=n)), QUALITY_FACTORS)).astype(np.int32)

    side = np.minimum(np.minimum(w, h), (rng.uniform(1.0, 2.0, size=n) * VISION_PX).astype(int))
    x0 = (rng.random(n) * (w - side + 1)).astype(int)
    y0 = (rng.random(n) * (h - side + 1)).astype(int)
    has_gt = (qtype == 0) & (rng.random(n) < 0.7)
    gside = (side * rng.uniform(0.2, 0.5, size=n)).astype(int) + 1
    gx0 = x0 + (rng.random(n) * (side - gside)).astype(int)
    gy0 = y0 + (rng.random(n) * (side - gside)).astype(int)

    hd_score = np.where(rng.random(n) < 0.5, s2_score, np.minimum(1.0, s2_score + 1 / 3))
    edge_score = np.where(rng.random(n) < 0.6, s1_score, 0.0)
    lvl = np.cumsum(np.array([6_000, 8_000, 16_000])[None, :]
                    * np.exp(rng.normal(0, 0.15, size=(n, 3))), axis=1).astype(np.int32)
    prog_score = np.stack([np.where(rng.random(n) < f, s1_score, 0.0) for f in (0.6, 0.85, 1.0)], axis=1)
    prog_ent = np.stack([np.array([m.mean() for m in minent]) * f for f in (2.0, 1.4, 1.0)], axis=1)

    cols = {
        "sample_id": [f"syn-{seed}-{i:06d}" for i in range(n)],
        "question_type": [QUESTION_TYPES[t] for t in qtype],
        "image_w": w, "image_h": h,
        "global_jpeg_bytes": list(glob), "original_jpeg_bytes": list(orig), "local_jpeg_bytes": list(local),
        "prompt_tokens": 10 + rng.poisson(8, size=n),
        "s1_answer": np.where(s1_right, "right", "wrong"), "s1_score": s1_score,
        "s1_min_entropy": minent, "s1_shannon": shannon, "s1_margin": margin,
        "bbox_x0": x0, "bbox_y0": y0, "bbox_x1": x0 + side, "bbox_y1": y0 + side,
        "s2_answer": np.where(s2_right, "right", "wrong"), "s2_score": s2_score,
        "s2_tokens": t1 + rng.integers(0, 2, size=n),
        "s2_oracle_score": np.where(has_gt, np.maximum(s2_score, s1_right * 1.0), np.nan),
        "gt_x0": pa.array(gx0, mask=~has_gt), "gt_y0": pa.array(gy0, mask=~has_gt),
        "gt_x1": pa.array(gx0 + gside, mask=~has_gt), "gt_y1": pa.array(gy0 + gside, mask=~has_gt),
        "hd_score": hd_score, "hd_visual_tokens": np.full(n, 5 * VISUAL_TOKENS),
        "edge_score": edge_score,
        "prog_bytes": list(lvl), "prog_score": list(prog_score), "prog_min_entropy": list(prog_ent),
    }
    table = pa.table({k: (v if isinstance(v, pa.Array) else pa.array(list(v) if isinstance(v, np.ndarray)
                                                                      and v.ndim > 1 else v))
                      for k, v in cols.items()})
    oracle = table.column("s2_oracle_score")
    table = table.set_column(table.column_names.index("s2_oracle_score"), "s2_oracle_score",
                             pa.array(oracle.to_numpy(zero_copy_only=False), from_pandas=True))
    return table


JPEG_QUALITIES_V2 = [5, 10, 25, 50, 75, 95, 100]
QUALITY_FACTORS_V2 = np.array([0.2, 0.28, 0.5, 0.75, 1.0, 2.1, 4.0])


def _token_uncertainties(rng: np.random.Generator, right: bool, z: float, t: int):
    """Per-token min-entropy, Shannon entropy and margin of one answer (see the module docstring)."""
    scale = (0.12 if right else 0.45) * np.exp(0.3 * z)
    h_min = rng.gamma(2.0, scale, size=t)
    h_sh = h_min + rng.gamma(1.5, 0.2, size=t)
    top = np.exp2(-h_min)
    m = top - rng.random(t) * np.minimum(top, 1.0 - top)
    return h_min.astype(np.float32), h_sh.astype(np.float32), np.clip(m, 0.0, 1.0).astype(np.float32)


def _partial(rng: np.random.Generator, right: np.ndarray) -> np.ndarray:
    """(n, n_q): 1 if right, else 0 or (with probability 0.2, drawn once per sample) 1/3 partial VQA credit."""
    return np.where(right, 1.0, np.where(rng.random(right.shape[0])[:, None] < 0.2, 1 / 3, 0.0))


def generate_table_v2(n_samples: int = 2000, seed: int = 0) -> pa.Table:
    """A v2 trace table of n_samples synthetic rows with quality-dependent values, deterministic in seed."""
    if n_samples <= 0:
        raise ValueError("n_samples must be positive")
    rng = np.random.default_rng(seed)
    n, qs = n_samples, np.array(JPEG_QUALITIES_V2, dtype=np.float64)
    n_q = len(qs)
    loss = 1.0 - qs / 100.0                                             # (n_q,)
    qtype = rng.choice(len(QUESTION_TYPES), size=n, p=_TYPE_P)
    z = rng.standard_normal(n)
    p1 = 1.0 / (1.0 + np.exp(-(_TYPE_A[qtype, None] - 1.5 * z[:, None] - 4.0 * loss[None, :] ** 2)))
    s1_right = rng.random(n)[:, None] < p1                               # (n, n_q), monotone in q
    s1_score = _partial(rng, s1_right)
    fix = _TYPE_FIX[qtype, None] * (0.4 + 0.6 * qs[None, :] / 100.0)
    v = rng.random(n)[:, None]
    s2_right = np.where(s1_right, v < 0.95, v < fix)
    s2_score = _partial(rng, s2_right)
    hd_right = rng.random(n)[:, None] < 0.9 * np.where(s2_right, 1.0, fix) + 0.1
    hd_score = _partial(rng, hd_right)

    t1 = 1 + rng.poisson(1.5, size=n)
    unc = [[_token_uncertainties(rng, bool(s1_right[i, k]), z[i], int(t1[i])) for k in range(n_q)]
           for i in range(n)]

    w = rng.integers(640, 2049, size=n)
    h = np.where(rng.random(n) < 0.5, w * 3 // 4, w * 4 // 3)
    g75 = np.exp(rng.normal(np.log(28_000), 0.35, size=n))
    glob = np.maximum(1, np.outer(g75, QUALITY_FACTORS_V2)).astype(np.int32)
    orig = np.maximum(1, np.outer(g75 * (w * h / VISION_PX**2) ** 0.85, QUALITY_FACTORS_V2)).astype(np.int32)
    local = np.maximum(1, g75[:, None] * np.exp(rng.normal(0, 0.2, size=(n, n_q)))
                       * QUALITY_FACTORS_V2[None, :]).astype(np.int32)

    side = np.minimum(np.minimum(w, h), (rng.uniform(1.0, 2.0, size=n) * VISION_PX).astype(int))
    cx0 = rng.random(n) * (w - side + 1)
    cy0 = rng.random(n) * (h - side + 1)
    jitter = rng.uniform(-1, 1, size=(n, n_q, 2)) * loss[None, :, None] * 100
    x0 = np.clip(cx0[:, None] + jitter[..., 0], 0, (w - side)[:, None]).astype(int)
    y0 = np.clip(cy0[:, None] + jitter[..., 1], 0, (h - side)[:, None]).astype(int)
    has_gt = (qtype == 0) & (rng.random(n) < 0.7)
    gside = (side * rng.uniform(0.2, 0.5, size=n)).astype(int) + 1
    gx0 = cx0.astype(int) + (rng.random(n) * (side - gside)).astype(int)
    gy0 = cy0.astype(int) + (rng.random(n) * (side - gside)).astype(int)
    oracle = np.maximum(s2_score, s1_right * 1.0)

    def per_q(a):
        return pa.array([list(r) for r in a])

    cols = {
        "sample_id": pa.array([f"syn2-{seed}-{i:06d}" for i in range(n)]),
        "question_type": pa.array([QUESTION_TYPES[t] for t in qtype]),
        "image_w": pa.array(w), "image_h": pa.array(h),
        "prompt_tokens": pa.array(10 + rng.poisson(8, size=n)),
        "global_jpeg_bytes": per_q(glob), "original_jpeg_bytes": per_q(orig), "local_jpeg_bytes": per_q(local),
        "s1_answer_q": per_q(np.where(s1_right, "right", "wrong")), "s1_score_q": per_q(s1_score),
        "s1_min_entropy_q": pa.array([[u[0] for u in row] for row in unc]),
        "s1_shannon_q": pa.array([[u[1] for u in row] for row in unc]),
        "s1_margin_q": pa.array([[u[2] for u in row] for row in unc]),
        "bbox_x0_q": per_q(x0), "bbox_y0_q": per_q(y0),
        "bbox_x1_q": per_q(x0 + side[:, None]), "bbox_y1_q": per_q(y0 + side[:, None]),
        "s2_answer_q": per_q(np.where(s2_right, "right", "wrong")), "s2_score_q": per_q(s2_score),
        "s2_tokens_q": per_q(t1[:, None] + rng.integers(0, 2, size=(n, n_q))),
        "s2_oracle_score_q": pa.array([list(r) if g else None for r, g in zip(oracle, has_gt)]),
        "gt_x0": pa.array(gx0, mask=~has_gt), "gt_y0": pa.array(gy0, mask=~has_gt),
        "gt_x1": pa.array(gx0 + gside, mask=~has_gt), "gt_y1": pa.array(gy0 + gside, mask=~has_gt),
        "hd_score_q": per_q(hd_score), "hd_answer_q": per_q(np.where(hd_right, "right", "wrong")),
        "hd_visual_tokens": pa.array(np.full(n, 5 * VISUAL_TOKENS)), "hd_tiles": pa.array(np.full(n, 5)),
        "hd_jpeg_bytes": per_q(orig),
        "edge_score": pa.array(np.where(rng.random(n) < 0.6, s1_score[:, -1], 0.0)),
    }
    return pa.table(cols)


def provenance(n_samples: int, seed: int, format_version: int = 1) -> dict:
    """Provenance for a synthetic trace: labelled synthetic, with the generator and its parameters."""
    from edgevlm.traces.version import generator_string

    return {
        "source_kind": "synthetic",
        "model_id": "none (synthetic)",
        "dataset_id": f"synthetic(n={n_samples}, seed={seed})",
        "created_utc": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "generator": generator_string("traces.synthetic"),
        "vision_input_px": VISION_PX,
        "visual_tokens_per_image": VISUAL_TOKENS,
        "format_version": format_version,
        "jpeg_qualities": JPEG_QUALITIES if format_version == 1 else JPEG_QUALITIES_V2,
        "notes": "SYNTHETIC: invented numbers from traces/synthetic.py, for tests only; not model output."
                 + (" Scores, uncertainties and boxes depend on the JPEG quality by construction."
                    if format_version == 2 else ""),
    }


def write_synthetic(path: str | Path, n_samples: int = 2000, seed: int = 0, format_version: int = 1) -> Path:
    """Generate and write a labelled synthetic trace (format v1, or v2 with per-quality values)."""
    gen = generate_table if format_version == 1 else generate_table_v2
    return write_trace(gen(n_samples, seed), path, provenance(n_samples, seed, format_version))


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Write a SYNTHETIC trace (tests only).")
    ap.add_argument("out", type=Path)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format-version", type=int, choices=(1, 2), default=1)
    args = ap.parse_args(argv)
    print(write_synthetic(args.out, args.samples, args.seed, args.format_version))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
