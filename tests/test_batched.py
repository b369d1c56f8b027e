"""Batched extraction (models.batched) equals one-at-a-time extraction: on tiny random-init LLaVA and
Qwen2.5-VL checkpoints and on the shipped tiny model; plus dataset prompts and scoring rules in extract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from edgevlm.models.backend import load_backend  # noqa: E402
from edgevlm.models.extract import ExtractError, ExtractOptions, extract  # noqa: E402
from edgevlm.models.manifest import read_manifest  # noqa: E402
from edgevlm.traces.io import read_trace  # noqa: E402
from tests.models_fixtures import (backends, llava_dir, make_images, one_thread, qwen_dir,  # noqa: E402,F401
                                   write_manifest)

pytestmark = pytest.mark.models
TINY = Path(__file__).resolve().parent.parent / "models" / "weights" / "tiny-scenetext-v1"
FLOATS = ("s1_min_entropy", "s1_shannon", "s1_margin")


@pytest.fixture(scope="module")
def data5(tmp_path_factory):
    """Five samples over images of four sizes; two have a gt_box (oracle pass), one a long question."""
    d = tmp_path_factory.mktemp("data5")
    man = write_manifest(d / "five.jsonl", make_images(d, 5, seed=3))
    lines = [json.loads(l) for l in man.read_text().splitlines()]
    lines[3]["gt_box"] = [5, 5, 40, 30]
    lines[2]["question"] = "Which of the shapes in the lower half of the picture has the brightest colour?"
    man.write_text("".join(json.dumps(l) + "\n" for l in lines))
    return man


def _rows(backend, manifest, tmp_path, batch_size, name):
    out = tmp_path / f"{name}-b{batch_size}.parquet"
    extract(backend, read_manifest(manifest), out, ExtractOptions(dataset_id="d", progress=False,
                                                                  batch_size=batch_size, checkpoint_every=2))
    table, prov = read_trace(out)
    assert prov["batch_size"] == batch_size
    return table.to_pylist()


def _assert_same(one, many):
    assert len(one) == len(many)
    for a, b in zip(one, many):
        for key in a:
            if key.startswith("t_"):
                continue                                  # timings: batch vs single calls
            if key in FLOATS:
                assert len(a[key]) == len(b[key]), (a["sample_id"], key)
                np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=f"{a['sample_id']} {key}")
            else:
                assert a[key] == b[key], (a["sample_id"], key, a[key], b[key])


@pytest.mark.parametrize("kind", ["llava", "qwen"])
def test_batched_equals_one_at_a_time_on_tiny_random_configs(backends, data5, tmp_path, kind):
    b = backends[kind]
    one = _rows(b, data5, tmp_path, 1, kind)
    assert len({r["s1_answer"] for r in one}) > 1 or len({r["bbox_x0"] for r in one}) > 1   # not all identical
    _assert_same(one, _rows(b, data5, tmp_path, 3, kind))      # 3 + 2: a full and a partial batch
    _assert_same(one, _rows(b, data5, tmp_path, 8, kind))      # one batch larger than the data


@pytest.mark.skipif(not (TINY / "model.safetensors").is_file(), reason="tiny model weights not present")
def test_batched_equals_one_at_a_time_on_the_tiny_model(data5, tmp_path):
    b = load_backend(str(TINY))
    one = _rows(b, data5, tmp_path, 1, "tiny")
    _assert_same(one, _rows(b, data5, tmp_path, 4, "tiny"))


def test_generate_batch_pads_prompts_of_different_lengths(backends):
    from PIL import Image

    b = backends["llava"]
    rng = np.random.default_rng(9)
    imgs = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    encs = [b.encode([imgs[0]], "q?"), b.encode([imgs[1], imgs[2]], "a much longer question about both images?"),
            b.encode([imgs[2]], "mid length question")]
    assert len({e.inputs["input_ids"].shape[1] for e in encs}) == 3
    for single, batched in zip([b.generate(e) for e in encs], b.generate_batch(encs)):
        assert batched.tokens == single.tokens and batched.text == single.text
        assert list(batched.logits.argmax(axis=1)) == batched.tokens
        np.testing.assert_allclose(batched.logits, single.logits, atol=1e-4)
    b.clear_cache()


def test_failure_in_a_batch_keeps_the_rows_before_it(backends, data5, tmp_path):
    lines = data5.read_text().splitlines()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    recs = [json.loads(l) for l in lines[:4]]
    for r in recs:
        r["image"] = str(data5.parent / r["image"])
    recs[2]["image"] = str(bad)
    man = tmp_path / "m.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "o.parquet"
    with pytest.raises(ExtractError, match="line 3: field 'image'"):
        extract(backends["llava"], read_manifest(man), out, ExtractOptions(dataset_id="m", progress=False,
                                                                           batch_size=4))
    assert [r["sample_id"] for r in read_trace(out)[0].to_pylist()] == ["m-1", "m-2"]
    with pytest.raises(ExtractError, match="--batch-size must be a positive integer"):
        ExtractOptions(dataset_id="m", batch_size=0).check()


def test_manifest_prompt_and_scoring_rule_drive_extraction(backends, data5, tmp_path, monkeypatch):
    b = backends["llava"]
    rec = json.loads(data5.read_text().splitlines()[0])
    rec["image"] = str(data5.parent / rec["image"])
    rec.update(question="Is it yellow?", answers=["yes"], scoring="yesno",
               prompt="Is it yellow?\nReference OCR token: STOP\nAnswer the question using a single word or phrase.")
    man = tmp_path / "p.jsonl"
    man.write_text(json.dumps(rec) + "\n")
    asked = []
    real = b.encode
    monkeypatch.setattr(b, "encode", lambda imgs, q, **kw: asked.append(q) or real(imgs, q, **kw))
    out = tmp_path / "p.parquet"
    extract(b, read_manifest(man), out, ExtractOptions(dataset_id="p", progress=False))
    row = read_trace(out)[0].to_pylist()[0]
    assert asked and all(q in (rec["prompt"], b.settings.generic_prompt) for q in asked) and rec["prompt"] in asked
    from edgevlm.models.scoring import exact_match, yes_no_match
    assert row["s1_score"] == yes_no_match(row["s1_answer"], ["yes"])    # POPE's rule ...
    assert row["s1_score"] != exact_match(row["s1_answer"], ["yes"])     # ... not the generic one
    with_suffix = load_backend(str(b.model_id), overrides={"question_suffix": "\nAnswer briefly."})
    with pytest.raises(ExtractError, match="field 'prompt'.*drop --question-suffix"):
        extract(with_suffix, read_manifest(man), tmp_path / "s.parquet", ExtractOptions(dataset_id="p", progress=False))


@pytest.mark.skipif(not (TINY / "model.safetensors").is_file(), reason="tiny model weights not present")
def test_half_precision_weights_keep_float32_logits_and_batching(data5, tmp_path):
    """The mixed-precision path (bfloat16 weights, LM head and uncertainties in float32), run on CPU;
    on CUDA the same code runs with float16/bfloat16 (not run here: no GPU in this task)."""
    from PIL import Image

    from edgevlm.models.uncertainty import token_uncertainty

    b32 = load_backend(str(TINY))
    b16 = load_backend(str(TINY), overrides={"dtype": "bfloat16"})
    assert b16.model.dtype == torch.bfloat16 and b16.describe()["dtype"] == "bfloat16"
    img = Image.open(read_manifest(data5)[0].image_path).convert("RGB").resize((64, 64))
    enc = b16.encode([img], "what does the sign say?")
    lm = b16._lm()
    with torch.inference_mode():
        logits = lm(**b16._fresh(enc), logits_to_keep=1).logits
    assert logits.dtype == torch.float32                        # the head ran in float32
    g16, g32 = b16.generate(enc), b32.generate(b32.encode([img], "what does the sign say?"))
    assert list(g16.logits.argmax(axis=1)) == g16.tokens
    n = min(len(g16.tokens), len(g32.tokens))
    # bfloat16 weights change the numbers a little, not the scale: entropies stay close to float32's
    np.testing.assert_allclose(token_uncertainty(g16.logits)[1][:n], token_uncertainty(g32.logits)[1][:n], atol=0.5)
    # Batched == one-at-a-time holds in float32 (tests above), not in bfloat16: the batch's shapes change
    # the rounding, and answers whose top two logits are that close flip (seen here on these random
    # images). So a half-precision batched run is checked for validity only.
    rows = _rows(b16, data5, tmp_path, 4, "bf16")
    assert len(rows) == 5 and all(len(r["s1_min_entropy"]) >= 1 for r in rows)


def test_shared_image_prefix_equals_whole_prompts(backends):
    """Batched calls run image 0's prefix once ("USER: " + its tokens here) and only the rest of each
    prompt on top of its cached states, and the question attention pass only the last token of the
    stage-1 prompt: same tokens, logits and attention maps as whole prompts."""
    from PIL import Image

    b = backends["llava"]
    assert b.share_prefix
    rng = np.random.default_rng(11)
    imgs = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(4)]
    b.clear_cache()
    encs = [b.encode([imgs[0]], "q?"), b.encode([imgs[1]], "a much longer question about the image?"),
            b.encode([imgs[0], imgs[2]], "two images, and a question"), b.encode([imgs[1], imgs[3]], "mid?")]
    n = b._prefix_len(encs[0])
    assert n > int(b.visual_tokens_per_image) and len({b._prefix_len(e) for e in encs}) == 1
    prefix_calls = []
    real = b._lm().forward
    try:
        b._lm().forward = lambda *a, **kw: prefix_calls.append(kw["input_ids"].shape) or real(*a, **kw)
        batched = b.generate_batch(encs)
    finally:
        del b._lm().forward
    assert prefix_calls[0] == (2, n)                    # two distinct images 0: one prefix forward of both
    assert len(b._prefix_cache) == 2
    for single, many in zip([b.generate(e) for e in encs], batched):
        assert many.tokens == single.tokens and many.text == single.text
        np.testing.assert_allclose(many.logits, single.logits, atol=1e-4)
    layer = b.attention_layer
    assert len(b._prompt_states) == 2                   # the one-image (stage-1) prompts' states were kept
    generic = [b.encode([img], b.settings.generic_prompt, add_suffix=False) for img in imgs[:2]]
    for prompts, width in ((encs[:2], 1), (generic, None)):
        prefix_calls.clear()
        try:
            b._lm().forward = lambda *a, **kw: prefix_calls.append(kw["input_ids"].shape) or real(*a, **kw)
            grids = b._last_position_attention_many(prompts, layer)
        finally:
            del b._lm().forward
        # the question pass (= stage 1's prompt) runs only its last token; the generic one the text after image 0
        assert prefix_calls == [(2, width or max(int(e.inputs["input_ids"].shape[1]) for e in prompts) - n)]
        for e, grid in zip(prompts, grids):
            np.testing.assert_allclose(grid, b._last_position_attention(e, layer), atol=1e-6)
            assert grid.shape == b.visual_grid() and abs(grid.sum()) > 0
    assert len(b._prefix_cache) == 2                    # the attention passes reused the cached prefixes
    b.clear_cache()
    assert not b._prefix_cache and not b._prompt_states


def test_spare_room_layer_holds_what_concatenation_holds():
    """models.kv_buffer: states written in place (growing past the spare room) equal DynamicLayer's
    concatenated ones, step by step."""
    from transformers.cache_utils import DynamicLayer

    from edgevlm.models.kv_buffer import SpareRoomLayer, with_spare_room

    g = torch.Generator().manual_seed(5)
    first = (torch.randn(3, 2, 7, 4, generator=g), torch.randn(3, 2, 7, 5, generator=g))
    ref = DynamicLayer()
    ref.update(*first)
    room = SpareRoomLayer(*first, spare_tokens=2)
    for step in range(6):                      # the third step outgrows the room: the buffer grows
        k, v = torch.randn(3, 2, 1 + step % 2, 4, generator=g), torch.randn(3, 2, 1 + step % 2, 5, generator=g)
        want, got = ref.update(k, v), room.update(k, v)
        assert room.get_seq_length() == ref.get_seq_length()
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    from transformers import DynamicCache
    cache = DynamicCache(ddp_cache_data=[first], config=None)
    assert isinstance(with_spare_room(cache, 4).layers[0], SpareRoomLayer)
    assert torch.equal(cache.layers[0].keys, first[0])


def test_top_layer_mlp_runs_on_the_last_position_only_with_the_same_logits_and_cache(backends):
    """_top_layer_last_position: a prefill's last-position logits and every layer's cached keys/values
    are those of the whole forward, while the top layer's MLP sees one position per prompt."""
    from PIL import Image

    b = backends["llava"]
    rng = np.random.default_rng(12)
    enc = b.encode([Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))], "what is it?")
    inputs, _ = b.collate([enc, enc])
    mlp = b._decoder_layers()[-1].mlp
    seen = []
    hook = mlp.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        with torch.inference_mode():
            whole = b._lm()(**b._fresh(enc) | inputs, use_cache=True, logits_to_keep=1)
            with b._top_layer_last_position():
                last = b._lm()(**b._fresh(enc) | inputs, use_cache=True, logits_to_keep=1)
    finally:
        hook.remove()
        b.clear_cache()
    n = inputs["input_ids"].shape[1]
    assert seen == [(2, n, seen[0][2]), (2, 1, seen[0][2])]
    np.testing.assert_allclose(last.logits.numpy(), whole.logits.numpy(), atol=1e-5)
    for a, c in zip(whole.cache.layers, last.cache.layers):
        assert a.keys.shape == c.keys.shape
        np.testing.assert_allclose(c.keys.numpy(), a.keys.numpy(), atol=1e-6)
        np.testing.assert_allclose(c.values.numpy(), a.values.numpy(), atol=1e-6)
    assert "forward" not in vars(b._decoder_layers()[-1])        # the layer's own forward is back


