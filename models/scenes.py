"""Deterministic procedural scene-text VQA: large natural-looking scenes with shapes and coded signs.

A SceneSpec fixes the geometry: V1 (768-px scenes for the 64-px tiny-scenetext-v1) or V2 (1024-px
scenes for the 336-px tiny-scenetext-v2, text sizes redrawn for it). Under V1 each scene is a 768x768 RGB image with a 1/f-noise background (natural-image statistics, so JPEG
sizes are realistic), 2-3 coloured shapes and 1-2 coloured signs carrying a 3-digit code. Sign
fonts come in two size classes so that part of the text is readable from the 64-px global view
and the rest needs a zoomed crop. Questions: `color` (of a named shape), `text` (on a named sign)
and `position` (which side the named sign is on). Ground-truth boxes are kept.

CLI: ``python -m edgevlm.models.scenes --out DIR --n N --seed S`` writes DIR/images/*.jpg, DIR/manifest.jsonl
(image, question, answers, question_type, gt_box) and DIR/scenes_meta.jsonl (per-sample details).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm import tqdm

from edgevlm.traces.io import atomic_write
import multiprocessing as mp

SCENE_PX = 768
#: Vision input of the tiny model; readability is judged at this global resolution.
GLOBAL_PX = 64
#: A digit at least this tall (px) in the GLOBAL_PX view counts as readable globally.
READABLE_GLOBAL_PX = 8.0
#: Digit height ranges (original px) of the two size classes, and the share of large signs.
LARGE_CHAR_PX = (100, 136)
SMALL_CHAR_PX = (24, 50)
P_LARGE = 0.45
CODE_LEN = 3


@dataclass(frozen=True)
class SceneSpec:
    """Scene geometry: size, text size classes, and the resolution at which readability is judged.

    `global_px` is the *effective* resolution of the model's global view: the number of pixels across
    its token grid resolves (v1: the 64-px input; v2: 8 tokens of 42 px at 336 px, warm-started from
    v1's 8-px patches, so again 64 px of detail across). A digit at least `readable_px` tall there is
    readable globally.
    """
    name: str = "scenes-v1"
    scene_px: int = SCENE_PX
    global_px: int = GLOBAL_PX
    readable_px: float = READABLE_GLOBAL_PX
    large_char_px: tuple[float, float] = LARGE_CHAR_PX
    small_char_px: tuple[float, float] = SMALL_CHAR_PX
    p_large: float = P_LARGE
    shape_px: tuple[int, int] = (48, 130)


#: tiny-scenetext-v1's scenes (the default everywhere, so v1 data reproduce bit for bit).
V1 = SceneSpec()
#: tiny-scenetext-v2's scenes: 1024 px; large digits 128-180 px (>= 8 px across the 64-px effective
#: global grid: readable globally), small digits 56-90 px (3.5-5.6 px globally: unreadable; 9-14 px of
#: effective resolution in a 400-px ViCrop box); shapes scaled with the scene.
V2 = SceneSpec(name="scenes-v2", scene_px=1024, large_char_px=(128, 180), small_char_px=(56, 90),
               shape_px=(64, 173))
SPECS = {"v1": V1, "v2": V2}

COLORS = {
    "red": (215, 35, 35), "green": (35, 165, 55), "blue": (35, 75, 215), "yellow": (240, 215, 35),
    "white": (245, 245, 245), "black": (20, 20, 20), "orange": (245, 135, 25), "purple": (135, 45, 175),
}
SHAPES = ("circle", "square", "triangle")
SIGN_COLORS = ("red", "blue", "green", "yellow", "white")
DARK = {"red", "blue", "green", "black", "purple"}
QUESTION_TYPES = ("text", "color", "position")
QTYPE_PROBS = (0.45, 0.30, 0.25)
SIDES = ("left", "right")

_FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "/usr/share/fonts/dejavu/DejaVuSansMono-Bold.ttf",
)
_font_cache: dict[int, ImageFont.FreeTypeFont] = {}


def font(size: int) -> ImageFont.FreeTypeFont:
    """A bold monospace font at `size` px (DejaVu Sans Mono Bold, else Pillow's bundled font)."""
    if size not in _font_cache:
        for p in _FONT_PATHS:
            if os.path.exists(p):
                _font_cache[size] = ImageFont.truetype(p, size)
                break
        else:
            _font_cache[size] = ImageFont.load_default(size=size)
    return _font_cache[size]


def font_name() -> str:
    return next((os.path.basename(p) for p in _FONT_PATHS if os.path.exists(p)), "pillow-default")


@dataclass
class SceneObject:
    kind: str                     # circle | square | triangle | sign
    color: str
    box: tuple[int, int, int, int]
    text: str | None = None
    char_px: float | None = None  # digit height in original pixels (signs)
    char_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    spec: SceneSpec = V1

    @property
    def side(self) -> str:
        return "left" if (self.box[0] + self.box[2]) / 2 < self.spec.scene_px / 2 else "right"

    @property
    def readable_global(self) -> bool:
        sp = self.spec
        return self.char_px is not None and self.char_px * sp.global_px / sp.scene_px >= sp.readable_px


@dataclass
class Scene:
    image: Image.Image
    objects: list[SceneObject]

    def signs(self) -> list[SceneObject]:
        return [o for o in self.objects if o.kind == "sign"]

    def shapes(self) -> list[SceneObject]:
        return [o for o in self.objects if o.kind != "sign"]


def _rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), int(stream)])


