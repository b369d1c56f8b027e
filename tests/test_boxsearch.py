"""ViCrop box search on hand-made attention maps."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevlm.models.boxsearch import box_around, search_box


def _contains(box, x, y):
    return box.x0 <= x < box.x1 and box.y0 <= y < box.y1


def _cell_centre(i, j, grid, w, h):
    return (j + 0.5) * w / grid[1], (i + 0.5) * h / grid[0]


@pytest.mark.parametrize("cell", [(0, 0), (23, 23), (5, 17), (12, 2)])
def test_single_hot_cell_is_inside_the_box(cell):
    att = np.full((24, 24), 1.0)
    att[cell] = 50.0
    w, h = 1344, 1008
    box = search_box(att, w, h, 336)
    assert _contains(box, *_cell_centre(*cell, att.shape, w, h))
    assert box.x1 - box.x0 < w and box.y1 - box.y0 < h      # a real crop, not the whole image


def test_two_blobs_give_the_stronger_one():
    att = np.ones((24, 24))
    att[3:6, 3:6] = 5.0       # weaker, top-left
    att[17:20, 16:19] = 9.0   # stronger, bottom-right
    w = h = 1600
    box = search_box(att, w, h, 336)
    assert _contains(box, *_cell_centre(18, 17, att.shape, w, h))
    assert not _contains(box, *_cell_centre(4, 4, att.shape, w, h))


def test_uniform_map_gives_centred_box():
    att = np.ones((24, 24))
    for w, h in [(1000, 1000), (1200, 700), (640, 1500)]:
        box = search_box(att, w, h, 336)
        cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        assert abs(cx - w / 2) <= w / 24 and abs(cy - h / 2) <= h / 24


def test_box_side_is_a_searched_ratio_and_pad_grows_it():
    att = np.ones((24, 24))
    att[10, 10] = 30
    box = search_box(att, 2000, 2000, 336)
    assert box.ratio in (1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
    assert box.x1 - box.x0 == pytest.approx(box.ratio * 336, abs=1)
    padded = search_box(att, 2000, 2000, 336, pad_px=20)
    assert padded.x1 - padded.x0 == pytest.approx(box.ratio * 336 + 40, abs=1)
    frac = search_box(att, 2000, 2000, 336, pad_px=20, pad_frac=0.25)
    assert frac.x1 - frac.x0 == pytest.approx(box.ratio * 336 * 1.5 + 40, abs=1)


def test_small_image_returns_whole_image():
    box = search_box(np.random.default_rng(0).random((24, 24)), 300, 200, 336)
    assert box.as_tuple() == (0, 0, 300, 200)


def test_contrast_prefers_the_ratio_that_fits_the_blob():
    # A 10x10-cell blob: a window of about that size (r ~ 2 for 48-cell grid on 3360 px) wins.
    att = np.ones((48, 48))
    att[10:20, 25:35] = 10.0
    box = search_box(att, 3360, 3360, 336)
    assert box.ratio == 2.0


def _large_sign_map():
    """An 8x8 map on a 768-px image (64-px input: every window is one 96-px cell) with a 4x2-cell blob."""
    att = np.zeros((8, 8))
    att[3:5, 2:6] = 0.3
    att[3, 3] = 1.0
    att[0, 7] = 0.04          # below the grow threshold, not joined
    return att


def test_grow_covers_the_attended_object():
    att = _large_sign_map()
    plain = search_box(att, 768, 768, 64, pad_px=72)
    assert plain.as_tuple() == (232, 232, 440, 440)        # 64-px window on the peak cell (centre 336) + 72 px
    grown = search_box(att, 768, 768, 64, pad_px=72, grow=0.05)
    # cells 2..5 across (192..576 px) and 3..4 down (288..480 px), plus the pad
    assert grown.as_tuple() == (192 - 72, 288 - 72, 576 + 72, 480 + 72)
    # cells below the threshold or not joined to the window stay out
    assert search_box(att, 768, 768, 64, grow=0.5).as_tuple() == (304, 304, 368, 368)
    assert grown.x1 < 7 * 96


def test_grow_min_cells_keeps_small_objects_tight():
    att = np.zeros((8, 8))
    att[3, 3], att[3, 4] = 1.0, 0.6       # a 2-cell blob (a small sign across a cell edge)
    tight = search_box(att, 768, 768, 64, pad_px=72, grow=0.05, grow_min_cells=3)
    assert tight.as_tuple() == search_box(att, 768, 768, 64, pad_px=72).as_tuple()
    loose = search_box(att, 768, 768, 64, pad_px=72, grow=0.05, grow_min_cells=2)
    assert (loose.x0, loose.x1) == (288 - 72, 480 + 72)
    big = search_box(_large_sign_map(), 768, 768, 64, pad_px=72, grow=0.05, grow_min_cells=3)
    assert big.x1 - big.x0 == 4 * 96 + 144


def test_bad_grow_raises():
    with pytest.raises(ValueError, match="grow"):
        search_box(np.ones((4, 4)), 100, 100, 10, grow=1.5)
    with pytest.raises(ValueError, match="grow_min_cells"):
        search_box(np.ones((4, 4)), 100, 100, 10, grow=0.1, grow_min_cells=0)


def test_bad_maps_raise():
    with pytest.raises(ValueError):
        search_box(np.ones(5), 100, 100, 50)
    with pytest.raises(ValueError):
        search_box(np.array([[np.nan, 1.0]]), 100, 100, 50)


@settings(max_examples=150, deadline=None)
@given(st.integers(4, 30), st.integers(4, 30), st.integers(20, 3000), st.integers(20, 3000),
       st.integers(8, 600), st.integers(0, 80), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_boxes_never_leave_the_image(gh, gw, w, h, px, pad, frac, seed):
    att = np.random.default_rng(seed).random((gh, gw)) ** 4
    box = search_box(att, w, h, px, pad_px=pad, pad_frac=frac)
    assert 0 <= box.x0 < box.x1 <= w and 0 <= box.y0 < box.y1 <= h
    grown = search_box(att, w, h, px, pad_px=pad, pad_frac=frac, grow=0.3)
    assert 0 <= grown.x0 < grown.x1 <= w and 0 <= grown.y0 < grown.y1 <= h
    if box.ratio is not None and box.x1 - box.x0 < w and box.y1 - box.y0 < h:
        # growing never shrinks the box
        assert grown.x1 - grown.x0 >= box.x1 - box.x0 and grown.y1 - grown.y0 >= box.y1 - box.y0


@settings(max_examples=100, deadline=None)
@given(st.integers(50, 2000), st.integers(50, 2000), st.integers(0, 1999), st.integers(0, 1999),
       st.integers(1, 300), st.integers(1, 300))
def test_oracle_box_covers_gt_and_stays_inside(w, h, x0, y0, bw, bh):
    x0, y0 = min(x0, w - 1), min(y0, h - 1)
    x1, y1 = min(x0 + bw, w), min(y0 + bh, h)
    box = box_around((x0, y0, x1, y1), w, h, 224)
    assert 0 <= box.x0 < box.x1 <= w and 0 <= box.y0 < box.y1 <= h
    assert box.x0 <= x0 + 1 and box.x1 >= x1 - 1 and box.y0 <= y0 + 1 and box.y1 >= y1 - 1
