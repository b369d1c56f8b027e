"""A-OKVQA (Schwenk et al. 2022) v1.0: aokvqa_v1p0_{train,val}.json, COCO 2017 images.

The file is a JSON list: [{"split": "val", "image_id": 461751, "question_id": "22jbM6gDxdaMaunuzgrsBB",
"question": "...", "choices": [4 strings], "correct_choice_idx": 1, "direct_answers": [10 strings],
"difficult_direct_answer": false, "rationales": [...]}, ...]; the image is
<images>/<split>2017/<image_id as 12 digits>.jpg, or <images>/<12 digits>.jpg when --images already
is that folder. No question types; questions flagged difficult_direct_answer get question_type
"difficult_direct_answer" (the official direct-answer evaluation leaves them out), the rest None.

`aokvqa` is the direct-answer setting: answers = the 10 direct answers, scoring min(#equal / 3, 1),
LLaVA-1.5's short-answer instruction. `aokvqa_mc` is the multiple-choice setting: the options go into
`choices` and into the prompt as "A. ...\\nB. ..." with LLaVA-1.5's multiple-choice instruction
"Answer with the option's letter from the given choices directly."; the answer is the letter, scored
by exact match.
"""

from __future__ import annotations

from typing import Any, Iterator

from edgevlm.models.datasets.base import SHORT_ANSWER, DatasetAdapter, Source, fail, field, load_json, string_list

MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."


class AOKVQA(DatasetAdapter):
    name = "aokvqa"
    summary = "A-OKVQA direct answer (aokvqa_v1p0_val.json; COCO 2017 images)"
    default_split = "val"
    multiple_choice = False

    def image_path(self, source: Source, relative: str):
        nested = source.images / f"{source.split or self.default_split}2017" / relative
        return nested if nested.parent.is_dir() else source.images / relative

    def records(self, source: Source) -> Iterator[dict[str, Any]]:
        path = source.annotations
        data = load_json(path)
        if not isinstance(data, list):
            raise fail(path, "(top level)", None, "must be a JSON list of questions")
        for k, rec in enumerate(data):
            qid = field(rec, "question_id", str, path, k)
            where = f"{k} (question_id {qid})"
            question = field(rec, "question", str, path, where)
            choices = string_list(rec, "choices", path, where, min_len=2)
            out = {"sample_id": f"aokvqa-{qid}", "question": question, "choices": choices,
                   "image": str(self.image_path(source, f"{field(rec, 'image_id', int, path, where):012d}.jpg"))}
            difficult = field(rec, "difficult_direct_answer", bool, path, where, optional=True)
            out["question_type"] = "difficult_direct_answer" if difficult else None
            if self.multiple_choice:
                idx = field(rec, "correct_choice_idx", int, path, where)
                if not 0 <= idx < len(choices):
                    raise fail(path, where, "correct_choice_idx", f"{idx} is not an index into {len(choices)} choices")
                letters = [chr(ord("A") + j) for j in range(len(choices))]
                options = "\n".join(f"{l}. {c}" for l, c in zip(letters, choices))
                out.update(answers=[letters[idx]], prompt=f"{question}\n{options}\n{MC_INSTRUCTION}", scoring="exact")
            else:
                out.update(answers=string_list(rec, "direct_answers", path, where),
                           prompt=f"{question}\n{SHORT_ANSWER}", scoring="aokvqa_da")
            yield out


class AOKVQAMultipleChoice(AOKVQA):
    name = "aokvqa_mc"
    summary = "A-OKVQA multiple choice (options in the prompt, the letter is the answer)"
    multiple_choice = True
