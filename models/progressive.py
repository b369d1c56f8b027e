"""Progressive extraction: per level, decode the codec's visual tokens and run the unchanged LLM on them.

The codec works on the vision-encoder output before the projector (for LLaVA: the selected
vision-tower hidden states, the input of `multi_modal_projector`), so the edge runs the vision
tower and the codec encoder, and the server runs the projector and the LLM. Extraction emulates
that with two forward hooks on the projector: `capture` records its input (the tokens to encode),
`substitute` swaps its input for the decoded tokens, so `backend.generate` runs unchanged.

Per sample and level l = 1..L the trace gets (DESIGN.md §2):
  prog_bytes[l]        cumulative payload bytes of levels 1..l (the real encoded lengths);
  prog_score[l]        the answer's score when the LLM sees the tokens decoded from levels 1..l;
  prog_min_entropy[l]  the mean min-entropy (bits) over that answer's generated tokens.
The edge cost goes in the trace metadata: `edge_vision_flops` (vision tower up to the feature
layer, per image; formula in `vision_encoder_flops`) and `edge_codec_encode_flops`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np

from edgevlm.models.backend import BackendError, VLMBackend
from edgevlm.models.codec import Codec
from edgevlm.models.scoring import score_answer
from edgevlm.models.uncertainty import token_uncertainty


def projector(backend: VLMBackend):
    """The module whose input is the visual-token stream the codec carries; BackendError if unsupported."""
    model = getattr(backend, "model", None)
    mod = getattr(getattr(model, "model", None), "multi_modal_projector", None)
    if backend.name != "llava" or mod is None:
        raise BackendError(f"--progressive supports LLaVA checkpoints (HF LlavaForConditionalGeneration); "
                           f"backend {backend.name!r} has no separate projector to cut at")
    return mod


@contextlib.contextmanager
def capture(backend: VLMBackend) -> Iterator[list]:
    """Record every projector input, as float32 numpy arrays (n_images, n_tokens, d_vision)."""
    seen: list[np.ndarray] = []

    def hook(module, args):
        seen.append(args[0].detach().float().cpu().numpy())

    handle = projector(backend).register_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


@contextlib.contextmanager
def substitute(backend: VLMBackend, tokens: np.ndarray) -> Iterator[None]:
    """Replace the projector input of a one-image prompt by `tokens` (n_tokens, d_vision)."""
    import torch  # defers torch

    def hook(module, args):
        x = args[0]
        if x.shape[0] != 1 or tuple(x.shape[1:]) != tuple(tokens.shape):
            raise RuntimeError(f"projector input {tuple(x.shape)} does not match decoded tokens {tokens.shape}")
        return (torch.as_tensor(tokens, dtype=x.dtype, device=x.device)[None],) + tuple(args[1:])

    handle = projector(backend).register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def vision_tokens(backend: VLMBackend, images: Sequence[Any]) -> np.ndarray:
    """Projector-input tokens of each image (already at the vision input size): (n_images, n_tokens, d).

    The backend caches projected features per image, so the cache is cleared around the pass:
    the projector must really run for the capture hook to see its input.
    """
    backend.clear_cache()
    try:
        with capture(backend) as seen:
            backend.image_features(list(images))
    finally:
        backend.clear_cache()
    return np.concatenate(seen, axis=0)


def generate_from_tokens(backend: VLMBackend, tokens: np.ndarray, image: Any, question: str):
    """The answer to `question` when the server receives `tokens` as the image's projector input.

    Projected features are computed at encode time (and cached per image), so the tokens must
    replace the projector input while encoding, with no stale cache entry on either side.
    """
    backend.clear_cache()
    try:
        with substitute(backend, tokens):
            enc = backend.encode([image], question)
        return backend.generate(enc)
    finally:
        backend.clear_cache()


def progressive_row(backend: VLMBackend, codec: Codec, image: Any, question: str, answers: Sequence[str],
                    scoring: str, tokens: np.ndarray | None = None) -> dict[str, list]:
    """prog_bytes / prog_score / prog_min_entropy for one global image and question."""
    if tokens is None:
        tokens = vision_tokens(backend, [image])[0]
    levels = codec.encode(tokens)
    cum, scores, ents = 0, [], []
    prog_bytes = []
    for lvl in range(1, len(levels) + 1):
        cum += len(levels[lvl - 1])
        gen = generate_from_tokens(backend, codec.decode(levels[:lvl]), image, question)
        min_ent, _, _ = token_uncertainty(gen.logits)
        prog_bytes.append(int(cum))
        scores.append(float(score_answer(gen.text, answers, scoring)))
        ents.append(float(np.mean(min_ent)))
    return {"prog_bytes": prog_bytes, "prog_score": scores, "prog_min_entropy": ents}


def vision_encoder_flops(vision_config, feature_layer: int | None = None) -> int:
    """FLOPs (2 x multiply-adds) of a ViT (CLIP/SigLIP) forward for one image, up to `feature_layer`.

    Per layer on n tokens of width d with MLP width i: QKV and output projections 8nd^2, MLP 4ndi,
    attention scores and weighted sum 4n^2d (for i = 4d this is the 24nd^2 + 4n^2d of DESIGN.md §7);
    plus the patch embedding 2 * patches * 3p^2 * d. Norms, softmax and biases are left out.
    feature_layer follows HF hidden_states indexing (-1: last layer, -2: the one before, k >= 0: after
    k layers); None runs every layer.
    """
    d, i, p = vision_config.hidden_size, vision_config.intermediate_size, vision_config.patch_size
    total_layers = vision_config.num_hidden_layers
    patches = (vision_config.image_size // p) ** 2
    has_cls = getattr(vision_config, "model_type", "") in ("clip_vision_model", "clip")
    n = patches + (1 if has_cls else 0)
    if feature_layer is None:
        layers = total_layers
    else:
        layers = feature_layer if feature_layer >= 0 else total_layers + 1 + feature_layer
    if not 0 <= layers <= total_layers:
        raise BackendError(f"vision_feature_layer {feature_layer} is outside 0..{total_layers}")
    per_layer = 8 * n * d * d + 4 * n * d * i + 4 * n * n * d
    return int(2 * patches * 3 * p * p * d + layers * per_layer)


def edge_metadata(backend: VLMBackend, codec: Codec) -> dict[str, Any]:
    """Trace-provenance facts of the progressive edge: vision FLOPs, codec cost and description."""
    cfg = backend.model.config
    n_tokens = vision_tokens_count(backend)
    return {
        "edge_vision_flops": vision_encoder_flops(cfg.vision_config, cfg.vision_feature_layer),
        "edge_codec_encode_flops": codec.encode_flops(n_tokens),
        "progressive": {**codec.describe(), "n_tokens": n_tokens,
                        "cut": "vision-encoder output before the projector (projector and LLM run server-side)"},
    }


def vision_tokens_count(backend: VLMBackend) -> int:
    return int(backend._tokens_per_image()) if hasattr(backend, "_tokens_per_image") else backend.visual_tokens_per_image
