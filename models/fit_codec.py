"""Fit a progressive codec on a LLaVA checkpoint's vision tokens over a calibration manifest, and save it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from edgevlm.models.backend import load_backend
from edgevlm.models.codec import Codec, CodecError, make_codec
from edgevlm.models.progressive import projector, vision_tokens


def calibration_tokens(backend, samples: Sequence[Any], batch: int = 16, progress: bool = True) -> np.ndarray:
    """Projector-input tokens of every distinct calibration image, stacked to (N, d_vision)."""

    from edgevlm.models.extract import RESAMPLE, load_image  # defers PIL

    px = backend.vision_input_px
    paths = list(dict.fromkeys(s.image_path for s in samples))
    by_path = {s.image_path: s for s in samples}
    out = []
    for k in tqdm(range(0, len(paths), batch), desc="calibration", unit="batch", disable=not progress):
        imgs = [load_image(by_path[p]).resize((px, px), RESAMPLE) for p in paths[k:k + batch]]
        toks = vision_tokens(backend, imgs)
        out.append(toks.reshape(-1, toks.shape[-1]))
    return np.concatenate(out, axis=0)


def fit_codec_on_manifest(model: str, samples: Sequence[Any], kind: str, config: dict[str, Any], out: Path,
                          *, device: str = "cpu", limit: int | None = None, manifest: str = "") -> Codec:

    if limit is not None:
        if limit < 1:
            raise CodecError(f"--limit must be a positive integer, got {limit}")
        samples = list(samples)[:limit]
    backend = load_backend(model, device=device)
    projector(backend)
    codec = make_codec(kind, **config)
    x = calibration_tokens(backend, samples)
    codec.fit(x)
    codec.fit_info.update({"calibration_manifest": str(manifest), "calibration_images": len(
        {s.image_path for s in samples}), "model_id": backend.model_id})
    codec.save(out)
    return codec
