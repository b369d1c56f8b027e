"""tiny-scenetext-v2's geometry: 1024-px scenes, 336-px input, v2 box/crop distribution, HD tiles, warm start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgevlm.models import scenes as S
from edgevlm.models.tiny import data as D

V1_DIR = Path(__file__).resolve().parent.parent / "models" / "weights" / "tiny-scenetext-v1"


def test_v1_scenes_unchanged_by_the_spec():
    """The default spec is v1's: the same pixels as make_scene always gave (v1 data stay reproducible)."""
    a = np.asarray(S.make_scene(1, 3).image)
    b = np.asarray(S.make_scene(1, 3, S.V1).image)
    assert a.shape == (768, 768, 3) and np.array_equal(a, b)


def test_v2_scenes_text_sizes():
    signs = [o for i in range(12) for o in S.make_scene(7, i, S.V2).signs()]
    assert all(o.spec.scene_px == 1024 for o in signs)
    for o in signs:
        small = S.V2.small_char_px[0] <= o.char_px <= S.V2.small_char_px[1]
        large = S.V2.large_char_px[0] <= o.char_px <= S.V2.large_char_px[1]
        assert small or large
        # readable globally exactly for the large class: >= 8 px across the 64-px effective global grid
        assert o.readable_global == large
        x0, y0, x1, y1 = o.box
        assert 0 <= x0 < x1 <= 1024 and 0 <= y0 < y1 <= 1024
    # small glyphs are 9-14 px of effective resolution in a 400-px ViCrop box (336 + 2 x 32 pad)
    assert S.V2.small_char_px[0] * 64 / (336 + 2 * D.V2.box_pad_px) >= 8.0


def test_v2_training_crops_follow_the_v2_box_search():
    rng = np.random.default_rng(0)
    scene = S.make_scene(7, 1, S.V2)
    for o in scene.objects:
        for _ in range(5):
            x0, y0, x1, y1 = D.search_box(rng, o, geo=D.V2)
            side = max(x1 - x0, y1 - y0)
            assert 0 <= x0 < x1 <= 1024 and 0 <= y0 < y1 <= 1024
            assert side >= 336 * 0.65       # ViCrop windows are >= 1.0 x 336 px (grown ones shrunk by <= 0.65)
        ob = D.oracle_box(o, geo=D.V2)
        assert ob[2] - ob[0] >= 336 or ob[2] - ob[0] == 1024


def test_v2_pool_stores_jpeg_images_and_hd_tiles(tmp_path):
    pool = D.build_pool(7, 0, 2, progress=False, geo=D.V2)
    assert isinstance(pool.glob, D.JpegImages) and pool.glob[0].shape == (336, 336, 3)
    assert len(pool.tiles) == 2 * 4 and pool.tiles[[0, 5]].shape == (2, 336, 336, 3)
    D.save_pool(pool, tmp_path / "p.npz")
    back = D.load_pools([tmp_path / "p.npz", tmp_path / "p.npz"])
    assert len(back) == 4 and len(back.tiles) == 16 and len(back.crops) == 2 * len(pool.crops)
    assert np.array_equal(back.glob[2], pool.glob[0])
    assert D.hd_tiles(2, 1024) == [(0, 0, 512, 512), (512, 0, 1024, 512), (0, 512, 512, 1024), (512, 512, 1024, 1024)]


@pytest.mark.skipif(not (V1_DIR / "model.safetensors").exists(), reason="v1 weights not present")
def test_warm_start_patch_embedding_approximates_v1_on_the_downscale():
    """On a smooth 336-px image the resized 42-px kernel gives about what v1's 8-px kernel gives on the 64-px downscale."""
    import torch
    from PIL import Image
    from transformers import LlavaForConditionalGeneration

    from edgevlm.models.tiny import model as M
    v2, _ = M.warm_start(V1_DIR)
    v1 = LlavaForConditionalGeneration.from_pretrained(str(V1_DIR))
    assert v2.config.vision_config.image_size == 336 and v2.config.vision_config.patch_size == 42
    img = S.make_scene(999, 0, S.V2).image

    def pix(px):
        a = np.asarray(img.resize((px, px), Image.BICUBIC), dtype=np.float32) / 255.0
        return (torch.from_numpy(a).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.no_grad():
        e1 = v1.model.vision_tower.embeddings.patch_embedding(pix(64)).flatten()
        e2 = v2.model.vision_tower.embeddings.patch_embedding(pix(336)).flatten()
    assert float(np.corrcoef(e1.numpy(), e2.numpy())[0, 1]) > 0.9
    # everything else is v1's
    s1, s2 = v1.state_dict(), v2.state_dict()
    same = [k for k in s1 if "patch_embedding" not in k and k in s2 and torch.equal(s1[k], s2[k])]
    assert len(same) == len([k for k in s1 if "patch_embedding" not in k])
