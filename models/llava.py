"""LLaVA-1.5 backend (HF LlavaForConditionalGeneration): CLIP ViT vision tower, MLP projector, Llama.

Layout: one image = (image_size / patch_size)^2 visual tokens, i.e. 576 for the 336-px ViT-L/14 of
LLaVA-1.5, 64 for a 64-px, patch-8 tiny model; all derived from the checkpoint's vision_config. With
vision_feature_select_strategy "full" a CLIP CLS token is kept as an extra first token and left out
of the attention grid; towers without CLS (SigLIP) must use "full". The image goes in as a vision_input_px square (== the vision tower's image_size);
LLaVA-1.5's own pad-to-square is not applied, the resize ignores the aspect ratio, so that attention
cells map linearly onto original pixels.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from edgevlm.models.backend import BackendError, BackendSettings
from edgevlm.models.hf_base import FixedViTGrid, HFBackend


class LlavaBackend(FixedViTGrid, HFBackend):
    name = "llava"
    model_class_name = "LlavaForConditionalGeneration"
    direct_greedy = True
    share_prefix = True
    default_settings = BackendSettings(prompt_template="USER: {images}\n{question} ASSISTANT:", image_joiner="\n")

    def _check_config(self) -> None:
        vc = self.model.config.vision_config
        px = self.settings.vision_input_px
        if px is not None and px != vc.image_size:
            raise BackendError(f"vision_input_px {px} must equal the vision tower's image_size "
                               f"{vc.image_size} for LLaVA (CLIP has fixed position embeddings)")
        if vc.image_size % vc.patch_size:
            raise BackendError(f"vision_config image_size {vc.image_size} is not a multiple of patch_size {vc.patch_size}")
        layer = self.model.config.vision_feature_layer
        if not isinstance(layer, int):
            raise BackendError("vision_feature_layer lists several layers; only one layer is supported")
        if self._drops_first() and not self._has_cls():
            raise BackendError("vision_feature_select_strategy 'default' drops the first token, but this vision "
                               "tower has no CLS token, so a patch would be lost; use 'full' in config.json")

    def _has_cls(self) -> bool:
        """Whether the vision tower prepends a CLS token (CLIP does, SigLIP does not)."""
        return any(name.endswith("class_embedding") for name, _ in self.model.model.vision_tower.named_parameters())

    def _tokens_per_image(self) -> int:
        rows, cols = self.visual_grid()
        # "default" drops the first output token (CLS for CLIP); "full" keeps every output token.
        return rows * cols + (1 if self._has_cls() else 0) - (1 if self._drops_first() else 0)

    def _drops_first(self) -> bool:
        return self.model.config.vision_feature_select_strategy == "default"

    def _image_inputs(self, images: Sequence[Any]) -> tuple[dict[str, torch.Tensor], list[int]]:
        px = self.vision_input_px
        out = self.image_processor(images=list(images), return_tensors="pt")
        pv = out["pixel_values"]
        if tuple(pv.shape[-2:]) != (px, px):
            raise BackendError(f"the image processor produced {tuple(pv.shape[-2:])} pixels, the vision tower "
                               f"expects {px}x{px}; check crop_size/size in the preprocessor config")
        return {"pixel_values": pv}, [self._tokens_per_image()] * len(images)

    def _placeholder(self, n_tokens: int) -> str:
        return self.tokenizer.convert_ids_to_tokens(self.image_token_id) * n_tokens

    def _grid_positions(self, positions: np.ndarray) -> np.ndarray:
        rows, cols = self.visual_grid()
        return positions[-rows * cols:]

    def _encode_pixels(self, pixel_inputs):
        cfg = self.model.config
        out = self.model.model.get_image_features(
            pixel_values=pixel_inputs["pixel_values"], vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy, return_dict=True)
        return list(out.pooler_output)
