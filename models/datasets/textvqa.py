"""TextVQA (Singh et al. 2019) v0.5.1: TextVQA_0.5.1_{train,val}.json, images in train_images/.

Annotation file: {"dataset_name": "textvqa", "data": [{"question_id", "question", "image_id",
"answers": [10 strings], "image_classes", "flickr_original_url", "set_name", ...}, ...]}; the image is
<images>/<image_id>.jpg. No question types. Scoring: the VQA accuracy of TextVQA's evaluator (the
VQA normalisation, averaged over the 10 leave-one-out answer subsets). Prompt: LLaVA-1.5's
"<question>\\nAnswer the question using a single word or phrase.".

`textvqa_ocr` (TextVQA+OCR) also reads the Rosetta OCR file (--ocr TextVQA_Rosetta_OCR_v0.2_val.json:
{"data": [{"image_id", "ocr_tokens": [...], "ocr_info": [...]}, ...]}) and, as LLaVA-1.5's TextVQA
evaluation does, puts the tokens between question and instruction:
"<question>\\nReference OCR token: tok1, tok2, ...\\nAnswer the question using a single word or phrase."
(the OCR line is left out when an image has no tokens); the tokens also go into `ocr_tokens`.
"""

from __future__ import annotations

from typing import Any, Iterator

from edgevlm.models.datasets.base import SHORT_ANSWER, DatasetAdapter, Source, fail, field, load_json, string_list


def _data(path, obj) -> list:
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise fail(path, "(top level)", "data", "must be an object with a 'data' list")
    return obj["data"]


class TextVQA(DatasetAdapter):
    name = "textvqa"
    summary = "TextVQA v0.5.1 (TextVQA_0.5.1_val.json; images <images>/<image_id>.jpg)"
    default_split = "val"

    def prompt(self, question: str, ocr: list[str] | None) -> str:
        return f"{question}\n{SHORT_ANSWER}"

    def ocr_tokens(self, source: Source) -> dict[str, list[str]] | None:
        return None

    def records(self, source: Source) -> Iterator[dict[str, Any]]:
        path = source.annotations
        ocr = self.ocr_tokens(source)
        for k, rec in enumerate(_data(path, load_json(path))):
            qid = field(rec, "question_id", (int, str), path, k)
            where = f"{k} (question_id {qid})"
            image_id = field(rec, "image_id", str, path, where)
            question = field(rec, "question", str, path, where)
            split = rec.get("set_name") or source.split
            if source.split and split != source.split:
                continue
            out = {"sample_id": f"textvqa-{qid}", "image": str(self.image_path(source, f"{image_id}.jpg")),
                   "question": question, "answers": string_list(rec, "answers", path, where),
                   "scoring": "vqa_official"}
            tokens = None
            if ocr is not None:
                if image_id not in ocr:
                    raise fail(source.ocr, f"for image_id {image_id}", "ocr_tokens",
                               f"missing: {path} record {where} needs it")
                tokens = ocr[image_id]
                out["ocr_tokens"] = tokens
            out["prompt"] = self.prompt(question, tokens)
            yield out


class TextVQAOCR(TextVQA):
    name = "textvqa_ocr"
    summary = "TextVQA+OCR: TextVQA with Rosetta OCR tokens in the prompt (needs --ocr)"
    needs = ("ocr",)

    def prompt(self, question: str, ocr: list[str] | None) -> str:
        if not ocr:
            return f"{question}\n{SHORT_ANSWER}"
        return f"{question}\nReference OCR token: {', '.join(ocr)}\n{SHORT_ANSWER}"

    def ocr_tokens(self, source: Source) -> dict[str, list[str]]:
        path = source.ocr
        tokens: dict[str, list[str]] = {}
        for k, rec in enumerate(_data(path, load_json(path))):
            image_id = field(rec, "image_id", str, path, k)
            toks = field(rec, "ocr_tokens", list, path, f"{k} (image_id {image_id})")
            if not all(isinstance(t, str) for t in toks):
                raise fail(path, f"{k} (image_id {image_id})", "ocr_tokens", "must be a list of strings")
            tokens[image_id] = toks
        return tokens
