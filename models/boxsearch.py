"""ViCrop-style crop box search on a relative-attention map (one value per visual-token cell).

The map covers the vision input, which is the original image resized (without keeping the aspect
ratio) to a square of `vision_input_px`; cell (i, j) therefore covers original pixels
[j*W/gw, (j+1)*W/gw) x [i*H/gh, (i+1)*H/gh).

For each ratio r in `ratios` (default 1.0, 1.2, ..., 2.0) the window side is r * vision_input_px
original pixels, i.e. round(side * gw / W) x round(side * gh / H) cells (clamped to the grid).
Windows slide one cell at a time and are scored by the sum of attention inside them. The contrast of
r is (best window sum - mean of the sums of its one-cell-shifted neighbours (up, down, left, right,
those that fit in the grid)) / window area in cells; a window that fills the grid has contrast 0.
The r with the highest contrast wins (ties: the smaller r). The box is the window side (plus
`pad_px + pad_frac * side` on every side) centred on the winning window, shifted inside the image and cut to the
image where it is larger. If the smallest window already covers the whole image, the box is the
whole image.

`grow` > 0 (off by default, as ViCrop) lets the box grow with the attended object: cells outside the
winning window whose attention is at least `grow` x the map's maximum and that connect (8-neighbour)
to the window join it, and the box becomes the bounding box of the window and those cells (then the
pad), provided that region spans at least `grow_min_cells` cells across or down; a smaller region
keeps the window box, so small objects keep the tight ViCrop box. The window search alone cannot do this when a window rounds to fewer cells than the object
covers, e.g. a 64-px encoder on a 768-px image, where every ViCrop window is one attention cell.

Ties between equally scored windows go to the tied window nearest the centroid of all tied
windows: a blob wider than the window gets a window centred on it (not one at its edge, which would
inflate the contrast), and a uniform map gives a centred box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

DEFAULT_RATIOS = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0)


@dataclass(frozen=True)
class Box:
    """A crop box in original-image pixels, half-open: [x0, x1) x [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int
    ratio: float | None = None       # winning r; None when the whole image was returned
    contrast: float = 0.0

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)


