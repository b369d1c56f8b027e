"""The dataset manifest: JSONL, one (image, question) sample per line.

Fields per line:
  image          str, required: image path, absolute or relative to the manifest's folder
  question       str, required, non-empty
  answers        list[str], required, non-empty: human answers (10 for VQAv2/TextVQA, 1 for exact-match sets)
  question_type  str, optional: e.g. text, color, count, yesno
  gt_box         [x0, y0, x1, y1], optional: ground-truth box of the asked object, original pixels
  sample_id      str, optional: unique id; default "<manifest stem>-<line number>"
  prompt         str, optional: the full text the model is asked (the question rendered into the
                 dataset's prompt template: OCR tokens, options, answer instruction); it replaces
                 question + question_suffix in the backend's prompt; default: the question
  ocr_tokens     list[str], optional: OCR tokens of the image (TextVQA's Rosetta OCR)
  choices        list[str], optional: multiple-choice options (A-OKVQA)
  scoring        str, optional: the dataset's official per-question rule, a key of
                 models.scoring.DATASET_RULES (vqa_official, yesno, gqa, aokvqa_da, anls, exact, vqa);
                 used by extraction's default --scoring auto
`edgevlm trace manifest DATASET ...` (models.datasets) writes such files from the benchmarks' own
annotation files.
Blank lines are skipped. Any other field is an error, so typos do not pass silently.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

FIELDS = ("image", "question", "answers", "question_type", "gt_box", "sample_id", "prompt", "ocr_tokens",
          "choices", "scoring")
REQUIRED = ("image", "question", "answers")


class ManifestError(ValueError):
    """A manifest line breaks the format; the message names file, line and field."""


@dataclass(frozen=True)
class Sample:
    sample_id: str
    image_path: Path
    question: str
    answers: tuple[str, ...]
    question_type: str | None = None
    gt_box: tuple[float, float, float, float] | None = None
    line: int = 0
    prompt: str | None = None
    ocr_tokens: tuple[str, ...] | None = None
    choices: tuple[str, ...] | None = None
    scoring: str | None = None

    @property
    def text(self) -> str:
        """What the model is asked: the rendered prompt, else the bare question."""
        return self.prompt if self.prompt is not None else self.question


def _fail(path: Path, line: int, field: str | None, msg: str) -> ManifestError:
    where = f"{path}:{line}" + (f": field '{field}'" if field else "")
    return ManifestError(f"{where}: {msg}")


def _parse(obj, path: Path, line: int) -> Sample:
    if not isinstance(obj, dict):
        raise _fail(path, line, None, f"each line must be a JSON object, got {type(obj).__name__}")
    for key in obj:
        if key not in FIELDS:
            raise _fail(path, line, key, f"unknown field; allowed fields: {', '.join(FIELDS)}")
    for key in REQUIRED:
        if key not in obj:
            raise _fail(path, line, key, "is required")
    image = obj["image"]
    if not isinstance(image, str) or not image:
        raise _fail(path, line, "image", "must be a non-empty string (an image path)")
    question = obj["question"]
    if not isinstance(question, str) or not question.strip():
        raise _fail(path, line, "question", "must be a non-empty string")
    answers = obj["answers"]
    if (not isinstance(answers, list) or not answers
            or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in answers)):
        raise _fail(path, line, "answers", "must be a non-empty list of strings")
    qtype = obj.get("question_type")
    if qtype is not None and not isinstance(qtype, str):
        raise _fail(path, line, "question_type", "must be a string or null")
    box = obj.get("gt_box")
    if box is not None:
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
            raise _fail(path, line, "gt_box", "must be a list of 4 numbers [x0, y0, x1, y1]")
        if not (0 <= box[0] < box[2] and 0 <= box[1] < box[3]):
            raise _fail(path, line, "gt_box", f"{box} must satisfy 0 <= x0 < x1 and 0 <= y0 < y1")
        box = tuple(float(v) for v in box)
    sid = obj.get("sample_id", f"{path.stem}-{line}")
    if not isinstance(sid, str) or not sid:
        raise _fail(path, line, "sample_id", "must be a non-empty string")
    prompt = obj.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise _fail(path, line, "prompt", "must be a non-empty string or null")
    lists = {}
    for key in ("ocr_tokens", "choices"):
        val = obj.get(key)
        if val is not None:
            if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
                raise _fail(path, line, key, "must be a list of strings or null")
            if key == "choices" and len(val) < 2:
                raise _fail(path, line, key, "must list at least 2 options")
            val = tuple(val)
        lists[key] = val
    rule = obj.get("scoring")
    if rule is not None:
        from edgevlm.models.scoring import DATASET_RULES

        if rule not in DATASET_RULES:
            raise _fail(path, line, "scoring", f"{rule!r} must be one of {', '.join(DATASET_RULES)}")
    img_path = Path(image)
    if not img_path.is_absolute():
        img_path = path.parent / img_path
    return Sample(sid, img_path, question, tuple(str(a) for a in answers), qtype, box, line,
                  prompt, lists["ocr_tokens"], lists["choices"], rule)


def read_manifest(path: str | os.PathLike) -> list[Sample]:
    """Parse and check a whole manifest; sample ids must be unique. Image files are not opened here."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _fail(path, n, None, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        s = _parse(obj, path, n)
        if s.sample_id in seen:
            raise _fail(path, n, "sample_id", f"{s.sample_id!r} repeats line {seen[s.sample_id]}; ids must be unique")
        seen[s.sample_id] = n
        samples.append(s)
    if not samples:
        raise ManifestError(f"{path}: manifest has no samples")
    return samples
