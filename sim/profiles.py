"""Model, hardware and edge-device profiles: the figures that turn trace rows into seconds and FLOPs.

Sources (DESIGN.md §7): LLaVA-1.5 (Liu et al., 2023, "Improved Baselines with Visual Instruction
Tuning"): 7B d=4096, L=32, 13B d=5120, L=40, 576 visual tokens at 336 px. NXP i.MX95 data sheet:
6x Cortex-A55 and a 2 TOPS INT8 NPU.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt


class ModelProfile(BaseModel):
    """A served VLM: the transformer shape for eq. FLOPs(n) and the visual tokens per image."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    d_model: PositiveInt
    n_layers: PositiveInt
    params_b: PositiveFloat = Field(description="parameters, billions")
    visual_tokens: PositiveInt = Field(description="visual tokens per image at the native resolution")
    vision_px: PositiveInt

    def flops(self, n_tokens: int | float) -> float:
        """FLOPs(n) = (24·n·d² + 4·n²·d)·L, the paper's per-pass transformer cost (eq. 17)."""
        d = self.d_model
        return (24.0 * n_tokens * d * d + 4.0 * n_tokens * n_tokens * d) * self.n_layers


class EdgeProfile(BaseModel):
    """Edge-side image handling times: resize + JPEG-encode the global view, crop + encode the detail."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prep_s: float = Field(ge=0, description="resize the frame to the vision input and JPEG-encode it")
    crop_s: float = Field(ge=0, description="crop the full-resolution original and JPEG-encode it")


MODELS: dict[str, ModelProfile] = {
    "llava-1.5-7b": ModelProfile(d_model=4096, n_layers=32, params_b=7.06, visual_tokens=576, vision_px=336),
    "llava-1.5-13b": ModelProfile(d_model=5120, n_layers=40, params_b=13.35, visual_tokens=576, vision_px=336),
}

# i.MX95: a 12 MP frame resized and encoded with libjpeg-turbo on the Cortex-A55 cores takes tens of ms;
# the crop is a smaller resize. These are estimates to be replaced by calibration (testbed issue).
EDGES: dict[str, EdgeProfile] = {
    "imx95": EdgeProfile(prep_s=0.025, crop_s=0.015),
    "ideal": EdgeProfile(prep_s=0.0, crop_s=0.0),
}
