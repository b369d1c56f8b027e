"""End-to-end extraction on tiny random-init LLaVA and Qwen2.5-VL checkpoints built in the test."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from edgevlm.models.extract import ExtractError, ExtractOptions, extract  # noqa: E402
from edgevlm.models.manifest import read_manifest  # noqa: E402
from tests.models_fixtures import backends, data, llava_dir, one_thread, qwen_dir  # noqa: E402,F401
from edgevlm.traces.io import read_trace  # noqa: E402

QUALITIES = [10, 25, 50, 75, 95]
pytestmark = pytest.mark.models


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


def test_infer_jpeg_quality_feeds_the_model_what_the_server_decodes(backends, data, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from edgevlm.models.extract import RESAMPLE
    from edgevlm.models.jpeg import jpeg_round_trip

    b = backends["llava"]
    seen = []
    real_encode = b.encode
    monkeypatch.setattr(b, "encode", lambda images, q, **kw: seen.append(list(images)) or real_encode(images, q, **kw))
    samples = read_manifest(data)[:1]
    out = tmp_path / "q.parquet"
    extract(b, samples, out, ExtractOptions(dataset_id="d", progress=False, infer_jpeg_quality=20))
    prov = read_trace(out)[1]
    assert prov["infer_jpeg_quality"] == 20 and prov["box_grow"] == 0.0 and prov["box_grow_min_cells"] == 1
    px = b.vision_input_px
    with Image.open(samples[0].image_path) as im:
        glob = im.convert("RGB").resize((px, px), RESAMPLE)
    want = np.asarray(jpeg_round_trip(glob, 20))
    assert not np.array_equal(want, np.asarray(glob))            # the round trip changes the pixels
    assert np.array_equal(np.asarray(seen[0][0]), want)           # stage 1 saw the decoded global image
    assert all(np.array_equal(np.asarray(imgs[0]), want) for imgs in seen)   # so did stage 2 and the oracle
    with pytest.raises(ExtractError, match="infer_jpeg_quality"):
        extract(b, read_manifest(data), out, ExtractOptions(dataset_id="d", progress=False))
    with pytest.raises(ExtractError, match="--infer-jpeg-quality"):
        ExtractOptions(dataset_id="d", infer_jpeg_quality=0).check()


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
    rec["gt_box"] = [0, 0, 5000, 10]
    rec["sample_id"] = "far"
    man.write_text(json.dumps(rec) + "\n")
    with pytest.raises(ExtractError, match="line 1: field 'gt_box'.*lies outside"):
        extract(b, read_manifest(man), tmp_path / "o2.parquet", ExtractOptions(dataset_id="m", progress=False))


def test_cli_extract_and_errors(llava_dir, data, tmp_path, capsys):
    from edgevlm.models.cli import main

    out = tmp_path / "cli.parquet"
    rc = main(["extract", "--model", str(llava_dir), "--dataset", str(data), "--out", str(out),
               "--limit", "1", "--source-kind", "tiny-local", "--no-progress", "--box-pad-px", "3",
               "--threads", "1", "--box-pad-frac", "0.25"])
    assert rc == 0
    table, prov = read_trace(out)
    assert table.num_rows == 1 and prov["source_kind"] == "tiny-local" and prov["box_pad_px"] == 3
    assert prov["box_pad_frac"] == 0.25
    assert prov["dataset_id"] == "vqa"
    # a checkpoint can declare its own source_kind; the command line still wins
    settings = json.loads((llava_dir / "edgevlm.json").read_text())
    (llava_dir / "edgevlm.json").write_text(json.dumps({**settings, "source_kind": "tiny-local"}))
    try:
        assert main(["extract", "--model", str(llava_dir), "--dataset", str(data), "--out", str(tmp_path / "k.parquet"),
                     "--limit", "1", "--no-progress"]) == 0
        assert read_trace(tmp_path / "k.parquet")[1]["source_kind"] == "tiny-local"
    finally:
        (llava_dir / "edgevlm.json").write_text(json.dumps(settings))
    capsys.readouterr()
    # a model directory that declares no source_kind needs --source-kind: never `real` by default
    rc = main(["extract", "--model", str(llava_dir), "--dataset", str(data), "--out", str(tmp_path / "u.parquet"),
               "--limit", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--source-kind is required" in err and "edgevlm.json declares no source_kind" in err
    assert not (tmp_path / "u.parquet").exists()
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

    from edgevlm.models.cli import register, run_extract

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
