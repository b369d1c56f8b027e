"""LLaVA and Qwen2.5-VL backends on tiny random-init checkpoints built in the test: attention maps,
greedy decoding, the visual-feature cache, token layout, settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from edgevlm.models.backend import BackendError, load_backend  # noqa: E402
from edgevlm.models.uncertainty import token_uncertainty  # noqa: E402
from tests.models_fixtures import backends, build_tiny_llava, llava_dir, one_thread, qwen_dir  # noqa: E402,F401

pytestmark = pytest.mark.models


@pytest.mark.parametrize("kind", ["llava", "qwen"])
def test_attention_map_has_grid_shape(backends, kind):
    b = backends[kind]
    px = b.vision_input_px
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (px, px, 3), dtype=np.uint8))
    maps = b.attention_to_image(img, "What is in the corner?")
    assert maps.question.shape == maps.generic.shape == maps.relative.shape == b.visual_grid()
    assert maps.layer == b.attention_layer
    # Softmax rows: attention to image tokens is positive and at most 1 in total.
    assert (maps.question > 0).all() and maps.question.sum() <= 1 + 1e-5
    np.testing.assert_allclose(maps.relative, maps.question / (maps.generic + b.settings.attention_eps))
    assert not np.allclose(maps.question, maps.generic)   # the prompt changes where the model looks


@pytest.mark.parametrize("kind", ["llava", "qwen"])
def test_visual_tokens_are_in_raster_order_of_the_grid(backends, kind):
    # A bright block in one grid cell must land in that cell's token (row-major), or boxes would be misplaced.
    b = backends[kind]
    rows, cols = b.visual_grid()
    px = b.vision_input_px
    r, c = 1, cols - 2
    arr = np.zeros((px, px, 3), dtype=np.uint8)
    arr[r * px // rows:(r + 1) * px // rows, c * px // cols:(c + 1) * px // cols] = 255
    pixel_inputs, _ = b._image_inputs([Image.fromarray(arr)])
    pv = pixel_inputs["pixel_values"]
    if kind == "qwen":          # (patches, C*T*p*p), merge x merge consecutive patches form one token
        per_token = pv.reshape(rows * cols, -1).mean(dim=1)
    else:                       # (1, C, H, W): the CLIP conv patches in row-major order
        per_token = pv[0].mean(dim=0).reshape(rows, px // rows, cols, px // cols).mean(dim=(1, 3)).flatten()
    assert int(per_token.argmax()) == r * cols + c


@pytest.mark.parametrize("kind", ["llava", "qwen"])
def test_attention_map_matches_hf_output_attentions(backends, kind):
    # Independent reference: HF's own output_attentions under eager, full forward, pixel inputs.
    b = backends[kind]
    px = b.vision_input_px
    img = Image.fromarray(np.random.default_rng(5).integers(0, 255, (px, px, 3), dtype=np.uint8))
    maps = b.attention_to_image(img, "Which corner is bright?")
    enc = b.encode([img], "Which corner is bright?")
    plain = {k: v for k, v in enc.inputs.items() if k != "mm_encoder_outputs"}
    plain.update(b._image_inputs([img])[0])
    b.model.set_attn_implementation({"text_config": "eager"})
    try:
        with torch.inference_mode():
            att = b.model(**plain, use_cache=False, output_attentions=True).attentions[maps.layer]
    finally:
        b.model.set_attn_implementation({"text_config": "sdpa"})
    pos = enc.image_positions[0][-b.visual_tokens_per_image:]
    want = att[0, :, -1, pos].float().mean(0).reshape(b.visual_grid()).numpy()
    np.testing.assert_allclose(maps.question, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind", ["llava", "qwen"])
def test_cached_features_match_the_pixel_path(backends, kind):
    # encode() hands precomputed visual features to the model; the plain pixel path must agree.
    from transformers import GenerationConfig

    b = backends[kind]
    px = b.vision_input_px
    rng = np.random.default_rng(4)
    imgs = [Image.fromarray(rng.integers(0, 255, (px, px, 3), dtype=np.uint8)) for _ in range(2)]
    enc = b.encode(imgs, "Where?")
    assert enc.t_vision_s > 0 and b.encode(imgs, "Again?").t_vision_s == 0.0   # second time: cached
    many = [Image.fromarray(rng.integers(0, 255, (px, px, 3), dtype=np.uint8)) for _ in range(b.FEATURE_CACHE_SIZE)]
    for img in many:                                 # fill the cache so the next call must evict
        b.encode([img], "q")
    assert b.encode([many[0], imgs[0]], "Both?").n_images == 2
    pixel_inputs, _ = b._image_inputs(imgs)
    plain = {k: v for k, v in enc.inputs.items() if k != "mm_encoder_outputs"}
    plain.update(pixel_inputs)
    with torch.inference_mode():
        want = b.model(**plain, use_cache=False).logits
        got = b.model(**b._fresh(enc), use_cache=False).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        cfg = GenerationConfig(do_sample=False, max_new_tokens=5, eos_token_id=None, pad_token_id=0)
        ref = b.model.generate(**plain, generation_config=cfg)[0, plain["input_ids"].shape[1]:].tolist()
    b.clear_cache()
    gen = b.generate(enc, max_new_tokens=5)
    assert gen.tokens == ref[:len(gen.tokens)] and (gen.stopped_on_eos or len(gen.tokens) == 5)


@pytest.mark.parametrize("kind", ["llava", "qwen"])
def test_greedy_tokens_are_argmax_of_returned_logits(backends, kind):
    b = backends[kind]
    px = b.vision_input_px
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (px, px, 3), dtype=np.uint8))
    enc = b.encode([img], "What colour?")
    gen = b.generate(enc)
    assert gen.logits.shape == (len(gen.tokens), b.model.config.get_text_config().vocab_size)
    assert list(gen.logits.argmax(axis=1)) == gen.tokens
    mn, sh, mg = token_uncertainty(gen.logits)
    assert len(mn) == len(gen.tokens)
    two = b.encode([img, img], "What colour?")
    assert two.n_images == 2 and [len(p) for p in two.image_positions] == [b.visual_tokens_per_image] * 2
    assert two.prompt_tokens > enc.prompt_tokens           # image separators/markers are text tokens


def test_direct_greedy_loop_matches_generate(backends):
    """LLaVA decodes by a plain KV-cache loop (direct_greedy); it must give generate's tokens and logits."""
    b = backends["llava"]
    assert b.direct_greedy
    px = b.vision_input_px
    rng = np.random.default_rng(5)
    for k in range(4):
        imgs = [Image.fromarray(rng.integers(0, 255, (px, px, 3), dtype=np.uint8)) for _ in range(1 + k % 2)]
        enc = b.encode(imgs, ["What colour?", "Which side?", "Read it.", "How many?"][k])
        fast = b.generate(enc, max_new_tokens=4 + k)
        b.direct_greedy = False
        try:
            ref = b.generate(enc, max_new_tokens=4 + k)
        finally:
            b.direct_greedy = True
        assert fast.tokens == ref.tokens and fast.stopped_on_eos == ref.stopped_on_eos and fast.text == ref.text
        np.testing.assert_allclose(fast.logits, ref.logits, rtol=1e-4, atol=1e-4)
        assert fast.t_prefill_s > 0 and (fast.t_decode_token_s is None or fast.t_decode_token_s > 0)
        b.clear_cache()


