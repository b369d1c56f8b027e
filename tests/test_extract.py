"""End-to-end extraction on tiny random-init LLaVA and Qwen2.5-VL checkpoints built in the test."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from models.backend import BackendError, load_backend  # noqa: E402
from models.extract import ExtractError, ExtractOptions, extract  # noqa: E402
from models.manifest import read_manifest  # noqa: E402
from models.uncertainty import token_uncertainty  # noqa: E402
from tests.models_fixtures import build_tiny_llava, build_tiny_qwen, make_images, write_manifest  # noqa: E402
from traces.io import read_trace  # noqa: E402

QUALITIES = [10, 25, 50, 75, 95]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny matmuls on a shared 2-core box are far faster without OpenMP spinning.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    imgs = make_images(d, 3)
    return write_manifest(d / "vqa.jsonl", imgs)


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "ckpt", settings={"max_new_tokens": 6})


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return build_tiny_qwen(tmp_path_factory.mktemp("qwen") / "ckpt", settings={"max_new_tokens": 6})


@pytest.fixture(scope="module")
def backends(llava_dir, qwen_dir):
    return {"llava": load_backend(str(llava_dir)), "qwen": load_backend(str(qwen_dir))}


@pytest.mark.parametrize("kind, grid", [("llava", (8, 8)), ("qwen", (8, 8))])
def test_end_to_end_trace_validates(backends, data, tmp_path, kind, grid):
    b = backends[kind]
    out = tmp_path / f"{kind}.parquet"
    summary = extract(b, read_manifest(data), out, ExtractOptions(dataset_id="tiny-vqa", progress=False,
                                                                   jpeg_qualities=QUALITIES))
    assert summary["new_rows"] == 3
    table, prov = read_trace(out)                       # validates against v1
    assert table.num_rows == 3
    assert prov["source_kind"] == "real" and prov["dataset_id"] == "tiny-vqa"
    assert prov["model_id"] == str(b.model_id) and prov["commit"]
    assert prov["visual_tokens_per_image"] == grid[0] * grid[1] and prov["visual_grid"] == list(grid)
    assert prov["vision_input_px"] == b.vision_input_px
    assert prov["attention_layer"] == b.attention_layer and prov["box_pad_px"] == 0
    assert prov["jpeg_qualities"] == QUALITIES
    rows = table.to_pylist()
    for r in rows:
        for col in ("global_jpeg_bytes", "local_jpeg_bytes", "original_jpeg_bytes"):
            v = r[col]
            assert len(v) == len(QUALITIES) and min(v) > 0
            assert all(b2 > b1 for b1, b2 in zip(v, v[1:])), (col, v)
        if min(r["image_w"], r["image_h"]) > 1.5 * b.vision_input_px:      # downscaled global is smaller
            assert r["original_jpeg_bytes"][-1] > r["global_jpeg_bytes"][-1]
        n = len(r["s1_min_entropy"])
        assert 1 <= n <= 6 and len(r["s1_shannon"]) == n == len(r["s1_margin"])
        assert all(a <= s + 1e-5 for a, s in zip(r["s1_min_entropy"], r["s1_shannon"]))
        assert 0 <= r["bbox_x0"] < r["bbox_x1"] <= r["image_w"] and 0 <= r["bbox_y0"] < r["bbox_y1"] <= r["image_h"]
        assert 1 <= r["s2_tokens"] <= 6
        assert r["t_vision_s"] > 0 and r["t_prefill_s"] > 0
    assert rows[0]["s2_oracle_score"] is not None and rows[0]["gt_x1"] == 60
    assert rows[1]["s2_oracle_score"] is None and rows[1]["gt_x0"] is None
    assert [r["question_type"] for r in rows] == ["color", "yesno", "color"]


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
    b2 = load_backend(str(ck), overrides={"attention_layer": 2})
    assert b2.attention_layer == 2
    with pytest.raises(BackendError, match="attention_layer 3 is out of range.*0..2"):
        load_backend(str(ck), overrides={"attention_layer": 3})
    (ck / "edgevlm.json").write_text(json.dumps({"attention_layr": 3}))
    with pytest.raises(BackendError, match="unknown key 'attention_layr'"):
        load_backend(str(ck))
    (ck / "edgevlm.json").write_text(json.dumps({"vision_input_px": 64}))
    with pytest.raises(BackendError, match="vision_input_px 64 must equal"):
        load_backend(str(ck))


def test_default_attention_layer_is_14_of_32_scaled(backends):
    assert backends["llava"].attention_layer == round(14 / 32 * 4) == 2


def test_resume_limit_and_settings_mismatch(backends, data, tmp_path):
    b = backends["llava"]
    out = tmp_path / "r.parquet"
    samples = read_manifest(data)
    s1 = extract(b, samples, out, ExtractOptions(dataset_id="d", progress=False, limit=2))
    assert (s1["new_rows"], s1["total_rows"]) == (2, 2)
    first = read_trace(out)[0].to_pylist()
    s2 = extract(b, samples, out, ExtractOptions(dataset_id="d", progress=False))
    assert (s2["new_rows"], s2["skipped_existing"], s2["total_rows"]) == (1, 2, 3)
    again = read_trace(out)[0].to_pylist()
    assert again[:2] == first                                 # old rows kept as they were
    with pytest.raises(ExtractError, match="dataset_id"):
        extract(b, samples, out, ExtractOptions(dataset_id="other", progress=False))
    s3 = extract(b, samples, out, ExtractOptions(dataset_id="other", progress=False, overwrite=True, limit=1))
    assert s3["total_rows"] == 1


def test_failure_midway_keeps_finished_rows_and_no_temp_files(backends, data, tmp_path):
    b = backends["qwen"]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    lines = data.read_text().splitlines()[:1]
    rec = json.loads(lines[0])
    rec["image"] = str(data.parent / rec["image"])
    lines = [json.dumps(rec), json.dumps({"image": str(bad), "question": "q", "answers": ["a"]})]
    man = tmp_path / "m.jsonl"
    man.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o.parquet"
    with pytest.raises(ExtractError, match="line 2: field 'image'"):
        extract(b, read_manifest(man), out, ExtractOptions(dataset_id="m", progress=False))
    assert read_trace(out)[0].num_rows == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.png", "m.jsonl", "o.parquet"]


def test_cli_extract_and_errors(llava_dir, data, tmp_path, capsys):
    from models.cli import main

    out = tmp_path / "cli.parquet"
    rc = main(["extract", "--model", str(llava_dir), "--dataset", str(data), "--out", str(out),
               "--limit", "1", "--source-kind", "tiny-local", "--no-progress", "--box-pad-px", "3",
               "--threads", "1"])
    assert rc == 0
    table, prov = read_trace(out)
    assert table.num_rows == 1 and prov["source_kind"] == "tiny-local" and prov["box_pad_px"] == 3
    assert prov["dataset_id"] == "vqa"
    capsys.readouterr()
    rc = main(["extract", "--model", str(llava_dir), "--dataset", str(tmp_path / "none.jsonl"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "manifest file not found" in err and "Traceback" not in err
    rc = main(["extract", "--model", str(tmp_path), "--dataset", str(data), "--out", str(out)])
    assert rc == 2 and "no config.json" in capsys.readouterr().err
    rc = main(["extract", "--model", str(llava_dir), "--dataset", str(data), "--out", str(out),
               "--jpeg-qualities", "50,10"])
    assert rc == 2 and "--jpeg-qualities" in capsys.readouterr().err
    if not torch.cuda.is_available():
        rc = main(["extract", "--model", str(llava_dir), "--dataset", str(data), "--out", str(out),
                   "--device", "cuda"])
        assert rc == 2 and "CUDA is not available" in capsys.readouterr().err


def test_cli_register_into_trace_subparsers_and_help_is_light():
    import argparse

    from models.cli import register, run_extract

    ap = argparse.ArgumentParser(prog="edgevlm")
    trace = ap.add_subparsers(dest="command").add_parser("trace").add_subparsers(dest="trace_command")
    register(trace)
    args = ap.parse_args(["trace", "extract", "--model", "m", "--dataset", "d.jsonl", "--out", "o.parquet"])
    assert args.func is run_extract and args.device == "cpu" and args.limit is None
    code = ("import sys, models.cli as c\n"
            "try:\n    c.main(['extract', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(_root()))
    assert res.returncode == 0, res.stderr
    assert "--model" in res.stdout and "resume" in res.stdout


def _root():
    from pathlib import Path
    return Path(__file__).resolve().parent.parent
