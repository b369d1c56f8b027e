"""Dataset adapters on fixture files written in each benchmark's published format, the manifests they
write, their errors, and each benchmark's scoring rule on worked examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from edgevlm.cli import main
from edgevlm.models.datasets import DATASETS, AnnotationError, Source, build_records
from edgevlm.models.manifest import read_manifest
from edgevlm.models.scoring import (aokvqa_direct_answer, anls, gqa_match, levenshtein, pope_yes_no,
                                    score_answer, vqa_accuracy, yes_no_match)

SHORT = "Answer the question using a single word or phrase."


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (120, 30, 200)).save(path)


def _json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


# ----- fixtures in each benchmark's format -------------------------------------------------------

@pytest.fixture
def textvqa(tmp_path):
    imgs = tmp_path / "train_images"
    for iid in ("003a8ae2ef43b901", "00685bc495504d61"):
        _img(imgs / f"{iid}.jpg")
    ann = _json(tmp_path / "TextVQA_0.5.1_val.json", {
        "dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": [
            {"question": "what is the brand of this camera?", "image_id": "003a8ae2ef43b901",
             "image_classes": ["Cassette deck"], "flickr_original_url": "https://x/1.jpg",
             "flickr_300k_url": "https://x/1s.jpg", "image_width": 1024, "image_height": 664,
             "answers": ["nous les gosses", "dakota", "clos culombu", "dakota digital", "dakota", "dakota",
                         "dakota digital", "dakota", "dakota", "dakota"],
             "question_tokens": ["what", "is"], "question_id": 34602, "set_name": "val"},
            {"question": "what does the small white text spell?", "image_id": "00685bc495504d61",
             "image_classes": ["Poster"], "flickr_original_url": "", "flickr_300k_url": "",
             "image_width": 1024, "image_height": 768, "answers": ["copenhagen"] * 10,
             "question_tokens": [], "question_id": 34603, "set_name": "val"}]})
    ocr = _json(tmp_path / "TextVQA_Rosetta_OCR_v0.2_val.json", {"data": [
        {"image_id": "003a8ae2ef43b901", "ocr_tokens": ["DAKOTA", "DIGITAL", "Single-Use"],
         "ocr_info": [{"word": "DAKOTA", "bounding_box": {"top_left_x": 0.1}}]},
        {"image_id": "00685bc495504d61", "ocr_tokens": [], "ocr_info": []}]})
    return ann, imgs, ocr


def test_textvqa_and_textvqa_ocr(textvqa):
    ann, imgs, ocr = textvqa
    recs = build_records("textvqa", Source(ann, imgs))
    assert [r["sample_id"] for r in recs] == ["textvqa-34602", "textvqa-34603"]
    assert recs[0]["answers"][1] == "dakota" and len(recs[0]["answers"]) == 10
    assert "question_type" not in recs[0] and recs[0]["scoring"] == "vqa_official"
    assert recs[0]["prompt"] == f"what is the brand of this camera?\n{SHORT}"
    assert Path(recs[1]["image"]) == imgs / "00685bc495504d61.jpg"
    with_ocr = build_records("textvqa_ocr", Source(ann, imgs, ocr=ocr))
    assert with_ocr[0]["ocr_tokens"] == ["DAKOTA", "DIGITAL", "Single-Use"]
    assert with_ocr[0]["prompt"] == ("what is the brand of this camera?\n"
                                     f"Reference OCR token: DAKOTA, DIGITAL, Single-Use\n{SHORT}")
    assert with_ocr[1]["ocr_tokens"] == [] and with_ocr[1]["prompt"] == f"what does the small white text spell?\n{SHORT}"
    with pytest.raises(AnnotationError, match="needs --ocr FILE"):
        build_records("textvqa_ocr", Source(ann, imgs))


def test_pope_lines_settings_and_labels(tmp_path):
    imgs = tmp_path / "val2014"
    _img(imgs / "COCO_val2014_000000310196.jpg")
    _img(imgs / "COCO_val2014_000000210789.jpg")
    ann = tmp_path / "coco_pope_adversarial.json"
    ann.write_text(
        json.dumps({"question_id": 1, "image": "COCO_val2014_000000310196.jpg",
                    "text": "Is there a snowboard in the image?", "label": "yes"}) + "\n" +
        json.dumps({"question_id": 2, "image": "COCO_val2014_000000210789.jpg",
                    "text": "Is there a dining table in the image?", "label": "no"}) + "\n")
    recs = build_records("pope", Source(ann, imgs))
    assert [r["sample_id"] for r in recs] == ["pope-adversarial-1", "pope-adversarial-2"]
    assert [r["answers"] for r in recs] == [["yes"], ["no"]]
    assert {r["question_type"] for r in recs} == {"adversarial"} and recs[0]["scoring"] == "yesno"
    renamed = tmp_path / "pope.json"
    renamed.write_text(ann.read_text())
    with pytest.raises(AnnotationError, match="pass --split"):
        build_records("pope", Source(renamed, imgs))
    assert build_records("pope", Source(renamed, imgs, split="random"))[0]["question_type"] == "random"
    renamed.write_text(ann.read_text().replace('"label": "no"', '"label": "maybe"'))
    with pytest.raises(AnnotationError, match=r"pope.json: record on line 2: field 'label': must be 'yes' or 'no'"):
        build_records("pope", Source(renamed, imgs, split="random"))


def test_gqa_question_types_and_exact_answers(tmp_path):
    imgs = tmp_path / "images"
    _img(imgs / "n161313.jpg")
    _img(imgs / "n235859.jpg")
    ann = _json(tmp_path / "testdev_balanced_questions.json", {
        "201307251": {"semantic": [], "entailed": [], "equivalent": ["201307251"], "question": "Is it overcast?",
                      "imageId": "n161313", "isBalanced": True, "groups": {"global": None, "local": "13-sky_dark"},
                      "answer": "no", "semanticStr": "", "annotations": {}, "types": {
                          "detailed": "weatherVerify", "semantic": "global", "structural": "verify"},
                      "fullAnswer": "No, it is clear."},
        "20515713": {"question": "Who is wearing the dress?", "imageId": "n235859", "answer": "woman",
                     "types": {"detailed": "relS", "semantic": "rel", "structural": "query"}, "fullAnswer": "..."}})
    recs = build_records("gqa", Source(ann, imgs))
    assert [(r["sample_id"], r["question_type"], r["answers"]) for r in recs] == [
        ("gqa-201307251", "verify", ["no"]), ("gqa-20515713", "query", ["woman"])]
    assert recs[0]["scoring"] == "gqa"


def test_vqav2_joins_questions_and_annotations(tmp_path):
    imgs = tmp_path / "val2014"
    _img(imgs / "COCO_val2014_000000262148.jpg")
    qs = _json(tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json", {"info": {}, "task_type": "Open-Ended",
        "data_type": "mscoco", "data_subtype": "val2014", "license": {}, "questions": [
            {"image_id": 262148, "question": "Where is he looking?", "question_id": 262148000},
            {"image_id": 262148, "question": "How many people?", "question_id": 262148001}]})
    answers = [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
               for k, a in enumerate(["down"] * 6 + ["at table", "skateboard", "down", "table"])]
    ann = _json(tmp_path / "v2_mscoco_val2014_annotations.json", {"info": {}, "license": {}, "data_subtype": "val2014",
        "annotations": [
            {"question_type": "none of the above", "multiple_choice_answer": "down", "answers": answers,
             "image_id": 262148, "answer_type": "other", "question_id": 262148000},
            {"question_type": "how many", "multiple_choice_answer": "2",
             "answers": [{"answer": "2", "answer_confidence": "yes", "answer_id": k} for k in range(10)],
             "image_id": 262148, "answer_type": "number", "question_id": 262148001}]})
    recs = build_records("vqav2", Source(ann, imgs, questions=qs))
    assert [r["sample_id"] for r in recs] == ["vqav2-262148000", "vqav2-262148001"]
    assert recs[0]["answers"][:7] == ["down"] * 6 + ["at table"] and recs[1]["question_type"] == "number"
    assert recs[0]["question"] == "Where is he looking?" and recs[0]["scoring"] == "vqa_official"
    with pytest.raises(AnnotationError, match="needs --questions"):
        build_records("vqav2", Source(ann, imgs))
    bad = json.loads(ann.read_text())
    bad["annotations"][1]["answers"][3] = {"answer_id": 4}
    _json(ann, bad)
    with pytest.raises(AnnotationError, match=r"v2_mscoco_val2014_annotations.json: record 1 \(question_id 262148001\) "
                                              r"answers\[3\]: field 'answer': is missing"):
        build_records("vqav2", Source(ann, imgs, questions=qs))


def test_aokvqa_direct_answer_and_multiple_choice(tmp_path):
    imgs = tmp_path / "coco"
    _img(imgs / "val2017" / "000000461751.jpg")
    ann = _json(tmp_path / "aokvqa_v1p0_val.json", [
        {"split": "val", "image_id": 461751, "question_id": "22jbM6gDxdaMaunuzgrsBB",
         "question": "What is in the motorcyclist's mouth?", "choices": ["toothpick", "food", "popsicle stick", "cigarette"],
         "correct_choice_idx": 3, "direct_answers": ["cigarette"] * 9 + ["cigar"],
         "difficult_direct_answer": False, "rationales": ["He's smoking."]},
        {"split": "val", "image_id": 461751, "question_id": "2Ak6ErdGWjzHdhhyrRM9gd",
         "question": "Which number birthday is probably being celebrated?", "choices": ["one", "ten", "nine", "thirty"],
         "correct_choice_idx": 3, "direct_answers": ["thirty"] * 4 + ["30"] * 6,
         "difficult_direct_answer": True, "rationales": []}])
    da = build_records("aokvqa", Source(ann, imgs))
    assert [r["sample_id"] for r in da] == ["aokvqa-22jbM6gDxdaMaunuzgrsBB", "aokvqa-2Ak6ErdGWjzHdhhyrRM9gd"]
    assert Path(da[0]["image"]) == imgs / "val2017" / "000000461751.jpg"
    assert da[0]["answers"][0] == "cigarette" and da[0]["scoring"] == "aokvqa_da" and "question_type" not in da[0]
    assert da[1]["question_type"] == "difficult_direct_answer" and da[0]["choices"][3] == "cigarette"
    mc = build_records("aokvqa_mc", Source(ann, imgs))
    assert mc[0]["answers"] == ["D"] and mc[0]["scoring"] == "exact"
    assert mc[0]["prompt"] == ("What is in the motorcyclist's mouth?\nA. toothpick\nB. food\nC. popsicle stick\n"
                               "D. cigarette\nAnswer with the option's letter from the given choices directly.")
    bad = json.loads(ann.read_text())
    bad[0]["correct_choice_idx"] = 7
    _json(ann, bad)
    with pytest.raises(AnnotationError, match=r"record 0 \(question_id 22jbM6gDxdaMaunuzgrsBB\): field 'correct_choice_idx'"):
        build_records("aokvqa_mc", Source(ann, imgs))


def test_docvqa_types_and_image_folder(tmp_path):
    imgs = tmp_path / "spdocvqa_images"
    _img(imgs / "documents" / "pybv0228_81.png")
    ann = _json(tmp_path / "val_v1.0.json", {"dataset_name": "docvqa", "dataset_split": "val", "dataset_version": "1.0",
        "data": [{"questionId": 49153, "question": "What is the ‘actual’ value per 1000, during the year 1975?",
                  "question_types": ["figure/diagram"], "image": "documents/pybv0228_81.png", "docId": 14465,
                  "ucsf_document_id": "pybv0228", "ucsf_document_page_no": "81", "answers": ["0.28"],
                  "data_split": "val"}]})
    recs = build_records("docvqa", Source(ann, imgs))
    assert recs[0]["sample_id"] == "docvqa-49153" and recs[0]["question_type"] == "figure/diagram"
    assert recs[0]["answers"] == ["0.28"] and recs[0]["scoring"] == "anls"
    flat = build_records("docvqa", Source(ann, imgs / "documents"))      # --images pointing at documents/
    assert Path(flat[0]["image"]) == imgs / "documents" / "pybv0228_81.png"


def test_cli_writes_a_manifest_extract_reads_and_errors_leave_it_alone(textvqa, tmp_path, capsys):
    ann, imgs, ocr = textvqa
    out = tmp_path / "m.jsonl"
    rc = main(["trace", "manifest", "textvqa_ocr", "--annotations", str(ann), "--images", str(imgs), "--ocr", str(ocr),
               "--out", str(out), "--limit", "1"])
    assert rc == 0 and "1 textvqa_ocr samples" in capsys.readouterr().out
    (s,) = read_manifest(out)
    assert s.sample_id == "textvqa-34602" and s.ocr_tokens == ("DAKOTA", "DIGITAL", "Single-Use")
    assert s.scoring == "vqa_official" and s.text.startswith("what is the brand") and "Reference OCR token" in s.text
    before = out.read_bytes()
    (imgs / "00685bc495504d61.jpg").unlink()
    rc = main(["trace", "manifest", "textvqa", "--annotations", str(ann), "--images", str(imgs), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "record textvqa-34603: image" in err and "not found" in err and "Traceback" not in err
    assert out.read_bytes() == before                         # nothing written on an error
    broken = _json(tmp_path / "broken.json", {"data": [{"question_id": 5, "image_id": "x", "answers": ["a"]}]})
    rc = main(["trace", "manifest", "textvqa", "--annotations", str(broken), "--images", str(imgs), "--out", str(out)])
    assert rc == 2 and "broken.json: record 0 (question_id 5): field 'question': is missing" in capsys.readouterr().err
    rc = main(["trace", "manifest", "coco", "--annotations", str(ann), "--images", str(imgs), "--out", str(out)])
    assert rc == 2 and "dataset 'coco' is not known" in capsys.readouterr().err
    (tmp_path / "trunc.json").write_text('{"data": [')
    rc = main(["trace", "manifest", "textvqa", "--annotations", str(tmp_path / "trunc.json"), "--images", str(imgs),
               "--out", str(out)])
    assert rc == 2 and "trunc.json: not valid JSON" in capsys.readouterr().err


def test_registry_lists_every_benchmark():
    assert set(DATASETS) == {"textvqa", "textvqa_ocr", "pope", "gqa", "vqav2", "aokvqa", "aokvqa_mc", "docvqa"}


# ----- scoring rules, worked by hand from the official definitions -------------------------------

def test_vqa_official_leave_one_out():
    answers = ["2"] * 2 + ["3"] * 8
    # "two" normalises to "2": 2 of 10 match; leaving out one of the two "2" (2 of 10 subsets) leaves
    # 1 match (1/3), any other subset 2 matches (2/3): (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    assert score_answer("two", answers, "auto", "vqa_official") == pytest.approx(0.6)
    assert vqa_accuracy("two", answers) == pytest.approx(2 / 3)        # the simple min(n/3, 1)
    assert score_answer("Three.", answers, "auto", "vqa_official") == 1.0
    assert score_answer("four", answers, "auto", "vqa_official") == 0.0


def test_pope_yes_no_reading():
    assert pope_yes_no("No, there is not a dog in the image.") == "no"
    assert pope_yes_no("Yes, there is a dog. No other animals.") == "yes"   # only the first sentence counts
    assert pope_yes_no("There is no dog") == "no"
    assert pope_yes_no("Nope") == "yes" and pope_yes_no("I don't think so") == "yes"   # the official rule's literal words
    assert yes_no_match("no.", ["no"]) == 1.0 and yes_no_match("Yes", ["no"]) == 0.0
    assert score_answer("No", ["yes"], "auto", "yesno") == 0.0


def test_gqa_exact_match_without_vqa_normalisation():
    assert gqa_match("Yes.", ["yes"]) == 1.0
    assert gqa_match("the table", ["table"]) == 0.0                     # no article stripping in GQA
    assert score_answer("the table", ["table"], "auto") == 1.0          # the generic rule would strip it


def test_aokvqa_direct_answer_counts_plain_equal_strings():
    answers = ["cigarette"] * 2 + ["cigar"] * 8
    assert aokvqa_direct_answer("cigarette", answers) == pytest.approx(2 / 3)
    assert aokvqa_direct_answer("cigar", answers) == 1.0
    assert aokvqa_direct_answer("Cigar", answers) == 0.0                # the official script compares raw strings


def test_anls():
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3
    assert anls("tobacco institute", ["Tobacco Institute"]) == 1.0
    assert anls("Tobaco Institute", ["Tobacco Institute"]) == pytest.approx(1 - 1 / 17)
    assert anls("Institute", ["Tobacco Institute"]) == pytest.approx(1 - 8 / 17)     # NL 0.47 < 0.5: kept
    assert anls("Tobacco", ["Tobacco Institute"]) == 0.0                              # NL 10/17 >= 0.5: 0
    assert anls("  0.28 ", ["0.28", "028"]) == 1.0 and anls("028", ["0.28", "xyz"]) == pytest.approx(0.75)
