"""Progressive visual-token codecs (models.codec) and --progressive extraction on a tiny random LLaVA."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgevlm.models.codec import CODECS, CodecError, load_codec, make_codec  # noqa: E402
from edgevlm.models.codec.base import HEADER, doubling_sizes, unpack_level  # noqa: E402

D = 48


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _tokens(n: int, seed: int) -> np.ndarray:
    """Low-rank-plus-noise tokens with a decaying spectrum and an offset, like ViT features."""
    basis = np.random.default_rng(123).normal(size=(12, D))
    rng = np.random.default_rng(seed)
    return ((rng.normal(size=(n, 12)) * np.geomspace(4, 0.2, 12)) @ basis
            + 0.05 * rng.normal(size=(n, D)) + 1.5).astype(np.float32)


@pytest.fixture(scope="module")
def calib():
    return _tokens(3000, seed=1)


@pytest.fixture(scope="module")
def held_out():
    return _tokens(200, seed=2)


@pytest.fixture(scope="module")
def codecs(calib):
    return {"pca_levels": make_codec("pca_levels", n_levels=4).fit(calib),
            "nested_ae": make_codec("nested_ae", n_levels=4, steps=150, hidden=64).fit(calib)}


def test_doubling_sizes():
    assert doubling_sizes(1024, 5) == [64, 64, 128, 256, 512]
    assert doubling_sizes(48, 4) == [6, 6, 12, 24]
    assert sum(doubling_sizes(50, 3)) == 50


def test_pca_round_trip_within_quantisation_bound(codecs, held_out):
    c = codecs["pca_levels"]
    levels = c.encode(held_out)
    rec = c.decode(levels)
    # per token, the L2 error is at most sqrt(sum_l k_l (scale_l/2)^2), plus float32 rounding
    scales = [HEADER.unpack_from(p)[4] for p in levels]
    bound = np.sqrt(sum(k * (s / 2) ** 2 for k, s in zip(c.group_sizes, scales)))
    err = np.linalg.norm(rec.astype(np.float64) - held_out, axis=1)
    assert err.max() <= bound * (1 + 1e-4) + 1e-4, (err.max(), bound)
    # and the bound is tight enough to matter: far below the token norm
    assert bound < 0.05 * np.linalg.norm(held_out - held_out.mean(0), axis=1).mean()


def test_round_trip_coefficients_exact_quantisation(codecs, held_out):
    """Each decoded coefficient is within half a step of the analysis coefficient."""
    c = codecs["pca_levels"]
    z = c._analyse(held_out.astype(np.float64))
    start = 0
    for p, k in zip(c.encode(held_out), c.group_sizes):
        _, _, coef = unpack_level(p)
        scale = HEADER.unpack_from(p)[4]
        assert np.abs(coef - z[:, start:start + k]).max() <= scale / 2 * (1 + 1e-5)
        start += k


@pytest.mark.parametrize("kind", ["pca_levels", "nested_ae"])
def test_error_non_increasing_with_level_on_held_out(codecs, held_out, kind):
    c = codecs[kind]
    levels = c.encode(held_out)
    errs = [float(np.mean((c.decode(levels[:l]) - held_out) ** 2)) for l in range(1, c.n_levels + 1)]
    assert all(b <= a for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.05 * errs[0], errs          # the levels really refine
    if kind == "pca_levels":                         # guaranteed per token, not only on average
        per_tok = [np.sum((c.decode(levels[:l]) - held_out) ** 2, axis=1) for l in range(1, c.n_levels + 1)]
        for a, b in zip(per_tok, per_tok[1:]):
            assert (b <= a * (1 + 1e-5) + 1e-6).all()


@pytest.mark.parametrize("kind", ["pca_levels", "nested_ae"])
def test_bytes_are_real_payload_lengths_and_cumulative_increases(codecs, held_out, kind):
    c = codecs[kind]
    levels = c.encode(held_out)
    assert len(levels) == c.n_levels == 4
    assert all(isinstance(p, bytes) for p in levels)
    for i, (p, k) in enumerate(zip(levels, c.group_sizes)):
        # the body is exactly the zlib stream of n_tokens x k int8 codes, after a fixed header
        assert len(zlib.decompress(p[HEADER.size:])) == held_out.shape[0] * k
        assert HEADER.unpack_from(p)[:4] == (i, 4, held_out.shape[0], k)
    assert c.level_bytes(held_out) == [len(p) for p in levels]
    cum = np.cumsum([len(p) for p in levels])
    assert (np.diff(cum) > 0).all() and cum[0] > 0


@pytest.mark.parametrize("kind", ["pca_levels", "nested_ae"])
def test_save_load_same_decode(codecs, held_out, tmp_path, kind):
    c = codecs[kind]
    c.save(tmp_path / kind)
    c2 = load_codec(tmp_path / kind)
    assert c2.kind == kind and c2.group_sizes == c.group_sizes
    levels = c.encode(held_out)
    assert c2.encode(held_out) == levels
    np.testing.assert_array_equal(c2.decode(levels[:2]), c.decode(levels[:2]))
    meta = json.loads((tmp_path / kind / "codec.json").read_text())
    assert meta["kind"] == kind and meta["d_vision"] == D


def test_nested_ae_prefixes_as_good_as_pca(codecs, held_out):
    """Every latent prefix of the nested-dropout AE reconstructs held-out tokens about as well as the
    same number of principal components (PCA is MSE-optimal for linear structure like this data)."""
    errs = {}
    for kind, c in codecs.items():
        levels = c.encode(held_out)
        errs[kind] = [float(np.mean((c.decode(levels[:l]) - held_out) ** 2)) for l in range(1, 5)]
    for a, p in zip(errs["nested_ae"], errs["pca_levels"]):
        assert a <= 1.1 * p, errs


def test_group_sizes_and_errors(calib, held_out, tmp_path):
    c = make_codec("pca_levels", group_sizes=[4, 8, 16]).fit(calib)
    assert c.group_sizes == [4, 8, 16] and c.n_levels == 3
    with pytest.raises(CodecError, match="group_sizes"):
        make_codec("pca_levels", group_sizes=[40, 40]).fit(calib)
    with pytest.raises(CodecError, match="must be one of"):
        make_codec("jpeg")
    with pytest.raises(CodecError, match="d_vision"):
        c.encode(held_out[:, :10])
    with pytest.raises(CodecError, match="at least level 1"):
        c.decode([])
    levels = c.encode(held_out)
    with pytest.raises(CodecError, match="level 2"):
        c.decode([levels[0], levels[2]])                 # out of order
    with pytest.raises(CodecError, match="fit"):
        make_codec("pca_levels").encode(held_out)
    with pytest.raises(CodecError, match="codec.json"):
        load_codec(tmp_path / "nothing")
    assert set(CODECS) == {"pca_levels", "nested_ae"}


# ----- extraction on a tiny random-init LLaVA -------------------------------------------------------
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    from tests.models_fixtures import build_tiny_llava
    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "ckpt", settings={"max_new_tokens": 4})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tests.models_fixtures import make_images, write_manifest
    d = tmp_path_factory.mktemp("data")
    return write_manifest(d / "vqa.jsonl", make_images(d, 3))


@pytest.fixture(scope="module")
def calib_data(tmp_path_factory):
    from tests.models_fixtures import make_images, write_manifest
    d = tmp_path_factory.mktemp("calib")
    return write_manifest(d / "calib.jsonl", make_images(d, 4, seed=7))


def test_fit_codec_cli_and_progressive_extract(llava_dir, data, calib_data, tmp_path):
    from edgevlm.models.cli import main
    from edgevlm.traces.io import read_trace

    assert main(["fit-codec", "--model", str(llava_dir), "--dataset", str(calib_data), "--levels", "3"]) == 0
    codec_dir = llava_dir / "codec" / "pca_levels"
    codec = load_codec(codec_dir)
    assert codec.d == 32 and codec.n_levels == 3
    assert codec.fit_info["n_calibration_tokens"] == 4 * 64
    out = tmp_path / "prog.parquet"
    assert main(["extract", "--model", str(llava_dir), "--dataset", str(data), "--out", str(out),
                 "--progressive", "--no-progress", "--source-kind", "tiny-local"]) == 0
    table, prov = read_trace(out)                    # validates the prog columns (same L, increasing bytes)
    rows = table.to_pylist()
    assert len(rows) == 3
    for r in rows:
        assert len(r["prog_bytes"]) == len(r["prog_score"]) == len(r["prog_min_entropy"]) == 3
        assert all(b > a for a, b in zip(r["prog_bytes"], r["prog_bytes"][1:]))
        assert all(0 <= s <= 1 for s in r["prog_score"]) and all(e >= 0 for e in r["prog_min_entropy"])
    p = prov["progressive"]
    assert p["kind"] == "pca_levels" and p["group_sizes"] == codec.group_sizes and p["n_tokens"] == 64
    assert prov["edge_vision_flops"] > 0 and prov["edge_codec_encode_flops"] == 2 * 64 * 32 * 32
    assert prov["progressive"]["path"] == str(codec_dir)


def test_progressive_row_matches_codec_and_uncompressed_top(llava_dir, data):
    """prog_bytes are the codec's own cumulative payload lengths; near-lossless levels keep the answer."""
    from PIL import Image

    from edgevlm.models.backend import load_backend
    from edgevlm.models.manifest import read_manifest
    from edgevlm.models.progressive import capture, generate_from_tokens, progressive_row, vision_tokens

    b = load_backend(str(llava_dir))
    s = read_manifest(data)[0]
    img = Image.open(s.image_path).convert("RGB").resize((b.vision_input_px,) * 2)
    toks = vision_tokens(b, [img])[0]
    assert toks.shape == (64, 32)
    codec = make_codec("pca_levels", n_levels=3).fit(np.concatenate([toks, vision_tokens(b, [img.rotate(90)])[0]]))
    row = progressive_row(b, codec, img, s.question, s.answers, "vqa", tokens=toks)
    assert row["prog_bytes"] == list(np.cumsum([len(p) for p in codec.encode(toks)]))
    # the capture hook sees the same tokens when the image is encoded (features are made at encode time)
    b.clear_cache()
    with capture(b) as seen:
        enc = b.encode([img], s.question)
    plain = b.generate(enc)
    np.testing.assert_allclose(seen[0][0], toks, rtol=1e-5, atol=1e-5)

    def generate_with(tokens):  # the helper progressive_row and models.codec_eval both use
        return generate_from_tokens(b, tokens, img, s.question)

    # substituting the exact tokens changes nothing; substituting zeros changes the logits
    same = generate_with(toks)
    assert same.tokens == plain.tokens
    np.testing.assert_allclose(same.logits, plain.logits, rtol=1e-4, atol=1e-4)
    other = generate_with(np.zeros_like(toks))
    assert not np.allclose(other.logits[0], plain.logits[0])
    # and the progressive row really used the decoded tokens: a level-1 decode differs from the top
    top = generate_with(codec.decode(codec.encode(toks)))
    low = generate_with(codec.decode(codec.encode(toks)[:1]))
    assert not np.allclose(low.logits[0], top.logits[0])
    # models.codec_eval measures through the same path: exact at the top level, refining per level
    from edgevlm.models.codec_eval import evaluate
    res = evaluate(b, {"pca": codec}, [s], scoring="vqa", progress=False)["codecs"]["pca"]
    assert res["same_answer_as_uncompressed"][-1] == 1.0
    assert res["rel_mse"][0] > res["rel_mse"][-1]


