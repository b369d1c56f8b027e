"""Training pool for the tiny VLM: pre-rendered global views, crops and per-patch labels.

Rendering a scene costs ~0.1-0.3 s on this CPU, so training draws from a pool of scenes rendered
once (cached as .npz shards). Each scene gives a global view, crops drawn from the crop-size
distribution the box search produces (plus ground-truth crops for the oracle), and per-patch labels
on an 8x8 grid for the Stage A heads and the attention-grounding loss. A Geometry fixes the sizes:
V1 (768-px scenes, 64-px input, images stored raw) or V2 (1024-px scenes, 336-px input, images
stored as JPEG q90 files to keep the pool small, plus the 2x2 HD tiles of each scene).
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Geometry:
    """Scene spec, vision input and the box-search settings the training crops imitate."""
    scene: S.SceneSpec = S.V1
    px: int = PX                     # vision input (global view and crops are resized to it)
    grid: int = GRID                 # visual tokens per side
    box_pad_px: int = BOX_PAD_PX
    box_grow: float = BOX_GROW
    box_grow_min_cells: int = BOX_GROW_MIN_CELLS
    #: sd (original px) of the shift applied to grown boxes (real maps join fewer edge cells)
    grown_shift_px: float = 30.0
    #: HD tiling (LLaVA-1.5-HD style): hd_grid x hd_grid tiles of the original plus the global view
    hd_grid: int = 0
    #: pool images stored as JPEG at this quality (None: raw uint8 arrays)
    store_jpeg_q: int | None = None
    #: box-search window unit if not px (V1_AT_336: v1's boxes, images resized to 336 px)
    window_px: int | None = None

    @property
    def win(self) -> int:
        return self.window_px or self.px

    @property
    def scene_px(self) -> int:
        return self.scene.scene_px

    @property
    def full(self) -> tuple[int, int, int, int]:
        return (0, 0, self.scene_px, self.scene_px)


V1 = Geometry()
#: v1's scenes and crop boxes with the images at 336 px: the warm-start check (models.tiny.warm_check)
V1_AT_336 = Geometry(px=336, window_px=64)
#: tiny-scenetext-v2: 1024-px scenes, 336-px input with 8x8 tokens of 42 px; ViCrop windows
#: r x 336 px (3-5 of the 128-px attention cells) padded by 32 px; 2x2 HD tiles of 512 px.
V2 = Geometry(scene=S.V2, px=336, grid=8, box_pad_px=32, box_grow=0.05, box_grow_min_cells=3,
              grown_shift_px=40.0, hd_grid=2, store_jpeg_q=90)
GEOMETRIES = {"v1": V1, "v2": V2}


def hd_tiles(n: int, scene_px: int) -> list[tuple[int, int, int, int]]:
    """The n x n tile boxes (row-major) of a square original, LLaVA-1.5-HD style."""
    edges = [round(k * scene_px / n) for k in range(n + 1)]
    return [(edges[j], edges[i], edges[j + 1], edges[i + 1]) for i in range(n) for j in range(n)]


class JpegImages:
    """A stack of equally sized images stored as JPEG files in one byte buffer; indexing decodes."""

    def __init__(self, buf: np.ndarray, off: np.ndarray, px: int):
        self.buf, self.off, self.px = buf, off, int(px)

    @classmethod
    def encode(cls, arrays, quality: int) -> "JpegImages":
        parts, off = [], [0]
        for a in arrays:
            b = io.BytesIO()
            Image.fromarray(a).save(b, format="JPEG", quality=quality)
            parts.append(np.frombuffer(b.getvalue(), np.uint8))
            off.append(off[-1] + len(parts[-1]))
        return cls(np.concatenate(parts) if parts else np.zeros(0, np.uint8), np.asarray(off, np.int64),
                   arrays[0].shape[0] if len(arrays) else 0)

    def __len__(self):
        return len(self.off) - 1

    def one(self, i: int) -> np.ndarray:
        data = self.buf[self.off[i]:self.off[i + 1]].tobytes()
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)

    def __getitem__(self, idx):
        if np.isscalar(idx):
            return self.one(int(idx))
        return np.stack([self.one(int(i)) for i in np.asarray(idx).reshape(-1)])

    @staticmethod
    def concat(parts: list["JpegImages"]) -> "JpegImages":
        bufs, offs, base = [], [np.zeros(1, np.int64)], 0
        for p in parts:
            bufs.append(p.buf)
            offs.append(p.off[1:] + base)
            base += len(p.buf)
        return JpegImages(np.concatenate(bufs), np.concatenate(offs), parts[0].px)


def resize(img: Image.Image, box=None, px: int = PX) -> np.ndarray:
    """Crop (x0,y0,x1,y1) of img (or all of it) resized to px x px with bicubic, as the extraction does."""
    if box is not None:
        img = img.crop(tuple(int(v) for v in box))
    return np.asarray(img.resize((px, px), Image.BICUBIC), dtype=np.uint8)


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


def patch_labels(objects: list[S.SceneObject], view, digits_min_px: float, eff_px: int = PX) -> dict[str, np.ndarray]:
    """Per-patch labels of a view: colour, kind, side, digit (for digits >= digits_min_px tall at eff_px across)."""
    color = np.zeros((GRID, GRID), np.int64)
    kind = np.zeros((GRID, GRID), np.int64)
    side = np.zeros((GRID, GRID), np.int64)
    digit = np.zeros((GRID, GRID), np.int64)
    best = np.zeros((GRID, GRID))
    scale = eff_px / (view[2] - view[0])
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


def object_mask(o: S.SceneObject, view=None) -> np.ndarray:
    """Global-grid patches that show object o: the grounding-loss target."""
    view = view or (0, 0, o.spec.scene_px, o.spec.scene_px)
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


def search_box(rng, o: S.SceneObject, pad=None, exact=True, geo: Geometry = V1) -> tuple[int, int, int, int]:
    """A crop like the pipeline's relative-attention box (models.boxsearch with this model's settings).

    The attention map is an ideal one for a model that learned the grounding loss: the object's
    patches (as the loss's mask) at random levels, peaking on a cell drawn in proportion to its
    coverage. On a 768-px scene with 64-px input every ViCrop window rounds to one 96-px cell, so a
    small object gets a (64 + 2*pad)-px square centred on the peak cell and a large one the box
    grown over its cells. exact=False jitters size and centre for robustness.
    """
    pad = geo.box_pad_px if pad is None else pad
    n = geo.scene_px
    cov = _coverage(o.box, geo.full, geo.grid)
    att = np.where(object_mask(o), rng.uniform(0.0, 0.7, cov.shape), 0.0)
    flat = cov.reshape(-1) + 1e-9
    k = int(rng.choice(flat.size, p=flat / flat.sum()))
    att.reshape(-1)[k] = 1.0
    b = boxsearch.search_box(att, n, n, geo.win, pad_px=pad, grow=geo.box_grow,
                             grow_min_cells=geo.box_grow_min_cells)
    cx, cy, w, h = (b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2, b.x1 - b.x0, b.y1 - b.y0
    if b.ratio is not None and (w > b.ratio * geo.win + 2 * pad + 1 or h > b.ratio * geo.win + 2 * pad + 1):
        # A grown box. Real maps join fewer edge cells than this ideal one (v1: on held-out large signs
        # the real box exceeds the sign by a median 110 px across, the ideal by 220), so shrink and
        # shift it to cover the real spread.
        w, h = w * rng.uniform(0.65, 1.05), h * rng.uniform(0.65, 1.05)
        cx, cy = cx + rng.normal(0, geo.grown_shift_px), cy + rng.normal(0, geo.grown_shift_px)
    if not exact:
        f = rng.uniform(0.7, 1.4)
        w, h = w * f, h * f
        sd = 20 * n / S.SCENE_PX
        cx, cy = cx + rng.normal(0, sd), cy + rng.normal(0, sd)
    x0, x1 = _place(cx, w, n)
    y0, y1 = _place(cy, h, n)
    return x0, y0, x1, y1


def oracle_box(o: S.SceneObject, pad=None, geo: Geometry = V1) -> tuple[int, int, int, int]:
    """The pipeline's oracle crop: the gt box grown to >= px per side, plus pad, inside the image."""
    pad = geo.box_pad_px if pad is None else pad
    x0, y0, x1, y1 = o.box
    w, h = max(x1 - x0, geo.win) + 2 * pad, max(y1 - y0, geo.win) + 2 * pad
    a0, a1 = _place((x0 + x1) / 2, w, geo.scene_px)
    b0, b1 = _place((y0 + y1) / 2, h, geo.scene_px)
    return a0, b0, a1, b1


def _clamp_square(cx, cy, side, limit=S.SCENE_PX):
    x0, x1 = _place(cx, side, limit)
    y0, y1 = _place(cy, side, limit)
    return x0, y0, x1, y1


@dataclass
class Pool:
    """Arrays of a rendered pool; see build_pool for the fields."""
    glob: np.ndarray          # (N,px,px,3) uint8 (or JpegImages)
    glab: np.ndarray          # (N,4,8,8) int64: colour, kind, side, digit labels of the global view
    objs: np.ndarray          # (N,MAX_OBJ,13) int64 object table (see _obj_row)
    omask: np.ndarray         # (N,MAX_OBJ,8,8) bool grounding masks
    crops: np.ndarray         # (M,px,px,3) uint8 (or JpegImages)
    clab: np.ndarray          # (M,4,8,8) int64
    cmeta: np.ndarray         # (M,4) int64: scene index, object slot (-1 none), crop kind, code-in-crop flag
    tiles: object = None      # (N*hd_grid^2) HD tiles, scene-major (JpegImages), or None

    def __len__(self):
        return len(self.glob)


def _obj_row(o: S.SceneObject) -> list[int]:
    digits = [int(c) for c in o.text] if o.text else [-1] * S.CODE_LEN
    return [1, KIND_IDS[o.kind], COLOR_IDS[o.color], SIDE_IDS[o.side], *o.box, *digits,
            int(o.readable_global), int(o.char_px or 0)]


def render_scene(seed: int, index: int, crops_per_sign: int = 3, geo: Geometry = V1):
    """Everything the pool keeps from one scene (JPEG q95 round trip as in the written dataset)."""
    scene = S.make_scene(seed, index, geo.scene)
    buf = io.BytesIO()
    scene.image.save(buf, format="JPEG", quality=95)
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    rng = np.random.default_rng([seed, index, 7])
    n = geo.scene_px
    eff = geo.scene.global_px           # effective resolution the digit labels are judged at
    g = resize(img, px=geo.px)
    gl = patch_labels(scene.objects, geo.full, digits_min_px=geo.scene.readable_px - 0.5, eff_px=eff)
    objs = scene.objects[:MAX_OBJ]
    rows = [_obj_row(o) for o in objs]
    masks = [object_mask(o) for o in objs]
    crops, clabs, cmeta = [], [], []

    def add(box, slot, kind):
        box = tuple(int(v) for v in box)
        lab = patch_labels(scene.objects, box, digits_min_px=3.0, eff_px=eff)
        in_crop = 0
        if slot >= 0 and objs[slot].kind == "sign":
            o = objs[slot]
            inside = all(box[0] <= cb[0] and cb[2] <= box[2] and box[1] <= cb[1] and cb[3] <= box[3]
                         for cb in o.char_boxes)
            in_crop = int(inside and o.char_px * eff / (box[2] - box[0]) >= 3.0)
        crops.append(resize(img, box, geo.px))
        clabs.append(np.stack([lab[k] for k in ("color", "kind", "side", "digit")]))
        cmeta.append([index, slot, kind, in_crop])

    for slot, o in enumerate(objs):
        if o.kind == "sign":
            for k in range(crops_per_sign):
                add(search_box(rng, o, exact=k < crops_per_sign - 1, geo=geo), slot, 0)
            add(oracle_box(o, geo=geo), slot, 1)
            add(oracle_box(o, pad=int(rng.uniform(0.3, 1.0) * geo.box_pad_px), geo=geo), slot, 2)
        else:
            add(search_box(rng, o, geo=geo), slot, 3)
    side = rng.uniform(96, 320) * n / S.SCENE_PX
    add(_clamp_square(rng.uniform(0, n), rng.uniform(0, n), side, n), -1, 4)
    tiles = [resize(img, t, geo.px) for t in hd_tiles(geo.hd_grid, n)] if geo.hd_grid else []
    return (g, np.stack([gl[k] for k in ("color", "kind", "side", "digit")]), rows, masks, crops, clabs, cmeta,
            tiles)


def build_pool(seed: int, start: int, n: int, progress: bool = True, geo: Geometry = V1) -> Pool:
    G, GL, OB, OM, C, CL, CM, T = [], [], [], [], [], [], [], []
    for i in tqdm(range(start, start + n), desc=f"pool {start}", disable=not progress, mininterval=10):
        g, gl, rows, masks, crops, clabs, cmeta, tiles = render_scene(seed, i, geo=geo)
        ob = np.zeros((MAX_OBJ, 13), np.int64)
        ob[:len(rows)] = rows
        om = np.zeros((MAX_OBJ, geo.grid, geo.grid), bool)
        om[:len(masks)] = masks
        G.append(g); GL.append(gl); OB.append(ob); OM.append(om)
        T.extend(tiles)
        for c, cl, cm in zip(crops, clabs, cmeta):
            C.append(c); CL.append(cl); CM.append(cm)
    if geo.store_jpeg_q is not None:
        q = geo.store_jpeg_q
        glob, crops = JpegImages.encode(G, q), JpegImages.encode(C, q)
        tiles = JpegImages.encode(T, q) if T else None
    else:
        glob, crops, tiles = np.stack(G), np.stack(C), None
    return Pool(glob, np.stack(GL), np.stack(OB), np.stack(OM), crops, np.stack(CL),
                np.asarray(CM, np.int64), tiles)


def _pool_arrays(pool: Pool) -> dict[str, np.ndarray]:
    out = {}
    for k, v in pool.__dict__.items():
        if isinstance(v, JpegImages):
            out[f"{k}_jpg"], out[f"{k}_off"], out[f"{k}_px"] = v.buf, v.off, np.asarray(v.px)
        elif v is not None:
            out[k] = v
    return out


def save_pool(pool: Pool, path: Path) -> None:
    """Write a shard atomically (readers never see half a file)."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".partial.npz")
    np.savez(tmp, **_pool_arrays(pool))
    os.replace(tmp, path)


def ensure_shard(path: Path, seed: int, start: int, n: int, wait_s: float = 0.0, geo: Geometry = V1) -> Path:
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
    save_pool(build_pool(seed, start, n, geo=geo), path)
    return path


def _images(p, key):
    if f"{key}_jpg" in p.files:
        return JpegImages(p[f"{key}_jpg"], p[f"{key}_off"], int(p[f"{key}_px"]))
    return p[key] if key in p.files else None


def load_pools(paths) -> Pool:
    parts = [np.load(p) for p in paths]
    off, cm = 0, []
    for p in parts:
        m = p["cmeta"].copy()
        m[:, 0] = m[:, 0] - m[:, 0].min() + off if len(m) else m[:, 0]
        # scene indices are global per shard start; re-base them onto the concatenated arrays
        off += len(p["glab"])
        cm.append(m)

    def cat(key):
        xs = [_images(p, key) for p in parts]
        if xs[0] is None:
            return None
        return JpegImages.concat(xs) if isinstance(xs[0], JpegImages) else np.concatenate(xs)
    return Pool(cat("glob"), *(np.concatenate([p[k] for p in parts]) for k in ("glab", "objs", "omask")),
                cat("crops"), np.concatenate([p["clab"] for p in parts]), np.concatenate(cm), cat("tiles"))


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Render a training-pool shard.")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--out", required=True)
    ap.add_argument("--geometry", choices=sorted(GEOMETRIES), default="v1")
    a = ap.parse_args()
    save_pool(build_pool(a.seed, a.start, a.n, geo=GEOMETRIES[a.geometry]), Path(a.out))
