"""What the progressive protocol costs (issue 20): the edge's vision tower + codec, and token passes.

The codec cuts at the projector input (models/progressive.py): the edge runs the simulated model's
vision tower and the codec encoder; the server receives codec levels, decodes them to
(vision_tower_tokens x vision_width) tokens, runs the projector and the LLM. So a server pass on a
token payload has NO vision encode: its Job has `images = 0` and `pre_flops` = decoder + projector.

Codec FLOPs at the simulated model's scale (the `pca_levels` codec, models/codec): encoding projects
each of the n tokens of width d onto all d principal axes (2·n·d·d, the levels are slices of that);
decoding the first l levels sums their k_l = sum of the group sizes received components back
(2·n·k_l·d), charged here in full (k_l = d), an upper bound that is below 0.01 % of a pass.

Refinement passes recompute the prefill. Every level adds principal components to EVERY visual token,
so after level l+1 arrives all n visual tokens differ from the ones level l gave; their keys and values
in every layer change, and the KV cache of the previous pass cannot be reused (only the text before
the image could be, a few tokens, ignored). Each refinement is therefore a full token pass: decoder,
projector, prefill of visual + prompt tokens, and decode of the answer.

Edge time is the roofline of the edge device's accelerator (sim/profiles.py): max(FLOPs / (peak·mfu),
weight bytes / (bandwidth·efficiency)), for the tower (weights vision_tower_params_b) and the codec
(a d x d matrix of weights) one after the other, after `prep_s` (the resize to the vision input).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgevlm.sim.errors import ConfigError
from edgevlm.sim.latency import Job
from edgevlm.sim.profiles import EdgeProfile, ModelProfile

#: The fields of a model profile the progressive protocol reads.
TOWER_FIELDS = ("vision_tower_tflops", "vision_tower_params_b", "vision_tower_tokens", "vision_width")
#: Bytes per raw token element (float16), for the raw size of the tower output.
RAW_DTYPE_BYTES = 2


def codec_encode_flops(n_tokens: int, width: int) -> float:
    """PCA-levels encoder: project n tokens of width d on all d axes."""
    return 2.0 * n_tokens * width * width


def codec_decode_flops(n_tokens: int, width: int) -> float:
    """PCA-levels decoder with every component received (the upper bound charged for any level)."""
    return 2.0 * n_tokens * width * width


@dataclass(frozen=True)
class ProgressiveCost:
    """The progressive protocol's fixed costs for one (server model, edge device) pair."""

    model: ModelProfile
    edge: EdgeProfile

    def __post_init__(self):
        missing = [f for f in TOWER_FIELDS if getattr(self.model, f) is None]
        if missing:
            raise ConfigError("server.model", f"progressive needs the model's vision tower ({', '.join(missing)} "
                              f"missing in {self.model.name!r}); set them in a custom model profile")

    # ---------------------------------------------------------------- edge

    def _edge_s(self, flops: float, weight_bytes: float) -> float:
        hw = self.edge.hardware
        compute = flops / (hw.peak_tflops * 1e12 * hw.mfu)
        memory = weight_bytes / (hw.mem_bw_gbps * 1e9 * hw.bw_efficiency)
        return compute if compute > memory else memory

    @property
    def tower_flops(self) -> float:
        return self.model.vision_tower_tflops * 1e12

    @property
    def codec_encode_flops(self) -> float:
        return codec_encode_flops(self.model.vision_tower_tokens, self.model.vision_width)

    @property
    def tower_s(self) -> float:
        """The vision tower on the edge accelerator."""
        return self._edge_s(self.tower_flops, self.model.vision_tower_params_b * 1e9 * self.edge.hardware.dtype_bytes)

    @property
    def codec_encode_s(self) -> float:
        """The codec encoder on the edge accelerator (weights: the d x d axes)."""
        d = self.model.vision_width
        return self._edge_s(self.codec_encode_flops, d * d * self.edge.hardware.dtype_bytes)

    @property
    def edge_encode_s(self) -> float:
        """Tower then codec, on the device (after prep_s)."""
        return self.tower_s + self.codec_encode_s

    @property
    def raw_token_bytes(self) -> int:
        """The tower's output in float16: what the codec compresses."""
        return self.model.vision_tower_tokens * self.model.vision_width * RAW_DTYPE_BYTES

    # ---------------------------------------------------------------- server

    @property
    def server_pre_flops(self) -> float:
        """Codec decoder + projector of one token pass (no vision tower)."""
        return codec_decode_flops(self.model.vision_tower_tokens, self.model.vision_width) \
            + self.model.projector_tflops * 1e12

    def token_job(self, prompt_tokens: int, out_tokens: int) -> Job:
        """A server pass on a token payload: decoder + projector, prefill and decode; no vision encode."""
        return Job(1, 0, self.model.visual_tokens, prompt_tokens, out_tokens, self.server_pre_flops)

    def token_pass_flops(self) -> float:
        """Server FLOPs of a token pass as the event log counts them: the LLM's FLOPs(visual tokens), as
        for image passes, plus decoder and projector; no vision-tower FLOPs."""
        return self.model.flops(self.model.visual_tokens) + self.server_pre_flops