def test_checkpoint_generation_defaults_do_not_bend_greedy(backends):
    # Real checkpoints ship sampling/penalty defaults; extraction must stay argmax of the raw logits.
    b = backends["qwen"]
    gc = b.model.generation_config
    saved = (gc.repetition_penalty, gc.no_repeat_ngram_size, gc.do_sample, gc.temperature)
    gc.repetition_penalty, gc.no_repeat_ngram_size, gc.do_sample, gc.temperature = 50.0, 1, True, 0.01
    try:
        img = Image.fromarray(np.random.default_rng(3).integers(0, 255, (224, 224, 3), dtype=np.uint8))
        gen = b.generate(b.encode([img], "Which?"), max_new_tokens=12)
    finally:
        gc.repetition_penalty, gc.no_repeat_ngram_size, gc.do_sample, gc.temperature = saved
    assert list(gen.logits.argmax(axis=1)) == gen.tokens
    assert len(set(gen.tokens)) < len(gen.tokens)   # repeats occur, so no penalty/ngram block was applied


def test_immediate_eos_keeps_one_empty_answer_token(backends):
    b = backends["llava"]
    img = Image.new("RGB", (64, 64), (10, 200, 30))
    enc = b.encode([img], "q?")
    first = b.generate(enc).tokens[0]
    saved = b.model.generation_config.eos_token_id
    b.model.generation_config.eos_token_id = first          # the first greedy token now ends generation
    try:
        gen = b.generate(enc)
    finally:
        b.model.generation_config.eos_token_id = saved
    assert gen.stopped_on_eos and gen.tokens == [first] and gen.text == "" and gen.logits.shape[0] == 1


