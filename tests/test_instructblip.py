"""InstructBLIP backend end to end on a tiny random-init checkpoint built in the test: greedy answers,
the ViCrop-style attention map (LLM attention to the queries x Q-Former cross-attention to patches),
extraction to a valid trace, and batched == one-at-a-time."""

from __future__ import annotations


import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from edgevlm.models.backend import BackendError, load_backend  # noqa: E402
from edgevlm.models.extract import ExtractOptions, extract  # noqa: E402
from edgevlm.models.manifest import read_manifest  # noqa: E402
from edgevlm.traces.io import read_trace  # noqa: E402
from tests.models_fixtures import blip_dir, data, one_thread  # noqa: E402,F401

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def blip(blip_dir):
    return load_backend(str(blip_dir))


def _img(seed, px=32):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (px, px, 3), dtype=np.uint8))


def test_loads_as_instructblip_with_patch_grid(blip):
    assert blip.name == "instructblip" and blip.visual_grid() == (4, 4) and blip.vision_input_px == 32
    assert blip.n_queries == 8 and blip.attention_layer == round(14 / 32 * 4)
    enc = blip.encode([_img(0), _img(1)], "What is it?")
    assert [list(p) for p in enc.image_positions] == [list(range(8)), list(range(8, 16))]
    assert len(enc.image_maps) == 2 and enc.image_maps[0].shape == (8, 16)


def test_answer_tokens_are_argmax_of_their_logits(blip):
    for k, q in enumerate(["What colour?", "Which side is bright?"]):
        gen = blip.generate(blip.encode([_img(k)], q))
        assert gen.logits.shape == (len(gen.tokens), blip.model.config.text_config.vocab_size)
        assert list(gen.logits.argmax(axis=1)) == gen.tokens and 1 <= len(gen.tokens) <= 6


def test_attention_map_is_llm_to_queries_times_qformer_cross_attention(blip):
    """Reference: HF's own forward with output_attentions (eager), as ViCrop computes it for InstructBLIP."""
    img, q = _img(5), "Which corner is bright?"
    maps = blip.attention_to_image(img, q)
    assert maps.question.shape == maps.generic.shape == (4, 4)
    assert (maps.question > 0).all() and maps.question.sum() <= 1 + 1e-6     # a distribution's share of mass
    np.testing.assert_allclose(maps.relative, maps.question / (maps.generic + blip.settings.attention_eps))
    assert not np.allclose(maps.question, maps.generic)

    m = blip.model
    pv = blip.image_processor(images=[img], return_tensors="pt")["pixel_values"]
    text = f"Question: {q} Short answer:"
    qf = blip.qformer_tokenizer(text, return_tensors="pt")
    ids = blip.tokenizer(text, return_tensors="pt")["input_ids"]
    input_ids = torch.cat([torch.full((1, 8), m.config.image_token_id), ids], dim=1)
    m.set_attn_implementation({"text_config": "eager", "vision_config": "eager", "qformer_config": "eager"})
    try:
        with torch.inference_mode():
            out = m(pixel_values=pv, qformer_input_ids=qf["input_ids"], qformer_attention_mask=qf["attention_mask"],
                    input_ids=input_ids, output_attentions=True)
            feats = m.get_image_features(pv, qformer_input_ids=qf["input_ids"], qformer_attention_mask=qf["attention_mask"],
                                         output_attentions=True, return_dict=True)
    finally:
        m.set_attn_implementation({"text_config": "sdpa", "vision_config": "sdpa"})
        m.qformer.config._attn_implementation = "eager"
    crosses = feats.qformer_outputs.cross_attentions
    assert len(crosses) == 2                                          # cross-attention in both Q-Former layers
    cross = crosses[min(2, len(crosses) - 1)]
    c = cross[0, :, :8, 1:].mean(0)                                   # queries x patches, CLS left out
    a = out.language_model_outputs.attentions[maps.layer][0, :, -1, :8].mean(0)
    np.testing.assert_allclose(maps.question, (a @ c).reshape(4, 4).numpy(), rtol=1e-4, atol=1e-7)


def test_extraction_gives_a_valid_trace_with_boxes_inside_the_image(blip, data, tmp_path):
    out = tmp_path / "blip.parquet"
    extract(blip, read_manifest(data), out, ExtractOptions(dataset_id="tiny", progress=False))
    table, prov = read_trace(out)
    assert prov["backend"] == "instructblip" and prov["visual_grid"] == [4, 4] and "Q-Former" in prov["attention_map"]
    rows = table.to_pylist()
    assert len(rows) == 3
    for r in rows:
        assert 0 <= r["bbox_x0"] < r["bbox_x1"] <= r["image_w"] and 0 <= r["bbox_y0"] < r["bbox_y1"] <= r["image_h"]
        assert 1 <= len(r["s1_min_entropy"]) <= 6 and 1 <= r["s2_tokens"] <= 6
    one = rows
    extract(blip, read_manifest(data), tmp_path / "b3.parquet", ExtractOptions(dataset_id="tiny", progress=False,
                                                                               batch_size=3))
    many = read_trace(tmp_path / "b3.parquet")[0].to_pylist()
    for a, b in zip(one, many):
        for k in a:
            if k in ("s1_min_entropy", "s1_shannon", "s1_margin"):
                np.testing.assert_allclose(a[k], b[k], atol=1e-5)
            elif not k.startswith("t_"):
                assert a[k] == b[k], (a["sample_id"], k)


def test_missing_qformer_tokenizer_is_a_clear_error(blip_dir, tmp_path):
    import shutil

    ck = tmp_path / "noq"
    shutil.copytree(blip_dir, ck)
    shutil.rmtree(ck / "qformer_tokenizer")
    with pytest.raises(BackendError, match="Q-Former tokenizer"):
        load_backend(str(ck))
