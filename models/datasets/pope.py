"""POPE (Li et al. 2023): coco_pope_{random,popular,adversarial}.json, COCO val2014 images.

Each file is JSON lines: {"question_id": 1, "image": "COCO_val2014_000000310196.jpg",
"text": "Is there a snowboard in the image?", "label": "yes"}; the image is <images>/<image>. The
question type is the sampling setting (random / popular / adversarial), taken from --split or else
from the file name. Scoring: POPE's yes/no reading of the answer against the label. Prompt:
LLaVA-1.5's "<question>\\nAnswer the question using a single word or phrase.".
"""

from __future__ import annotations

from typing import Any, Iterator

from edgevlm.models.datasets.base import SHORT_ANSWER, DatasetAdapter, Source, fail, field, load_jsonl

SETTINGS = ("random", "popular", "adversarial")


class POPE(DatasetAdapter):
    name = "pope"
    summary = "POPE (coco_pope_<setting>.json lines; images <images>/<image>); --split random|popular|adversarial"

    def records(self, source: Source) -> Iterator[dict[str, Any]]:
        path = source.annotations
        setting = source.split or next((s for s in SETTINGS if s in path.name), None)
        if setting not in SETTINGS:
            raise fail(path, "(file)", None, f"cannot tell the POPE setting from the file name; pass --split "
                                             f"{'|'.join(SETTINGS)}")
        for n, rec in load_jsonl(path):
            where = f"on line {n}"
            qid = field(rec, "question_id", (int, str), path, where)
            label = field(rec, "label", str, path, where)
            if label not in ("yes", "no"):
                raise fail(path, where, "label", f"must be 'yes' or 'no', got {label!r}")
            question = field(rec, "text", str, path, where)
            yield {"sample_id": f"pope-{setting}-{qid}",
                   "image": str(self.image_path(source, field(rec, "image", str, path, where))),
                   "question": question, "answers": [label], "question_type": setting,
                   "prompt": f"{question}\n{SHORT_ANSWER}", "scoring": "yesno"}
