"""The tiny LLaVA: a CLIP vision tower at 64 px (patch 8, 64 tokens) and a small Llama with a char tokenizer.

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


def build_image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"height": PX, "width": PX}, crop_size={"height": PX, "width": PX},
                              do_center_crop=False, do_resize=True, resample=3, image_mean=IMAGE_MEAN,
                              image_std=IMAGE_STD, do_convert_rgb=True)


def build_processor() -> LlavaProcessor:
    return LlavaProcessor(image_processor=build_image_processor(), tokenizer=build_tokenizer(),
                          patch_size=PATCH, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1)


def build_config(vocab_size: int, image_token_id: int, pad_id: int, eos_id: int) -> LlavaConfig:
    vision = CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=LAYERS,
                              num_attention_heads=4, image_size=PX, patch_size=PATCH, projection_dim=HIDDEN)
    text = LlamaConfig(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
                       num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=512, pad_token_id=pad_id, eos_token_id=eos_id,
                       bos_token_id=None, tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                       vision_feature_layer=-1, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", image_seq_length=TOKENS_PER_IMAGE)


def build_model(seed: int = 0) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    torch.manual_seed(seed)
    proc = build_processor()
    tok = proc.tokenizer
    cfg = build_config(len(tok), proc.image_token_id, tok.pad_token_id, tok.eos_token_id)
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = None
    return model, proc


MODEL_ID = "tiny-scenetext-v1"


def edgevlm_settings(box_pad_px: int, box_grow: float = 0.0, box_grow_min_cells: int = 1) -> dict:
    """Backend settings for models.llava.LlavaBackend (edgevlm.json; only keys the backend knows)."""
    return {
        "model_id": MODEL_ID,
        "prompt_template": PROMPT_TEMPLATE,
        "image_joiner": "",
        "generic_prompt": GENERIC_PROMPT,
        "attention_layer": ATTENTION_LAYER,
        "vision_input_px": PX,
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
