"""The procedural scene-text VQA generator: determinism, manifest validity, boxes, readable-text share."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgevlm.models import scenes as S


def test_same_seed_same_pixels_and_questions():
    a_scene, a_q = S.make_sample(7, 3)
    b_scene, b_q = S.make_sample(7, 3)
    assert np.array_equal(np.asarray(a_scene.image), np.asarray(b_scene.image))
    assert (a_q.question, a_q.answers, a_q.target.box) == (b_q.question, b_q.answers, b_q.target.box)


def test_other_seed_or_index_differs():
    base = np.asarray(S.make_scene(7, 3).image)
    assert not np.array_equal(base, np.asarray(S.make_scene(8, 3).image))
    assert not np.array_equal(base, np.asarray(S.make_scene(7, 4).image))


def test_written_manifest_is_valid_and_deterministic(tmp_path):
    m1 = S.write_dataset(tmp_path / "a", 12, seed=5, progress=False)
    m2 = S.write_dataset(tmp_path / "b", 12, seed=5, progress=False)
    lines = m1.read_text().splitlines()
    assert lines == m2.read_text().splitlines()
    assert len(lines) == 12
    ids = set()
    for line in lines:
        e = json.loads(line)
        assert set(e) <= {"image", "question", "answers", "question_type", "gt_box", "sample_id"}
        assert e["question_type"] in S.QUESTION_TYPES
        assert e["question"].strip() and e["answers"] and all(isinstance(a, str) for a in e["answers"])
        x0, y0, x1, y1 = e["gt_box"]
        assert 0 <= x0 < x1 <= S.SCENE_PX and 0 <= y0 < y1 <= S.SCENE_PX
        assert (tmp_path / "a" / e["image"]).is_file()
        ids.add(e["sample_id"])
    assert len(ids) == 12
    assert (tmp_path / "a" / "images" / "5_000000.jpg").read_bytes() == \
        (tmp_path / "b" / "images" / "5_000000.jpg").read_bytes()


def test_manifest_reads_with_the_extraction_reader(tmp_path):
    manifest = pytest.importorskip("edgevlm.models.manifest")
    path = S.write_dataset(tmp_path, 5, seed=2, progress=False)
    samples = manifest.read_manifest(path)
    assert len(samples) == 5 and all(s.image_path.is_file() and s.gt_box for s in samples)


def test_boxes_inside_image_and_answers_match_objects():
    for i in range(12):
        scene, q = S.make_sample(11, i)
        assert scene.image.size == (S.SCENE_PX, S.SCENE_PX)
        assert scene.signs(), "every scene has a sign"
        for o in scene.objects:
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= S.SCENE_PX and 0 <= y0 < y1 <= S.SCENE_PX
            for cx0, cy0, cx1, cy1 in o.char_boxes:  # characters lie on their sign
                assert x0 <= cx0 < cx1 <= x1 and y0 <= cy0 < cy1 <= y1
        if q.question_type == "text":
            assert q.answers == [q.target.text] and len(q.target.text) == S.CODE_LEN
        elif q.question_type == "position":
            cx = (q.target.box[0] + q.target.box[2]) / 2
            assert q.answers == ["left" if cx < S.SCENE_PX / 2 else "right"]
        else:
            assert q.answers == [q.target.color] and q.target.kind in S.SHAPES


def test_objects_do_not_overlap():
    for i in range(8):
        boxes = [o.box for o in S.make_scene(3, i).objects]
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                A, B = boxes[a], boxes[b]
                assert A[2] <= B[0] or B[2] <= A[0] or A[3] <= B[1] or B[3] <= A[1]


def test_readable_text_share_between_30_and_60_percent():
    px, i = [], 0
    while len(px) < 40:
        scene, q = S.make_sample(1000, i)
        i += 1
        if q.question_type == "text":
            px.append(q.target.char_px * S.GLOBAL_PX / S.SCENE_PX)
            assert q.target.readable_global == (px[-1] >= S.READABLE_GLOBAL_PX)
    readable = np.array(px) >= S.READABLE_GLOBAL_PX
    assert 0.30 <= readable.mean() <= 0.60, readable.mean()
    # the two size classes lie apart at the 64-px global view: ~2-4 px digits versus >= 8 px
    assert np.max(np.array(px)[~readable]) <= S.SMALL_CHAR_PX[1] * S.GLOBAL_PX / S.SCENE_PX + 1e-6


def test_background_jpeg_size_is_photo_like(tmp_path):
    import io
    buf = io.BytesIO()
    S.make_scene(1, 0).image.save(buf, format="JPEG", quality=75)
    assert buf.tell() > 30_000, "flat backgrounds would compress to almost nothing"


def test_cli_rejects_bad_n(capsys):
    with pytest.raises(SystemExit):
        S.main(["--out", "/tmp/never", "--n", "0"])
    assert "--n" in capsys.readouterr().err
