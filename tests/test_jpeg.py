"""JPEG byte sizes with fixed Pillow settings."""

import io

import numpy as np
import pytest
from PIL import Image

from edgevlm.models.jpeg import jpeg_bytes, jpeg_round_trip, jpeg_sizes, to_rgb


def _textured(w=160, h=120, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx ^ yy) & 255], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8))


def test_sizes_are_real_file_lengths_and_grow_with_quality():
    img = _textured()
    sizes = jpeg_sizes(img, [10, 25, 50, 75, 95])
    assert all(b > a for a, b in zip(sizes, sizes[1:]))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=50, subsampling=2, optimize=False, progressive=False)
    assert sizes[2] == len(buf.getvalue())
    assert Image.open(io.BytesIO(buf.getvalue())).size == (160, 120)


def test_deterministic_and_mode_independent():
    img = _textured()
    assert jpeg_sizes(img) == jpeg_sizes(img.copy())
    rgba = img.convert("RGBA")
    assert jpeg_sizes(rgba) == jpeg_sizes(img)        # opaque alpha composites to the same pixels
    assert to_rgb(Image.new("L", (8, 8))).mode == "RGB"


def test_bad_quality_raises():
    with pytest.raises(ValueError, match="quality"):
        jpeg_bytes(_textured(), 0)


def test_round_trip_is_what_a_receiver_decodes():
    img = _textured()
    assert jpeg_round_trip(img, None) is img
    back = jpeg_round_trip(img, 30)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=30, subsampling=2, optimize=False, progressive=False)
    want = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), want)
    err30 = np.abs(np.asarray(back, float) - np.asarray(img, float)).mean()
    err95 = np.abs(np.asarray(jpeg_round_trip(img, 95), float) - np.asarray(img, float)).mean()
    assert 0 < err95 < err30                   # lossy, less so at a higher quality
    with pytest.raises(ValueError, match="quality"):
        jpeg_round_trip(img, 101)
