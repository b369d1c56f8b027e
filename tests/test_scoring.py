"""VQA answer normalisation and accuracy, on cases from the VQA evaluation rules."""

import pytest

from edgevlm.models.scoring import exact_match, normalize_answer, score_answer, vqa_accuracy


@pytest.mark.parametrize("raw, norm", [
    ("Yes", "yes"),
    ("Yes.", "yes"),
    ("  two  ", "2"),
    ("Two dogs", "2 dogs"),
    ("the red car", "red car"),
    ("A Dog!", "dog"),
    ("an apple", "apple"),
    ("dont", "don't"),
    ("isnt it", "isn't it"),
    ("1,000", "1000"),
    ("3.5", "3.5"),
    ("black-and-white", "black and white"),
    ("black - white", "black white"),
    ("none", "0"),
    ("ten", "10"),
    ("it's ten o'clock", "it's 10 o'clock"),
    ("Hello\nWorld", "hello world"),
])
def test_normalisation(raw, norm):
    assert normalize_answer(raw) == norm


def test_vqa_accuracy_counts_matches_over_three():
    answers = ["2"] * 2 + ["3"] * 8
    assert vqa_accuracy("two", answers) == pytest.approx(2 / 3)
    assert vqa_accuracy("3", answers) == 1.0
    assert vqa_accuracy("4", answers) == 0.0
    assert vqa_accuracy("The dog.", ["dog"] + ["cat"] * 9) == pytest.approx(1 / 3)
    assert vqa_accuracy("yes", ["yes"] * 3 + ["no"] * 7) == 1.0


def test_vqa_leave_one_out_variant_matches_official_averaging():
    # 2 of 10 humans match: 8 subsets keep both (2/3), 2 subsets keep one (1/3) -> 0.6
    answers = ["red"] * 2 + ["blue"] * 8
    assert vqa_accuracy("red", answers, leave_one_out=True) == pytest.approx(0.6)
    # 3 matches: 7 subsets keep 3 (1.0), 3 keep 2 (2/3) -> 0.9
    assert vqa_accuracy("red", ["red"] * 3 + ["blue"] * 7, leave_one_out=True) == pytest.approx(0.9)
    assert vqa_accuracy("red", ["red"] * 4 + ["blue"] * 6, leave_one_out=True) == 1.0


def test_exact_match_and_auto_mode():
    assert exact_match("Yes.", ["yes"]) == 1.0
    assert exact_match("yes it is", ["yes"]) == 0.0
    assert score_answer("Yes", ["yes"]) == 1.0                      # single answer -> exact
    assert score_answer("yes", ["yes", "no", "no"]) == pytest.approx(1 / 3)
    assert score_answer("yes", ["yes", "no"], mode="exact") == 1.0
    with pytest.raises(ValueError, match="scoring mode"):
        score_answer("a", ["a"], mode="fuzzy")
    with pytest.raises(ValueError):
        vqa_accuracy("a", [])
