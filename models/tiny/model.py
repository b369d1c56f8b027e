"""The tiny LLaVA: a CLIP vision tower (v1: 64 px, patch 8; v2: 336 px, patch 42; 8x8 = 64 tokens either
way) and a small Llama with a char tokenizer.

Everything is built from configs (no pretrained weights) as a stock HF LlavaForConditionalGeneration,
so the extraction backend loads the saved directory with LlavaForConditionalGeneration /
LlavaProcessor.from_pretrained unchanged.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

PX = 64
PATCH = 8
TOKENS_PER_IMAGE = (PX // PATCH) ** 2
SPECIALS = ["<pad>", "</s>", "<unk>", "<image>"]
CHARS = list(string.ascii_lowercase + string.digits + " ?:.,'-")
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]
#: Prompt used for training and written to edgevlm.json; {images} is one "<image>" per image.
PROMPT_TEMPLATE = "{images}q: {question} a:"
GENERIC_PROMPT = "Write a general description of the image."
#: The LM layer whose attention the grounding loss trains (0-based decoder layer index).
ATTENTION_LAYER = 2
HIDDEN = 128
LAYERS = 4


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer: one token per lowercase char, plus <pad>, </s>, <unk>, <image>."""
    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", extra_special_tokens={"image_token": "<image>"},
                                   model_max_length=512, padding_side="left")


#: v2: LLaVA-1.5's 336-px input with 42-px patches, so the token count (and CPU cost) stays v1's.
PX_V2 = 336
PATCH_V2 = 42


def build_image_processor(px: int = PX) -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"height": px, "width": px}, crop_size={"height": px, "width": px},
                              do_center_crop=False, do_resize=True, resample=3, image_mean=IMAGE_MEAN,
                              image_std=IMAGE_STD, do_convert_rgb=True)


def build_processor(px: int = PX, patch: int = PATCH) -> LlavaProcessor:
    return LlavaProcessor(image_processor=build_image_processor(px), tokenizer=build_tokenizer(),
                          patch_size=patch, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1)


def build_config(vocab_size: int, image_token_id: int, pad_id: int, eos_id: int, px: int = PX,
                 patch: int = PATCH) -> LlavaConfig:
    vision = CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=LAYERS,
                              num_attention_heads=4, image_size=px, patch_size=patch, projection_dim=HIDDEN)
    text = LlamaConfig(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
                       num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=512, pad_token_id=pad_id, eos_token_id=eos_id,
                       bos_token_id=None, tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                       vision_feature_layer=-1, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", image_seq_length=TOKENS_PER_IMAGE)


def build_model(seed: int = 0, px: int = PX, patch: int = PATCH) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    torch.manual_seed(seed)
    proc = build_processor(px, patch)
    tok = proc.tokenizer
    cfg = build_config(len(tok), proc.image_token_id, tok.pad_token_id, tok.eos_token_id, px, patch)
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = None
    return model, proc


def warm_start(v1_dir: str | Path, px: int = PX_V2, patch: int = PATCH_V2,
               seed: int = 0) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A px-input, patch-`patch` model initialised from a v1 checkpoint (64 px, patch 8).

    Every weight is copied except the patch embedding, whose 8x8 kernel is resized bilinearly to
    patch x patch and scaled by (8/patch)^2: on a px-image it then sums over a patch what v1's kernel
    summed over the 8x8 pixels of the 64-px downscale, so the warm start answers about as v1 does
    (checked before training; see the model card). The token grid (8x8) and position embeddings stay.
    """
    model, proc = build_model(seed, px, patch)
    v1 = LlavaForConditionalGeneration.from_pretrained(str(v1_dir))
    state = v1.state_dict()
    key = "model.vision_tower.embeddings.patch_embedding.weight"
    k8 = state[key]
    if v1.config.vision_config.image_size // k8.shape[-1] != px // patch:
        raise ValueError(f"v1 token grid {v1.config.vision_config.image_size // k8.shape[-1]} != {px // patch}")
    state[key] = torch.nn.functional.interpolate(k8, size=(patch, patch), mode="bilinear",
                                                 align_corners=False) * (k8.shape[-1] / patch) ** 2
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if "position_ids" not in k] + list(unexpected)
    if bad:
        raise ValueError(f"warm start: weights do not match: {bad[:5]}")
    return model, proc


MODEL_ID = "tiny-scenetext-v1"


def edgevlm_settings(box_pad_px: int, box_grow: float = 0.0, box_grow_min_cells: int = 1,
                     model_id: str = MODEL_ID, px: int = PX) -> dict:
    """Backend settings for models.llava.LlavaBackend (edgevlm.json; only keys the backend knows)."""
    return {
        "model_id": model_id,
        "prompt_template": PROMPT_TEMPLATE,
        "image_joiner": "",
        "generic_prompt": GENERIC_PROMPT,
        "attention_layer": ATTENTION_LAYER,
        "vision_input_px": px,
        "max_new_tokens": 8,
        "box_pad_px": box_pad_px,
        "box_grow": box_grow,
        "box_grow_min_cells": box_grow_min_cells,
        "dtype": "float32",
        "source_kind": "tiny-local",  # trained here: its traces are never `real`
    }


def save_checkpoint(model, proc, out: str | Path, settings: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    proc.save_pretrained(out)
    (out / "edgevlm.json").write_text(json.dumps(settings, indent=2) + "\n")
    return out