def _window_sums(att: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """Sums of every kh x kw window (valid positions), via an integral image."""
    ii = np.zeros((att.shape[0] + 1, att.shape[1] + 1), dtype=np.float64)
    ii[1:, 1:] = att.cumsum(0).cumsum(1)
    return ii[kh:, kw:] - ii[:-kh, kw:] - ii[kh:, :-kw] + ii[:-kh, :-kw]


def _best_window(sums: np.ndarray) -> tuple[int, int]:
    """Index of the max window sum; near-ties go to the tied window nearest the centroid of the ties."""
    best = sums.max()
    tol = 1e-9 * max(abs(best), 1e-300)
    cand = np.argwhere(sums >= best - tol)
    centre = cand.mean(axis=0)
    d2 = ((cand - centre) ** 2).sum(axis=1)
    i, j = cand[int(np.argmin(d2))]
    return int(i), int(j)


def _place(centre: float, side: float, limit: int) -> tuple[int, int]:
    """An interval of length `side` centred at `centre`, shifted inside [0, limit] and cut to it."""
    side = min(side, float(limit))
    lo = centre - side / 2
    lo = min(max(lo, 0.0), limit - side)
    a = int(round(lo))
    b = int(round(lo + side))
    a, b = max(a, 0), min(b, limit)
    if b <= a:                         # degenerate only for sub-pixel sides
        b = min(a + 1, limit)
        a = b - 1
    return a, b


def search_box(rel_att, image_w: int, image_h: int, vision_input_px: int, *,
               ratios=DEFAULT_RATIOS, pad_px: int = 0, pad_frac: float = 0.0, grow: float = 0.0,
               grow_min_cells: int = 1) -> Box:
    """Find the crop box (original pixels) for a relative-attention map of shape (gh, gw)."""
    att = np.asarray(rel_att, dtype=np.float64)
    if att.ndim != 2 or att.size == 0:
        raise ValueError(f"attention map must be 2-D and non-empty, got shape {att.shape}")
    if not np.isfinite(att).all():
        raise ValueError("attention map has NaN or infinite values")
    if image_w <= 0 or image_h <= 0 or vision_input_px <= 0:
        raise ValueError("image_w, image_h and vision_input_px must be positive")
    if pad_px < 0 or pad_frac < 0:
        raise ValueError(f"pad_px and pad_frac must be >= 0, got {pad_px}, {pad_frac}")
    if not 0 <= grow <= 1:
        raise ValueError(f"grow must lie in [0, 1], got {grow}")
    if grow_min_cells < 1:
        raise ValueError(f"grow_min_cells must be >= 1, got {grow_min_cells}")
    ratios = sorted(float(r) for r in ratios)
    if not ratios or ratios[0] <= 0:
        raise ValueError("ratios must be a non-empty list of positive numbers")
    gh, gw = att.shape
    if ratios[0] * vision_input_px >= image_w and ratios[0] * vision_input_px >= image_h:
        return Box(0, 0, int(image_w), int(image_h))
    cell_w, cell_h = image_w / gw, image_h / gh

    best = None
    for r in ratios:
        side = r * vision_input_px
        kw = int(min(max(round(side / cell_w), 1), gw))
        kh = int(min(max(round(side / cell_h), 1), gh))
        sums = _window_sums(att, kh, kw)
        i, j = _best_window(sums)
        neigh = [sums[a, b] for a, b in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1))
                 if 0 <= a < sums.shape[0] and 0 <= b < sums.shape[1]]
        contrast = (sums[i, j] - float(np.mean(neigh))) / (kh * kw) if neigh else 0.0
        if best is None or contrast > best[0] + 1e-12 * max(abs(best[0]), 1e-300):
            best = (contrast, r, i, j, kh, kw)
    contrast, r, i, j, kh, kw = best
    side = r * vision_input_px
    cx, cy = (j + kw / 2) * cell_w, (i + kh / 2) * cell_h
    w = h = side
    if grow > 0:
        cells = _grown_cells(att, grow, i, j, kh, kw)
        if cells is not None and max(cells[1][0] - cells[0][0], cells[1][1] - cells[0][1]) >= grow_min_cells:
            (ci0, cj0), (ci1, cj1) = cells
            x0, x1 = min(cx - side / 2, cj0 * cell_w), max(cx + side / 2, cj1 * cell_w)
            y0, y1 = min(cy - side / 2, ci0 * cell_h), max(cy + side / 2, ci1 * cell_h)
            cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    pad = pad_px + pad_frac * side
    x0, x1 = _place(cx, w + 2 * pad, int(image_w))
    y0, y1 = _place(cy, h + 2 * pad, int(image_h))
    return Box(x0, y0, x1, y1, ratio=r, contrast=float(contrast))


def _grown_cells(att: np.ndarray, grow: float, i: int, j: int, kh: int, kw: int):
    """Cell bounds [(i0, j0), (i1, j1)) of the window plus the above-threshold cells joined to it; None if none join."""
    peak = att.max()
    if peak <= 0:
        return None
    mask = att >= grow * peak
    win = np.zeros_like(mask)
    win[i:i + kh, j:j + kw] = True
    labels, _ = ndimage.label(mask | win, structure=np.ones((3, 3), dtype=bool))
    keep = np.isin(labels, np.unique(labels[win])) & mask & ~win
    if not keep.any():
        return None
    ys, xs = np.nonzero(keep | win)
    return (int(ys.min()), int(xs.min())), (int(ys.max()) + 1, int(xs.max()) + 1)


def box_around(box: tuple[float, float, float, float], image_w: int, image_h: int, min_side_px: int,
               pad_px: int = 0, pad_frac: float = 0.0) -> Box:
    """A box centred on `box` with each side at least `min_side_px` (plus pad), inside the image.

    Used for the oracle crop: the ground-truth box, grown to the smallest search window.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    w = max(x1 - x0, float(min_side_px))
    h = max(y1 - y0, float(min_side_px))
    w += 2 * (pad_px + pad_frac * w)
    h += 2 * (pad_px + pad_frac * h)
    ax0, ax1 = _place((x0 + x1) / 2, w, int(image_w))
    ay0, ay1 = _place((y0 + y1) / 2, h, int(image_h))
    return Box(ax0, ay0, ax1, ay1)
