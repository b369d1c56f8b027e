"""The batched every-quality pipeline (models.tiny.quality_trace) against the real LLaVA backend, and its v2 rows."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.models_fixtures import build_tiny_llava, one_thread  # noqa: E402,F401

SETTINGS = {"max_new_tokens": 5, "attention_layer": 1, "prompt_template": "{images}q: {question} a:",
            "image_joiner": "", "box_pad_px": 6}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("qt") / "ckpt", image_px=84, patch=12, layers=3,
                            settings=SETTINGS)


@pytest.fixture(scope="module")
def original():
    from PIL import Image
    rng = np.random.default_rng(3)
    a = np.clip(rng.normal(120, 50, size=(300, 300, 3)), 0, 255).astype(np.uint8)
    a[40:90, 200:260] = [250, 30, 30]
    return Image.fromarray(a)


def test_runner_matches_the_backend(ckpt, original):
    """Same answers, logits and relative attention as LlavaBackend on the same decoded q-JPEG."""
    import torch
    from PIL import Image

    from edgevlm.models.jpeg import jpeg_round_trip
    from edgevlm.models.llava import LlavaBackend
    from edgevlm.models.tiny.quality_trace import TinyLlavaRunner

    be = LlavaBackend.load(str(ckpt))
    run = TinyLlavaRunner(ckpt)
    g = original.resize((84, 84), Image.Resampling.BICUBIC)
    seen = [jpeg_round_trip(g, q) for q in (10, 75)]
    feats = run.features(seen)
    batch = run.greedy(run.embeds(run.prompt_ids(1, "what is red?"), feats[:, None]))
    rel = run.relative_attention(feats, "what is red?")
    for k, img in enumerate(seen):
        ref = be.generate(be.encode([img], "what is red?"))
        assert batch[k].tokens == ref.tokens
        np.testing.assert_allclose(batch[k].logits, ref.logits, rtol=1e-4, atol=1e-4)
        maps = be.attention_to_image(img, "what is red?")
        np.testing.assert_allclose(rel[k], maps.relative, rtol=1e-4, atol=1e-6)
    two = run.greedy(run.embeds(run.prompt_ids(2, "what is red?"), torch.stack([feats, feats.flip(0)], 1)))
    ref2 = be.generate(be.encode([seen[0], seen[1]], "what is red?"))
    assert two[0].tokens == ref2.tokens


def test_sample_row_has_every_quality(ckpt, original):
    from edgevlm.models.tiny.quality_trace import QUALITIES, TinyLlavaRunner, sample_row

    run = TinyLlavaRunner(ckpt)
    row = sample_row(run, original, "s0", "what is red?", ["red"], "color", gt_box=(200, 40, 260, 90), hd_grid=2)
    for col in ("global_jpeg_bytes", "local_jpeg_bytes", "original_jpeg_bytes", "s1_score_q", "s1_min_entropy_q",
                "bbox_x0_q", "s2_score_q", "s2_oracle_score_q", "hd_score_q"):
        assert len(row[col]) == len(QUALITIES), col
    assert row["hd_tiles"] == 5 and row["hd_visual_tokens"] == 5 * 49
    # bytes grow with quality from q5 to q100 for a noisy image
    assert row["original_jpeg_bytes"][0] < row["original_jpeg_bytes"][-1]
    assert row["global_jpeg_bytes"][0] < row["global_jpeg_bytes"][-1]
    for k in range(len(QUALITIES)):
        assert 0 <= row["bbox_x0_q"][k] < row["bbox_x1_q"][k] <= 300
        assert len(row["s1_min_entropy_q"][k]) == len(row["s1_margin_q"][k]) >= 1


def test_v2_trace_from_worker_validates(ckpt, tmp_path):
    """The extraction worker writes a format-2 trace that read_trace validates, labelled tiny-local."""
    import json

    from edgevlm.models.tiny import default_trace as DT
    from edgevlm.models.tiny.quality_trace import QUALITIES
    from edgevlm.traces.io import read_trace

    prov = DT.provenance_v2(str(ckpt), "test", "test", QUALITIES, 2)
    # worker 1 of 2 over samples 0..3: samples 1 and 3 (1024-px v2 scenes, resized to the 84-px test model)
    summ = DT._worker_v2((str(ckpt), str(tmp_path / "p.parquet"), 1, 2, 4, prov, None, None))
    assert summ["rows"] == 2
    table, meta = read_trace(tmp_path / "p.parquet")
    assert meta["format_version"] == 2 and meta["source_kind"] == "tiny-local"
    assert meta["jpeg_qualities"] == list(QUALITIES)
    assert table.column("sample_id").to_pylist() == ["scenes1000-000001", "scenes1000-000003"]
    assert table.num_rows == 2 and len(table.column("s2_score_q")[0]) == len(QUALITIES)
    assert table.column("image_w").to_pylist() == [1024, 1024]
    json.dumps(meta)
    # a rerun resumes: nothing new
    assert DT._worker_v2((str(ckpt), str(tmp_path / "p.parquet"), 1, 2, 4, prov, None, None))["new_rows"] == 0


def test_v2_worker_adds_the_progressive_levels_with_a_codec(ckpt, tmp_path):
    """With a fitted codec the worker also writes prog_bytes / prog_score / prog_min_entropy per level
    (models.progressive on the uncompressed global view), and the trace still validates."""
    import numpy as np
    from PIL import Image

    from edgevlm.models.backend import load_backend
    from edgevlm.models.codec import make_codec
    from edgevlm.models.progressive import vision_tokens
    from edgevlm.models.tiny import default_trace as DT
    from edgevlm.models.tiny.quality_trace import QUALITIES
    from edgevlm.traces.io import read_trace

    be = load_backend(str(ckpt))
    rng = np.random.default_rng(0)
    px = be.vision_input_px
    imgs = [Image.fromarray(rng.integers(0, 255, (px, px, 3), dtype=np.uint8)) for _ in range(4)]
    toks = vision_tokens(be, imgs)
    codec = make_codec("pca_levels", n_levels=2)
    codec.fit(toks.reshape(-1, toks.shape[-1]))
    codec.save(tmp_path / "codec")
    prov = DT.provenance_v2(str(ckpt), "test", "test", QUALITIES, 2)
    DT._worker_v2((str(ckpt), str(tmp_path / "p.parquet"), 0, 4, 1, prov, None, str(tmp_path / "codec")))
    table, _ = read_trace(tmp_path / "p.parquet")
    row = table.to_pylist()[0]
    assert len(row["prog_bytes"]) == len(row["prog_score"]) == len(row["prog_min_entropy"]) == 2
    assert 0 < row["prog_bytes"][0] < row["prog_bytes"][1]