def background(rng: np.random.Generator, size: int = SCENE_PX) -> np.ndarray:
    """1/f^a noise in a random colour palette, plus a gradient and fine grain: photo-like statistics."""
    n = 192
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    f[0, 0] = 1.0
    alpha = rng.uniform(1.6, 2.3)
    chans = []
    for _ in range(3):
        spec = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** (alpha / 2)
        spec[0, 0] = 0
        x = np.fft.irfft2(spec, s=(n, n))
        chans.append((x - x.mean()) / (x.std() + 1e-9))
    lum, c1, c2 = chans
    base = rng.uniform(60, 190, size=3)
    tint = rng.normal(0, 1, size=(3, 3)) * np.array([1.0, 0.35, 0.35])[None, :]
    tint[:, 0] = np.abs(tint[:, 0]) * 0 + rng.uniform(18, 40)
    img = base[None, None, :] + np.stack([lum, c1, c2], -1) @ tint.T
    small = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    big = np.asarray(small.resize((size, size), Image.BICUBIC), dtype=np.float32)
    gy, gx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ang = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(ang) * gx + np.sin(ang) * gy)[..., None] * rng.uniform(-50, 50, size=3)
    grain = rng.normal(0, rng.uniform(3, 9), size=(size, size, 1)).astype(np.float32)
    out = big + grad + grain
    return np.clip(out, 0, 255).astype(np.uint8)


def _overlaps(box, boxes, margin=12) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + margin and b[0] < x1 + margin and y0 < b[3] + margin and b[1] < y1 + margin
               for b in boxes)


