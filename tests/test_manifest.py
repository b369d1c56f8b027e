"""Dataset manifest parsing: good lines load, bad lines name the line and the field."""

import json

import pytest

from edgevlm.models.manifest import ManifestError, read_manifest


def _write(tmp_path, lines):
    p = tmp_path / "ds.jsonl"
    p.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
    return p


def test_reads_fields_and_resolves_relative_paths(tmp_path):
    p = _write(tmp_path, [
        {"image": "a.jpg", "question": "q1?", "answers": ["x"] * 10, "question_type": "text"},
        "",
        {"image": "/abs/b.png", "question": "q2?", "answers": ["yes"], "gt_box": [1, 2, 30, 40], "sample_id": "s2"},
    ])
    s = read_manifest(p)
    assert len(s) == 2
    assert s[0].image_path == tmp_path / "a.jpg" and s[0].sample_id == "ds-1" and s[0].question_type == "text"
    assert s[1].sample_id == "s2" and s[1].gt_box == (1.0, 2.0, 30.0, 40.0) and s[1].line == 3
    assert s[1].answers == ("yes",)


@pytest.mark.parametrize("line, field", [
    ({"question": "q", "answers": ["a"]}, "image"),
    ({"image": "a.jpg", "question": "", "answers": ["a"]}, "question"),
    ({"image": "a.jpg", "question": "q", "answers": []}, "answers"),
    ({"image": "a.jpg", "question": "q", "answers": "a"}, "answers"),
    ({"image": "a.jpg", "question": "q", "answers": ["a"], "gt_box": [1, 2, 3]}, "gt_box"),
    ({"image": "a.jpg", "question": "q", "answers": ["a"], "gt_box": [5, 2, 3, 4]}, "gt_box"),
    ({"image": "a.jpg", "question": "q", "answers": ["a"], "qtype": "x"}, "qtype"),
    ({"image": "a.jpg", "question": "q", "answers": ["a"], "question_type": 3}, "question_type"),
    ({"image": "a.jpg", "question": "q", "answers": ["a"], "prompt": ""}, "prompt"),
    ({"image": "a.jpg", "question": "q", "answers": ["a"], "ocr_tokens": "DAKOTA"}, "ocr_tokens"),
    ({"image": "a.jpg", "question": "q", "answers": ["a"], "ocr_tokens": [1, 2]}, "ocr_tokens"),
    ({"image": "a.jpg", "question": "q", "answers": ["a"], "choices": ["only one"]}, "choices"),
    ({"image": "a.jpg", "question": "q", "answers": ["a"], "scoring": "bleu"}, "scoring"),
    ({"image": "a.jpg", "question": "q", "answers": ["a"], "options": ["x", "y"]}, "options"),
])
def test_bad_field_names_line_and_field(tmp_path, line, field):
    good = {"image": "a.jpg", "question": "q", "answers": ["a"]}
    p = _write(tmp_path, [good, line])
    with pytest.raises(ManifestError) as e:
        read_manifest(p)
    assert f"ds.jsonl:2: field '{field}'" in str(e.value)


def test_bad_json_duplicate_ids_and_missing_file(tmp_path):
    with pytest.raises(ManifestError, match=r"ds.jsonl:1: not valid JSON"):
        read_manifest(_write(tmp_path, ["{not json"]))
    dup = {"image": "a.jpg", "question": "q", "answers": ["a"], "sample_id": "x"}
    with pytest.raises(ManifestError, match=r"ds.jsonl:2: field 'sample_id'.*repeats line 1"):
        read_manifest(_write(tmp_path, [dup, dup]))
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="no samples"):
        read_manifest(_write(tmp_path, [""]))


def test_real_data_fields(tmp_path):
    p = _write(tmp_path, [
        {"image": "a.jpg", "question": "what brand?", "answers": ["dakota"] * 10, "ocr_tokens": ["DAKOTA", "x"],
         "prompt": "what brand?\nReference OCR token: DAKOTA, x\nAnswer briefly.", "scoring": "vqa_official"},
        {"image": "b.jpg", "question": "which?", "answers": ["B"], "choices": ["cat", "dog"], "scoring": "exact"},
        {"image": "c.jpg", "question": "plain?", "answers": ["yes"]},
    ])
    a, b, c = read_manifest(p)
    assert a.ocr_tokens == ("DAKOTA", "x") and a.scoring == "vqa_official" and a.text.endswith("Answer briefly.")
    assert b.choices == ("cat", "dog") and b.prompt is None and b.text == "which?"
    assert c.ocr_tokens is None and c.choices is None and c.scoring is None and c.text == "plain?"