def test_stage_2_and_the_oracle_pass_run_in_one_batch(backends, data5, tmp_path, monkeypatch):
    """process_sample asks for stage 2 and the oracle answer together (generate_each), so a batch makes
    two generate_batch calls: stage 1, then stage 2 with the oracle prompts of samples with a gt_box."""
    b = backends["llava"]
    sizes = []
    real = b.generate_batch
    monkeypatch.setattr(b, "generate_batch", lambda encs, limit=None: sizes.append(len(encs)) or real(encs, limit))
    samples = read_manifest(data5)
    extract(b, samples, tmp_path / "o.parquet", ExtractOptions(dataset_id="d", progress=False, batch_size=5))
    with_box = sum(s.gt_box is not None for s in samples)
    assert with_box == 2 and sizes == [5, 5 + with_box]


@pytest.mark.parametrize("chunk_tokens", [1, 40])
def test_chunked_prefill_equals_one_at_a_time(backends, monkeypatch, chunk_tokens):
    """On CPU the prefill after the shared prefix runs in chunks of rows (1 row each, or a few), padded to
    one width and joined into one cache for decoding: the same tokens and logits as generate() on each."""
    from PIL import Image

    b = backends["llava"]
    monkeypatch.setattr(b, "CPU_PREFILL_CHUNK_TOKENS", chunk_tokens)
    rng = np.random.default_rng(13)
    imgs = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(4)]
    b.clear_cache()
    encs = [b.encode([imgs[0], imgs[1]], "q?"), b.encode([imgs[1], imgs[2]], "a much longer question here?"),
            b.encode([imgs[2], imgs[3]], "mid question"), b.encode([imgs[3], imgs[0]], "and the last?")]
    batched = b.generate_batch(encs)
    for single, many in zip([b.generate(e) for e in encs], batched):
        assert many.tokens == single.tokens and many.text == single.text
        np.testing.assert_allclose(many.logits, single.logits, atol=1e-5)
    b.clear_cache()
