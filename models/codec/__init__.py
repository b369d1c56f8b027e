"""Progressive visual-token codecs (issue 7): `pca_levels` (default) and `nested_ae`.

See models/codec/base.py for the interface and the level payload format.
"""

import json
from pathlib import Path

import numpy as np

from edgevlm.models.codec.base import CODEC_FORMAT, JSON_NAME, NPZ_NAME, Codec, CodecError
from edgevlm.models.codec.nested_ae import NestedAE
from edgevlm.models.codec.pca import PcaLevels

#: Registry: codec kind -> class.
CODECS = {PcaLevels.kind: PcaLevels, NestedAE.kind: NestedAE}
DEFAULT_CODEC = PcaLevels.kind


def make_codec(kind: str = DEFAULT_CODEC, **config) -> Codec:
    """An unfitted codec of `kind` with its config; CodecError names bad kinds."""
    if kind not in CODECS:
        raise CodecError(f"codec kind {kind!r} must be one of {', '.join(CODECS)}")
    return CODECS[kind](**config)


def load_codec(directory: str | Path) -> Codec:
    """A fitted codec from a directory written by Codec.save."""
    d = Path(directory)
    jp, npz = d / JSON_NAME, d / NPZ_NAME
    if not jp.is_file() or not npz.is_file():
        raise CodecError(f"--codec {d}: expected {JSON_NAME} and {NPZ_NAME} there (write them with "
                         f"`edgevlm trace fit-codec`)")
    try:
        meta = json.loads(jp.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CodecError(f"{jp}: not readable JSON ({exc})") from None
    if meta.get("codec_format") != CODEC_FORMAT:
        raise CodecError(f"{jp}: codec_format {meta.get('codec_format')!r} is not supported (this build: {CODEC_FORMAT})")
    kind = meta.get("kind")
    if kind not in CODECS:
        raise CodecError(f"{jp}: kind {kind!r} must be one of {', '.join(CODECS)}")
    codec = CODECS[kind]._from_meta(meta)
    with np.load(npz) as f:
        codec._set_arrays({k: f[k] for k in f.files})
    codec.d = int(meta["d_vision"])
    codec.group_sizes = [int(s) for s in meta["group_sizes"]]
    codec.fit_info = dict(meta.get("fit", {}))
    return codec


__all__ = ["CODECS", "DEFAULT_CODEC", "Codec", "CodecError", "NestedAE", "PcaLevels", "load_codec", "make_codec"]