def _sign(rng, draw, color, char_px, taken, spec: SceneSpec = V1) -> SceneObject | None:
    size = int(round(char_px / 0.73))
    fnt = font(size)
    code = "".join(str(d) for d in rng.integers(0, 10, size=CODE_LEN))
    l, t, r, b = fnt.getbbox(code)
    m = max(4, int(0.28 * char_px))
    w, h = (r - l) + 2 * m, (b - t) + 2 * m
    for _ in range(60):
        x0 = int(rng.integers(8, spec.scene_px - w - 8))
        y0 = int(rng.integers(8, spec.scene_px - h - 8))
        box = (x0, y0, x0 + w, y0 + h)
        if abs((x0 + w / 2) - spec.scene_px / 2) < 0.08 * spec.scene_px or _overlaps(box, taken):
            continue
        draw.rectangle(box, fill=COLORS[color], outline=(30, 30, 30), width=max(1, m // 5))
        tx, ty = x0 + m - l, y0 + m - t
        ink = (250, 250, 250) if color in DARK else (15, 15, 15)
        draw.text((tx, ty), code, font=fnt, fill=ink)
        adv = fnt.getlength("0")
        chars = []
        for i, ch in enumerate(code):
            cl, ct, cr, cb = fnt.getbbox(ch)
            chars.append((int(tx + i * adv + cl), int(ty + ct), int(tx + i * adv + cr), int(ty + cb)))
        return SceneObject("sign", color, box, code, float(char_px), chars, spec)
    return None


def _shape(rng, draw, kind, color, taken, spec: SceneSpec = V1) -> SceneObject | None:
    for _ in range(60):
        s = int(rng.integers(*spec.shape_px))
        x0 = int(rng.integers(8, spec.scene_px - s - 8))
        y0 = int(rng.integers(8, spec.scene_px - s - 8))
        box = (x0, y0, x0 + s, y0 + s)
        if _overlaps(box, taken):
            continue
        fill, outline = COLORS[color], (25, 25, 25) if color != "black" else (200, 200, 200)
        if kind == "circle":
            draw.ellipse(box, fill=fill, outline=outline, width=2)
        elif kind == "square":
            draw.rectangle(box, fill=fill, outline=outline, width=2)
        else:
            draw.polygon([(x0 + s / 2, y0), (x0 + s, y0 + s), (x0, y0 + s)], fill=fill, outline=outline)
        return SceneObject(kind, color, box, spec=spec)
    return None


def make_scene(seed: int, index: int, spec: SceneSpec = V1) -> Scene:
    """Scene `index` of the stream `seed` under `spec`; the same triple always gives the same pixels."""
    rng = _rng(seed, index)
    img = Image.fromarray(background(rng, spec.scene_px))
    draw = ImageDraw.Draw(img)
    objects: list[SceneObject] = []
    n_signs = int(rng.integers(1, 3))
    sign_cols = rng.choice(SIGN_COLORS, size=n_signs, replace=False)
    for col in sign_cols:
        large = rng.random() < spec.p_large
        char_px = rng.uniform(*(spec.large_char_px if large else spec.small_char_px))
        o = _sign(rng, draw, str(col), char_px, [x.box for x in objects], spec)
        if o is None:  # no room for a large sign next to the first one: fall back to a small one
            o = _sign(rng, draw, str(col), rng.uniform(*spec.small_char_px), [x.box for x in objects], spec)
        if o is not None:
            objects.append(o)
    n_shapes = int(rng.integers(2, 4))
    kinds = rng.choice(SHAPES, size=n_shapes, replace=False)
    cols = rng.choice(list(COLORS), size=n_shapes, replace=False)
    for k, c in zip(kinds, cols):
        o = _shape(rng, draw, str(k), str(c), [x.box for x in objects], spec)
        if o is not None:
            objects.append(o)
    img = img.filter(ImageFilter.GaussianBlur(radius=0.6))
    return Scene(img, objects)


@dataclass
class Question:
    question: str
    answers: list[str]
    question_type: str
    target: SceneObject


def ask(scene: Scene, qtype: str, rng: np.random.Generator) -> Question:
    """A question of `qtype` about a random object of the scene that can answer it."""
    if qtype == "color":
        o = scene.shapes()[int(rng.integers(len(scene.shapes())))]
        return Question(f"what color is the {o.kind}?", [o.color], qtype, o)
    o = scene.signs()[int(rng.integers(len(scene.signs())))]
    if qtype == "text":
        return Question(f"what is written on the {o.color} sign?", [o.text], qtype, o)
    if qtype == "position":
        return Question(f"which side is the {o.color} sign on?", [o.side], qtype, o)
    raise ValueError(f"question_type: unknown value {qtype!r}; allowed: {', '.join(QUESTION_TYPES)}")


def make_sample(seed: int, index: int, spec: SceneSpec = V1) -> tuple[Scene, Question]:
    """Scene and its one question (type drawn with QTYPE_PROBS) for dataset sample `index`."""
    scene = make_scene(seed, index, spec)
    rng = _rng(seed, index, 1)
    qtype = QUESTION_TYPES[int(rng.choice(len(QUESTION_TYPES), p=QTYPE_PROBS))]
    if qtype == "color" and not scene.shapes():
        qtype = "text"
    return scene, ask(scene, qtype, rng)


def _write_one(args) -> tuple[dict, dict]:
    out, seed, i, spec = args
    scene, q = make_sample(seed, i, spec)
    rel = f"images/{seed}_{i:06d}.jpg"
    scene.image.save(Path(out) / rel, format="JPEG", quality=95)
    entry = {"sample_id": f"scenes{seed}-{i:06d}", "image": rel, "question": q.question, "answers": q.answers,
             "question_type": q.question_type, "gt_box": list(q.target.box)}
    meta = {"sample_id": entry["sample_id"], "index": i, "seed": seed, "image": rel, "target_kind": q.target.kind,
            "target_color": q.target.color, "char_px": q.target.char_px,
            "readable_global": q.target.readable_global if q.question_type == "text" else None,
            "objects": [{"kind": o.kind, "color": o.color, "box": list(o.box), "text": o.text,
                         "char_px": o.char_px} for o in scene.objects]}
    return entry, meta


def write_dataset(out: str | os.PathLike, n: int, seed: int, *, progress: bool = True,
                  spec: SceneSpec = V1, workers: int = 1) -> Path:
    """Write n samples (images, manifest.jsonl, scenes_meta.jsonl) under out; returns the manifest path."""

    if n <= 0:
        raise ValueError(f"n: must be a positive integer, got {n}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(out, seed, i, spec) for i in range(n)]
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            rows = list(tqdm(pool.imap(_write_one, jobs, chunksize=16), total=n, desc="scenes", disable=not progress))
    else:
        rows = [_write_one(j) for j in tqdm(jobs, desc="scenes", disable=not progress)]

    def dump(k):
        return lambda tmp: Path(tmp).write_text("".join(json.dumps(r[k]) + "\n" for r in rows))
    atomic_write(out / "scenes_meta.jsonl", dump(1))
    atomic_write(out / "manifest.jsonl", dump(0))
    return out / "manifest.jsonl"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgevlm.models.scenes",
                                description="Generate the procedural scene-text VQA dataset (images + JSONL manifest).")
    p.add_argument("--out", required=True, help="output directory (images/, manifest.jsonl, scenes_meta.jsonl)")
    p.add_argument("--n", type=int, default=1000, help="number of samples, one question per scene (default 1000)")
    p.add_argument("--seed", type=int, default=1000, help="dataset seed; the tiny model trains on seed 1 (default 1000)")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    p.add_argument("--spec", choices=sorted(SPECS), default="v1",
                   help="scene geometry: v1 (768 px, tiny-scenetext-v1) or v2 (1024 px, tiny-scenetext-v2; default v1)")
    a = p.parse_args(argv)
    if a.n <= 0:
        p.error(f"--n: must be a positive integer, got {a.n}")
    path = write_dataset(a.out, a.n, a.seed, spec=SPECS[a.spec], workers=a.workers)
    print(f"wrote {a.n} samples to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
