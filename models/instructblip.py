"""InstructBLIP backend (HF InstructBlipForConditionalGeneration, decoder-only LLM: Vicuna/LLaMA).

Layout: the ViT encodes the image into (image_size / patch_size)^2 patches plus CLS; the Q-Former's
num_query_tokens (32) learned queries read those patches by cross-attention, conditioned on the
instruction (InstructBLIP's Q-Former also sees the prompt text), and the projected query outputs are
the image's visual tokens in the LLM. As in InstructBLIP (LAVIS and HF), the visual tokens of all
images come first, then the text prompt with its BOS: "{images}" in prompt_template only marks
that the template is complete; the default template is "{images}Question: {question} Short answer:"
(InstructBLIP's short-answer VQA prompt). Stage 2 puts both images' query tokens before the text.

The ViT output is computed once per image and cached; the Q-Former runs per (image, prompt), since
its queries depend on the instruction.

Relative attention, as ViCrop does for InstructBLIP (the LLM attends to 32 queries, not to patches):
the head-averaged attention of the last prompt position at the chosen LLM layer to the image's query
tokens (a, 32 values) is carried to the patches through the Q-Former's head-averaged cross-attention
of the queries to the patches at one cross-attention layer (C, 32 x patches, CLS left out):
map = a @ C, a (rows, cols) grid over the ViT patches. ViCrop uses LLM layer 15 of 32 and the third
Q-Former cross-attention layer; here the LLM layer is the usual attention_layer (default 14/32 of the
depth, like the other backends) and the cross-attention layer is `qformer_cross_layer` (default 2,
the third, or the last one a smaller Q-Former has). The map sums to at most 1 (both factors are
attention rows); the ratio question / generic is taken as for the other backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from edgevlm.models.backend import BackendError, BackendSettings, Encoded
from edgevlm.models.hf_base import FixedViTGrid, HFBackend, _first_line

INSTRUCTBLIP_TEMPLATE = "{images}Question: {question} Short answer:"


class InstructBlipBackend(FixedViTGrid, HFBackend):
    name = "instructblip"
    model_class_name = "InstructBlipForConditionalGeneration"
    direct_greedy = True
    default_settings = BackendSettings(prompt_template=INSTRUCTBLIP_TEMPLATE, image_joiner="")
    #: index into the Q-Former's cross-attention layers for the attention map (ViCrop: 2)
    qformer_cross_layer = 2

    @classmethod
    def load(cls, path: str, *, device: str = "cpu", settings: BackendSettings | None = None,
             overrides: dict[str, Any] | None = None) -> "InstructBlipBackend":
        from transformers import AutoTokenizer

        backend = super().load(path, device=device, settings=settings, overrides=overrides)
        sub = Path(path) / "qformer_tokenizer"
        try:
            backend.qformer_tokenizer = AutoTokenizer.from_pretrained(str(sub) if sub.is_dir() else path,
                                                                      **({} if sub.is_dir() else {"subfolder": "qformer_tokenizer"}))
        except (OSError, ValueError) as exc:
            raise BackendError(f"--model {path!r}: no Q-Former tokenizer (qformer_tokenizer/, as "
                               f"InstructBlipProcessor.save_pretrained writes it): {_first_line(exc)}") from None
        return backend

    def _check_config(self) -> None:
        cfg = self.model.config
        if not cfg.use_decoder_only_language_model:
            raise BackendError("only InstructBLIP with a decoder-only LLM (Vicuna/LLaMA) is supported, not Flan-T5")
        vc = cfg.vision_config
        if self.settings.vision_input_px is not None and self.settings.vision_input_px != vc.image_size:
            raise BackendError(f"vision_input_px {self.settings.vision_input_px} must equal the vision "
                               f"model's image_size {vc.image_size} for InstructBLIP")
        if vc.image_size % vc.patch_size:
            raise BackendError(f"vision_config image_size {vc.image_size} is not a multiple of patch_size {vc.patch_size}")
        self.model.qformer.config._attn_implementation = "eager"   # its cross-attention weights are needed
        self._vit_cache: dict[int, tuple[Any, torch.Tensor]] = {}

    @property
    def n_queries(self) -> int:
        return int(self.model.config.num_query_tokens)

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    def _decoder_layers(self):
        return self.model.language_model.model.layers

    def _lm(self):
        return self.model.language_model

    def _cross_layers(self) -> list:
        return [layer.crossattention.attention for layer in self.model.qformer.encoder.layer
                if getattr(layer, "has_cross_attention", False)]

    # ----- visual tokens -----------------------------------------------------------------------
    @torch.inference_mode()
    def prefetch(self, images: Sequence[Any]) -> None:
        """ViT outputs of the images not cached yet, in one pass."""
        todo = []
        for img in images:
            if id(img) not in self._vit_cache and all(img is not t for t in todo):
                todo.append(img)
        if not todo:
            return
        pv = self.image_processor(images=todo, return_tensors="pt")["pixel_values"].to(self.device, self.model.dtype)
        px = self.vision_input_px
        if tuple(pv.shape[-2:]) != (px, px):
            raise BackendError(f"the image processor produced {tuple(pv.shape[-2:])} pixels, the vision model "
                               f"expects {px}x{px}; check size in the preprocessor config")
        embeds = self.model.vision_model(pixel_values=pv, return_dict=True).last_hidden_state
        while len(self._vit_cache) + len(todo) > max(self.FEATURE_CACHE_SIZE, len(todo)):
            self._vit_cache.pop(next(iter(self._vit_cache)))
        for k, img in enumerate(todo):
            self._vit_cache[id(img)] = (img, embeds[k:k + 1])

    @torch.inference_mode()
    def query_features(self, images: Sequence[Any], text: str) -> tuple[list[torch.Tensor], list[np.ndarray], float]:
        """Per image: projected query outputs (n_queries, d_llm) and the chosen layer's head-averaged
        cross-attention of the queries to the patches (n_queries, rows*cols); + seconds spent."""
        t0 = self._clock.now()
        self.prefetch(images)
        embeds = torch.cat([self._vit_cache[id(img)][1] for img in images], dim=0)
        q = self.qformer_tokenizer(text, return_tensors="pt")
        n = len(images)
        q_ids = q["input_ids"].to(self.device).expand(n, -1)
        q_mask = q.get("attention_mask", torch.ones_like(q["input_ids"])).to(self.device).expand(n, -1)
        queries = self.model.query_tokens.expand(n, -1, -1)
        mask = torch.cat([torch.ones(queries.shape[:2], dtype=q_mask.dtype, device=self.device), q_mask], dim=1)
        layers = self._cross_layers()
        captured: dict[str, torch.Tensor] = {}
        hook = layers[min(self.qformer_cross_layer, len(layers) - 1)].register_forward_hook(
            lambda m, a, out: captured.__setitem__("w", out[1]))
        try:
            out = self.model.qformer(input_ids=q_ids, attention_mask=mask, query_embeds=queries,
                                     encoder_hidden_states=embeds,
                                     encoder_attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long,
                                                                       device=self.device), return_dict=True)
        finally:
            hook.remove()
        feats = self.model.language_projection(out.last_hidden_state[:, :self.n_queries, :])
        cross = captured["w"][:, :, :self.n_queries, 1:].float().mean(dim=1)     # heads averaged, CLS left out
        return list(feats), [c.cpu().numpy() for c in cross], self._clock.now() - t0

    def encode(self, images: Sequence[Any], question: str, *, add_suffix: bool = True) -> Encoded:
        text = question + (self.settings.question_suffix if add_suffix else "")
        feats, cross, t_vision = self.query_features(images, text)
        prompt = self.settings.prompt_template.replace("{images}", "").replace("{question}", text)
        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"][0]
        if (ids == self.image_token_id).any():
            raise BackendError(f"the prompt text itself holds the image token id {self.image_token_id}")
        n_vis = self.n_queries * len(images)
        input_ids = torch.cat([torch.full((n_vis,), self.image_token_id, dtype=ids.dtype), ids])[None]
        per_image = [np.arange(k * self.n_queries, (k + 1) * self.n_queries) for k in range(len(images))]
        with torch.inference_mode():
            embeds = self._lm().get_input_embeddings()(input_ids.to(self.device))
            embeds[0, :n_vis] = torch.cat(feats, dim=0).to(embeds.dtype)
        enc = Encoded(inputs={"inputs_embeds": embeds, "attention_mask": torch.ones_like(input_ids).to(self.device)},
                      image_positions=per_image, prompt_tokens=int(ids.numel()), n_images=len(images),
                      t_vision_s=t_vision)
        enc.image_maps = cross
        return enc

    def _fresh(self, encoded: Encoded) -> dict[str, Any]:
        return dict(encoded.inputs)

    def _image_map(self, row: torch.Tensor, encoded: Encoded, offset: int) -> np.ndarray:
        a = row[torch.as_tensor(encoded.image_positions[0] + offset, device=row.device)].cpu().numpy()
        rows, cols = self.visual_grid()
        return (a.astype(np.float64) @ encoded.image_maps[0].astype(np.float64)).reshape(rows, cols)

    def clear_cache(self) -> None:
        super().clear_cache()
        self._vit_cache.clear()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["attention_map"] = (f"LLM attention to the {self.n_queries} query tokens x Q-Former cross-attention "
                              f"(layer index {min(self.qformer_cross_layer, len(self._cross_layers()) - 1)}) to patches")
        return d
