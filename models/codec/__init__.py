"""Progressive visual-token codecs (issue 7): `pca_levels` (default) and `nested_ae`.

See models/codec/base.py for the interface and the level payload format.
"""

from edgevlm.models.codec.base import Codec, CodecError, load_codec
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


__all__ = ["CODECS", "DEFAULT_CODEC", "Codec", "CodecError", "NestedAE", "PcaLevels", "load_codec", "make_codec"]
