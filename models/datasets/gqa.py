"""GQA (Hudson & Manning 2019): {split}_balanced_questions.json (e.g. testdev), images <images>/<imageId>.jpg.

The file is one JSON object keyed by question id: {"201307251": {"imageId": "n161313", "question":
"...", "answer": "no", "fullAnswer": "...", "types": {"structural": "verify", "semantic": "attr",
"detailed": "..."}, "isBalanced": true, ...}, ...}. The question type is the structural type
(verify, query, choose, logical, compare), GQA's main breakdown. Scoring: exact match with the one
answer (after LLaVA-1.5's clean-up of the prediction). Prompt: LLaVA-1.5's short-answer instruction.
"""

from __future__ import annotations

from typing import Any, Iterator

from edgevlm.models.datasets.base import SHORT_ANSWER, DatasetAdapter, Source, fail, field, load_json


class GQA(DatasetAdapter):
    name = "gqa"
    summary = "GQA (testdev_balanced_questions.json; images <images>/<imageId>.jpg)"

    def records(self, source: Source) -> Iterator[dict[str, Any]]:
        path = source.annotations
        obj = load_json(path)
        if not isinstance(obj, dict):
            raise fail(path, "(top level)", None, "must be an object keyed by question id")
        for qid, rec in obj.items():
            where = f"{qid!r}"
            question = field(rec, "question", str, path, where)
            types = field(rec, "types", dict, path, where, optional=True) or {}
            qtype = types.get("structural")
            if qtype is not None and not isinstance(qtype, str):
                raise fail(path, where, "types.structural", "must be a string")
            yield {"sample_id": f"gqa-{qid}",
                   "image": str(self.image_path(source, f"{field(rec, 'imageId', str, path, where)}.jpg")),
                   "question": question, "answers": [field(rec, "answer", str, path, where)],
                   "question_type": qtype, "prompt": f"{question}\n{SHORT_ANSWER}", "scoring": "gqa"}