def test_vision_flops_formula_matches_counted(llava_dir):
    """The analytic ViT FLOPs equal torch's FLOP counter on the tiny tower (all layers)."""
    from torch.utils.flop_counter import FlopCounterMode

    from edgevlm.models.backend import load_backend
    from edgevlm.models.progressive import vision_encoder_flops

    b = load_backend(str(llava_dir))
    b.model.set_attn_implementation({"vision_config": "eager"})   # the counter does not see fused SDPA
    vc = b.model.config.vision_config
    px = torch.zeros(1, 3, vc.image_size, vc.image_size)
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        b.model.model.vision_tower(px)
    counted = fc.get_total_flops()
    assert vision_encoder_flops(vc) == pytest.approx(counted, rel=0.01)
    # feature layer -2 (LLaVA-1.5) skips the last layer
    assert vision_encoder_flops(vc, -2) < vision_encoder_flops(vc, -1) == vision_encoder_flops(vc)


def test_progressive_errors(llava_dir, data, tmp_path, capsys):
    from edgevlm.models.cli import main

    rc = main(["extract", "--model", str(llava_dir), "--dataset", str(data), "--out", str(tmp_path / "x.parquet"),
               "--progressive", "--codec", str(tmp_path / "none"), "--no-progress", "--source-kind", "tiny-local"])
    assert rc == 2
    assert "codec.json" in capsys.readouterr().err


