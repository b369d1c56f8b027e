"""JPEG byte sizes with Pillow, at fixed documented settings, for the trace's *_jpeg_bytes columns.

Settings (JPEG_SETTINGS, recorded in trace metadata): RGB (alpha dropped, palette/greyscale
converted), baseline (not progressive), 4:2:0 chroma subsampling, no optimize pass, no EXIF/ICC
metadata, libjpeg's standard quantisation tables scaled by `quality`. The size is the length of the
complete JPEG file Pillow writes, headers included, i.e. what an edge device would send.
"""

from __future__ import annotations

import io
from typing import Sequence

from PIL import Image

DEFAULT_QUALITIES = (10, 25, 50, 75, 95)
JPEG_SETTINGS = {"library": "Pillow", "mode": "RGB", "subsampling": "4:2:0", "progressive": False,
                 "optimize": False, "metadata": "none"}


def to_rgb(image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB (alpha composited on white, so transparent areas are deterministic)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return image.convert("RGB")


def jpeg_encode(image: Image.Image, quality: int) -> bytes:
    """The JPEG file `image` encodes to at `quality` (1..95 useful, 100 allowed), at JPEG_SETTINGS."""
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be an integer in 1..100, got {quality!r}")
    buf = io.BytesIO()
    to_rgb(image).save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False,
                       progressive=False)
    return buf.getvalue()


def jpeg_bytes(image: Image.Image, quality: int) -> int:
    """Size in bytes of `image` encoded as JPEG at `quality` (1..95 useful, 100 allowed)."""
    return len(jpeg_encode(image, quality))


def jpeg_round_trip(image: Image.Image, quality: int | None) -> Image.Image:
    """What a receiver decodes after `image` is sent as JPEG at `quality` (None: the image itself)."""
    if quality is None:
        return image
    with Image.open(io.BytesIO(jpeg_encode(image, quality))) as im:
        return im.convert("RGB")


def jpeg_sizes(image: Image.Image, qualities: Sequence[int] = DEFAULT_QUALITIES) -> list[int]:
    """JPEG sizes in bytes at each quality, in the order given."""
    rgb = to_rgb(image)
    return [jpeg_bytes(rgb, q) for q in qualities]
