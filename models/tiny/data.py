"""Training pool for the tiny VLM: pre-rendered global views, crops and per-patch labels.

Rendering a 768-px scene costs ~0.1 s on this CPU, so training draws from a pool of scenes rendered
once (cached as .npz shards). Each scene gives a 64-px global view, crops drawn from the crop-size
distribution the box search produces (plus ground-truth crops for the oracle), and per-patch labels
on an 8x8 grid for the Stage A heads and the attention-grounding loss.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from edgevlm.models import boxsearch
from edgevlm.models import scenes as S

PX = 64          # vision input
GRID = 8         # patches per side (patch 8)
N_COLORS = len(S.COLORS)
COLOR_IDS = {c: i + 1 for i, c in enumerate(S.COLORS)}             # 0 = nothing
KIND_IDS = {"circle": 1, "square": 2, "triangle": 3, "sign": 4}     # 0 = background
SIDE_IDS = {"left": 1, "right": 2}                                  # 0 = ignore
N_DIGIT_CLASSES = 1 + S.CODE_LEN * 10                               # 0 = no digit centre here
#: Sign-crop box search geometry the training crops imitate (see edgevlm.json box_pad_px, box_grow,
#: box_grow_min_cells): one-cell windows padded by 72 px, grown over the object's cells when they
#: span >= 3 cells (large signs), so the box contains the whole sign.
BOX_PAD_PX = 72
BOX_GROW = 0.05
BOX_GROW_MIN_CELLS = 3
#: Crop kinds: 0 = sign crop (box-search like), 1 = oracle crop, 2 = oracle crop with a smaller pad,
#: 3 = shape crop, 4 = random crop.
CROP_KINDS = ("search", "oracle", "oracle_sq", "shape", "random")
MAX_OBJ = 5
SHARD = 500     # scenes per cached pool shard


def resize(img: Image.Image, box=None) -> np.ndarray:
    """Crop (x0,y0,x1,y1) of img (or all of it) resized to PX x PX with bicubic, as CLIPImageProcessor does."""
    if box is not None:
        img = img.crop(tuple(int(v) for v in box))
    return np.asarray(img.resize((PX, PX), Image.BICUBIC), dtype=np.uint8)


def _coverage(box, view, grid=GRID) -> np.ndarray:
    """Fraction of each patch of `view` (x0,y0,x1,y1 in original px) covered by `box`."""
    vx0, vy0, vx1, vy1 = view
    cw, ch = (vx1 - vx0) / grid, (vy1 - vy0) / grid
    xs = vx0 + cw * np.arange(grid + 1)
    ys = vy0 + ch * np.arange(grid + 1)
    ox = np.clip(np.minimum(xs[1:], box[2]) - np.maximum(xs[:-1], box[0]), 0, None) / cw
    oy = np.clip(np.minimum(ys[1:], box[3]) - np.maximum(ys[:-1], box[1]), 0, None) / ch
    return oy[:, None] * ox[None, :]


def _cell(pt, view, grid=GRID):
    vx0, vy0, vx1, vy1 = view
    cx = int((pt[0] - vx0) / (vx1 - vx0) * grid)
    cy = int((pt[1] - vy0) / (vy1 - vy0) * grid)
    if 0 <= cx < grid and 0 <= cy < grid:
        return cy, cx
    return None


def patch_labels(objects: list[S.SceneObject], view, digits_min_px: float) -> dict[str, np.ndarray]:
    """Per-patch labels of a view: colour, kind, side, digit (for digits >= digits_min_px tall in the view)."""
    color = np.zeros((GRID, GRID), np.int64)
    kind = np.zeros((GRID, GRID), np.int64)
    side = np.zeros((GRID, GRID), np.int64)
    digit = np.zeros((GRID, GRID), np.int64)
    best = np.zeros((GRID, GRID))
    scale = PX / (view[2] - view[0])
    for o in objects:
        cov = _coverage(o.box, view)
        c = _cell(((o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2), view)
        if c is not None:
            cov[c] = max(cov[c], 0.3)
        m = (cov >= 0.25) & (cov > best)
        color[m], kind[m], side[m] = COLOR_IDS[o.color], KIND_IDS[o.kind], SIDE_IDS[o.side]
        best = np.maximum(best, np.where(cov >= 0.25, cov, 0))
        if o.kind == "sign" and o.char_px * scale >= digits_min_px:
            for i, (cb, ch) in enumerate(zip(o.char_boxes, o.text)):
                c = _cell(((cb[0] + cb[2]) / 2, (cb[1] + cb[3]) / 2), view)
                if c is not None:
                    digit[c] = 1 + i * 10 + int(ch)
    return {"color": color, "kind": kind, "side": side, "digit": digit}


def object_mask(o: S.SceneObject, view=(0, 0, S.SCENE_PX, S.SCENE_PX)) -> np.ndarray:
    """Global-grid patches that show object o: the grounding-loss target."""
    cov = _coverage(o.box, view)
    m = cov > 0.08
    c = _cell(((o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2), view)
    if c is not None:
        m[c] = True
    return m


def _place(centre: float, side: float, limit: int) -> tuple[int, int]:
    """Interval of length side centred at centre, shifted inside [0, limit] (as the box search does)."""
    side = min(side, float(limit))
    lo = min(max(centre - side / 2, 0.0), limit - side)
    return int(round(lo)), int(round(lo + side))


def search_box(rng, o: S.SceneObject, pad=BOX_PAD_PX, exact=True) -> tuple[int, int, int, int]:
    """A crop like the pipeline's relative-attention box (models.boxsearch with this model's settings).

    The attention map is an ideal one for a model that learned the grounding loss: the object's
    patches (as the loss's mask) at random levels, peaking on a cell drawn in proportion to its
    coverage. On a 768-px scene with 64-px input every ViCrop window rounds to one 96-px cell, so a
    small object gets a (64 + 2*pad)-px square centred on the peak cell and a large one the box
    grown over its cells. exact=False jitters size and centre for robustness.
    """
    cov = _coverage(o.box, (0, 0, S.SCENE_PX, S.SCENE_PX))
    att = np.where(object_mask(o), rng.uniform(0.0, 0.7, cov.shape), 0.0)
    flat = cov.reshape(-1) + 1e-9
    k = int(rng.choice(flat.size, p=flat / flat.sum()))
    att.reshape(-1)[k] = 1.0
    b = boxsearch.search_box(att, S.SCENE_PX, S.SCENE_PX, PX, pad_px=pad, grow=BOX_GROW,
                             grow_min_cells=BOX_GROW_MIN_CELLS)
    cx, cy, w, h = (b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2, b.x1 - b.x0, b.y1 - b.y0
    if w > PX + 2 * pad or h > PX + 2 * pad:
        # A grown box. Real maps join fewer edge cells than this ideal one (on held-out large signs the
        # real box exceeds the sign by a median 110 px across, the ideal by 220), so shrink and shift
        # it to cover the real spread.
        w, h = w * rng.uniform(0.65, 1.05), h * rng.uniform(0.65, 1.05)
        cx, cy = cx + rng.normal(0, 30), cy + rng.normal(0, 30)
    if not exact:
        f = rng.uniform(0.7, 1.4)
        w, h = w * f, h * f
        cx, cy = cx + rng.normal(0, 20), cy + rng.normal(0, 20)
    x0, x1 = _place(cx, w, S.SCENE_PX)
    y0, y1 = _place(cy, h, S.SCENE_PX)
    return x0, y0, x1, y1


def oracle_box(o: S.SceneObject, pad=BOX_PAD_PX) -> tuple[int, int, int, int]:
    """The pipeline's oracle crop: the gt box grown to >= PX per side, plus pad, inside the image."""
    x0, y0, x1, y1 = o.box
    w, h = max(x1 - x0, PX) + 2 * pad, max(y1 - y0, PX) + 2 * pad
    a0, a1 = _place((x0 + x1) / 2, w, S.SCENE_PX)
    b0, b1 = _place((y0 + y1) / 2, h, S.SCENE_PX)
    return a0, b0, a1, b1


def _clamp_square(cx, cy, side):
    x0, x1 = _place(cx, side, S.SCENE_PX)
    y0, y1 = _place(cy, side, S.SCENE_PX)
    return x0, y0, x1, y1


@dataclass
class Pool:
    """Arrays of a rendered pool; see build_pool for the fields."""
    glob: np.ndarray          # (N,64,64,3) uint8
    glab: np.ndarray          # (N,4,8,8) int64: colour, kind, side, digit labels of the global view
    objs: np.ndarray          # (N,MAX_OBJ,13) int64 object table (see _obj_row)
    omask: np.ndarray         # (N,MAX_OBJ,8,8) bool grounding masks
    crops: np.ndarray         # (M,64,64,3) uint8
    clab: np.ndarray          # (M,4,8,8) int64
    cmeta: np.ndarray         # (M,4) int64: scene index, object slot (-1 none), crop kind, code-in-crop flag

    def __len__(self):
        return len(self.glob)


def _obj_row(o: S.SceneObject) -> list[int]:
    digits = [int(c) for c in o.text] if o.text else [-1] * S.CODE_LEN
    return [1, KIND_IDS[o.kind], COLOR_IDS[o.color], SIDE_IDS[o.side], *o.box, *digits,
            int(o.readable_global), int(o.char_px or 0)]


def render_scene(seed: int, index: int, crops_per_sign: int = 3):
    """Everything the pool keeps from one scene (JPEG q95 round trip as in the written dataset)."""
    scene = S.make_scene(seed, index)
    buf = io.BytesIO()
    scene.image.save(buf, format="JPEG", quality=95)
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    rng = np.random.default_rng([seed, index, 7])
    full = (0, 0, S.SCENE_PX, S.SCENE_PX)
    g = resize(img)
    gl = patch_labels(scene.objects, full, digits_min_px=S.READABLE_GLOBAL_PX - 0.5)
    objs = scene.objects[:MAX_OBJ]
    rows = [_obj_row(o) for o in objs]
    masks = [object_mask(o) for o in objs]
    crops, clabs, cmeta = [], [], []

    def add(box, slot, kind):
        box = tuple(int(v) for v in box)
        lab = patch_labels(scene.objects, box, digits_min_px=3.0)
        in_crop = 0
        if slot >= 0 and objs[slot].kind == "sign":
            o = objs[slot]
            inside = all(box[0] <= cb[0] and cb[2] <= box[2] and box[1] <= cb[1] and cb[3] <= box[3]
                         for cb in o.char_boxes)
            in_crop = int(inside and o.char_px * PX / (box[2] - box[0]) >= 3.0)
        crops.append(resize(img, box))
        clabs.append(np.stack([lab[k] for k in ("color", "kind", "side", "digit")]))
        cmeta.append([index, slot, kind, in_crop])

    for slot, o in enumerate(objs):
        if o.kind == "sign":
            for k in range(crops_per_sign):
                add(search_box(rng, o, exact=k < crops_per_sign - 1), slot, 0)
            add(oracle_box(o), slot, 1)
            add(oracle_box(o, pad=int(rng.uniform(0.3, 1.0) * BOX_PAD_PX)), slot, 2)
        else:
            add(search_box(rng, o), slot, 3)
    side = rng.uniform(96, 320)
    add(_clamp_square(rng.uniform(0, S.SCENE_PX), rng.uniform(0, S.SCENE_PX), side), -1, 4)
    return g, np.stack([gl[k] for k in ("color", "kind", "side", "digit")]), rows, masks, crops, clabs, cmeta


def build_pool(seed: int, start: int, n: int, progress: bool = True) -> Pool:
    G, GL, OB, OM, C, CL, CM = [], [], [], [], [], [], []
    for i in tqdm(range(start, start + n), desc=f"pool {start}", disable=not progress, mininterval=10):
        g, gl, rows, masks, crops, clabs, cmeta = render_scene(seed, i)
        ob = np.zeros((MAX_OBJ, 13), np.int64)
        ob[:len(rows)] = rows
        om = np.zeros((MAX_OBJ, GRID, GRID), bool)
        om[:len(masks)] = masks
        G.append(g); GL.append(gl); OB.append(ob); OM.append(om)
        for c, cl, cm in zip(crops, clabs, cmeta):
            C.append(c); CL.append(cl); CM.append(cm)
    return Pool(np.stack(G), np.stack(GL), np.stack(OB), np.stack(OM), np.stack(C), np.stack(CL),
                np.asarray(CM, np.int64))


def save_pool(pool: Pool, path: Path) -> None:
    """Write a shard atomically (readers never see half a file)."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".partial.npz")
    np.savez(tmp, **pool.__dict__)
    os.replace(tmp, path)


def ensure_shard(path: Path, seed: int, start: int, n: int, wait_s: float = 0.0) -> Path:
    """The shard at path: waited for (another process building it) up to wait_s, else rendered here."""
    path = Path(path)
    t0 = time.time()
    while True:
        if path.exists():
            try:
                with np.load(path) as z:
                    _ = [z[k].shape for k in z.files]
                return path
            except Exception:  # noqa: BLE001 - half-written by a concurrent builder
                pass
        if time.time() - t0 >= wait_s:
            break
        time.sleep(10)
    save_pool(build_pool(seed, start, n), path)
    return path


def load_pools(paths) -> Pool:
    parts = [np.load(p) for p in paths]
    off, cm = 0, []
    for p in parts:
        m = p["cmeta"].copy()
        m[:, 0] = m[:, 0] - m[:, 0].min() + off if len(m) else m[:, 0]
        # scene indices are global per shard start; re-base them onto the concatenated arrays
        off += len(p["glob"])
        cm.append(m)
    return Pool(*(np.concatenate([p[k] for p in parts]) for k in
                  ("glob", "glab", "objs", "omask", "crops", "clab")), np.concatenate(cm))


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Render a training-pool shard.")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    save_pool(build_pool(a.seed, a.start, a.n), Path(a.out))
