"""VQAv2 (Goyal et al. 2017): v2_mscoco_<split>_annotations.json + v2_OpenEnded_mscoco_<split>_questions.json.

Annotations: {"annotations": [{"question_id", "image_id", "question_type", "answer_type",
"multiple_choice_answer", "answers": [{"answer", "answer_confidence", "answer_id"} x 10]}, ...]};
questions (--questions): {"questions": [{"question_id", "image_id", "question"}, ...]}. The image is
<images>/COCO_<split>_<image_id as 12 digits>.jpg (split default val2014). The question type is the
answer type (yes/no, number, other), the breakdown VQAv2 reports. Scoring: the official VQA accuracy
(normalised answers, averaged over the 10 leave-one-out subsets). Prompt: LLaVA-1.5's short-answer
instruction.
"""

from __future__ import annotations

from typing import Any, Iterator

from edgevlm.models.datasets.base import SHORT_ANSWER, DatasetAdapter, Source, fail, field, load_json


def _list(path, obj, key) -> list:
    if not isinstance(obj, dict) or not isinstance(obj.get(key), list):
        raise fail(path, "(top level)", key, f"must be an object with a '{key}' list")
    return obj[key]


class VQAv2(DatasetAdapter):
    name = "vqav2"
    summary = "VQAv2 (annotations + --questions; images <images>/COCO_<split>_<12-digit id>.jpg)"
    default_split = "val2014"
    needs = ("questions",)

    def records(self, source: Source) -> Iterator[dict[str, Any]]:
        qpath = source.questions
        questions = {}
        for k, rec in enumerate(_list(qpath, load_json(qpath), "questions")):
            qid = field(rec, "question_id", int, qpath, k)
            questions[qid] = (field(rec, "question", str, qpath, f"{k} (question_id {qid})"),
                              field(rec, "image_id", int, qpath, f"{k} (question_id {qid})"))
        path = source.annotations
        split = source.split or self.default_split
        for k, rec in enumerate(_list(path, load_json(path), "annotations")):
            qid = field(rec, "question_id", int, path, k)
            where = f"{k} (question_id {qid})"
            image_id = field(rec, "image_id", int, path, where)
            if qid not in questions:
                raise fail(path, where, "question_id", f"has no question in {qpath}")
            question, q_image = questions[qid]
            if q_image != image_id:
                raise fail(path, where, "image_id", f"{image_id} differs from {q_image} in {qpath}")
            answers = field(rec, "answers", list, path, where)
            texts = []
            for j, a in enumerate(answers):
                texts.append(field(a, "answer", str, path, f"{where} answers[{j}]"))
            if not texts:
                raise fail(path, where, "answers", "is empty")
            yield {"sample_id": f"vqav2-{qid}",
                   "image": str(self.image_path(source, f"COCO_{split}_{image_id:012d}.jpg")),
                   "question": question, "answers": texts,
                   "question_type": field(rec, "answer_type", str, path, where, optional=True),
                   "prompt": f"{question}\n{SHORT_ANSWER}", "scoring": "vqa_official"}
