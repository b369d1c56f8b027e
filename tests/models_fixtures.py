"""Tiny randomly initialised LLaVA and Qwen2.5-VL checkpoints, built in-process (no downloads).

Each builder writes a checkpoint directory (config + safetensors weights, a character-level
tokenizer made with the `tokenizers` library, an image processor config) that the real backends
load through from_pretrained, exactly as they would a downloaded model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,?!:;'\"\n-_()")


def char_tokenizer(specials: list[str], eos: str, pad: str, bos: str | None = None):
    """A character-level PreTrainedTokenizerFast whose special tokens are single ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(["<unk>"] + specials)}
    for c in CHARS:
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    extra = [s for s in specials if s not in (eos, pad, bos)]
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token=eos, pad_token=pad,
                                   bos_token=bos, additional_special_tokens=extra), vocab


def build_tiny_llava(path: Path, *, image_px: int = 64, patch: int = 8, layers: int = 4, seed: int = 0,
                     settings: dict | None = None, hidden: int = 32) -> Path:
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer, vocab = char_tokenizer(["<s>", "</s>", "<pad>", "<image>"], eos="</s>", pad="<pad>", bos="<s>")
    vc = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2 if hidden == 32 else layers,
                          num_attention_heads=2, image_size=image_px, patch_size=patch, projection_dim=hidden)
    tc = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                     bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"])
    cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=vocab["<image>"],
                      image_seq_length=(image_px // patch) ** 2, vision_feature_layer=-2,
                      vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = vocab["</s>"]
    model.generation_config.pad_token_id = vocab["<pad>"]
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": image_px},
                       crop_size={"height": image_px, "width": image_px}).save_pretrained(path)
    if settings is not None:
        (path / "edgevlm.json").write_text(json.dumps(settings))
    return path


def build_tiny_qwen(path: Path, *, patch: int = 14, layers: int = 4, seed: int = 0,
                    settings: dict | None = None) -> Path:
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    tokenizer, vocab = char_tokenizer(specials, eos="<|im_end|>", pad="<|endoftext|>")
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                bos_token_id=None, eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                  patch_size=patch, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[1])
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=vocab["<|image_pad|>"],
                           video_token_id=vocab["<|video_pad|>"], vision_start_token_id=vocab["<|vision_start|>"],
                           vision_end_token_id=vocab["<|vision_end|>"], eos_token_id=vocab["<|im_end|>"],
                           pad_token_id=vocab["<|endoftext|>"], bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    model.generation_config.pad_token_id = vocab["<|endoftext|>"]
    model.generation_config.bos_token_id = None
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2,
                             min_pixels=56 * 56, max_pixels=1024 * 1024).save_pretrained(path)
    if settings is not None:
        (path / "edgevlm.json").write_text(json.dumps(settings))
    return path


def build_tiny_instructblip(path: Path, *, image_px: int = 32, patch: int = 8, layers: int = 4, queries: int = 8,
                            seed: int = 0, settings: dict | None = None) -> Path:
    """A tiny InstructBLIP (ViT, 2-layer Q-Former with cross-attention in every layer, Llama LLM), saved
    as InstructBlipProcessor.save_pretrained lays it out (tokenizer at the top, qformer_tokenizer/)."""
    import torch
    from transformers import BlipImageProcessor, InstructBlipConfig, InstructBlipForConditionalGeneration

    tokenizer, vocab = char_tokenizer(["<s>", "</s>", "<pad>", "<image>"], eos="</s>", pad="<pad>", bos="<s>")
    qtok, qvocab = char_tokenizer(["[CLS]", "[SEP]", "[PAD]"], eos="[SEP]", pad="[PAD]", bos="[CLS]")
    cfg = InstructBlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_px, patch_size=patch),
        qformer_config=dict(vocab_size=len(qvocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, cross_attention_frequency=1, encoder_hidden_size=32,
                            pad_token_id=qvocab["[PAD]"], max_position_embeddings=128),
        text_config=dict(model_type="llama", vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"],
                         pad_token_id=vocab["<pad>"]),
        num_query_tokens=queries, image_token_index=vocab["<image>"])
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(cfg).eval()
    with torch.no_grad():       # the zero-initialised queries would make every query identical
        model.query_tokens.normal_(0, 1)
    model.generation_config.eos_token_id = vocab["</s>"]
    model.generation_config.pad_token_id = vocab["<pad>"]
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    qtok.save_pretrained(path / "qformer_tokenizer")
    BlipImageProcessor(size={"height": image_px, "width": image_px}).save_pretrained(path)
    if settings is not None:
        (path / "edgevlm.json").write_text(json.dumps(settings))
    return path


def make_images(folder: Path, n: int = 3, seed: int = 0) -> list[Path]:
    """n non-square test images with texture and a bright square, saved as PNG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    sizes = [(320, 240), (200, 300), (150, 150), (500, 180)]
    for k in range(n):
        w, h = sizes[k % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 127 // (w + h))], axis=-1)
        img = np.clip(base + rng.normal(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        img[y0:y0 + 30, x0:x0 + 30] = [255, 255, 0]
        p = folder / f"img{k}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


def write_manifest(path: Path, images: list[Path], *, gt_box_first: bool = True) -> Path:
    lines = []
    for k, img in enumerate(images):
        rec = {"image": img.name if img.parent == path.parent else str(img),
               "question": f"What color is the square {k}?",
               "answers": ["yellow"] * 7 + ["gold"] * 3 if k != 1 else ["yes"],
               "question_type": "color" if k != 1 else "yesno"}
        if gt_box_first and k == 0:
            rec["gt_box"] = [10, 10, 60, 50]
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")
    return path


# ----- pytest fixtures shared by test_backends.py and test_extract.py (import them by name) -----

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls on a shared 2-core box are far faster without OpenMP spinning."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 3-sample manifest over generated images (the first sample has a gt_box)."""
    d = tmp_path_factory.mktemp("data")
    return write_manifest(d / "vqa.jsonl", make_images(d, 3))


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "ckpt", settings={"max_new_tokens": 6})


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return build_tiny_qwen(tmp_path_factory.mktemp("qwen") / "ckpt", settings={"max_new_tokens": 6})


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    return build_tiny_instructblip(tmp_path_factory.mktemp("blip") / "ckpt", settings={"max_new_tokens": 6})


@pytest.fixture(scope="module")
def backends(llava_dir, qwen_dir):
    from edgevlm.models.backend import load_backend

    return {"llava": load_backend(str(llava_dir)), "qwen": load_backend(str(qwen_dir))}
