"""Qwen2.5-VL backend (HF Qwen2_5_VLForConditionalGeneration) at a fixed square input resolution.

As in the seed paper, every image goes in at vision_input_px x vision_input_px (default 224), so
the token count is fixed: (px / patch / merge)^2 per image, 64 for 224 px, patch 14, merge 2. The
image processor is called with min = max pixels = px^2, and the returned grid is checked. The prompt
follows the Qwen chat format with <|vision_start|><|image_pad|>...<|vision_end|> per image.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from edgevlm.models.backend import BackendError, BackendSettings
from edgevlm.models.hf_base import HFBackend

QWEN_TEMPLATE = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                 "<|im_start|>user\n{images}{question}<|im_end|>\n<|im_start|>assistant\n")


class QwenVLBackend(HFBackend):
    name = "qwen2_5_vl"
    model_class_name = "Qwen2_5_VLForConditionalGeneration"
    default_settings = BackendSettings(prompt_template=QWEN_TEMPLATE, image_joiner="", vision_input_px=224)
    batch_position_ids = False      # the model's M-RoPE index reads the padding from the attention mask

    def _check_config(self) -> None:
        vc = self.model.config.vision_config
        factor = vc.patch_size * vc.spatial_merge_size
        if self.vision_input_px % factor:
            raise BackendError(f"vision_input_px {self.vision_input_px} must be a multiple of patch_size x "
                               f"spatial_merge_size = {factor} for this Qwen2.5-VL checkpoint")

    @property
    def vision_input_px(self) -> int:
        return int(self.settings.vision_input_px or 224)

    def visual_grid(self) -> tuple[int, int]:
        vc = self.model.config.vision_config
        g = self.vision_input_px // (vc.patch_size * vc.spatial_merge_size)
        return (g, g)

    def _image_inputs(self, images: Sequence[Any]) -> tuple[dict[str, torch.Tensor], list[int]]:
        px = self.vision_input_px
        out = self.image_processor(images=list(images), return_tensors="pt",
                                   size={"shortest_edge": px * px, "longest_edge": px * px})
        grid = out["image_grid_thw"]
        merge = self.model.config.vision_config.spatial_merge_size
        patch = self.model.config.vision_config.patch_size
        want = [1, px // patch, px // patch]
        for row in grid.tolist():
            if row != want:
                raise BackendError(f"the image processor produced a patch grid {row}, expected {want} for "
                                   f"{px}-px inputs; check patch_size/merge_size in the preprocessor config")
        n = [int(t * h * w) // (merge * merge) for t, h, w in grid.tolist()]
        return {"pixel_values": out["pixel_values"], "image_grid_thw": grid}, n

    def _placeholder(self, n_tokens: int) -> str:
        cfg = self.model.config
        conv = self.tokenizer.convert_ids_to_tokens
        return conv(cfg.vision_start_token_id) + conv(self.image_token_id) * n_tokens + conv(cfg.vision_end_token_id)

    def _extra_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mm_token_type_ids": (input_ids == self.image_token_id).to(torch.int32)}

    def _encode_pixels(self, pixel_inputs):
        out = self.model.model.get_image_features(pixel_inputs["pixel_values"], pixel_inputs["image_grid_thw"],
                                                  return_dict=True)
        return list(out.pooler_output)

    def _per_image_inputs(self, pixel_inputs, k):
        return {"image_grid_thw": pixel_inputs["image_grid_thw"][k:k + 1]}
