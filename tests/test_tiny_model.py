"""The shipped tiny scene-text LLaVA loads through the extraction backend and answers held-out scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from models import scenes as S  # noqa: E402

CKPT = Path(__file__).resolve().parents[1] / "models" / "weights" / "tiny-scenetext-v1"
HELDOUT_SEED = 1000  # the default trace's dataset seed; the model trained on seed 1


@pytest.fixture(scope="module")
def backend():
    import torch
    from models.backend import load_backend
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    if not (CKPT / "model.safetensors").exists():
        pytest.fail(f"shipped checkpoint missing: {CKPT}")
    return load_backend(str(CKPT))


def _samples(qtype: str, n: int, start: int = 5000):
    out, i = [], start
    while len(out) < n:
        scene, q = S.make_sample(HELDOUT_SEED, i)
        i += 1
        if q.question_type == qtype:
            out.append((scene, q))
    return out


def _answer(be, images, question):
    return be.generate(be.encode(images, question)).text


def test_checkpoint_contract():
    settings = json.loads((CKPT / "edgevlm.json").read_text())
    for key in ("prompt_template", "generic_prompt", "attention_layer", "vision_input_px", "max_new_tokens",
                "box_pad_px"):
        assert key in settings
    assert "{images}" in settings["prompt_template"] and "{question}" in settings["prompt_template"]
    assert (CKPT / "model.safetensors").stat().st_size <= 20_000_000
    assert (CKPT / "README.md").is_file()
    from transformers import LlavaProcessor
    proc = LlavaProcessor.from_pretrained(str(CKPT))
    assert proc.image_processor.size == {"height": 64, "width": 64}
    ids = proc.tokenizer("<image>q: x a:", add_special_tokens=False).input_ids
    assert ids[0] == proc.image_token_id and proc.tokenizer.decode(ids[1:]) == "q: x a:"


def test_backend_loads_with_the_shipped_settings(backend):
    assert backend.vision_input_px == 64
    assert backend.visual_grid() == (8, 8)
    assert backend.settings.box_pad_px == json.loads((CKPT / "edgevlm.json").read_text())["box_pad_px"]


def test_answers_colour_questions_on_heldout_scenes(backend):
    px = backend.vision_input_px
    hits = [_answer(backend, [scene.image.resize((px, px), Image.BICUBIC)], q.question) == q.answers[0]
            for scene, q in _samples("color", 10)]
    assert sum(hits) >= 7, hits


def test_reads_small_text_only_with_a_crop(backend):
    """Small codes are unreadable in the 64-px global view but read from the ground-truth crop."""
    from models.boxsearch import box_around
    px = backend.vision_input_px
    pad = backend.settings.box_pad_px
    small = [(s, q) for s, q in _samples("text", 24) if not q.target.readable_global][:8]
    glob_hits, crop_hits = [], []
    for scene, q in small:
        g = scene.image.resize((px, px), Image.BICUBIC)
        box = box_around(q.target.box, S.SCENE_PX, S.SCENE_PX, px, pad_px=pad).as_tuple()
        crop = scene.image.crop(box).resize((px, px), Image.BICUBIC)
        glob_hits.append(_answer(backend, [g], q.question) == q.answers[0])
        crop_hits.append(_answer(backend, [g, crop], q.question) == q.answers[0])
    assert sum(crop_hits) >= sum(glob_hits) + 3, (glob_hits, crop_hits)


def test_relative_attention_points_at_the_asked_sign(backend):
    """The grounding loss taught the model where to look: the attention peak lies on the named sign."""
    px = backend.vision_input_px
    hits, chance = [], []
    for scene, q in _samples("text", 10, start=6000):
        maps = backend.attention_to_image(scene.image.resize((px, px), Image.BICUBIC), q.question)
        assert maps.relative.shape == (8, 8) and np.isfinite(maps.relative).all()
        r, c = np.unravel_index(np.argmax(maps.relative), maps.relative.shape)
        cell = S.SCENE_PX / 8
        x0, y0, x1, y1 = q.target.box
        hits.append(x0 - cell < c * cell + cell / 2 < x1 + cell and y0 - cell < r * cell + cell / 2 < y1 + cell)
        chance.append(min(1.0, ((x1 - x0 + 2 * cell) * (y1 - y0 + 2 * cell)) / S.SCENE_PX ** 2))
    assert np.mean(hits) >= np.mean(chance) + 0.3, (hits, np.mean(chance))