def test_progressive_resume_needs_same_codec(llava_dir, data, calib_data, tmp_path, capsys):
    from edgevlm.models.cli import main

    c3 = tmp_path / "c3"
    c2 = tmp_path / "c2"
    assert main(["fit-codec", "--model", str(llava_dir), "--dataset", str(calib_data), "--levels", "3",
                 "--out", str(c3)]) == 0
    assert main(["fit-codec", "--model", str(llava_dir), "--dataset", str(calib_data), "--levels", "2",
                 "--out", str(c2)]) == 0
    out = tmp_path / "r.parquet"
    base = ["extract", "--model", str(llava_dir), "--dataset", str(data), "--out", str(out), "--progressive",
            "--no-progress", "--source-kind", "tiny-local"]
    assert main(base + ["--codec", str(c3), "--limit", "1"]) == 0
    assert main(base + ["--codec", str(c3)]) == 0
    printed = capsys.readouterr().out
    assert "2 new" in printed and "1 already there" in printed
    assert main(base + ["--codec", str(c2)]) == 2
    assert "progressive" in capsys.readouterr().err


def test_shipped_tiny_codecs_load_and_refine():
    """The codecs saved beside the tiny model's weights load, match its vision width and refine per level."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "models" / "weights" / "tiny-scenetext-v1"
    dirs = sorted(p for p in (root / "codec").glob("*") if (p / "codec.json").is_file())
    if not dirs:
        pytest.skip("no fitted codecs shipped beside the tiny model")
    cfg = json.loads((root / "config.json").read_text())
    x = np.random.default_rng(0).normal(size=(64, cfg["vision_config"]["hidden_size"])).astype(np.float32)
    for d in dirs:
        c = load_codec(d)
        assert c.d == cfg["vision_config"]["hidden_size"]
        levels = c.encode(x)
        errs = [float(np.mean((c.decode(levels[:l]) - x) ** 2)) for l in range(1, c.n_levels + 1)]
        assert errs[-1] < errs[0], (d.name, errs)