def test_visual_grid_follows_the_config_and_settings_file(tmp_path):
    ck = build_tiny_llava(tmp_path / "c48", image_px=48, patch=8, layers=3,
                          settings={"attention_layer": 1, "max_new_tokens": 2, "box_pad_px": 4,
                                    "model_id": "tiny-llava-48", "prompt_template": "Q: {images} {question} A:"})
    b = load_backend(str(ck))
    assert b.visual_grid() == (6, 6) and b.visual_tokens_per_image == 36 and b.vision_input_px == 48
    assert b.attention_layer == 1 and b.settings.box_pad_px == 4 and b.model_id == "tiny-llava-48"
    enc = b.encode([Image.new("RGB", (48, 48))], "hi")
    assert len(enc.image_positions[0]) == 36
    assert len(b.generate(enc).tokens) <= 2
    # command-line overrides beat the file
    b2 = load_backend(str(ck), overrides={"attention_layer": 2, "box_grow": 0.1, "box_grow_min_cells": 3})
    assert b2.attention_layer == 2
    assert b2.settings.box_kwargs() == {"pad_px": 4, "pad_frac": 0.0, "grow": 0.1, "grow_min_cells": 3}
    with pytest.raises(BackendError, match="'box_grow' must be a number in \\[0, 1\\], got 2"):
        load_backend(str(ck), overrides={"box_grow": 2})
    with pytest.raises(BackendError, match="'box_grow_min_cells' must be an integer >= 1"):
        load_backend(str(ck), overrides={"box_grow_min_cells": 0})
    with pytest.raises(BackendError, match="attention_layer 3 is out of range.*0..2"):
        load_backend(str(ck), overrides={"attention_layer": 3})
    (ck / "edgevlm.json").write_text(json.dumps({"attention_layr": 3}))
    with pytest.raises(BackendError, match="unknown key 'attention_layr'"):
        load_backend(str(ck))
    (ck / "edgevlm.json").write_text(json.dumps({"vision_input_px": 64}))
    with pytest.raises(BackendError, match="vision_input_px 64 must equal"):
        load_backend(str(ck))


def test_unsupported_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(BackendError, match="model_type 'bert' is not supported; supported: llava, qwen2_5_vl"):
        load_backend(str(tmp_path))
    with pytest.raises(BackendError, match="--backend 'blip'"):
        load_backend(str(tmp_path), backend="blip")


def test_full_feature_strategy_keeps_cls_out_of_the_grid(tmp_path):
    ck = build_tiny_llava(tmp_path / "full", image_px=32, patch=8, layers=2)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["vision_feature_select_strategy"] = "full"
    (ck / "config.json").write_text(json.dumps(cfg))
    b = load_backend(str(ck))
    enc = b.encode([Image.new("RGB", (32, 32))], "q")
    assert len(enc.image_positions[0]) == 17                  # 16 patches + CLS go into the prompt
    b.generate(enc, max_new_tokens=1)                         # the model accepts that count
    assert b.attention_to_image(Image.new("RGB", (32, 32)), "q").relative.shape == (4, 4)


def test_siglip_tower_without_cls(tmp_path):
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipImageProcessor, SiglipVisionConfig

    from tests.models_fixtures import char_tokenizer

    tok, vocab = char_tokenizer(["<s>", "</s>", "<pad>", "<image>"], eos="</s>", pad="<pad>", bos="<s>")
    vc = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            image_size=32, patch_size=8)
    tc = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2)
    for strategy in ("full", "default"):
        ck = tmp_path / strategy
        cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=vocab["<image>"],
                          vision_feature_select_strategy=strategy, vision_feature_layer=-1)
        LlavaForConditionalGeneration(cfg).save_pretrained(ck)
        tok.save_pretrained(ck)
        SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(ck)
    b = load_backend(str(tmp_path / "full"))
    enc = b.encode([Image.new("RGB", (32, 32))], "q")
    assert len(enc.image_positions[0]) == 16 and b.visual_grid() == (4, 4)
    assert len(b.generate(enc, max_new_tokens=2).tokens) >= 1
    with pytest.raises(BackendError, match="no CLS token"):
        load_backend(str(tmp_path / "default"))


def test_default_attention_layer_is_14_of_32_scaled(backends):
    assert backends["llava"].attention_layer == round(14 / 32 * 4) == 2
