"""Answer scoring: each benchmark's official per-question rule (DATASET_RULES) plus the generic ones.

Generic: VQA accuracy with the standard VQA answer normalisation, and exact match. Per benchmark
(`score_answer(..., mode=RULE)`; dataset adapters write the rule into each manifest line):
  vqa_official  VQA accuracy averaged over the 10 leave-one-out subsets of the human answers, after
                the normalisation below (official VQAv2 evaluation; TextVQA's evaluator does the same)
  yesno         POPE: the prediction's first sentence (up to the first '.') with commas removed is
                "no" when one of its space-separated words is "No", "no" or "not", else "yes";
                1.0 when that equals the label (POPE's evaluate.py)
  gqa           GQA: exact string match of the prediction, after the clean-up LLaVA-1.5's GQA
                conversion applies (trailing '.' dropped, lower case), with the gold answer
  aokvqa_da     A-OKVQA direct answer: min(#direct answers equal to the prediction / 3, 1), plain
                string equality as in the official eval_predictions.py (no normalisation)
  anls          DocVQA: max over the answers of 1 - NL (NL = Levenshtein distance / longer length,
                both lower-cased with whitespace collapsed), or 0 when NL >= 0.5 (tau 0.5)

Normalisation follows the rules of the official VQA evaluation (Antol et al. 2015; VQA eval script):
lower case; newlines/tabs to spaces; common contractions restored ("dont" -> "don't"); punctuation
removed (a period is kept only inside a number, "1.5"; a comma between digits is dropped, "1,000" ->
"1000"); number words to digits ("two" -> "2"); the articles a/an/the dropped; whitespace collapsed.

VQA accuracy is min(#human answers equal to the prediction / 3, 1), as in the issue. The official
script additionally averages this over the 10 leave-one-out subsets of the human answers; pass
`leave_one_out=True` for that variant (it differs only when 1-3 humans match).
"""

from __future__ import annotations

import re
from typing import Sequence

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
          ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _strip_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        # Official rule: a mark next to a space, or a text with a digit-comma-digit, loses the mark;
        # elsewhere the mark becomes a space ("black-white" -> "black white").
        if (p + " " in text or " " + p in text) or re.search(_COMMA_STRIP, text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def normalize_answer(answer: str) -> str:
    """The VQA-normalised form of an answer string."""
    text = str(answer).replace("\n", " ").replace("\t", " ").strip()
    text = _strip_punctuation(text)
    words = []
    for word in text.lower().split():
        word = _NUMBERS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str], *, leave_one_out: bool = False) -> float:
    """min(#matching human answers / 3, 1) after normalisation (optionally leave-one-out averaged)."""
    if not answers:
        raise ValueError("answers must be a non-empty list")
    pred = normalize_answer(prediction)
    gts = [normalize_answer(a) for a in answers]
    if not leave_one_out or len(gts) == 1:
        return min(sum(g == pred for g in gts) / 3.0, 1.0)
    accs = []
    for k in range(len(gts)):
        others = gts[:k] + gts[k + 1:]
        accs.append(min(sum(g == pred for g in others) / 3.0, 1.0))
    return sum(accs) / len(accs)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised answer, else 0.0."""
    if not answers:
        raise ValueError("answers must be a non-empty list")
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(a) == pred for a in answers))


def pope_yes_no(text: str) -> str:
    """POPE's reading of a free-form answer as 'yes' or 'no' (first sentence; negation words)."""
    first = str(text).split(".")[0].replace(",", "")
    return "no" if {"No", "no", "not"} & set(first.split(" ")) else "yes"


def yes_no_match(prediction: str, answers: Sequence[str]) -> float:
    """POPE accuracy of one answer: 1.0 when its yes/no reading equals the label."""
    if not answers:
        raise ValueError("answers must be a non-empty list")
    return float(pope_yes_no(prediction) == str(answers[0]).strip().lower())


def gqa_match(prediction: str, answers: Sequence[str]) -> float:
    """GQA: exact match after dropping a trailing period and lower-casing the prediction."""
    if not answers:
        raise ValueError("answers must be a non-empty list")
    pred = str(prediction).strip().rstrip(".").lower()
    return float(any(pred == str(a) for a in answers))


def aokvqa_direct_answer(prediction: str, answers: Sequence[str]) -> float:
    """A-OKVQA direct-answer accuracy: min(#equal direct answers / 3, 1), plain string equality."""
    if not answers:
        raise ValueError("answers must be a non-empty list")
    return min(sum(str(prediction) == str(a) for a in answers) / 3.0, 1.0)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """DocVQA's ANLS for one question: max over answers of 1 - NL, 0 where NL >= threshold."""
    if not answers:
        raise ValueError("answers must be a non-empty list")
    pred = " ".join(str(prediction).strip().lower().split())
    best = 0.0
    for a in answers:
        gt = " ".join(str(a).strip().lower().split())
        longest = max(len(gt), len(pred))
        nl = levenshtein(gt, pred) / longest if longest else 0.0
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


#: Per-benchmark rules a manifest line may name in its `scoring` field.
DATASET_RULES = {
    "vqa_official": lambda p, a: vqa_accuracy(p, a, leave_one_out=True),
    "yesno": yes_no_match,
    "gqa": gqa_match,
    "aokvqa_da": aokvqa_direct_answer,
    "anls": anls,
    "exact": exact_match,
    "vqa": vqa_accuracy,
}
SCORING_MODES = ("auto", "vqa", "exact")


def score_answer(prediction: str, answers: Sequence[str], mode: str = "auto", rule: str | None = None) -> float:
    """Score one prediction. mode 'auto': the sample's own `rule` (a DATASET_RULES key) when it has one,
    else exact match for a single reference answer and VQA accuracy otherwise; 'vqa'/'exact' force those."""
    if mode not in SCORING_MODES:
        raise ValueError(f"scoring mode {mode!r} must be one of {', '.join(SCORING_MODES)}")
    if mode == "auto" and rule is not None:
        if rule not in DATASET_RULES:
            raise ValueError(f"scoring rule {rule!r} must be one of {', '.join(DATASET_RULES)}")
        return DATASET_RULES[rule](prediction, answers)
    if mode == "exact" or (mode == "auto" and len(answers) == 1):
        return exact_match(prediction, answers)
    return vqa_accuracy(prediction, answers)
