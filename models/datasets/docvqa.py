"""DocVQA (Mathew et al. 2021) single-page task v1.0: val_v1.0.json, document images.

The file: {"dataset_name": "docvqa", "dataset_split": "val", "data": [{"questionId": 49153,
"question": "...", "question_types": ["handwritten", "form"], "image": "documents/pybv0228_81.png",
"docId": 14465, "answers": ["..."], "data_split": "val", ...}, ...]}; the image is <images>/<image>,
or <images>/<file name> when --images already is the documents folder. The question type is the
first of question_types (DocVQA lists several per question). Scoring: ANLS (tau 0.5). Prompt: the
same short-answer instruction as the other benchmarks (LLaVA-1.5 did not evaluate DocVQA; say so
beside any number).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Iterator

from edgevlm.models.datasets.base import SHORT_ANSWER, DatasetAdapter, Source, fail, field, load_json, string_list


class DocVQA(DatasetAdapter):
    name = "docvqa"
    summary = "DocVQA single page (val_v1.0.json; images <images>/documents/<file>)"

    def image_path(self, source: Source, relative: str):
        full = source.images / relative
        return full if full.parent.is_dir() else source.images / PurePosixPath(relative).name

    def records(self, source: Source) -> Iterator[dict[str, Any]]:
        path = source.annotations
        obj = load_json(path)
        if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
            raise fail(path, "(top level)", "data", "must be an object with a 'data' list")
        for k, rec in enumerate(obj["data"]):
            qid = field(rec, "questionId", (int, str), path, k)
            where = f"{k} (questionId {qid})"
            question = field(rec, "question", str, path, where)
            types = field(rec, "question_types", list, path, where, optional=True) or [None]
            if types[0] is not None and not isinstance(types[0], str):
                raise fail(path, where, "question_types", "must be a list of strings")
            yield {"sample_id": f"docvqa-{qid}",
                   "image": str(self.image_path(source, field(rec, "image", str, path, where))),
                   "question": question, "answers": string_list(rec, "answers", path, where),
                   "question_type": types[0], "prompt": f"{question}\n{SHORT_ANSWER}", "scoring": "anls"}
